import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { KeyValue, KvStore, RangeResult, ResponseOp, StoreEvent, TxnResult } from '../store/store.js';
import { ApiError, etcdErrors, toApiError } from './api-error.js';
import type { ServerIdentity } from './encode.js';
import { ETCD_SERVER_VERSION, type Logger } from './gateway.js';
import * as schema from './proto-json.js';
import type { Decoded, DecodedValue, FieldKind, MessageSchema } from './proto-json.js';
import { grpcWatch } from './grpc-watch.js';
import type { ReadOnlyWrites } from './read-only.js';
import type { WatchBudget } from './watch-budget.js';
import { int, toDeleteRange, toPut, toRange, toTxn, txnWrites } from './requests.js';

/**
 * etcd's gRPC services (KV, Watch, Lease, Maintenance.Status) over the protos shipped in the
 * `etcd3` package: what `etcdctl` speaks. Requests are brought into the same decoded shape as the
 * HTTP gateway's, so both sides share the request mapping and the store.
 */
export interface GrpcServerOptions {
  store: KvStore;
  encoderIdentity: ServerIdentity;
  host: string;
  port: number;
  /** Set when the API is read-only: the writes it still admits. */
  readOnly: ReadOnlyWrites | undefined;
  logger: Logger;
  /** Bound on what watch clients leave unread (shared with the HTTP side). */
  budget: WatchBudget;
}

const GRPC_STATUS: Record<number, grpc.status> = {
  3: grpc.status.INVALID_ARGUMENT,
  5: grpc.status.NOT_FOUND,
  7: grpc.status.PERMISSION_DENIED,
  8: grpc.status.RESOURCE_EXHAUSTED,
  9: grpc.status.FAILED_PRECONDITION,
  11: grpc.status.OUT_OF_RANGE,
  16: grpc.status.UNAUTHENTICATED,
};

function loadProtos(): grpc.GrpcObject {
  const etcd3 = dirname(createRequire(import.meta.url).resolve('etcd3/package.json'));
  const def = protoLoader.loadSync(join(etcd3, 'proto/rpc.proto'), {
    keepCase: true,
    longs: String,
    // Enums stay numbers: the etcd3 package's protos rename etcd's enum values (Put, Noput, ...).
    defaults: false,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(def);
}

/** A decoded gRPC message → the gateway's decoded shape (int64 as bigint), guided by the schema. */
function fromGrpc(obj: unknown, s: MessageSchema): Decoded {
  const out: Decoded = {};
  if (!obj || typeof obj !== 'object') return out;
  const o = obj as Record<string, unknown>;
  for (const [name, kind] of s) {
    const v = o[name];
    if (v === undefined || v === null) continue;
    out[name] = fromGrpcValue(v, kind);
  }
  return out;
}

function fromGrpcValue(v: unknown, kind: FieldKind): DecodedValue {
  if (kind === 'bytes') return Buffer.isBuffer(v) ? v : Buffer.from(v as Uint8Array);
  if (kind === 'int64') return BigInt(v as string | number);
  if (kind === 'bool' || kind === 'string') return v as boolean | string;
  if ('enum' in kind) return typeof v === 'number' ? (kind.values[v] ?? v) : (v as string);
  if ('message' in kind) return fromGrpc(v, kind.message);
  return (v as unknown[]).map((x) => fromGrpcValue(x, kind.repeated));
}

export async function startGrpcServer(o: GrpcServerOptions): Promise<{ port: number; close(): Promise<void> }> {
  const { store } = o;
  const pkg = loadProtos() as unknown as { etcdserverpb: Record<string, { service: grpc.ServiceDefinition }> };
  const pb = pkg.etcdserverpb;
  const header = (revision = store.revision) => ({
    cluster_id: o.encoderIdentity.clusterId,
    member_id: o.encoderIdentity.memberId,
    revision: String(revision),
    raft_term: o.encoderIdentity.raftTerm,
  });
  const kvOut = (kv: KeyValue, keysOnly = false) => ({
    key: Buffer.from(kv.key, 'latin1'),
    create_revision: String(kv.createRevision),
    mod_revision: String(kv.modRevision),
    version: String(kv.version),
    // A view, not a copy: values are immutable and shared by every watcher's queued messages.
    value: keysOnly ? Buffer.alloc(0) : Buffer.from(kv.value.buffer, kv.value.byteOffset, kv.value.byteLength),
    lease: kv.lease,
  });
  const rangeOut = (r: RangeResult, revision = r.revision) => ({
    header: header(revision),
    kvs: r.kvs.map((kv) => kvOut(kv, r.keysOnly)),
    more: r.more,
    count: String(r.count),
  });
  const txnOut = (r: TxnResult): object => ({
    header: header(r.revision),
    succeeded: r.succeeded,
    responses: r.responses.map((op: ResponseOp) => {
      if ('range' in op) return { response_range: rangeOut(op.range) };
      if ('put' in op) return { response_put: { header: header(op.put.revision), ...(op.put.prevKv ? { prev_kv: kvOut(op.put.prevKv) } : {}) } };
      if ('deleteRange' in op) {
        return { response_delete_range: { header: header(op.deleteRange.revision), deleted: String(op.deleteRange.deleted), prev_kvs: op.deleteRange.prevKvs.map((kv) => kvOut(kv)) } };
      }
      return { response_txn: txnOut(op.txn) };
    }),
  });
  const eventOut = (e: StoreEvent, prevKv: boolean) => ({
    type: e.type === 'DELETE' ? 1 : 0,
    kv: e.type === 'PUT' ? kvOut(e.kv) : { key: Buffer.from(e.kv.key, 'latin1'), mod_revision: String(e.kv.modRevision) },
    ...(prevKv && e.prevKv ? { prev_kv: kvOut(e.prevKv) } : {}),
  });

  /** Runs a unary handler, answering store/API errors with etcd's gRPC status and message. */
  function unary<Req>(fn: (req: Req) => object): grpc.handleUnaryCall<Req, object> {
    return (call, callback) => {
      try {
        callback(null, fn(call.request));
      } catch (err) {
        callback(grpcError(err, o.logger));
      }
    };
  }
  const refuseInReadOnly = () => {
    if (o.readOnly) throw etcdErrors.permissionDenied();
  };

  const server = new grpc.Server();
  server.addService(pb.KV!.service, {
    Range: unary((req) => rangeOut(store.range(toRange(fromGrpc(req, schema.RangeRequest))))),
    Put: unary((req) => {
      const put = toPut(fromGrpc(req, schema.PutRequest));
      if (o.readOnly?.admitPut(put, store.range({ key: put.key }).kvs[0]) === 'skip') return { header: header() };
      const r = store.put(put);
      return { header: header(r.revision), ...(r.prevKv ? { prev_kv: kvOut(r.prevKv) } : {}) };
    }),
    DeleteRange: unary((req) => {
      refuseInReadOnly();
      const r = store.deleteRange(toDeleteRange(fromGrpc(req, schema.DeleteRangeRequest)));
      return { header: header(r.revision), deleted: String(r.deleted), prev_kvs: r.prevKvs.map((kv) => kvOut(kv)) };
    }),
    Txn: unary((req) => {
      const t = toTxn(fromGrpc(req, schema.TxnRequest));
      if (txnWrites(t)) refuseInReadOnly();
      return txnOut(store.txn(t));
    }),
    Compact: unary((req) => {
      refuseInReadOnly();
      return { header: header(store.compact(int(fromGrpc(req, schema.CompactionRequest).revision))) };
    }),
  });

  server.addService(pb.Watch!.service, {
    Watch: grpcWatch({ store, header, eventOut, decode: (raw) => fromGrpc(raw, schema.WatchRequest), budget: o.budget, logger: o.logger }),
  });

  server.addService(pb.Lease!.service, {
    LeaseGrant: unary((req) => {
      refuseInReadOnly();
      const d = fromGrpc(req, schema.LeaseGrantRequest);
      const g = store.grantLease(int(d.TTL), typeof d.ID === 'bigint' ? d.ID.toString() : undefined);
      return { header: header(), ID: g.id, TTL: String(g.ttl) };
    }),
    LeaseRevoke: unary((req) => {
      refuseInReadOnly();
      const d = fromGrpc(req, schema.LeaseIdRequest);
      return { header: header(store.revokeLease(String(d.ID ?? 0n))) };
    }),
    LeaseTimeToLive: unary((req) => {
      const d = fromGrpc(req, schema.LeaseTimeToLiveRequest);
      const info = store.leaseTimeToLive(String(d.ID ?? 0n));
      return {
        header: header(),
        ID: info.id,
        TTL: String(info.ttl),
        grantedTTL: String(info.grantedTtl),
        keys: d.keys === true ? info.keys.map((k) => Buffer.from(k, 'latin1')) : [],
      };
    }),
    LeaseLeases: unary(() => ({ header: header(), leases: store.leaseIds().map((id) => ({ ID: id })) })),
    LeaseKeepAlive: (call: grpc.ServerDuplexStream<unknown, object>) => {
      call.on('data', (raw: unknown) => {
        const id = String(fromGrpc(raw, schema.LeaseIdRequest).ID ?? 0n);
        const ttl = store.keepAliveLease(id);
        call.write({ header: header(), ID: id, TTL: String(ttl ?? 0) });
      });
      call.on('end', () => call.end());
      call.on('error', () => {});
    },
  });

  server.addService(pb.Maintenance!.service, {
    Status: unary(() => {
      const size = String(16384 + store.size * 512);
      return {
        header: header(),
        version: ETCD_SERVER_VERSION,
        dbSize: size,
        leader: o.encoderIdentity.memberId,
        raftIndex: String(store.revision + 3),
        raftTerm: o.encoderIdentity.raftTerm,
        raftAppliedIndex: String(store.revision + 3),
        dbSizeInUse: size,
      };
    }),
  });

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${o.host.includes(':') ? `[${o.host}]` : o.host}:${o.port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    );
  });
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
        setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 500).unref();
      }),
  };
}

function grpcError(err: unknown, logger: Logger): grpc.ServiceError {
  let e: ApiError;
  try {
    e = toApiError(err);
  } catch {
    logger.error({ err }, 'etcd gRPC: unexpected failure');
    e = new ApiError(String((err as Error)?.message ?? err), 2, 500);
  }
  const status = GRPC_STATUS[e.grpcCode] ?? grpc.status.UNKNOWN;
  return Object.assign(new Error(e.message), { code: status, details: e.message, metadata: new grpc.Metadata() }) as grpc.ServiceError;
}
