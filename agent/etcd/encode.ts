import type { KeyValue, RangeResult, ResponseOp, StoreEvent, TxnResult, DeleteRangeResult, PutResult } from '../store/store.js';

/**
 * Responses as etcd's gateway writes them (grpc-gateway v1 JSONPb, OrigName, no EmitDefaults):
 * proto field names in proto order, int64 as strings, zero values left out, bytes in padded
 * base64. A key-value's encoding is computed once and shared by every answer and every watcher.
 */
export interface ServerIdentity {
  clusterId: string;
  memberId: string;
  raftTerm: string;
}

const kvJson = new WeakMap<KeyValue, string>();
const kvKeysOnlyJson = new WeakMap<KeyValue, string>();
const deleteEventJson = new WeakMap<KeyValue, string>();

function b64(s: string | Uint8Array): string {
  return typeof s === 'string' ? Buffer.from(s, 'latin1').toString('base64') : Buffer.from(s.buffer, s.byteOffset, s.byteLength).toString('base64');
}

export function encodeKv(kv: KeyValue, keysOnly = false): string {
  const cache = keysOnly ? kvKeysOnlyJson : kvJson;
  let s = cache.get(kv);
  if (s === undefined) {
    s = `{"key":"${b64(kv.key)}","create_revision":"${kv.createRevision}","mod_revision":"${kv.modRevision}","version":"${kv.version}"`;
    if (!keysOnly && kv.value.byteLength > 0) s += `,"value":"${b64(kv.value)}"`;
    if (kv.lease !== '0') s += `,"lease":"${kv.lease}"`;
    s += '}';
    cache.set(kv, s);
  }
  return s;
}

export function encodeEvent(e: StoreEvent, withPrevKv: boolean): string {
  let s: string;
  if (e.type === 'PUT') {
    s = `{"kv":${encodeKv(e.kv)}`;
  } else {
    let d = deleteEventJson.get(e.kv);
    if (d === undefined) {
      d = `{"type":"DELETE","kv":{"key":"${b64(e.kv.key)}","mod_revision":"${e.kv.modRevision}"}`;
      deleteEventJson.set(e.kv, d);
    }
    s = d;
  }
  if (withPrevKv && e.prevKv) s += `,"prev_kv":${encodeKv(e.prevKv)}`;
  return s + '}';
}

export class ResponseEncoder {
  private readonly headerStart: string;
  private readonly headerEnd: string;

  constructor(readonly identity: ServerIdentity) {
    this.headerStart = `{"cluster_id":"${identity.clusterId}","member_id":"${identity.memberId}"`;
    this.headerEnd = `,"raft_term":"${identity.raftTerm}"}`;
  }

  header(revision: number): string {
    return revision > 0
      ? `${this.headerStart},"revision":"${revision}"${this.headerEnd}`
      : this.headerStart + this.headerEnd;
  }

  range(r: RangeResult, nested = false): string {
    let s = `{"header":${nested ? `{"revision":"${r.revision}"}` : this.header(r.revision)}`;
    if (r.kvs.length > 0) {
      s += ',"kvs":[';
      for (let i = 0; i < r.kvs.length; i++) s += (i ? ',' : '') + encodeKv(r.kvs[i]!, r.keysOnly);
      s += ']';
    }
    if (r.more) s += ',"more":true';
    if (r.count > 0) s += `,"count":"${r.count}"`;
    return s + '}';
  }

  put(r: PutResult, nested = false): string {
    let s = `{"header":${nested ? `{"revision":"${r.revision}"}` : this.header(r.revision)}`;
    if (r.prevKv) s += `,"prev_kv":${encodeKv(r.prevKv)}`;
    return s + '}';
  }

  deleteRange(r: DeleteRangeResult, nested = false): string {
    let s = `{"header":${nested ? `{"revision":"${r.revision}"}` : this.header(r.revision)}`;
    if (r.deleted > 0) s += `,"deleted":"${r.deleted}"`;
    if (r.prevKvs.length > 0) s += `,"prev_kvs":[${r.prevKvs.map((kv) => encodeKv(kv)).join(',')}]`;
    return s + '}';
  }

  txn(r: TxnResult, nested = false): string {
    let s = `{"header":${nested ? `{"revision":"${r.revision}"}` : this.header(r.revision)}`;
    if (r.succeeded) s += ',"succeeded":true';
    if (r.responses.length > 0) s += `,"responses":[${r.responses.map((op) => this.responseOp(op)).join(',')}]`;
    return s + '}';
  }

  private responseOp(op: ResponseOp): string {
    if ('range' in op) return `{"response_range":${this.range(op.range, true)}}`;
    if ('put' in op) return `{"response_put":${this.put(op.put, true)}}`;
    if ('deleteRange' in op) return `{"response_delete_range":${this.deleteRange(op.deleteRange, true)}}`;
    return `{"response_txn":${this.txn(op.txn, true)}}`;
  }

  headerOnly(revision: number): string {
    return `{"header":${this.header(revision)}}`;
  }

  /** One watch message body (without the `{"result":…}` wrapper). */
  watchResponse(m: {
    revision: number;
    watchId: string;
    created?: boolean;
    canceled?: boolean;
    compactRevision?: number;
    cancelReason?: string;
    events?: readonly StoreEvent[];
    prevKv?: boolean;
  }): string {
    let s = `{"header":${this.header(m.revision)}`;
    if (m.watchId !== '0') s += `,"watch_id":"${m.watchId}"`;
    if (m.created) s += ',"created":true';
    if (m.canceled) s += ',"canceled":true';
    if (m.compactRevision) s += `,"compact_revision":"${m.compactRevision}"`;
    if (m.cancelReason) s += `,"cancel_reason":${JSON.stringify(m.cancelReason)}`;
    if (m.events && m.events.length > 0) {
      s += ',"events":[';
      for (let i = 0; i < m.events.length; i++) s += (i ? ',' : '') + encodeEvent(m.events[i]!, m.prevKv ?? false);
      s += ']';
    }
    return s + '}';
  }
}

export function errorBody(message: string, code: number): string {
  const m = JSON.stringify(message);
  return `{"error":${m},"message":${m},"code":${code}}`;
}
