import { listenStatus } from './status-listen.js';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { AdsClient } from './xds/ads-client.js';
import { buildNode, type NodeIdentity } from './xds/node.js';
import { KvStore } from './store/store.js';
import { startEtcdServer, type EtcdServer } from './etcd/server.js';
import { MeshTranslator, type ApisixChanges, type XdsChange } from './translate/snapshot.js';
import type { CapturePorts } from './translate/route-configuration.js';
import type { TranslationNote } from './translate/apisix-types.js';
import { APISIX_PREFIX, StoreApplier, type ApplyResult } from './apply.js';
import { AgentMetrics } from './metrics.js';
import { buildStatusServer, type MetricsMerge } from './status-server.js';
import type { AppProbeService } from './app-probes/app-probe-service.js';
import { serverNameOptions, xdsCredentials, type XdsTlsOptions } from './istiod-credentials.js';
import { startWorkloadIdentity, type WorkloadIdentityConfig } from './identity/start-identity.js';
import type { WorkloadIdentity } from './identity/workload-identity.js';
import { publishIdentity } from './identity/apisix-identity.js';
import { pendingSecretNotes, SdsSecrets, unusableSecretNotes } from './mtls/sds-secrets.js';
import type { SecretChange } from './xds/ads-client.js';
import { JwksFetcher } from './policy/jwks-fetcher.js';

export { xdsCredentials, type XdsTlsOptions };

export interface AgentOptions {
  xdsAddress: string;
  xdsTls?: XdsTlsOptions;
  identity: NodeIdentity;
  /** Istio's CA, for the workload certificate; absent: no certificate (plaintext setups) */
  workloadIdentity?: WorkloadIdentityConfig;
  etcdHost: string;
  etcdPort: number;
  statusHost: string;
  statusPort: number;
  capturePorts?: CapturePorts;
  /** what the status port's /stats/prometheus merges besides the agent's metrics (APISIX, the app) */
  metricsMerge?: MetricsMerge;
  /** the app probes the injection rewrote to the status port (ISTIO_KUBE_APP_PROBERS) */
  appProbes?: AppProbeService;
  /** quiet time after an update before applying (bursts become one revision) */
  coalesceMs?: number;
  /** upper bound on how long an update may wait while a burst continues */
  maxCoalesceMs?: number;
  warmingTimeoutMs?: number;
  backoff?: { initialMs: number; maxMs: number };
  /** INSECURE: filters dropped from chains without being enforced (default: refuse their traffic) */
  skipFilters?: ReadonlySet<string>;
  /** a pino/Fastify logger, or the level for a new one (default info) */
  logger?: FastifyBaseLogger | { level: string };
  version?: string;
}

export interface RunningAgent {
  store: KvStore;
  etcdPort: number;
  statusPort: number;
  /** resolves after the next apply (tests use it to wait for a push to land) */
  applied(): Promise<number>;
  isReady(): boolean;
  /** the workload certificate (with a CA configured): the TLS listeners take it from here */
  identity?: WorkloadIdentity;
  /** client connections open on the etcd API (APISIX's): the shutdown waits for them to go */
  etcdClients(): Promise<number>;
  close(): Promise<void>;
}

/**
 * The agent: one ADS stream → translation → the store (one revision per coalesced burst) → the
 * etcd API APISIX watches; plus the status server. Everything binds where it is told (tests: port 0).
 */
export async function startAgent(options: AgentOptions): Promise<RunningAgent> {
  const metrics = new AgentMetrics();
  let ready = false;
  let currentNotes: TranslationNote[] = [];
  let versions: () => Record<string, string> = () => ({});
  let sdsState: () => { version: string; held: string[]; pending: string[] } = () => ({ version: '', held: [], pending: [] });
  // the xDS versions the served configuration was translated from (versions() may be newer: a
  // burst still coalescing)
  let appliedVersions: Record<string, string> = {};
  let identity: WorkloadIdentity | undefined;
  // with a CA, traffic needs the workload certificate as much as the configuration
  const isReady = () => ready && (identity?.isReady() ?? true);
  const status: FastifyInstance = buildStatusServer(
    {
      ready: isReady,
      configured: () => ready,
      notReadyReason: () => (!ready ? 'waiting for the first complete configuration from istiod' : 'waiting for the workload certificate from the CA'),
      debugConfig: () => ({
        ready,
        storeRevision: store.revision,
        xdsVersions: versions(),
        appliedXdsVersions: appliedVersions,
        ...applier.objects(),
        skipped: currentNotes,
      }),
      debugXds: () => ({ xdsVersions: versions(), appliedXdsVersions: appliedVersions, sds: sdsState() }),
    },
    metrics,
    options.logger ?? { level: 'info' },
    options.appProbes,
    options.metricsMerge,
  );
  const logger = status.log;
  // A restarted agent must start above every revision its predecessor handed out: APISIX keeps
  // watching from its last revision and would wait silently on a store that restarted at 1. In
  // milliseconds the clock outruns the agent's revisions (at most one per coalescing window,
  // >= 100 ms by default) however long the previous process ran; it stays far below 2^53.
  // History only serves APISIX watches that resume a few revisions back (a watch further back is
  // answered "compacted" and APISIX reloads everything): 8 MiB (counted as keys + values + 64 bytes
  // an event; ~1.4x that in memory) keeps 1-2 revisions in which every endpoint of 10,000 services
  // changed, ~10 at 2,000 services, thousands of one-endpoint revisions; 16 MiB cost ~12 MiB more
  // at 10,000 services; the default (256 MiB, 100,000 events) kept ~9 full pushes.
  const store = new KvStore({ initialRevision: Date.now(), maxHistoryBytes: 8 * 1024 * 1024 });
  const translator = new MeshTranslator({
    ...(options.capturePorts ? { ports: options.capturePorts } : {}),
    ...(options.skipFilters ? { skipFilters: options.skipFilters } : {}),
  });
  const applier = new StoreApplier(store);
  // credentialName's secrets from istiod's SDS, for the TLS relay (written beside the translation)
  const sdsSecrets = new SdsSecrets(store, { info: (m) => logger.info(m), warn: (m) => logger.warn(m) });
  // remote JWKS of RequestAuthentication providers: fetched here, handed to APISIX as keys
  const jwks = new JwksFetcher({
    onChange: () => schedule(),
    logger: { info: (m) => logger.info(m), warn: (m) => logger.warn(m) },
  });
  const client = new AdsClient({
    address: options.xdsAddress,
    node: buildNode(options.identity, options.version ?? 'dev'),
    credentials: xdsCredentials(options.xdsTls, options.identity.clusterId),
    channelOptions: serverNameOptions(options.xdsTls?.serverName),
    ...(options.backoff ? { backoff: options.backoff } : {}),
    ...(options.warmingTimeoutMs !== undefined ? { warmingTimeoutMs: options.warmingTimeoutMs } : {}),
    logger: { info: (m) => logger.info(m), warn: (m) => logger.warn(m), error: (m) => logger.error(m) },
    // each changed resource is translated as it is decoded; nothing keeps it decoded
    prepare: (kind, name, resource, bytes) => translator.prepare(kind, name, resource, bytes),
  });

  versions = () => client.versions();
  // credentialName's secrets: the last SDS version accepted, the names held, those istiod has not sent
  sdsState = () => ({ version: client.secretVersion(), held: sdsSecrets.names(), pending: [...client.pendingSecrets().keys()] });
  const loggedNotes = new Set<string>();
  let waiters: Array<(rev: number) => void> = [];
  let timer: NodeJS.Timeout | undefined;
  let firstPendingAt = 0;
  const coalesceMs = options.coalesceMs ?? 100;
  const maxCoalesceMs = options.maxCoalesceMs ?? 1000;
  const warmingMs = options.warmingTimeoutMs ?? 15_000;

  const apply = () => {
    timer = undefined;
    firstPendingAt = 0;
    if (!ready && !client.isComplete()) {
      // keep warming (Envoy does the same) until every subscribed resource arrived or the timeout
      timer = setTimeout(apply, Math.min(warmingMs, 1000));
      return;
    }
    const stop = metrics.translationSeconds.startTimer();
    let changes: ApisixChanges;
    let result: ApplyResult;
    const translatedFrom = versions();
    try {
      translator.useRemoteJwks(jwks.states());
      changes = translator.assemble();
      result = applier.applyChanges(changes);
    } catch (err) {
      // Resources are validated when they arrive, so this is a bug; it must not stop the agent.
      // The store still holds the last good snapshot (a revision is written whole or not at all),
      // and the next attempt writes the whole configuration again.
      translator.resync();
      metrics.applyFailures.inc();
      logger.error(`configuration not applied, the last good one stays served: ${(err as Error).message.slice(0, 300)}`);
      return;
    } finally {
      stop();
    }
    appliedVersions = translatedFrom;
    const unusable = sdsSecrets.unusable();
    currentNotes = [
      ...changes.notes,
      ...result.invalid,
      ...pendingSecretNotes(client.pendingSecrets()),
      ...(unusable.size ? unusableSecretNotes(client.secretUsers(unusable.keys()), unusable) : []),
    ];
    jwks.want(changes.remoteJwks);
    metrics.applies.inc();
    metrics.storeRevision.set(store.revision);
    metrics.objects.set({ kind: 'upstream' }, result.upstreams);
    metrics.objects.set({ kind: 'route' }, result.routes);
    metrics.skipped.reset();
    for (const n of currentNotes) {
      metrics.skipped.inc({ kind: n.kind, reason: n.reason });
      const key = `${n.kind}\0${n.name}\0${n.reason}`;
      if (!loggedNotes.has(key) && n.reason !== 'endpoints-pending' && n.reason !== 'route-config-pending') {
        loggedNotes.add(key);
        logger.warn(`${n.skipped ? 'skipped' : 'partly translated'} ${n.kind} ${n.name}: ${n.reason}${n.detail ? ` (${n.detail})` : ''}`);
      }
    }
    if (!ready) {
      ready = true;
      const pending = client.pendingNames();
      if (pending.endpoint.length || pending.route.length) {
        logger.warn(`istiod did not answer within the warming timeout for ${pending.endpoint.length} endpoint assignments and ${pending.route.length} route configurations (e.g. ${[...pending.endpoint, ...pending.route].slice(0, 3).join(', ')}); serving without them`);
      }
      logger.info(`first complete configuration applied: ${result.upstreams} upstreams, ${result.routes} routes, store revision ${result.revision}`);
    } else {
      logger.debug(`applied: ${result.upstreams} upstreams, ${result.routes} routes, store revision ${result.revision}`);
    }
    const w = waiters;
    waiters = [];
    for (const resolve of w) resolve(result.revision);
  };

  const schedule = () => {
    const now = Date.now();
    if (!firstPendingAt) firstPendingAt = now;
    if (timer) clearTimeout(timer);
    const wait = Math.max(0, Math.min(coalesceMs, firstPendingAt + maxCoalesceMs - now));
    timer = setTimeout(apply, wait);
  };

  client.on('changes', (change: XdsChange) => translator.ingest(change));
  client.on('secrets', (change: SecretChange) => {
    sdsSecrets.ingest(change);
    // the notes of the clusters that waited for these secrets
    schedule();
  });
  client.on('update', (kinds: Set<string>) => {
    for (const k of kinds) {
      metrics.xdsResponses.inc({ type: k });
      metrics.xdsAcks.inc({ type: k });
    }
    schedule();
  });
  client.on('ack', (kind: string) => {
    // the translated types are counted on `update`; secrets are not translated
    if (kind !== 'secret') return;
    metrics.xdsResponses.inc({ type: kind });
    metrics.xdsAcks.inc({ type: kind });
  });
  client.on('nack', (kind: string) => {
    metrics.xdsResponses.inc({ type: kind });
    metrics.xdsNacks.inc({ type: kind });
  });
  client.on('connected', () => {
    metrics.xdsConnected.set(1);
    logger.info(`xDS stream to ${options.xdsAddress} established`);
  });
  client.on('disconnected', () => metrics.xdsConnected.set(0));
  client.on('reconnecting', () => metrics.xdsReconnects.inc());

  let etcd: EtcdServer | undefined;
  let statusHost = options.statusHost;
  try {
    etcd = await startEtcdServer({ store, host: options.etcdHost, port: options.etcdPort, readOnly: true, apisixPrefix: APISIX_PREFIX, logger });
    status.addHook('onRequest', async () => {
      metrics.watchers.set(store.watcherCount);
      metrics.storeRevision.set(store.revision);
    });
    statusHost = await listenStatus(status, options.statusHost, options.statusPort);
    if (options.workloadIdentity) {
      identity = startWorkloadIdentity(options.workloadIdentity, options.identity, metrics.registry, logger);
      publishIdentity(store, identity, logger);
    }
  } catch (err) {
    await etcd?.close();
    await status.close();
    throw err;
  }
  const statusAddress = status.server.address();
  const statusPort = typeof statusAddress === 'object' && statusAddress ? statusAddress.port : options.statusPort;
  logger.info(`etcd API on ${options.etcdHost}:${etcd.httpPort}, status on ${statusHost}:${statusPort}, xDS from ${options.xdsAddress}${options.xdsTls ? ' (TLS)' : ' (plaintext)'}, ${identity ? `workload certificate for ${identity.spiffeId} from ${options.workloadIdentity!.caAddress}` : 'no workload certificate (no CA)'}`);
  client.start();

  let closed = false;
  return {
    store,
    etcdPort: etcd.httpPort,
    statusPort,
    isReady,
    ...(identity ? { identity } : {}),
    applied: () => new Promise<number>((resolve) => waiters.push(resolve)),
    etcdClients: () => etcd!.clientConnections(),
    async close() {
      if (closed) return;
      closed = true;
      if (timer) clearTimeout(timer);
      jwks.close();
      client.stop();
      identity?.stop();
      await status.close();
      await etcd!.close();
    },
  };
}
