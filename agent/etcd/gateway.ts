import type { IncomingMessage, ServerResponse } from 'node:http';
import type { KvStore } from '../store/store.js';
import { ApiError, etcdErrors, toApiError } from './api-error.js';
import type { Auth } from './auth.js';
import { ResponseEncoder } from './encode.js';
import { RangeCache, rangeCacheKey } from './range-cache.js';
import type { ReadOnlyWrites } from './read-only.js';
import { sendApiError, sendJson, sendStreamedOnce, sendText, corsHeaders } from './http-framing.js';
import * as schema from './proto-json.js';
import { decodeBody, type Decoded } from './proto-json.js';
import { int, toDeleteRange, toPut, toRange, toTxn, txnWrites } from './requests.js';
import type { WatchStreams } from './watch-stream.js';

export const ETCD_SERVER_VERSION = '3.4.23';
export const ETCD_CLUSTER_VERSION = '3.4.0';
/** etcd's default --max-request-bytes. */
export const MAX_REQUEST_BYTES = 1.5 * 1024 * 1024;
/** Bodies past this are not even read (etcd's gRPC limit adds 512 KiB of overhead). */
export const MAX_BODY_BYTES = MAX_REQUEST_BYTES * 2 + 512 * 1024;

export interface Logger {
  debug(obj: object | string, msg?: string): void;
  info(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
  error(obj: object | string, msg?: string): void;
}

export interface GatewayContext {
  store: KvStore;
  encoder: ResponseEncoder;
  auth: Auth;
  /** Set when the API is read-only: the writes it still admits. */
  readOnly: ReadOnlyWrites | undefined;
  logger: Logger;
  watches: WatchStreams;
  clientUrl: () => string;
  /** Encoded range answers kept for the current revision. */
  rangeCache: RangeCache;
}

type Unary = (ctx: GatewayContext, body: Decoded, token: string | undefined) => string;
interface Route {
  schema: schema.MessageSchema;
  run: Unary;
  /** Keepalive answers like a stream message. */
  streamed?: boolean;
}

function refuseInReadOnly(ctx: GatewayContext): void {
  if (ctx.readOnly) throw etcdErrors.permissionDenied();
}

function header(ctx: GatewayContext): string {
  return ctx.encoder.headerOnly(ctx.store.revision);
}

const routes: Record<string, Route> = {
  'kv/range': {
    schema: schema.RangeRequest,
    run: (ctx, d, token) => {
      const r = toRange(d);
      ctx.auth.check(token, 'READ', r.key, r.rangeEnd);
      return ctx.encoder.range(ctx.store.range(r));
    },
  },
  'kv/put': {
    schema: schema.PutRequest,
    run: (ctx, d, token) => {
      const p = toPut(d);
      if (p.key.length + (p.value?.byteLength ?? 0) > MAX_REQUEST_BYTES) throw etcdErrors.requestTooLarge();
      ctx.auth.check(token, 'WRITE', p.key);
      if (ctx.readOnly?.admitPut(p, ctx.store.range({ key: p.key }).kvs[0]) === 'skip') return header(ctx);
      return ctx.encoder.put(ctx.store.put(p));
    },
  },
  'kv/deleterange': {
    schema: schema.DeleteRangeRequest,
    run: (ctx, d, token) => {
      const r = toDeleteRange(d);
      if (r.key.length > 0) ctx.auth.check(token, 'WRITE', r.key, r.rangeEnd);
      refuseInReadOnly(ctx);
      return ctx.encoder.deleteRange(ctx.store.deleteRange(r));
    },
  },
  'kv/txn': {
    schema: schema.TxnRequest,
    run: (ctx, d, token) => {
      const t = toTxn(d);
      ctx.auth.checkToken(token);
      if (txnWrites(t)) refuseInReadOnly(ctx);
      return ctx.encoder.txn(ctx.store.txn(t));
    },
  },
  'kv/compaction': {
    schema: schema.CompactionRequest,
    run: (ctx, d, token) => {
      ctx.auth.checkAdmin(token);
      refuseInReadOnly(ctx);
      return ctx.encoder.headerOnly(ctx.store.compact(int(d.revision)));
    },
  },
  'lease/grant': {
    schema: schema.LeaseGrantRequest,
    run: (ctx, d, token) => {
      ctx.auth.checkToken(token);
      refuseInReadOnly(ctx);
      const g = ctx.store.grantLease(int(d.TTL), typeof d.ID === 'bigint' ? d.ID.toString() : undefined);
      return `{"header":${ctx.encoder.header(ctx.store.revision)},"ID":"${g.id}","TTL":"${g.ttl}"}`;
    },
  },
  'lease/revoke': {
    schema: schema.LeaseIdRequest,
    run: (ctx, d, token) => {
      ctx.auth.checkToken(token);
      refuseInReadOnly(ctx);
      return ctx.encoder.headerOnly(ctx.store.revokeLease(leaseId(d)));
    },
  },
  'lease/keepalive': {
    schema: schema.LeaseIdRequest,
    streamed: true,
    run: (ctx, d, token) => {
      ctx.auth.checkToken(token);
      const id = leaseId(d);
      const ttl = ctx.store.keepAliveLease(id);
      return `{"header":${ctx.encoder.header(ctx.store.revision)},"ID":"${id}"${ttl ? `,"TTL":"${ttl}"` : ''}}`;
    },
  },
  'lease/timetolive': {
    schema: schema.LeaseTimeToLiveRequest,
    run: (ctx, d, token) => {
      ctx.auth.checkToken(token);
      const info = ctx.store.leaseTimeToLive(leaseId(d));
      let s = `{"header":${ctx.encoder.header(ctx.store.revision)},"ID":"${info.id}","TTL":"${info.ttl}"`;
      if (info.grantedTtl) s += `,"grantedTTL":"${info.grantedTtl}"`;
      if (d.keys === true && info.keys.length > 0) {
        s += `,"keys":[${info.keys.map((k) => `"${Buffer.from(k, 'latin1').toString('base64')}"`).join(',')}]`;
      }
      return s + '}';
    },
  },
  'lease/leases': {
    schema: [],
    run: (ctx, _d, token) => {
      ctx.auth.checkToken(token);
      const ids = ctx.store.leaseIds();
      const list = ids.length ? `,"leases":[${ids.map((id) => `{"ID":"${id}"}`).join(',')}]` : '';
      return `{"header":${ctx.encoder.header(ctx.store.revision)}${list}}`;
    },
  },
  'auth/authenticate': {
    schema: schema.AuthenticateRequest,
    run: (ctx, d) => {
      const token = ctx.auth.authenticate(String(d.name ?? ''), String(d.password ?? ''));
      return `{"header":${ctx.encoder.header(ctx.store.revision)},"token":${JSON.stringify(token)}}`;
    },
  },
  // Auth changes are writes: in read-only mode a process in the pod could otherwise turn auth on
  // and leave APISIX with "user name is empty" on every read.
  'auth/enable': { schema: [], run: (ctx, _d, t) => (refuseInReadOnly(ctx), ctx.auth.checkAdmin(t), ctx.auth.enable(), header(ctx)) },
  'auth/disable': { schema: [], run: (ctx, _d, t) => (refuseInReadOnly(ctx), ctx.auth.checkAdmin(t), ctx.auth.disable(), header(ctx)) },
  'auth/user/add': {
    schema: schema.AuthUserAddRequest,
    run: (ctx, d, t) => (refuseInReadOnly(ctx), ctx.auth.checkAdmin(t), ctx.auth.addUser(String(d.name ?? ''), String(d.password ?? '')), header(ctx)),
  },
  'auth/role/add': {
    schema: schema.AuthRoleAddRequest,
    run: (ctx, d, t) => (refuseInReadOnly(ctx), ctx.auth.checkAdmin(t), ctx.auth.addRole(String(d.name ?? '')), header(ctx)),
  },
  'auth/user/grant': {
    schema: schema.AuthUserGrantRoleRequest,
    run: (ctx, d, t) => (refuseInReadOnly(ctx), ctx.auth.checkAdmin(t), ctx.auth.grantRole(String(d.user ?? ''), String(d.role ?? '')), header(ctx)),
  },
  'auth/role/grant': {
    schema: schema.AuthRoleGrantPermissionRequest,
    run: (ctx, d, t) => {
      refuseInReadOnly(ctx);
      ctx.auth.checkAdmin(t);
      const perm = (d.perm ?? {}) as Decoded;
      const key = perm.key instanceof Buffer ? perm.key.toString('latin1') : '';
      const end = perm.range_end instanceof Buffer && perm.range_end.length ? perm.range_end.toString('latin1') : undefined;
      const type = typeof perm.permType === 'string' ? perm.permType : 'READ';
      ctx.auth.grantPermission(String(d.name ?? ''), type as 'READ', key, end);
      return header(ctx);
    },
  },
  'maintenance/status': {
    schema: [],
    run: (ctx, _d, token) => {
      ctx.auth.checkToken(token);
      const { memberId } = ctx.encoder.identity;
      const rev = ctx.store.revision;
      const size = 16384 + ctx.store.size * 512;
      return (
        `{"header":${ctx.encoder.header(rev)},"version":"${ETCD_SERVER_VERSION}","dbSize":"${size}",` +
        `"leader":"${memberId}","raftIndex":"${rev + 3}","raftTerm":"2","raftAppliedIndex":"${rev + 3}","dbSizeInUse":"${size}"}`
      );
    },
  },
  'cluster/member/list': {
    schema: [],
    run: (ctx) => {
      const { clusterId, memberId, raftTerm } = ctx.encoder.identity;
      const url = JSON.stringify(ctx.clientUrl());
      return (
        `{"header":{"cluster_id":"${clusterId}","member_id":"${memberId}","raft_term":"${raftTerm}"},` +
        `"members":[{"ID":"${memberId}","name":"apisix-mesh","peerURLs":[${url}],"clientURLs":[${url}]}]}`
      );
    },
  },
};
routes['kv/lease/revoke'] = routes['lease/revoke']!;
routes['kv/lease/timetolive'] = routes['lease/timetolive']!;
routes['kv/lease/leases'] = routes['lease/leases']!;

function leaseId(d: Decoded): string {
  return typeof d.ID === 'bigint' ? d.ID.toString() : '0';
}

export function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) tooBig = true;
      else chunks.push(c);
    });
    req.on('end', () => resolve(tooBig ? undefined : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/**
 * The HTTP/JSON side of etcd 3.4 as APISIX (lua-resty-etcd) uses it. Routing mirrors Go's mux
 * and grpc-gateway: `/version` and `/health` outside, everything else under `/v3` (and `/v3beta`).
 */
export function createGatewayHandler(ctx: GatewayContext): (req: IncomingMessage, res: ServerResponse) => void {
  const { rangeCache } = ctx;
  ctx.store.onRevision(() => rangeCache.clear());
  let lastCompact = ctx.store.compactRevision;

  return (req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q >= 0 ? url.slice(0, q) : url;
    const method = req.method ?? 'GET';

    if (method === 'OPTIONS') {
      corsHeaders(res);
      res.setHeader('Content-Length', 0);
      res.end();
      return;
    }
    if (path.includes('//')) {
      corsHeaders(res);
      res.statusCode = 301;
      res.setHeader('Location', path.replace(/\/{2,}/g, '/') + (q >= 0 ? url.slice(q) : ''));
      res.setHeader('Content-Length', 0);
      res.end();
      return;
    }
    if (path === '/version') {
      if (method !== 'GET') return sendText(res, 405, 'Method Not Allowed\n', { Allow: 'GET' });
      corsHeaders(res);
      const body = `{"etcdserver":"${ETCD_SERVER_VERSION}","etcdcluster":"${ETCD_CLUSTER_VERSION}"}`;
      res.setHeader('Content-Type', 'application/json');
      res.setHeader('Content-Length', Buffer.byteLength(body));
      res.end(body);
      return;
    }
    if (path === '/health') {
      corsHeaders(res);
      res.setHeader('Content-Length', 17);
      res.setHeader('Content-Type', 'text/plain; charset=utf-8');
      res.end('{"health":"true"}');
      return;
    }
    const m = /^\/(v3|v3beta)\/(.*)$/.exec(path);
    if (!m) return sendText(res, 404, '404 page not found\n');
    const name = m[2]!;
    const token = typeof req.headers.authorization === 'string' ? req.headers.authorization : undefined;
    if (name === 'watch') {
      if (method !== 'POST') return sendText(res, 405, 'Method Not Allowed\n');
      ctx.watches.handle(req, res, token);
      return;
    }
    const route = routes[name];
    if (!route) return sendText(res, 404, 'Not Found\n');
    if (method !== 'POST') return sendText(res, 405, 'Method Not Allowed\n');

    readBody(req).then(
      (buf) => {
        try {
          if (buf === undefined) throw etcdErrors.requestTooLarge();
          const text = buf.toString('utf8');
          if (name === 'kv/range') {
            if (ctx.store.compactRevision !== lastCompact) {
              lastCompact = ctx.store.compactRevision;
              rangeCache.clear();
            }
            const decoded = decodeBody(text, route.schema);
            const cacheKey = rangeCacheKey(token, toRange(decoded));
            const cached = rangeCache.get(cacheKey);
            if (cached) return sendJson(res, cached);
            const out = Buffer.from(route.run(ctx, decoded, token));
            rangeCache.set(cacheKey, out);
            return sendJson(res, out);
          }
          const out = route.run(ctx, decodeBody(text, route.schema), token);
          if (route.streamed) sendStreamedOnce(res, out);
          else sendJson(res, out);
        } catch (err) {
          let apiErr: ApiError;
          try {
            apiErr = toApiError(err);
          } catch {
            ctx.logger.error({ err, path }, 'etcd gateway: unexpected failure');
            apiErr = new ApiError(String((err as Error)?.message ?? err), 2, 500);
          }
          sendApiError(res, apiErr);
        }
      },
      () => res.destroy(),
    );
  };
}
