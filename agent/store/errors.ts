/**
 * The store's refusals, named after etcd's own errors (the text after "etcdserver: " in
 * etcd's messages). The API layers map each to etcd's gRPC code and HTTP status.
 */
export type StoreErrorKind =
  | 'compacted'
  | 'future-revision'
  | 'key-not-provided'
  | 'key-not-found'
  | 'lease-not-found'
  | 'lease-exists'
  | 'lease-ttl-too-large'
  | 'no-space'
  | 'duplicate-key';

const messages: Record<StoreErrorKind, string> = {
  compacted: 'mvcc: required revision has been compacted',
  'future-revision': 'mvcc: required revision is a future revision',
  'key-not-provided': 'key is not provided',
  'key-not-found': 'key not found',
  'lease-not-found': 'requested lease not found',
  'lease-exists': 'lease already exists',
  'lease-ttl-too-large': 'too large lease TTL',
  // etcd's answer when its backend quota is full; here: a count limit of the store was reached.
  'no-space': 'mvcc: database space exceeded',
  'duplicate-key': 'duplicate key given in txn request',
};

export class StoreError extends Error {
  constructor(readonly kind: StoreErrorKind) {
    super(messages[kind]);
    this.name = 'StoreError';
  }
}
