import type { Command } from 'commander';
import { pino } from 'pino';
import { CliError } from '../../cli/errors.js';
import { parseHostPort, type HostPort } from '../../cli/host-port.js';
import { DEFAULT_MAX_LEASES } from '../store/leases.js';
import { KvStore } from '../store/store.js';
import { DEFAULT_RANGE_CACHE_BYTES } from './range-cache.js';
import { startEtcdServer } from './server.js';
import { DEFAULT_WATCH_BUFFER_LIMITS } from './watch-budget.js';

/** `host:port` (an IPv6 address in brackets) → parts; a bare port means loopback. */
export function parseListen(flag: string, value: string): HostPort {
  if (/^\d{1,5}$/.test(value) && Number(value) <= 65535) return { host: '127.0.0.1', port: Number(value) };
  const parsed = parseHostPort(value);
  if ('problem' in parsed) throw new CliError(`${flag}: ${parsed.problem}, got "${value.slice(0, 60)}"`);
  return parsed;
}

function positiveInt(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new CliError(`${flag}: expected a positive whole number, got "${value.slice(0, 40)}"`);
  return n;
}

/** `10m`, `1s`, `500ms`, or plain milliseconds. */
export function parseDuration(flag: string, value: string): number {
  const m = /^(\d+)(ms|s|m|h)?$/.exec(value);
  if (!m) throw new CliError(`${flag}: expected a duration like 500ms, 1s, 10m; got "${value.slice(0, 40)}"`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 'ms') as 'ms'];
  if (n <= 0) throw new CliError(`${flag}: must be more than zero`);
  return n * unit;
}

/**
 * `clock`: microseconds since the epoch. A restarted emulator then starts above every revision the
 * previous process handed out (it would need a million writes a second to outrun the clock), so a
 * client watching from its last revision is told "compacted" and reloads instead of waiting for a
 * revision the new store reaches much later, if ever. Stays below 2^53 until the year 2255.
 */
export function parseInitialRevision(value: string, nowMs = Date.now()): number {
  if (value === 'clock') return nowMs * 1000;
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) {
    throw new CliError(`--initial-revision: expected "clock" or a whole number from 1, got "${value.slice(0, 40)}"`);
  }
  return n;
}

interface EtcdFlags {
  listen: string;
  grpcListen?: string;
  readOnly: boolean;
  maxHistory: string;
  maxHistoryBytes: string;
  progressNotifyInterval: string;
  rootPasswordEnv?: string;
  logLevel: string;
  initialRevision: string;
  maxLeases: string;
  watchBufferBytes: string;
  watchBufferTotalBytes: string;
  watchDrainGrace: string;
  rangeCacheBytes: string;
}

/** `apisix-mesh etcd`: the revisioned store and its etcd v3 API on their own. */
export function registerEtcdCommand(program: Command): void {
  program
    .command('etcd')
    .description(
      'run the revisioned store and its etcd v3 API on its own, starting empty: the HTTP/JSON gateway ' +
        'APISIX uses (/version, /v3/kv/*, /v3/watch, /v3/lease/*, /v3/auth/*) and, with --grpc-listen, ' +
        'the gRPC services etcdctl uses. Nothing is kept on disk.',
    )
    .option('--listen <host:port>', 'address of the HTTP/JSON gateway (loopback unless told otherwise)', '127.0.0.1:2379')
    .option('--grpc-listen <host:port>', 'also serve gRPC (KV, Watch, Lease, Maintenance) for etcdctl on this address')
    .option('--read-only', 'refuse writes with etcd\'s "permission denied", except APISIX\'s init_dir markers (how the agent serves APISIX)', false)
    .option('--max-history <events>', 'events kept for watches and reads in the past; older revisions are compacted', '100000')
    .option('--max-history-bytes <bytes>', 'bytes of keys and values kept in that history', String(256 * 1024 * 1024))
    .option('--progress-notify-interval <duration>', 'interval of progress messages for watches that ask for them (etcd: 10m)', '10m')
    .option('--root-password-env <name>', 'turn auth on: a user "root" whose password is in this environment variable')
    .option('--initial-revision <clock|n>', 'revision of the empty store: "clock" (microseconds since the epoch: a restart never goes back, clients watching from an old revision are told "compacted") or a number (1: a fresh etcd\'s numbering)', 'clock')
    .option('--max-leases <n>', 'live leases at most; further grants get etcd\'s "database space exceeded"', String(DEFAULT_MAX_LEASES))
    .option('--watch-buffer-bytes <bytes>', 'bytes a watch stream may hold for a client that does not read them; past it its watches are cancelled as compacted (the client reloads and rewatches)', String(DEFAULT_WATCH_BUFFER_LIMITS.streamBytes))
    .option('--watch-buffer-total-bytes <bytes>', 'the same for all watch streams together; past it the stream with the largest backlog is closed', String(DEFAULT_WATCH_BUFFER_LIMITS.totalBytes))
    .option('--watch-drain-grace <duration>', 'how long a cancelled watch stream may take to read what it was sent before it is disconnected', `${DEFAULT_WATCH_BUFFER_LIMITS.drainGraceMs / 1000}s`)
    .option('--range-cache-bytes <bytes>', 'bytes of encoded range answers kept for the current revision', String(DEFAULT_RANGE_CACHE_BYTES))
    .option('--log-level <level>', 'debug, info, warn or error (debug logs each client connection\'s first request)', 'info')
    .action(async (flags: EtcdFlags) => {
      const listen = parseListen('--listen', flags.listen);
      const grpc = flags.grpcListen ? parseListen('--grpc-listen', flags.grpcListen) : undefined;
      if (grpc && grpc.host !== listen.host) throw new CliError('--grpc-listen: must use the same host as --listen');
      if (!['debug', 'info', 'warn', 'error'].includes(flags.logLevel)) {
        throw new CliError(`--log-level: expected debug, info, warn or error, got "${flags.logLevel}"`);
      }
      if (flags.rootPasswordEnv && grpc) {
        throw new CliError('--root-password-env: auth is only served on the HTTP gateway; drop --grpc-listen to use it');
      }
      let rootPassword: string | undefined;
      if (flags.rootPasswordEnv) {
        rootPassword = process.env[flags.rootPasswordEnv];
        if (!rootPassword) throw new CliError(`--root-password-env: environment variable ${flags.rootPasswordEnv} is empty or unset`);
      }
      const store = new KvStore({
        maxHistoryEvents: positiveInt('--max-history', flags.maxHistory),
        maxHistoryBytes: positiveInt('--max-history-bytes', flags.maxHistoryBytes),
        maxLeases: positiveInt('--max-leases', flags.maxLeases),
        initialRevision: parseInitialRevision(flags.initialRevision),
      });
      const limits = {
        watchBufferBytes: positiveInt('--watch-buffer-bytes', flags.watchBufferBytes),
        watchBufferTotalBytes: positiveInt('--watch-buffer-total-bytes', flags.watchBufferTotalBytes),
        watchDrainGraceMs: parseDuration('--watch-drain-grace', flags.watchDrainGrace),
        rangeCacheBytes: positiveInt('--range-cache-bytes', flags.rangeCacheBytes),
      };
      const progressNotifyIntervalMs = parseDuration('--progress-notify-interval', flags.progressNotifyInterval);
      const logger = pino({ level: flags.logLevel, base: { cmd: 'etcd' } }, pino.destination(2));
      let server;
      try {
        server = await startEtcdServer({
          store,
          host: listen.host,
          port: listen.port,
          ...(grpc ? { grpcPort: grpc.port } : {}),
          readOnly: flags.readOnly,
          logger,
          progressNotifyIntervalMs,
          ...limits,
          ...(rootPassword !== undefined ? { rootPassword } : {}),
        });
      } catch (err) {
        throw new CliError(`cannot listen: ${(err as Error).message}`, 1);
      }
      const stop = (signal: string): void => {
        logger.info({ signal }, 'etcd API: shutting down');
        void server.close().then(() => process.exit(0));
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
}
