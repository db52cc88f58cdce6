import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { buildWebhookApp, type WebhookAppOptions } from './app.js';
import type { Readiness } from './health.js';
import { checkTlsPair, readTlsPair, secureContextOptions, watchTlsFiles, type TlsFiles, type TlsPair, type TlsPairSummary } from './tls.js';
import { DEFAULT_PORT } from './defaults.js';

export { DEFAULT_PORT };
export const DEFAULT_HOST = '0.0.0.0';
export const DEFAULT_RELOAD_INTERVAL_MS = 2000;
export const DEFAULT_DRAIN_TIMEOUT_MS = 20_000;

export interface WebhookServerOptions extends Omit<WebhookAppOptions, 'https' | 'readiness'> {
  /** 0 picks a free port; the bound one is logged and in `port`. */
  port?: number;
  host?: string;
  /** Files to serve and watch, or a pair held in memory (replaced with `updateTls`). */
  tls: { files: TlsFiles; reloadIntervalMs?: number } | { pair: TlsPair };
  /** How long `close()` waits for requests in flight before cutting connections. */
  drainTimeoutMs?: number;
}

export interface WebhookServer {
  app: FastifyInstance;
  host: string;
  port: number;
  /** `https://host:port`, with a loopback host for wildcard binds. */
  url: string;
  /**
   * Serves `pair` from the next TLS handshake on, without a restart (the certificate manager calls
   * this on renewal). Throws, keeping the current pair, when the new one cannot serve.
   */
  updateTls(pair: TlsPair): TlsPairSummary;
  /** Stops accepting connections, lets requests in flight finish, then resolves. */
  close(): Promise<{ forced: boolean }>;
}

export async function startWebhookServer(opts: WebhookServerOptions): Promise<WebhookServer> {
  // Both throw TlsPairError: nothing has started yet.
  const initialPair = 'pair' in opts.tls ? opts.tls.pair : await readTlsPair(opts.tls.files);
  const initialSummary = checkTlsPair(initialPair);
  const readiness: Readiness = { ready: false, reason: 'starting' };
  const app = buildWebhookApp({ ...opts, https: secureContextOptions(initialPair), readiness });
  const log = app.log;
  const https = app.server as unknown as HttpsServer;

  const updateTls = (pair: TlsPair): TlsPairSummary => {
    const summary = checkTlsPair(pair);
    https.setSecureContext(secureContextOptions(pair));
    return summary;
  };

  let stopWatching = (): void => {};
  if ('files' in opts.tls) {
    const files = opts.tls.files;
    stopWatching = watchTlsFiles(files, opts.tls.reloadIntervalMs ?? DEFAULT_RELOAD_INTERVAL_MS, () => {
      readTlsPair(files)
        .then((pair) => {
          const summary = updateTls(pair);
          log.info({ ...files, ...summary }, 'reloaded the serving certificate');
        })
        .catch((err: Error) => {
          log.warn({ ...files, reason: err.message }, 'kept the previous serving certificate: the new files cannot serve');
        });
    });
  }

  const host = opts.host ?? DEFAULT_HOST;
  try {
    await app.listen({ port: opts.port ?? DEFAULT_PORT, host });
  } catch (err) {
    stopWatching();
    await app.close().catch(() => {});
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`cannot listen on ${host}:${opts.port ?? DEFAULT_PORT}: ${code === 'EADDRINUSE' ? 'the address is in use' : (err as Error).message}`);
  }
  const port = (https.address() as AddressInfo).port;
  readiness.ready = true;
  delete readiness.reason;
  const urlHost = host === '0.0.0.0' || host === '::' ? 'localhost' : host.includes(':') ? `[${host}]` : host;
  const url = `https://${urlHost}:${port}`;
  log.info({ host, port, url, certificate: initialSummary }, 'webhook listening');

  let closing: Promise<{ forced: boolean }> | undefined;
  const close = (): Promise<{ forced: boolean }> => {
    closing ??= (async () => {
      readiness.ready = false;
      readiness.reason = 'shutting down';
      stopWatching();
      log.info('draining: no new connections, waiting for requests in flight');
      let forced = false;
      const deadline = setTimeout(() => {
        forced = true;
        log.warn({ drainTimeoutMs: opts.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS }, 'drain timed out, closing remaining connections');
        https.closeAllConnections();
      }, opts.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS);
      // A keep-alive connection whose request was already under way when the drain began is not
      // idle at close() time and would be kept open after its answer until the keep-alive timeout;
      // close such connections as soon as they fall idle.
      const reaper = setInterval(() => https.closeIdleConnections(), 50);
      try {
        await app.close();
      } finally {
        clearTimeout(deadline);
        clearInterval(reaper);
      }
      log.info({ forced }, 'webhook stopped');
      return { forced };
    })();
    return closing;
  };

  return { app, host, port, url, updateTls, close };
}
