import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import type { KvStore } from '../store/store.js';
import { Auth } from './auth.js';
import { ResponseEncoder, type ServerIdentity } from './encode.js';
import { createGatewayHandler, type Logger } from './gateway.js';
import { DEFAULT_APISIX_PREFIX, ReadOnlyWrites } from './read-only.js';
import { keyFromText } from '../store/keys.js';
import { WatchStreams } from './watch-stream.js';
import { DEFAULT_WATCH_BUFFER_LIMITS, WatchBudget } from './watch-budget.js';
import { MAX_BODY_BYTES } from './gateway.js';
import { DEFAULT_RANGE_CACHE_BYTES, RangeCache } from './range-cache.js';

export type { Logger } from './gateway.js';

export interface EtcdServerOptions {
  store: KvStore;
  /** Default 127.0.0.1: the API is for APISIX in the same pod. */
  host?: string;
  /** 0 = any free port. */
  port: number;
  /** gRPC (etcdctl) on its own port; off when undefined. */
  grpcPort?: number;
  /** Refuse writes with etcd's permission error, except APISIX's init_dir markers. */
  readOnly?: boolean;
  /** Where those markers may be (default `/apisix/`). */
  apisixPrefix?: string;
  logger?: Logger;
  /** Progress notifications for watches that ask for them (etcd's default: 10 minutes). */
  progressNotifyIntervalMs?: number;
  /** Turn on auth with a root user (etcd's simple auth). */
  rootPassword?: string;
  identity?: Partial<ServerIdentity>;
  /** Bytes a watch stream (HTTP or gRPC) may have queued for a client that does not read; past it, its watches are cancelled. */
  watchBufferBytes?: number;
  /** The same for all watch streams together; past it, the stream with the largest backlog is closed. */
  watchBufferTotalBytes?: number;
  /** How long a cancelled watch stream may take to drain before its connection is closed. */
  watchDrainGraceMs?: number;
  /** Longest a watch request message may take to arrive whole (default 10 s). */
  watchRequestTimeoutMs?: number;
  /** Bytes of encoded range answers kept for the current revision (default 64 MiB). */
  rangeCacheBytes?: number;
}

export interface EtcdServer {
  httpPort: number;
  grpcPort?: number;
  /** Bytes queued for watch clients that have not read them yet (HTTP and gRPC, shared payloads once). */
  readonly watchQueuedBytes: number;
  /** Bytes held by the range answer cache. */
  readonly rangeCacheBytes: number;
  /** Client connections open on the HTTP port (APISIX's watches and reads). */
  clientConnections(): Promise<number>;
  close(): Promise<void>;
}

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} };

function randomUint64(): string {
  return (randomBytes(8).readBigUInt64BE() & 0x7fffffffffffffffn).toString();
}

export async function startEtcdServer(options: EtcdServerOptions): Promise<EtcdServer> {
  if (options.rootPassword !== undefined && options.grpcPort !== undefined) {
    // The gRPC side has no Auth service: serving it would bypass the password.
    throw new Error('auth (rootPassword) is only supported on the HTTP gateway; do not combine it with grpcPort');
  }
  const host = options.host ?? '127.0.0.1';
  const logger = options.logger ?? silent;
  const store = options.store;
  const encoder = new ResponseEncoder({
    clusterId: options.identity?.clusterId ?? randomUint64(),
    memberId: options.identity?.memberId ?? randomUint64(),
    raftTerm: options.identity?.raftTerm ?? '2',
  });
  const auth = new Auth();
  if (options.rootPassword !== undefined) {
    auth.addRole('root');
    auth.addUser('root', options.rootPassword);
    auth.grantRole('root', 'root');
    auth.enable();
  }
  const budget = new WatchBudget({
    streamBytes: options.watchBufferBytes ?? DEFAULT_WATCH_BUFFER_LIMITS.streamBytes,
    totalBytes: options.watchBufferTotalBytes ?? DEFAULT_WATCH_BUFFER_LIMITS.totalBytes,
    drainGraceMs: options.watchDrainGraceMs ?? DEFAULT_WATCH_BUFFER_LIMITS.drainGraceMs,
  });
  const watches = new WatchStreams({
    store,
    encoder,
    auth,
    progressNotifyIntervalMs: options.progressNotifyIntervalMs ?? 10 * 60 * 1000,
    budget,
    requestTimeoutMs: options.watchRequestTimeoutMs ?? 10_000,
    maxRequestBytes: MAX_BODY_BYTES,
    logger,
  });
  const readOnly = options.readOnly ? new ReadOnlyWrites(keyFromText(options.apisixPrefix ?? DEFAULT_APISIX_PREFIX)) : undefined;
  let httpPort = 0;
  const rangeCache = new RangeCache(options.rangeCacheBytes ?? DEFAULT_RANGE_CACHE_BYTES);
  const handler = createGatewayHandler({
    rangeCache,
    store,
    encoder,
    auth,
    readOnly,
    logger,
    watches,
    clientUrl: () => `http://${host}:${httpPort}`,
  });

  const server: Server = createServer(handler);
  // Watches are long-lived requests (and their bodies may stream): no request deadline.
  server.requestTimeout = 0;
  server.keepAliveTimeout = 65_000;
  const seen = new WeakSet<Socket>();
  server.on('request', (req) => {
    if (seen.has(req.socket)) return;
    seen.add(req.socket);
    logger.debug(
      { client: `${req.socket.remoteAddress}:${req.socket.remotePort}`, method: req.method, path: req.url },
      'etcd API: first request from a client connection',
    );
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  httpPort = (server.address() as AddressInfo).port;

  let grpc: { port: number; close(): Promise<void> } | undefined;
  if (options.grpcPort !== undefined) {
    const { startGrpcServer } = await import('./grpc.js');
    grpc = await startGrpcServer({ store, encoderIdentity: encoder.identity, host, port: options.grpcPort, readOnly, logger, budget });
  }

  // Leases run out on the wall clock; expiry is a write (DELETE events) like any other.
  const leaseTimer = setInterval(() => {
    try {
      const expired = store.expireLeases();
      if (expired.length) logger.info({ leases: expired }, 'etcd API: leases expired, their keys deleted');
    } catch (err) {
      logger.error({ err }, 'etcd API: lease expiry failed');
    }
  }, 250);
  leaseTimer.unref();

  logger.info(
    { host, httpPort, grpcPort: grpc?.port, readOnly: options.readOnly ?? false },
    // etcd serves gRPC and HTTP on one port; here etcdctl against the HTTP port would just time out
    grpc ? 'etcd API listening' : 'etcd API listening (HTTP/JSON only: gRPC, which etcdctl speaks, is not served)',
  );

  return {
    httpPort,
    ...(grpc ? { grpcPort: grpc.port } : {}),
    get watchQueuedBytes() {
      return budget.total;
    },
    get rangeCacheBytes() {
      return rangeCache.bytes;
    },
    clientConnections: () => new Promise<number>((resolve) => server.getConnections((err, count) => resolve(err ? 0 : count))),
    async close() {
      clearInterval(leaseTimer);
      watches.shutdown();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      setTimeout(() => server.closeAllConnections(), 50).unref();
      await Promise.all([closed, grpc?.close()]);
    },
  };
}
