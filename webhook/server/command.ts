import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { CliError } from '../../cli/errors.js';
import type { InjectionConfig } from '../config/index.js';
import type { LogLevel } from './app.js';
import type { WebhookServerOptions } from './server.js';
import { DEFAULT_PORT } from './defaults.js';
import {
  addClusterCertificateOptions,
  startClusterCertificates,
  wantsClusterCertificates,
  type ClusterCertificateFlags,
} from '../cluster-certs/command-options.js';

interface WebhookFlags extends ClusterCertificateFlags {
  port: string;
  host?: string;
  tlsCert?: string;
  tlsKey?: string;
  selfSigned?: boolean;
  selfSignedDir?: string;
  config?: string;
  logLevel: LogLevel;
  tlsReloadInterval: string;
  drainTimeout: string;
}

const SELF_SIGNED_NAMES = ['localhost', '127.0.0.1', '::1'];
const SELF_SIGNED_DAYS = 30;

/** `apisix-mesh webhook`: the mutating admission webhook over HTTPS. */
export function registerWebhookCommand(program: Command): void {
  const command = program
    .command('webhook')
    .description(
      'run the mutating admission webhook over HTTPS (TLS 1.2+): POST /inject (AdmissionReview v1/v1beta1), ' +
        'GET /healthz, /readyz, /metrics. Give it a certificate with --tls-cert/--tls-key, or --self-signed ' +
        'for a local run. Logs are JSON lines on stdout; SIGTERM drains requests in flight, then exits.',
    )
    .option('--port <port>', 'TCP port to listen on; 0 picks a free one (the bound port is logged)', String(DEFAULT_PORT))
    .option(
      '--host <address>',
      'address to bind: 0.0.0.0 (default with --tls-cert: the Service reaches the pod on its own IP) or, ' +
        'with --self-signed, 127.0.0.1 (the generated certificate only names localhost); "::" for IPv6',
    )
    .option('--tls-cert <file>', 'PEM serving certificate (chain); reloaded when the file changes, no restart')
    .option('--tls-key <file>', 'PEM private key of --tls-cert; reloaded with it')
    .option(
      '--self-signed',
      `generate a CA and a ${SELF_SIGNED_DAYS}-day serving certificate for ${SELF_SIGNED_NAMES.join(', ')}; ` +
        'the CA is written to a file whose path is printed (clients trust it, as a caBundle)',
    )
    .option('--self-signed-dir <dir>', 'where --self-signed writes ca.crt (default: a new temporary directory)')
    .option('--config <file>', 'injection configuration (YAML); defaults apply to every field it leaves out')
    .addOption(
      new Option('--log-level <level>', 'log level; pod contents (the patch) are only logged at debug')
        .choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
        .default('info'),
    )
    .option('--tls-reload-interval <seconds>', 'how often the certificate files are checked for changes', '2')
    .option('--drain-timeout <seconds>', 'on SIGTERM/SIGINT, how long to wait for requests in flight', '20');
  addClusterCertificateOptions(command).action(async (flags: WebhookFlags) => {
      // Loaded here rather than at the top so that `apisix-mesh iptables` (the init container) and
      // `--help` do not pay for Fastify, prom-client and the injection at start-up.
      const [{ startWebhookServer }, { TlsPairError }, { createWebhookMetrics }] = await Promise.all([
        import('./server.js'),
        import('./tls.js'),
        import('./metrics.js'),
      ]);
      const port = parseInteger('--port', flags.port, 0, 65535);
      const reloadIntervalMs = parseSeconds('--tls-reload-interval', flags.tlsReloadInterval);
      const drainTimeoutMs = parseSeconds('--drain-timeout', flags.drainTimeout);
      const config = flags.config ? await loadConfig(flags.config) : undefined;
      // In a cluster without certificate files: certificates kept in a Secret (webhook/cluster-certs/).
      const metrics = createWebhookMetrics();
      const clusterCerts = wantsClusterCertificates(flags) ? await startClusterCertificates(flags, process.env, metrics.registry) : undefined;
      const tls = clusterCerts ? { pair: clusterCerts.initial } : await tlsSource(flags, reloadIntervalMs);
      const host = flags.host ?? (flags.selfSigned ? '127.0.0.1' : '0.0.0.0');

      let server;
      try {
        server = await startWebhookServer({ port, host, tls, drainTimeoutMs, logLevel: flags.logLevel, metrics, ...(config ? { config } : {}) });
      } catch (err) {
        clusterCerts?.stop();
        // A certificate that cannot be read or used is bad input (2); failing to listen is a failure (1).
        throw new CliError((err as Error).message, err instanceof TlsPairError ? 2 : 1);
      }
      clusterCerts?.follow((pair) => server.updateTls(pair), server.app.log);
      const stopped = await untilSignal(() => {
        clusterCerts?.stop();
        return server.close();
      });
      if (stopped.forced) throw new CliError('stopped after the drain timeout cut requests still in flight', 1);
    });
}

async function loadConfig(path: string): Promise<InjectionConfig> {
  const { loadInjectionConfig } = await import('../config/index.js');
  try {
    return await loadInjectionConfig(path);
  } catch (err) {
    throw new CliError((err as Error).message, 2);
  }
}

async function tlsSource(flags: WebhookFlags, reloadIntervalMs: number): Promise<WebhookServerOptions['tls']> {
  const files = flags.tlsCert !== undefined || flags.tlsKey !== undefined;
  if (flags.selfSigned && files) throw new CliError('--self-signed and --tls-cert/--tls-key exclude each other', 2);
  if (flags.selfSigned) return { pair: await selfSigned(flags.selfSignedDir) };
  if (!flags.tlsCert || !flags.tlsKey) {
    throw new CliError('the webhook serves HTTPS only: give --tls-cert and --tls-key, or --self-signed for a local run', 2);
  }
  return { files: { certFile: flags.tlsCert, keyFile: flags.tlsKey }, reloadIntervalMs };
}

async function selfSigned(dir: string | undefined): Promise<{ cert: string; key: string }> {
  // node-forge is only loaded for local runs; in a cluster the certificate comes from files.
  const { generateCa, generateServingCert } = await import('../certificates/generate.js');
  const ca = generateCa({ commonName: 'apisix-mesh-webhook-local-ca', validity: { days: SELF_SIGNED_DAYS } });
  const serving = generateServingCert(ca, SELF_SIGNED_NAMES, { days: SELF_SIGNED_DAYS });
  const caFile = join(dir ?? (await mkdtemp(join(tmpdir(), 'apisix-mesh-webhook-'))), 'ca.crt');
  try {
    if (dir !== undefined) await mkdir(dir, { recursive: true, mode: 0o755 }); // a new directory is made, as a user expects
    await writeFile(caFile, ca.certPem, { mode: 0o644 });
  } catch (err) {
    throw new CliError(`cannot write the CA certificate to ${caFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 2);
  }
  // stdout carries JSON log lines; this one is for the person at the terminal.
  process.stderr.write(`apisix-mesh webhook: self-signed CA written to ${caFile} (e.g. curl --cacert ${caFile} ...)\n`);
  return { cert: serving.certPem, key: serving.keyPem };
}

/** Resolves once SIGTERM or SIGINT arrived and `close` finished. */
function untilSignal<T>(close: () => Promise<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    const onSignal = (): void => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      close().then(resolve, reject);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

function parseInteger(flag: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isInteger(n) || n < min || n > max) {
    throw new CliError(`${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`, 2);
  }
  return n;
}

function parseSeconds(flag: string, value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) {
    throw new CliError(`${flag} must be a positive number of seconds, got ${JSON.stringify(value)}`, 2);
  }
  return Math.round(n * 1000);
}
