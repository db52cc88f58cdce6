import { DUAL_STACK_HOST } from './status-listen.js';
import { existsSync, readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { CliError } from '../cli/errors.js';
import { shortQuote } from '../cli/short-quote.js';
import { formatHostPort } from '../cli/host-port.js';
import { packageVersion } from '../cli/version.js';
import { parseDuration, parseListen } from './etcd/command.js';
import { nodeId, nodeIdentityFromEnv, NodeIdentityError, parseDownwardApiLabels } from './xds/node.js';
import { SpiffeIdError, workloadSpiffeId } from './identity/spiffe-id.js';
import { ECC_SIGNATURE_ALGORITHM_ENV, KeyTypeError, workloadKeyType } from './identity/key-type.js';
import type { RunningAgent } from './agent.js';
import { installLuaModules, writeLuaModule } from './l4/lua-modules.js';
import { ISTIO_METRICS_CONF_MODULE, ISTIO_METRICS_MAX_SERIES, istioMetricsConfLua, localWorkload } from './telemetry/local-workload.js';
import { waitForEtcdClientsToLeave } from './shutdown.js';
import { APP_PROBERS_ENV, AppProbersError, parseAppProbers } from './app-probes/app-probers.js';
import { probeTargetFor } from './app-probes/probe-target.js';
import { apisixMetricsSource, appMetricsSource, DEFAULT_APISIX_METRICS_URL, istioMetricsSource, PROMETHEUS_SCRAPE_ENV } from './telemetry/merge-sources.js';

interface AgentFlags {
  xdsAddress: string;
  xdsTls: boolean;
  podLabelsFile?: string;
  rootCert: string;
  tokenFile: string;
  xdsServerName?: string;
  caAddress?: string;
  trustDomain: string;
  certTtl: string;
  keyType?: string;
  etcdListen: string;
  statusPort: string;
  statusHost: string;
  outboundPort: string;
  inboundPort: string;
  coalesce: string;
  maxCoalesce: string;
  warmingTimeout: string;
  drainTimeout: string;
  istioVersion?: string;
  insecureSkipFilters?: string;
  luaDir?: string;
  apisixMetricsUrl?: string;
  istioMetricsMaxSeries: string;
  logLevel: string;
}

function port(flag: string, value: string, allowZero = false): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < (allowZero ? 0 : 1) || n > 65535) throw new CliError(`${flag}: expected a port number, got "${value}"`);
  return n;
}

/** `--insecure-skip-filters`: names or type URLs, each checked for shape so a typo does not pass quietly. */
function parseSkipFilters(value: string | undefined): Set<string> {
  const out = new Set<string>();
  if (value === undefined) return out;
  for (const item of value.split(',').map((x) => x.trim())) {
    if (!/^[A-Za-z0-9_.\/-]{1,200}$/.test(item)) {
      throw new CliError(`--insecure-skip-filters: "${item.slice(0, 40)}" is not a filter name or type URL`);
    }
    out.add(item);
  }
  return out;
}

/**
 * `--ca-address`: `none`, HOST:PORT, or by default istiod's TLS port on the xDS host when xDS goes over
 * TLS (plaintext setups, a test istiod on 15010, have no CA unless one is named).
 */
function caAddress(flags: AgentFlags, xdsHost: string): { host: string; port: number } | undefined {
  if (flags.caAddress === 'none') return undefined;
  if (flags.caAddress !== undefined) return parseListen('--ca-address', flags.caAddress);
  return flags.xdsTls ? { host: xdsHost, port: 15012 } : undefined;
}

/** `apisix-mesh agent`: xDS from istiod → APISIX objects → the store → the etcd v3 API. */
export function registerAgentCommand(program: Command): void {
  program
    .command('agent')
    .description(
      'run the mesh agent next to APISIX: one ADS stream to istiod, its clusters, endpoints, listeners ' +
        'and routes translated into APISIX upstreams and routes, served to APISIX through the etcd v3 API ' +
        'on loopback. The pod is identified from POD_NAME, POD_NAMESPACE, INSTANCE_IP, SERVICE_ACCOUNT and ' +
        'ISTIO_META_* / ISTIO_METAJSON_LABELS in the environment (as the webhook sets them), and its labels ' +
        'from the downward-API file named by --pod-labels-file. The app probes the injection rewrote to ' +
        '/app-health/<container>/livez|readyz|startupz on the status port come from ISTIO_KUBE_APP_PROBERS.',
    )
    .option('--xds-address <host:port>', 'istiod\'s xDS address (15010 plaintext, 15012 TLS); an IPv6 address in brackets, [fd00::10]:15012', 'istiod.istio-system.svc:15010')
    .option('--xds-tls', 'dial istiod with TLS, authenticating with the service-account token (istiod port 15012)', false)
    .option('--root-cert <file>', 'with --xds-tls or a CA: the mesh root certificate (PEM) istiod\'s certificate must chain to', '/var/run/secrets/istio/root-cert.pem')
    .option('--token-file <file>', 'with --xds-tls or a CA: projected service-account token (audience istio-ca), re-read for every stream and certificate request', '/var/run/secrets/tokens/istio-token')
    .option('--xds-server-name <name>', 'with --xds-tls: the name istiod\'s certificate must carry, when it differs from the host dialled (also for the CA on the same host); needed when --xds-address is an IP address, which istiod\'s certificate does not carry (it names istiod.istio-system.svc)', undefined)
    .option(
      '--ca-address <host:port|none>',
      'Istio\'s CA, which issues the workload certificate (TLS verified with --root-cert, authenticated with --token-file); ' +
        'an IPv6 address in brackets; none: no certificate. Default: with --xds-tls the --xds-address host on port 15012, without it none',
    )
    .option('--trust-domain <domain>', 'the mesh\'s trust domain: the certificate names the pod spiffe://<domain>/ns/<ns>/sa/<account>', 'cluster.local')
    .option('--cert-ttl <duration>', 'validity asked for the workload certificate (istiod may grant less); renewed at half its lifetime', '24h')
    .option(
      '--key-type <rsa|ecdsa>',
      `key of the workload certificate: rsa (2048 bits) or ecdsa (P-256, cheaper TLS handshakes). Default: ecdsa when ${ECC_SIGNATURE_ALGORITHM_ENV}=ECDSA (pilot-agent's variable), else rsa`,
    )
    .option('--etcd-listen <host:port>', 'where APISIX reaches the etcd v3 API (keep it on loopback)', '127.0.0.1:15379')
    .option('--status-port <port>', 'port of /healthz/ready, /metrics and /debug/config (0: any free port)', '15020')
    .option('--status-host <host>', 'address the status port binds (the kubelet probes it on the pod IP); :: is dual-stack, 0.0.0.0 where the pod has no IPv6', DUAL_STACK_HOST)
    .option('--outbound-port <port>', 'APISIX\'s outbound capture listener (routes of outbound listeners are scoped to it)', '15001')
    .option('--inbound-port <port>', 'APISIX\'s inbound capture listener (routes of virtualInbound are scoped to it)', '15006')
    .option('--coalesce <duration>', 'quiet time after an xDS update before it is applied; a burst becomes one store revision', '100ms')
    .option('--max-coalesce <duration>', 'longest an update waits while a burst goes on', '1s')
    .option('--warming-timeout <duration>', 'how long to wait for requested endpoints/routes before applying without them (xDS spec: 15s)', '15s')
    .option('--drain-timeout <duration>', 'on SIGTERM, keep serving the etcd API until APISIX has closed its connections (it drains in its preStop hook), at most this long (a restart of the agent alone waits for it too); SIGINT stops at once', '10s')
    .option('--pod-labels-file <file>', 'downward-API file of the pod\'s labels (istiod selects services, policies and subsets by them); its labels win over ISTIO_METAJSON_LABELS')
    .option('--istio-version <version>', 'ISTIO_VERSION sent in the node metadata (istiod gates features on it; default: the ISTIO_META_ISTIO_VERSION variable, else unset = newest)')
    .option(
      '--insecure-skip-filters <names>',
      'INSECURE: comma-separated filter names or type URLs to ignore although the agent does not enforce them. ' +
        'By default a filter chain carrying any HTTP or network filter the agent does not enforce (RBAC, JWT, ext_authz, ' +
        'rate limits, Lua, Wasm, ...) has its traffic refused with 403; a filter listed here is dropped instead, so its policy is NOT applied',
    )
    .option('--lua-dir <dir>', 'write the sidecar\'s Lua modules for APISIX (the L4 front on the capture ports) into this directory before starting; the injection shares it with APISIX\'s container')
    .option(
      '--apisix-metrics-url <url|none>',
      // the default is spelled out in words: the URL is one word too long to wrap at 80 columns
      `APISIX's Prometheus export (loopback http), merged into /stats/prometheus with the agent's metrics and the app's (from ${PROMETHEUS_SCRAPE_ENV}); default: http on 127.0.0.1 port 15090, path /apisix/prometheus/metrics`,
    )
    .option('--istio-metrics-max-series <n>', `label sets of Istio's standard metrics (istio_requests_total, …) the sidecar keeps, 1-${ISTIO_METRICS_MAX_SERIES} (its shared dict is sized for ${ISTIO_METRICS_MAX_SERIES}); requests beyond go to one overflow series per reporter`, String(ISTIO_METRICS_MAX_SERIES))
    .option('--log-level <level>', 'debug, info, warn or error', 'info')
    .action(async (flags: AgentFlags) => {
      if (!['debug', 'info', 'warn', 'error'].includes(flags.logLevel)) {
        throw new CliError(`--log-level: expected debug, info, warn or error, got "${flags.logLevel}"`);
      }
      const xds = parseListen('--xds-address', flags.xdsAddress);
      const skipFilters = parseSkipFilters(flags.insecureSkipFilters);
      // every flag is checked before anything starts: a bad value is a usage error (exit 2)
      const coalesceMs = parseDuration('--coalesce', flags.coalesce);
      const maxCoalesceMs = parseDuration('--max-coalesce', flags.maxCoalesce);
      const warmingTimeoutMs = parseDuration('--warming-timeout', flags.warmingTimeout);
      const drainTimeoutMs = parseDuration('--drain-timeout', flags.drainTimeout);
      const capturePorts = { outbound: port('--outbound-port', flags.outboundPort), inbound: port('--inbound-port', flags.inboundPort) };
      const etcd = parseListen('--etcd-listen', flags.etcdListen);
      const statusPort = port('--status-port', flags.statusPort, true);
      const apisixMetrics = apisixMetricsSource(flags.apisixMetricsUrl ?? DEFAULT_APISIX_METRICS_URL);
      if (apisixMetrics.problem) throw new CliError(`--apisix-metrics-url: ${apisixMetrics.problem}`);
      // a bad app configuration must not stop the mesh: it is reported with every scrape instead
      const appMetrics = appMetricsSource(process.env[PROMETHEUS_SCRAPE_ENV], statusPort);
      const maxSeries = Number(flags.istioMetricsMaxSeries);
      if (!Number.isInteger(maxSeries) || maxSeries < 1 || maxSeries > ISTIO_METRICS_MAX_SERIES) {
        throw new CliError(`--istio-metrics-max-series: expected 1-${ISTIO_METRICS_MAX_SERIES}, got ${shortQuote(flags.istioMetricsMaxSeries)}`);
      }
      const ca = caAddress(flags, xds.host);
      const certTtlMs = parseDuration('--cert-ttl', flags.certTtl);
      if (certTtlMs < 1000) throw new CliError('--cert-ttl: at least 1s');
      let keyType;
      try {
        keyType = workloadKeyType(flags.keyType, process.env);
      } catch (err) {
        if (err instanceof KeyTypeError) throw new CliError(err.message);
        throw err;
      }
      let identity;
      try {
        identity = nodeIdentityFromEnv(process.env, flags.istioVersion ? { istioVersion: flags.istioVersion } : {});
        if (flags.podLabelsFile) {
          let text: string;
          try {
            text = readFileSync(flags.podLabelsFile, 'utf8');
          } catch (err) {
            throw new CliError(`--pod-labels-file: cannot read ${flags.podLabelsFile}: ${(err as Error).message}`);
          }
          identity.labels = { ...identity.labels, ...parseDownwardApiLabels(text) };
        }
      } catch (err) {
        if (err instanceof NodeIdentityError) throw new CliError(`pod identity: ${err.message}`);
        throw err;
      }
      if (ca) {
        if (!identity.serviceAccount) throw new CliError('pod identity: SERVICE_ACCOUNT is not set, and the workload certificate names it (or --ca-address none)');
        try {
          workloadSpiffeId(flags.trustDomain, identity.namespace, identity.serviceAccount);
        } catch (err) {
          if (err instanceof SpiffeIdError) throw new CliError(`--trust-domain: ${err.message}`);
          throw err;
        }
      }
      let appProbers;
      try {
        appProbers = parseAppProbers(process.env[APP_PROBERS_ENV]);
      } catch (err) {
        if (err instanceof AppProbersError) throw new CliError(`app probes: ${err.message}`);
        throw err;
      }
      if (flags.xdsTls || ca) {
        if (!existsSync(flags.rootCert)) throw new CliError(`--root-cert: ${flags.rootCert} does not exist`);
        if (!existsSync(flags.tokenFile)) throw new CliError(`--token-file: ${flags.tokenFile} does not exist`);
      }
      let luaModules: string[] = [];
      if (flags.luaDir) {
        try {
          luaModules = installLuaModules(flags.luaDir);
          writeLuaModule(flags.luaDir, ISTIO_METRICS_CONF_MODULE, istioMetricsConfLua({ localWorkload: localWorkload(identity), maxSeries, exchange: { nodeId: nodeId(identity), instance: identity.podName } }));
        } catch (err) {
          throw new CliError(`--lua-dir: cannot write the Lua modules into ${flags.luaDir}: ${(err as Error).message}`, 1);
        }
      }
      const serverName = flags.xdsServerName ? { serverName: flags.xdsServerName } : {};
      // gRPC, the Envoy protos and the schemas load with this command only, not with the whole CLI.
      const [{ pino }, { startAgent }, { AppProbeService }] = await Promise.all([import('pino'), import('./agent.js'), import('./app-probes/app-probe-service.js')]);
      const logger = pino({ level: flags.logLevel, base: { cmd: 'agent' } }, pino.destination(2));
      let agent: RunningAgent;
      try {
        agent = await startAgent({
          xdsAddress: formatHostPort(xds),
          ...(flags.xdsTls ? { xdsTls: { rootCertFile: flags.rootCert, tokenFile: flags.tokenFile, ...serverName } } : {}),
          identity,
          ...(ca
            ? {
                workloadIdentity: {
                  caAddress: formatHostPort(ca),
                  tls: { rootCertFile: flags.rootCert, tokenFile: flags.tokenFile, ...(ca.host === xds.host ? serverName : {}) },
                  trustDomain: flags.trustDomain,
                  certTtlMs,
                  keyType,
                },
              }
            : {}),
          etcdHost: etcd.host,
          etcdPort: etcd.port,
          statusHost: flags.statusHost,
          statusPort,
          capturePorts,
          ...(appProbers.size ? { appProbes: new AppProbeService(appProbers, probeTargetFor(identity.podIp)) } : {}),
          metricsMerge: {
            sources: [apisixMetrics.source, istioMetricsSource(apisixMetrics.source), appMetrics.source].filter((s) => s !== undefined),
            notes: appMetrics.problem ? [appMetrics.problem] : [],
          },
          coalesceMs,
          maxCoalesceMs,
          warmingTimeoutMs,
          ...(skipFilters.size ? { skipFilters } : {}),
          logger,
          version: packageVersion(),
        });
      } catch (err) {
        throw new CliError(`cannot start: ${(err as Error).message}`, 1);
      }
      if (appMetrics.problem) logger.warn(`merged metrics: ${appMetrics.problem}`);
      if (appProbers.size) logger.info(`agent: ${appProbers.size} app probes served on the status port (${[...appProbers.keys()].join(', ')})`);
      if (luaModules.length) logger.info(`agent: ${luaModules.length} Lua modules for APISIX written to ${flags.luaDir}`);
      if (skipFilters.size) {
        logger.warn(`--insecure-skip-filters: ${[...skipFilters].join(', ')} will be dropped from filter chains WITHOUT being enforced`);
      }
      await new Promise<void>((resolve) => {
        let stopping = false;
        const stop = async (signal: string, drainMs: number): Promise<void> => {
          if (stopping && drainMs > 0) return;
          stopping = true;
          if (drainMs > 0 && (await agent.etcdClients()) > 0) {
            logger.info(`agent: ${signal} received, serving APISIX until it has closed its etcd connections (at most ${flags.drainTimeout})`);
            const how = await waitForEtcdClientsToLeave({ clients: () => agent.etcdClients(), timeoutMs: drainMs });
            logger.info(how === 'left' ? 'agent: APISIX has closed its etcd connections, shutting down' : `agent: APISIX still connected after ${flags.drainTimeout}, shutting down`);
          } else {
            logger.info(`agent: ${signal} received, shutting down`);
          }
          // flush pino's asynchronous stderr buffer before the event loop drains
          agent.close().finally(() => logger.flush(() => resolve()));
        };
        process.on('SIGTERM', () => void stop('SIGTERM', drainTimeoutMs));
        // an operator's Ctrl-C, or a second signal while draining: at once
        process.on('SIGINT', () => void stop('SIGINT', 0));
      });
    });
}
