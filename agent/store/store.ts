import { StoreError } from './errors.js';
import { interval, inInterval, keyFromText, type ByteKey, type KeyInterval } from './keys.js';
import { LeaseTable } from './leases.js';
import type {
  Compare,
  DeleteRangeRequest,
  DeleteRangeResult,
  KeyValue,
  LeaseInfo,
  PutRequest,
  PutResult,
  RangeRequest,
  RangeResult,
  RequestOp,
  ResponseOp,
  RevisionChanges,
  StoreEvent,
  TxnRequest,
  TxnResult,
} from './types.js';
import { WatcherHub, type WatchListener, type WatchRequest, type Watcher } from './watchers.js';

export type { WatchListener, WatchRequest, Watcher } from './watchers.js';
export * from './types.js';
export { StoreError } from './errors.js';

/** What the agent writes: text keys (UTF-8), values as text or bytes. */
export type StoreWrite =
  | { op: 'put'; key: string; value: string | Uint8Array; lease?: string }
  | { op: 'delete'; key: string };

export interface KvStoreOptions {
  /** History kept for watches and reads in the past: at most this many events ... */
  maxHistoryEvents?: number;
  /** ... and about this many bytes of keys and values. Older revisions are compacted away. */
  maxHistoryBytes?: number;
  /** Milliseconds, for leases. */
  clock?: () => number;
  /** Live leases at most; further grants are refused as etcd refuses writes past its quota. */
  maxLeases?: number;
  /**
   * Revision of the fresh store (default 1, like etcd). A store that replaces an earlier one in
   * the same process life of its clients (an agent restart) should start above every revision the
   * old one handed out: a watch from an older revision is then answered "compacted" and APISIX
   * reloads everything, instead of waiting for a revision that the new store reaches much later.
   */
  initialRevision?: number;
}

export type WatchStart =
  | { kind: 'compacted'; compactRevision: number }
  | {
      kind: 'watching';
      watcher: Watcher;
      /** Events of past revisions (start_revision ≤ current), to be sent as one message. */
      catchUp: StoreEvent[];
    };

const EMPTY = new Uint8Array(0);

interface HistoryEntry extends RevisionChanges {
  readonly bytes: number;
}

/**
 * An MVCC key-value store with etcd's semantics: one revision per write transaction, keys with
 * create/mod revision, version and lease; a bounded history for reads and watches in the past;
 * compaction; watches; leases. Pure and synchronous: sockets, timers and clocks live outside.
 */
export class KvStore {
  private current = new Map<ByteKey, KeyValue>();
  /**
   * The current keys in byte order (the range index), up to the keys added and deleted since it was
   * last brought up to date: a revision that adds thousands of keys merges them in once, instead of
   * one array insertion each (quadratic: 20,000 new keys took ~130 ms).
   */
  private sorted: ByteKey[] = [];
  private readonly addedKeys = new Set<ByteKey>();
  private readonly deletedKeys = new Set<ByteKey>();
  private rev: number;
  private compactRev: number;
  /** Every revision in [compactRev, rev] that changed something, oldest first. */
  private history: HistoryEntry[] = [];
  private historyEvents = 0;
  private historyBytes = 0;
  private readonly maxHistoryEvents: number;
  private readonly maxHistoryBytes: number;
  private readonly hub = new WatcherHub();
  readonly leaseTable: LeaseTable;
  private readonly revisionListeners = new Set<(revision: number) => void>();

  constructor(options: KvStoreOptions = {}) {
    this.maxHistoryEvents = options.maxHistoryEvents ?? 100_000;
    this.maxHistoryBytes = options.maxHistoryBytes ?? 256 * 1024 * 1024;
    this.leaseTable = new LeaseTable(options.clock ?? Date.now, options.maxLeases);
    const initial = Math.max(1, Math.trunc(options.initialRevision ?? 1));
    this.rev = initial;
    this.compactRev = initial > 1 ? initial : 0;
  }

  get revision(): number {
    return this.rev;
  }

  get compactRevision(): number {
    return this.compactRev;
  }

  get watcherCount(): number {
    return this.hub.count;
  }

  get size(): number {
    return this.current.size;
  }

  /** Called after every new revision (the API layer drops its per-revision caches). */
  onRevision(listener: (revision: number) => void): () => void {
    this.revisionListeners.add(listener);
    return () => this.revisionListeners.delete(listener);
  }

  // ---------------------------------------------------------------- the agent's API

  /** The current version of a key (no copy, no range semantics: the agent's own lookups). */
  get(key: ByteKey): KeyValue | undefined {
    return this.current.get(key);
  }

  /** All writes as ONE new revision, in the given order; returns the new revision. */
  write(writes: readonly StoreWrite[]): number {
    const seen = new Set<ByteKey>();
    const ops: RequestOp[] = writes.map((w) => {
      const key = keyFromText(w.key);
      if (key.length === 0) throw new StoreError('key-not-provided');
      if (seen.has(key)) throw new StoreError('duplicate-key');
      seen.add(key);
      if (w.op === 'delete') return { deleteRange: { key } };
      const value = typeof w.value === 'string' ? Buffer.from(w.value, 'utf8') : w.value;
      return { put: { key, value, ...(w.lease ? { lease: w.lease } : {}) } };
    });
    return this.txn({ compare: [], success: ops, failure: [] }).revision;
  }

  /**
   * Makes everything under `prefix` equal `desired` in one revision: puts for new or changed keys,
   * deletes for keys gone, unchanged keys untouched; `order` sorts the writes (default: puts, then
   * deletes, each by key). Returns the new revision, or the current one when nothing differs.
   */
  applySnapshot(
    prefix: string,
    desired: ReadonlyMap<string, string | Uint8Array>,
    order?: (a: StoreWrite, b: StoreWrite) => number,
  ): number {
    const bytePrefix = keyFromText(prefix);
    const writes: StoreWrite[] = [];
    const wanted = new Set<ByteKey>();
    for (const [key, value] of desired) {
      if (!key.startsWith(prefix)) throw new Error(`applySnapshot: key ${key} is outside ${prefix}`);
      const byteKey = keyFromText(key);
      wanted.add(byteKey);
      const have = this.current.get(byteKey);
      const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
      if (!have || !Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).equals(have.value)) writes.push({ op: 'put', key, value: bytes });
    }
    for (const key of this.keysWithPrefix(bytePrefix)) {
      if (!wanted.has(key)) writes.push({ op: 'delete', key: Buffer.from(key, 'latin1').toString('utf8') });
    }
    if (writes.length === 0) return this.rev;
    writes.sort(order ?? defaultOrder);
    return this.write(writes);
  }

  // ---------------------------------------------------------------- etcd's KV

  range(req: RangeRequest): RangeResult {
    if (req.key.length === 0) throw new StoreError('key-not-provided');
    const atRev = req.revision && req.revision > 0 ? req.revision : 0;
    if (atRev > this.rev) throw new StoreError('future-revision');
    if (atRev > 0 && atRev < this.compactRev) throw new StoreError('compacted');
    const iv = interval(req.key, req.rangeEnd);
    let kvs = atRev > 0 && atRev < this.rev ? this.kvsAt(iv, atRev) : this.kvsNow(iv);
    const count = kvs.length;
    kvs = kvs.filter(
      (kv) =>
        (!req.minModRevision || kv.modRevision >= req.minModRevision) &&
        (!req.maxModRevision || kv.modRevision <= req.maxModRevision) &&
        (!req.minCreateRevision || kv.createRevision >= req.minCreateRevision) &&
        (!req.maxCreateRevision || kv.createRevision <= req.maxCreateRevision),
    );
    kvs = sortKvs(kvs, req);
    const keysOnly = req.keysOnly ?? false;
    if (req.countOnly) return { revision: this.rev, kvs: [], more: false, count, keysOnly };
    const limit = req.limit && req.limit > 0 ? req.limit : 0;
    const more = limit > 0 && kvs.length > limit;
    if (more) kvs = kvs.slice(0, limit);
    return { revision: this.rev, kvs, more, count, keysOnly };
  }

  put(req: PutRequest): PutResult {
    const res = this.txn({ compare: [], success: [{ put: req }], failure: [] });
    return (res.responses[0] as { put: PutResult }).put;
  }

  deleteRange(req: DeleteRangeRequest): DeleteRangeResult {
    const res = this.txn({ compare: [], success: [{ deleteRange: req }], failure: [] });
    return (res.responses[0] as { deleteRange: DeleteRangeResult }).deleteRange;
  }

  txn(req: TxnRequest): TxnResult {
    checkNoDuplicates(req.success);
    checkNoDuplicates(req.failure);
    const succeeded = req.compare.every((c) => this.compareHolds(c));
    const ops = succeeded ? req.success : req.failure;
    this.validate(ops);
    const w = new WriteContext(this.rev);
    const responses = this.applyOps(ops, w);
    const revision = this.commit(w);
    return { revision, succeeded, responses };
  }

  /** Compacts history up to `revision` (etcd's Compact). Does not change the revision. */
  compact(revision: number): number {
    if (revision <= this.compactRev) throw new StoreError('compacted');
    if (revision > this.rev) throw new StoreError('future-revision');
    this.compactRev = revision;
    let drop = 0;
    while (drop < this.history.length && this.history[drop]!.revision < revision) drop++;
    this.dropHistory(drop);
    // etcd keeps, per key, the newest version at or below the compact revision; a deletion at
    // exactly that revision is compacted away, so a watch from there replays only its puts.
    // (Automatic compaction keeps them: a client resuming there must not miss a delete.)
    const first = this.history[0];
    if (first && first.revision === revision && first.events.some((e) => e.type === 'DELETE')) {
      const puts = first.events.filter((e) => e.type === 'PUT');
      this.historyEvents -= first.events.length - puts.length;
      this.history[0] = { revision, events: puts, bytes: first.bytes };
    }
    return this.rev;
  }

  // ---------------------------------------------------------------- watches

  watch(req: WatchRequest, listener: WatchListener): WatchStart {
    const start = req.startRevision && req.startRevision > 0 ? req.startRevision : 0;
    if (start > 0 && start < this.compactRev) return { kind: 'compacted', compactRevision: this.compactRev };
    const catchUp: StoreEvent[] = [];
    const w = this.hub.add(req, Math.max(start, this.rev + 1), listener);
    if (start > 0 && start <= this.rev) {
      for (const entry of this.history) {
        if (entry.revision < start) continue;
        for (const e of entry.events) if (w.wants(e)) catchUp.push(e);
      }
    }
    return { kind: 'watching', watcher: w, catchUp };
  }

  // ---------------------------------------------------------------- leases

  grantLease(ttlSeconds: number, id?: string): { id: string; ttl: number } {
    return this.leaseTable.grant(ttlSeconds, id);
  }

  /** Revokes the lease and deletes its keys in one revision. */
  revokeLease(id: string): number {
    const keys = this.leaseTable.remove(LeaseTable.normaliseId(id));
    if (!keys) throw new StoreError('lease-not-found');
    if (keys.length === 0) return this.rev;
    const w = new WriteContext(this.rev);
    for (const key of keys) this.deleteKey(key, w);
    return this.commit(w);
  }

  keepAliveLease(id: string): number | undefined {
    return this.leaseTable.keepAlive(LeaseTable.normaliseId(id));
  }

  leaseTimeToLive(id: string): LeaseInfo {
    const norm = LeaseTable.normaliseId(id);
    const info = this.leaseTable.timeToLive(norm);
    if (!info) return { id: norm, ttl: -1, grantedTtl: 0, keys: [] };
    return { id: norm, ...info };
  }

  leaseIds(): string[] {
    return this.leaseTable.ids();
  }

  /** Revokes every lease whose time is up (each as its own revision, as etcd does). */
  expireLeases(): string[] {
    const expired = this.leaseTable.expired();
    for (const id of expired) this.revokeLease(id);
    return expired;
  }

  // ---------------------------------------------------------------- internals

  /** The range index, brought up to date. */
  private index(): ByteKey[] {
    if (this.addedKeys.size === 0 && this.deletedKeys.size === 0) return this.sorted;
    const kept = this.deletedKeys.size ? this.sorted.filter((k) => !this.deletedKeys.has(k)) : this.sorted;
    const added = [...this.addedKeys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const merged: ByteKey[] = new Array(kept.length + added.length);
    let i = 0;
    let j = 0;
    let k = 0;
    while (i < kept.length && j < added.length) merged[k++] = kept[i]! < added[j]! ? kept[i++]! : added[j++]!;
    while (i < kept.length) merged[k++] = kept[i++]!;
    while (j < added.length) merged[k++] = added[j++]!;
    this.sorted = merged;
    this.addedKeys.clear();
    this.deletedKeys.clear();
    return merged;
  }

  private indexAdd(key: ByteKey): void {
    // a key deleted since the index was brought up to date is still in it
    if (this.deletedKeys.has(key)) this.deletedKeys.delete(key);
    else this.addedKeys.add(key);
  }

  private indexDelete(key: ByteKey): void {
    if (this.addedKeys.has(key)) this.addedKeys.delete(key);
    else this.deletedKeys.add(key);
  }

  private keysWithPrefix(prefix: ByteKey): ByteKey[] {
    const sorted = this.index();
    const out: ByteKey[] = [];
    for (let i = lowerBound(sorted, prefix); i < sorted.length; i++) {
      const k = sorted[i]!;
      if (!k.startsWith(prefix)) break;
      out.push(k);
    }
    return out;
  }

  private kvsNow(iv: KeyInterval): KeyValue[] {
    if (iv.end === undefined) {
      const kv = this.current.get(iv.start);
      return kv ? [kv] : [];
    }
    const sorted = this.index();
    const out: KeyValue[] = [];
    for (let i = lowerBound(sorted, iv.start); i < sorted.length; i++) {
      const k = sorted[i]!;
      if (iv.end !== '' && k >= iv.end) break;
      out.push(this.current.get(k)!);
    }
    return out;
  }

  /** The range as it was at `atRev`: the current state with every later change undone. */
  private kvsAt(iv: KeyInterval, atRev: number): KeyValue[] {
    const past = new Map<ByteKey, KeyValue | undefined>();
    for (let i = this.history.length - 1; i >= 0 && this.history[i]!.revision > atRev; i--) {
      for (const e of this.history[i]!.events) {
        if (inInterval(iv, e.kv.key)) past.set(e.kv.key, e.prevKv);
      }
    }
    const out = this.kvsNow(iv).filter((kv) => !past.has(kv.key));
    for (const kv of past.values()) if (kv) out.push(kv);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  private compareHolds(c: Compare): boolean {
    const kvs = this.kvsNow(interval(c.key, c.rangeEnd));
    if (kvs.length === 0) {
      if (c.target === 'VALUE') return false;
      return compareOne(c, undefined);
    }
    return kvs.every((kv) => compareOne(c, kv));
  }

  /** etcd checks leases and ignore_value/ignore_lease targets before applying anything. */
  private validate(ops: readonly RequestOp[]): void {
    for (const op of ops) {
      if ('put' in op) {
        const p = op.put;
        if (p.key.length === 0) throw new StoreError('key-not-provided');
        if ((p.ignoreValue || p.ignoreLease) && !this.current.has(p.key)) throw new StoreError('key-not-found');
        if (p.lease && p.lease !== '0' && !this.leaseTable.has(LeaseTable.normaliseId(p.lease))) {
          throw new StoreError('lease-not-found');
        }
      } else if ('deleteRange' in op) {
        if (op.deleteRange.key.length === 0) throw new StoreError('key-not-provided');
      } else if ('range' in op) {
        if (op.range.key.length === 0) throw new StoreError('key-not-provided');
      } else {
        checkNoDuplicates(op.txn.success);
        checkNoDuplicates(op.txn.failure);
      }
    }
  }

  private applyOps(ops: readonly RequestOp[], w: WriteContext): ResponseOp[] {
    return ops.map((op): ResponseOp => {
      if ('range' in op) {
        const r = this.range({ ...op.range, revision: 0 });
        return { range: { ...r, revision: w.readRevision } };
      }
      if ('put' in op) return { put: this.applyPut(op.put, w) };
      if ('deleteRange' in op) {
        const iv = interval(op.deleteRange.key, op.deleteRange.rangeEnd);
        const victims = this.kvsNow(iv);
        for (const kv of victims) this.deleteKey(kv.key, w);
        return {
          deleteRange: {
            revision: w.readRevision,
            deleted: victims.length,
            prevKvs: op.deleteRange.prevKv ? victims : [],
          },
        };
      }
      const t = op.txn;
      const succeeded = t.compare.every((c) => this.compareHolds(c));
      const branch = succeeded ? t.success : t.failure;
      this.validate(branch);
      return { txn: { revision: w.readRevision, succeeded, responses: this.applyOps(branch, w) } };
    });
  }

  private applyPut(p: PutRequest, w: WriteContext): PutResult {
    const prev = this.current.get(p.key);
    const value = p.ignoreValue ? prev!.value : (p.value ?? EMPTY);
    const lease = p.ignoreLease ? prev!.lease : p.lease && p.lease !== '0' ? LeaseTable.normaliseId(p.lease) : '0';
    const rev = w.revision;
    const kv: KeyValue = {
      key: prev ? prev.key : p.key, // one string per key, not one per version
      createRevision: prev ? prev.createRevision : rev,
      modRevision: rev,
      version: prev ? prev.version + 1 : 1,
      value,
      lease,
    };
    if (!prev) this.indexAdd(p.key);
    else if (prev.lease !== '0' && prev.lease !== lease) this.leaseTable.detach(prev.lease, p.key);
    if (lease !== '0') this.leaseTable.attach(lease, p.key);
    this.current.set(p.key, kv);
    w.events.push({ type: 'PUT', kv, prevKv: prev });
    return { revision: rev, prevKv: p.prevKv ? prev : undefined };
  }

  private deleteKey(key: ByteKey, w: WriteContext): void {
    const prev = this.current.get(key);
    if (!prev) return;
    this.current.delete(key);
    this.indexDelete(key);
    if (prev.lease !== '0') this.leaseTable.detach(prev.lease, key);
    const tombstone: KeyValue = { key, createRevision: 0, modRevision: w.revision, version: 0, value: EMPTY, lease: '0' };
    w.events.push({ type: 'DELETE', kv: tombstone, prevKv: prev });
  }

  private commit(w: WriteContext): number {
    if (w.events.length === 0) return this.rev;
    this.rev = w.revision;
    let bytes = 0;
    for (const e of w.events) bytes += e.kv.key.length + e.kv.value.byteLength + 64;
    this.history.push({ revision: this.rev, events: w.events, bytes });
    this.historyEvents += w.events.length;
    this.historyBytes += bytes;
    this.trimHistory();
    this.hub.notify(this.rev, w.events);
    for (const l of this.revisionListeners) l(this.rev);
    return this.rev;
  }

  /** Automatic compaction: drop the oldest revisions while history is over its bounds. */
  private trimHistory(): void {
    let drop = 0;
    let events = this.historyEvents;
    let bytes = this.historyBytes;
    while (
      drop < this.history.length - 1 &&
      (events > this.maxHistoryEvents || bytes > this.maxHistoryBytes)
    ) {
      events -= this.history[drop]!.events.length;
      bytes -= this.history[drop]!.bytes;
      drop++;
    }
    if (drop === 0) return;
    this.dropHistory(drop);
    // The oldest revision left is still complete: watches may start there, reads may look there.
    this.compactRev = Math.max(this.compactRev, this.history[0]!.revision);
  }

  private dropHistory(count: number): void {
    for (let i = 0; i < count; i++) {
      this.historyEvents -= this.history[i]!.events.length;
      this.historyBytes -= this.history[i]!.bytes;
    }
    this.history = this.history.slice(count);
  }
}

/** One write transaction in progress: every change shares `revision`. */
class WriteContext {
  readonly events: StoreEvent[] = [];
  constructor(readonly base: number) {}
  get revision(): number {
    return this.base + 1;
  }
  /** etcd reports the new revision to reads inside a txn once it has written something. */
  get readRevision(): number {
    return this.events.length > 0 ? this.base + 1 : this.base;
  }
}

function defaultOrder(a: StoreWrite, b: StoreWrite): number {
  if (a.op !== b.op) return a.op === 'put' ? -1 : 1;
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

function lowerBound(sorted: readonly ByteKey[], key: ByteKey): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function writeInterval(op: RequestOp): KeyInterval | undefined {
  if ('put' in op) return interval(op.put.key);
  if ('deleteRange' in op) return interval(op.deleteRange.key, op.deleteRange.rangeEnd);
  return undefined;
}

function checkNoDuplicates(ops: readonly RequestOp[]): void {
  const puts = new Set<ByteKey>();
  const deletes: KeyInterval[] = [];
  for (const op of ops) {
    if ('put' in op) {
      if (puts.has(op.put.key)) throw new StoreError('duplicate-key');
      puts.add(op.put.key);
    } else if ('deleteRange' in op) {
      deletes.push(writeInterval(op)!);
    }
  }
  for (const d of deletes) {
    // a single key is looked up (checking every put against every delete was quadratic: a revision
    // of thousands of deletes and puts took seconds); a range is checked against every put
    if (d.end === undefined) {
      if (puts.has(d.start)) throw new StoreError('duplicate-key');
    } else {
      for (const key of puts) if (inInterval(d, key)) throw new StoreError('duplicate-key');
    }
  }
}

function compareOne(c: Compare, kv: KeyValue | undefined): boolean {
  let diff: number;
  switch (c.target) {
    case 'VALUE': {
      const a = Buffer.from(kv?.value ?? EMPTY);
      diff = a.compare(Buffer.from(c.operand as Uint8Array));
      break;
    }
    case 'LEASE': {
      const a = BigInt(kv?.lease ?? '0');
      const b = BigInt(c.operand as string);
      diff = a < b ? -1 : a > b ? 1 : 0;
      break;
    }
    default: {
      const a = kv ? (c.target === 'VERSION' ? kv.version : c.target === 'CREATE' ? kv.createRevision : kv.modRevision) : 0;
      diff = a - (c.operand as number);
    }
  }
  switch (c.result) {
    case 'EQUAL':
      return diff === 0;
    case 'NOT_EQUAL':
      return diff !== 0;
    case 'GREATER':
      return diff > 0;
    case 'LESS':
      return diff < 0;
  }
}

function sortKvs(kvs: KeyValue[], req: RangeRequest): KeyValue[] {
  const target = req.sortTarget ?? 'KEY';
  // etcd sorts ascending when only a target is named.
  const order = (req.sortOrder ?? 'NONE') === 'NONE' && target !== 'KEY' ? 'ASCEND' : (req.sortOrder ?? 'NONE');
  if (order === 'NONE' || (order === 'ASCEND' && target === 'KEY')) return kvs;
  const field = (kv: KeyValue): number | string =>
    target === 'KEY'
      ? kv.key
      : target === 'VERSION'
        ? kv.version
        : target === 'CREATE'
          ? kv.createRevision
          : target === 'MOD'
            ? kv.modRevision
            : Buffer.from(kv.value).toString('latin1');
  const sign = order === 'DESCEND' ? -1 : 1;
  // Stable sort keeps key order among equal targets, as etcd does.
  return [...kvs].sort((a, b) => {
    const x = field(a);
    const y = field(b);
    return x < y ? -sign : x > y ? sign : 0;
  });
}
