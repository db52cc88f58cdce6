import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import type { Command } from 'commander';
import type { Registry } from 'prom-client';
import { CliError } from '../../cli/errors.js';
import type { ClusterCertificateManager, CertificateLog, ServingCertificate } from './manager.js';

/**
 * The `apisix-mesh webhook` side of in-cluster certificates: the flags, when they apply, and the
 * start-up. The webhook command calls these three functions and nothing else of this folder.
 */

export interface ClusterCertificateFlags {
  tlsCert?: string;
  tlsKey?: string;
  selfSigned?: boolean;
  certSecret?: string;
  webhookConfig?: string;
  service?: string;
  namespace?: string;
  certCheckInterval?: string;
  failClosedWhenReady?: boolean;
}

export const CLUSTER_DEFAULTS = {
  certSecret: 'apisix-mesh-webhook-certs',
  webhookConfig: 'apisix-mesh-injector',
  service: 'apisix-mesh-webhook',
  checkIntervalSeconds: 3600,
  /** how often the failurePolicy is checked once it is Fail (a re-apply of the manifests resets it) */
  failClosedIntervalSeconds: 60,
} as const;

const SERVICE_ACCOUNT_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

export function addClusterCertificateOptions(command: Command): Command {
  return command
    .option(
      '--cert-secret <name>',
      'in a cluster, without --tls-cert/--self-signed: the Secret that keeps the CA and serving certificate; ' +
        `the webhook creates or renews them there and puts the CA into --webhook-config (default ${CLUSTER_DEFAULTS.certSecret}). ` +
        'This mode is on when KUBERNETES_SERVICE_HOST is set or any of these four flags is given',
    )
    .option(
      '--webhook-config <name>',
      `MutatingWebhookConfiguration whose caBundle the webhook keeps up to date (default ${CLUSTER_DEFAULTS.webhookConfig})`,
    )
    .option(
      '--service <name>',
      `Service in front of the webhook; the serving certificate names <service>, <service>.<namespace>, ` +
        `<service>.<namespace>.svc and <service>.<namespace>.svc.cluster.local (default ${CLUSTER_DEFAULTS.service})`,
    )
    .option('--namespace <name>', 'namespace of the Secret and the Service (default: $POD_NAMESPACE, else the pod\'s service-account namespace)')
    .option(
      '--cert-check-interval <seconds>',
      `how often the Secret is checked for a renewed certificate (default ${CLUSTER_DEFAULTS.checkIntervalSeconds}; ` +
        'the 30-day serving certificate is renewed with 10 days left)',
    )
    .option(
      '--fail-closed-when-ready',
      'set failurePolicy: Fail on every entry of --webhook-config once the webhook answers through its Service ' +
        '(https://<service>.<namespace>.svc/readyz, verified with the CA); the manifests ship Ignore so that an install ' +
        `that does not work yet never blocks pod creation. Checked again every ${CLUSTER_DEFAULTS.failClosedIntervalSeconds} s`,
    );
}

/** In-cluster certificates apply when no certificate is given and we run in (or are pointed at) a cluster. */
export function wantsClusterCertificates(flags: ClusterCertificateFlags, env: NodeJS.ProcessEnv = process.env): boolean {
  if (flags.selfSigned || flags.tlsCert !== undefined || flags.tlsKey !== undefined) {
    const clusterFlag = [flags.certSecret, flags.webhookConfig, flags.service, flags.namespace].some((f) => f !== undefined);
    if (clusterFlag) {
      throw new CliError('--cert-secret/--webhook-config/--service/--namespace manage certificates in the cluster; they exclude --tls-cert/--tls-key/--self-signed', 2);
    }
    if (flags.failClosedWhenReady) {
      // it needs the API access and the CA of in-cluster certificates; silently doing nothing would
      // leave the entries on Ignore for good
      throw new CliError('--fail-closed-when-ready works with in-cluster certificates only (not with --tls-cert/--tls-key/--self-signed); see docs/install.md for the cert-manager overlay', 2);
    }
    return false;
  }
  const clusterFlag = [flags.certSecret, flags.webhookConfig, flags.service, flags.namespace].some((f) => f !== undefined);
  return clusterFlag || Boolean(env.KUBERNETES_SERVICE_HOST);
}

export interface ClusterCertificates {
  /** What to serve from the first connection on. */
  initial: ServingCertificate;
  /** Hands every renewed certificate to `serve` (the server's updateTls) from now on. */
  follow(serve: (cert: ServingCertificate) => void, log?: CertificateLog): void;
  stop(): void;
}

/**
 * Loads or creates the certificates in the cluster and patches the caBundle; fails with a one-line
 * CliError. With `registry`, the certificate metrics (metrics.ts) are registered there.
 */
export async function startClusterCertificates(
  flags: ClusterCertificateFlags,
  env: NodeJS.ProcessEnv = process.env,
  registry?: Registry,
): Promise<ClusterCertificates> {
  const namespace = flags.namespace ?? env.POD_NAMESPACE ?? readServiceAccountNamespace();
  if (!namespace) {
    throw new CliError('cannot tell the webhook\'s namespace: give --namespace or set POD_NAMESPACE', 2);
  }
  const service = flags.service ?? CLUSTER_DEFAULTS.service;
  const intervalSeconds = Number(flags.certCheckInterval ?? CLUSTER_DEFAULTS.checkIntervalSeconds);
  if (!Number.isFinite(intervalSeconds) || intervalSeconds <= 0) {
    throw new CliError(`--cert-check-interval must be a positive number of seconds, got ${JSON.stringify(flags.certCheckInterval)}`, 2);
  }
  // client-node falls back to http://localhost:8080 when it finds nothing; say so instead.
  const kubeconfigFile = env.KUBECONFIG ?? join(env.HOME ?? homedir(), '.kube', 'config');
  if (!env.KUBERNETES_SERVICE_HOST && !existsSync(kubeconfigFile.split(delimiter)[0]!)) {
    throw new CliError(
      'no Kubernetes cluster to keep certificates in (not in a pod, no KUBECONFIG, no ~/.kube/config): ' +
        'give --tls-cert/--tls-key or --self-signed',
      2,
    );
  }
  // The Kubernetes client and the certificate machinery load only when this mode is on, so the
  // other commands of the binary (the init container's above all) start without them.
  const [{ KubeConfig }, { secretStore, webhookConfigurationClient }, { ClusterCertificateManager }, { certificateMetrics }, { defaultCertificatePolicy }, { FailClosedKeeper, serviceSelfCheck }] =
    await Promise.all([
      import('@kubernetes/client-node'),
      import('./kube-api.js'),
      import('./manager.js'),
      import('./metrics.js'),
      import('./stored-certificates.js'),
      import('./fail-closed.js'),
    ]);
  const kubeConfig = new KubeConfig();
  try {
    kubeConfig.loadFromDefault();
  } catch (err) {
    throw new CliError(`cannot load a Kubernetes client configuration: ${(err as Error).message}`, 2);
  }

  const log = new ForwardingLog(jsonLineLog());
  const webhookConfigName = flags.webhookConfig ?? CLUSTER_DEFAULTS.webhookConfig;
  const servingNotAfter = () => manager.servingNotAfter();
  const manager: ClusterCertificateManager = new ClusterCertificateManager({
    ...(registry ? { observer: certificateMetrics(registry, servingNotAfter) } : {}),
    secret: secretStore(kubeConfig, namespace, flags.certSecret ?? CLUSTER_DEFAULTS.certSecret),
    webhookConfiguration: webhookConfigurationClient(kubeConfig, webhookConfigName),
    policy: defaultCertificatePolicy([service, `${service}.${namespace}`, `${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`]),
    log,
  });
  const keeper = flags.failClosedWhenReady
    ? new FailClosedKeeper({
        webhookConfiguration: webhookConfigurationClient(kubeConfig, webhookConfigName),
        selfCheck: serviceSelfCheck(`https://${service}.${namespace}.svc:443/readyz`, `${service}.${namespace}.svc`, () => manager.caBundle()),
        log,
      })
    : undefined;
  let initial: ServingCertificate;
  try {
    initial = await manager.ensure();
  } catch (err) {
    throw new CliError(`in-cluster certificates: ${(err as Error).message}`, 1);
  }
  return {
    initial,
    follow(serve, serverLog) {
      if (serverLog) log.target = serverLog;
      manager.startRenewal(serve, intervalSeconds * 1000);
      // only now: the server serves the certificate the caBundle trusts
      keeper?.start(CLUSTER_DEFAULTS.failClosedIntervalSeconds * 1000);
    },
    stop: () => {
      manager.stop();
      keeper?.stop();
    },
  };
}

function readServiceAccountNamespace(): string | undefined {
  try {
    return readFileSync(SERVICE_ACCOUNT_NAMESPACE_FILE, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Until the server's logger exists, log JSON lines in pino's shape so the output stays uniform. */
function jsonLineLog(): CertificateLog {
  const write = (level: number) => (obj: object, msg: string) => {
    process.stdout.write(`${JSON.stringify({ level, time: Date.now(), ...obj, msg })}\n`);
  };
  return { info: write(30), warn: write(40), error: write(50) };
}

class ForwardingLog implements CertificateLog {
  constructor(public target: CertificateLog) {}
  info(obj: object, msg: string): void {
    this.target.info(obj, msg);
  }
  warn(obj: object, msg: string): void {
    this.target.warn(obj, msg);
  }
  error(obj: object, msg: string): void {
    this.target.error(obj, msg);
  }
}
