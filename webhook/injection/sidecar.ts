import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { shortQuote } from '../../cli/short-quote.js';
import type { InjectionConfig } from '../config/injection-config.js';
import {
  APISIX_CONFIG_ANNOTATION,
  DEFAULT_CONTAINER_ANNOTATION,
  DEFAULT_LOGS_CONTAINER_ANNOTATION,
  ISTIO_INJECT,
  ISTIO_NATIVE_SIDECAR_ANNOTATION,
  ISTIO_STATUS_ANNOTATION,
  ISTIO_TLS_MODE_LABEL,
  MODE_ANNOTATION,
  STATUS_ANNOTATION,
} from './annotations.js';
import { captureConfigFor, interceptionMode, PodRejection, reservedPorts } from './capture.js';
import type { AppProbers } from '../../agent/app-probes/app-probers.js';
import { agentWithProbers, previousAppProbers, restoreAppProbes, rewriteAppProbes, rewritesAppProbes } from './probe-rewrite.js';
import { keepDefaulted } from './reinjection.js';
import { proxyResourcesFor } from './proxy-resources.js';
import { NAMES, sidecarParts } from './sidecar-parts.js';
import { workerProcessesFor } from './worker-processes.js';
import { holdsApplication } from './apisix-start-hold.js';
import { parseStatus, type InjectionStatus } from './status.js';
import { applyPrometheusMerge, canonicalServiceLabels, restorePrometheusAnnotations, scrapeEnvOf, withScrapeEnv } from './telemetry-metadata.js';

function nativeSidecars(annotations: Record<string, string>, config: InjectionConfig): boolean {
  const value = annotations[ISTIO_NATIVE_SIDECAR_ANNOTATION];
  if (value === undefined) return config.nativeSidecars;
  if (value === 'true' || value === 'false') return value === 'true';
  throw new PodRejection(`annotation ${ISTIO_NATIVE_SIDECAR_ANNOTATION}: ${shortQuote(value)} must be "true" or "false"`);
}

/** `list` without the items named in `names` (a Set: the status annotation may list any number). */
function without<T extends { name: string }>(list: readonly T[] | undefined, names: readonly string[]): T[] {
  const drop = new Set(names);
  return (list ?? []).filter((x) => !drop.has(x.name));
}

function checkNoCollision(kind: string, list: readonly { name: string }[], ours: readonly string[]): void {
  for (const item of list) {
    if (ours.includes(item.name)) {
      throw new PodRejection(`${kind} ${shortQuote(item.name)} uses a name apisix-mesh reserves for its sidecar`);
    }
  }
}

/**
 * The pod with APISIX as its sidecar (DESIGN.md §3). Objects the injection does not change are shared
 * with `pod`, not copied: the caller diffs only what changed. A pod that carries a valid status
 * annotation first loses what that annotation lists, so injecting twice gives the same pod.
 * Throws `PodRejection` when the pod cannot be injected as it is.
 */
export function injectSidecar(pod: V1Pod, config: InjectionConfig): V1Pod {
  const metadata = pod.metadata ?? {};
  const spec = pod.spec ?? { containers: [] };
  const annotations = metadata.annotations ?? {};
  if (annotations[ISTIO_STATUS_ANNOTATION] !== undefined) {
    // Two sidecars would install two sets of capture rules fighting for the same traffic.
    throw new PodRejection(
      `the pod already has Istio's sidecar (annotation ${ISTIO_STATUS_ANNOTATION}); remove it, or use ${MODE_ANNOTATION}: gateway or none`,
    );
  }
  const previous: InjectionStatus = parseStatus(annotations[STATUS_ANNOTATION]) ?? { initContainers: [], containers: [], volumes: [] };

  // the probes an earlier injection rewrote are restored first, so that they are rewritten afresh
  const statusPort = config.ports.agentStatus;
  const oldProbers = previousAppProbers(spec, previous, NAMES.agent);
  let appInits = restoreAppProbes(without(spec.initContainers, previous.initContainers), oldProbers, statusPort);
  let appContainers = restoreAppProbes(without(spec.containers, previous.containers), oldProbers, statusPort);
  const appVolumes = without(spec.volumes, previous.volumes);
  const ourContainers = [NAMES.init, NAMES.configCopy, NAMES.agent, NAMES.apisix];
  checkNoCollision('init container', appInits, ourContainers);
  checkNoCollision('container', appContainers, ourContainers);
  checkNoCollision('volume', appVolumes, [NAMES.podInfoVolume, NAMES.apisixConfVolume, NAMES.apisixRunVolume, NAMES.istioTokenVolume, NAMES.istioRootCertVolume]);

  const reserved = reservedPorts(config);
  for (const c of appContainers) {
    for (const p of c.ports ?? []) {
      if (reserved.includes(p.containerPort)) {
        throw new PodRejection(`container ${shortQuote(c.name)} declares port ${p.containerPort}, which the apisix-mesh sidecar uses`);
      }
    }
  }

  const interception = interceptionMode(annotations);
  const capture = captureConfigFor(pod, appContainers, config);
  const native = nativeSidecars(annotations, config);
  // Istio's proxyCPU/proxyMemory annotations size the proxy per pod: APISIX gets a copy with them;
  // its worker count follows the pod's ProxyConfig concurrency or that CPU limit, as Envoy's threads
  const proxyResources = proxyResourcesFor(annotations, config.resources.apisix);
  const workers = workerProcessesFor(annotations, config, proxyResources);
  const parts = sidecarParts(config, native, interception === 'REDIRECT' ? capture : null, workers, holdsApplication(annotations, config));

  // Probes go to the agent. The app's own native sidecars (init containers with restartPolicy
  // Always) only when the agent starts before them, i.e. with native sidecars: classic, they start
  // before the agent, and a startup probe on it would hold the pod forever.
  const probers: AppProbers = new Map();
  if (rewritesAppProbes(annotations, config)) {
    appContainers = rewriteAppProbes(appContainers, statusPort, probers).containers;
    if (native) appInits = rewriteAppProbes(appInits, statusPort, probers, (c) => c.restartPolicy === 'Always').containers;
  }
  const withProbers = (c: V1Container): V1Container => (c.name === NAMES.agent ? agentWithProbers(c, probers) : c);

  // Native: the rules first, then the mesh (started and ready before anything else), then the app's
  // init containers inside the mesh. Classic: the app's init containers keep an uncaptured network,
  // the rules come last; the mesh containers go first among the containers.
  const previousAgent = [...(spec.initContainers ?? []), ...(spec.containers ?? [])].find(
    (c) => c.name === NAMES.agent && (previous.initContainers.includes(c.name) || previous.containers.includes(c.name)),
  );
  const merge = applyPrometheusMerge(annotations, {
    enabled: config.enablePrometheusMerge,
    statusPort: config.ports.agentStatus,
    reservedPorts: reserved,
    previousScrapeEnv: scrapeEnvOf(previousAgent?.env),
  });
  // The app's scrape settings are per pod: the agent's shared (frozen) part gets a copy with them.
  const withAppScrape = <T extends { name: string; env?: V1Container['env'] }>(c: T): T =>
    c.name === NAMES.agent && merge.scrapeEnv !== null ? { ...c, env: withScrapeEnv(c.env, merge.scrapeEnv) } : c;

  const withProxyResources = <T extends V1Container>(c: T): T =>
    c.name === NAMES.apisix && proxyResources !== config.resources.apisix ? { ...c, resources: proxyResources } : c;

  const keep = keepDefaulted(spec, previous);
  const initContainers = [
    ...parts.initBefore.map(withProbers).map(withAppScrape).map(withProxyResources).map(keep.initContainer),
    ...appInits,
    ...parts.initAfter.map(keep.initContainer),
  ];
  const containers =
    parts.containers.length === 0
      ? appContainers
      : [...parts.containers.map(withProbers).map(withAppScrape).map(withProxyResources).map(keep.container), ...appContainers];

  const newAnnotations: Record<string, string> = {
    ...merge.annotations,
    [STATUS_ANNOTATION]: parts.status,
    [APISIX_CONFIG_ANNOTATION]: parts.apisixConfig,
  };
  const firstApp = appContainers[0];
  // As Istio's template: `kubectl logs` and `kubectl exec` pick the app, not the mesh, by default.
  for (const name of [DEFAULT_CONTAINER_ANNOTATION, DEFAULT_LOGS_CONTAINER_ANNOTATION]) {
    if (newAnnotations[name] === undefined && firstApp !== undefined) newAnnotations[name] = firstApp.name;
  }

  return {
    ...pod,
    metadata: {
      ...metadata,
      labels: {
        ...metadata.labels,
        ...canonicalServiceLabels(pod),
        [ISTIO_INJECT]: 'false',
        // the sidecar terminates Istio's mTLS once it has a workload certificate, which needs the CA
        // (TLS to istiod); a value the pod sets itself is kept, as Istio's template keeps it
        ...(config.istiodTls ? { [ISTIO_TLS_MODE_LABEL]: metadata.labels?.[ISTIO_TLS_MODE_LABEL] ?? 'istio' } : {}),
      },
      annotations: newAnnotations,
    },
    spec: {
      ...spec,
      initContainers,
      containers,
      volumes: [...appVolumes, ...parts.volumes.map(keep.volume)],
    },
  };
}

/**
 * The pod without what sidecar mode added, as its status annotation lists it: a manifest injected
 * in sidecar mode and then switched to `gateway` or `none` must not keep the APISIX sidecar (with
 * gateway mode Istio would then add Envoy: two proxies). The `sidecar.istio.io/inject` label is left
 * to the mode that follows (gateway sets it; with none, "false" keeps Istio's injector away too).
 * A pod without a valid status is returned as it is.
 */
export function withoutSidecar(pod: V1Pod, config: InjectionConfig): V1Pod {
  const annotations = pod.metadata?.annotations ?? {};
  const status = parseStatus(annotations[STATUS_ANNOTATION]);
  if (status === null) return pod;
  const { [STATUS_ANNOTATION]: _status, [APISIX_CONFIG_ANNOTATION]: _config, ...others } = annotations;
  const spec = pod.spec ?? { containers: [] };
  const agent = [...(spec.initContainers ?? []), ...(spec.containers ?? [])].find(
    (c) => c.name === NAMES.agent && (status.initContainers.includes(c.name) || status.containers.includes(c.name)),
  );
  // the app's own prometheus.io/* annotations come back from the agent's environment
  const rest = agent === undefined ? others : restorePrometheusAnnotations(others, agent);
  // the app's own probes come back: the agent that served the rewritten ones goes
  const probers = previousAppProbers(spec, status, NAMES.agent);
  const statusPort = config.ports.agentStatus;
  const initContainers = restoreAppProbes(without(spec.initContainers, status.initContainers), probers, statusPort);
  const volumes = without(spec.volumes, status.volumes);
  return {
    ...pod,
    metadata: { ...pod.metadata, annotations: rest },
    spec: {
      ...spec,
      containers: restoreAppProbes(without(spec.containers, status.containers), probers, statusPort),
      ...(initContainers.length || spec.initContainers === undefined ? { initContainers } : { initContainers: undefined }),
      ...(volumes.length || spec.volumes === undefined ? { volumes } : { volumes: undefined }),
    },
  };
}
