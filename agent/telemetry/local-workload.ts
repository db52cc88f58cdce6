import type { NodeIdentity } from '../xds/node.js';
import { luaLiteral } from '../translate/lua-literal.js';

/**
 * The pod's own labels in Istio's standard metrics (the source side of outbound requests, the
 * destination side of inbound ones), as the sidecar's Lua reads them from the module the agent
 * writes (ISTIO_METRICS_CONF_MODULE, read by istio_metrics.lua). From the node identity: the
 * pod's namespace, labels and cluster id, which the agent has from the injected environment and the
 * downward-API labels file. Absent values are left out (the Lua says `unknown`).
 */
export interface LocalWorkload {
  workload: string;
  namespace: string;
  app?: string;
  version?: string;
  canonical_service: string;
  canonical_revision: string;
  cluster: string;
}

/** The module the agent writes for istio_metrics.lua: the local workload and the series bound. */
export const ISTIO_METRICS_CONF_MODULE = 'apisix_mesh/istio_metrics_conf.lua';
/** The most label sets istio_metrics.lua keeps (its shared dict, apisix-config.ts, is sized for it). */
export const ISTIO_METRICS_MAX_SERIES = 1000;

const CANONICAL_NAME = 'service.istio.io/canonical-name';
const CANONICAL_REVISION = 'service.istio.io/canonical-revision';

/**
 * The workload's name as Istio reports it: `ISTIO_META_WORKLOAD_NAME` when the environment sets it
 * (Istio's injector does), else guessed from the running pod the way the workload controllers name
 * pods: a Deployment's `<name>-<pod-template-hash>-<5 chars>`, a StatefulSet's `<name>-<ordinal>`,
 * a Job's `job-name` label; else the pod's own name.
 */
export function workloadName(identity: NodeIdentity): string {
  const fromMeta = identity.meta['WORKLOAD_NAME'];
  if (fromMeta) return fromMeta;
  const pod = identity.podName;
  const labels = identity.labels;
  const hash = labels['pod-template-hash'] ?? labels['rollouts-pod-template-hash'];
  if (hash) {
    const marker = `-${hash}-`;
    const at = pod.lastIndexOf(marker);
    if (at > 0 && /^[a-z0-9]{5}$/.test(pod.slice(at + marker.length))) return pod.slice(0, at);
  }
  if (labels['statefulset.kubernetes.io/pod-name'] === pod) {
    const ordinal = /^(.+)-\d+$/.exec(pod);
    if (ordinal) return ordinal[1]!;
  }
  if (labels['job-name']) return labels['job-name'];
  return pod;
}

const first = (...values: Array<string | undefined>): string | undefined => values.find((v) => v !== undefined && v !== '');

/** Istio's canonical service and revision labels (which the injection sets), with its fallbacks. */
export function localWorkload(identity: NodeIdentity): LocalWorkload {
  const labels = identity.labels;
  const workload = workloadName(identity);
  const app = first(labels['app'], labels['app.kubernetes.io/name']);
  const version = first(labels['version'], labels['app.kubernetes.io/version']);
  return {
    workload,
    namespace: identity.namespace,
    ...(app ? { app } : {}),
    ...(version ? { version } : {}),
    canonical_service: first(labels[CANONICAL_NAME], labels['app.kubernetes.io/name'], labels['app']) ?? workload,
    canonical_revision: first(labels[CANONICAL_REVISION], labels['app.kubernetes.io/version'], labels['version']) ?? 'latest',
    cluster: identity.clusterId,
  };
}

/**
 * What the sidecar says of itself in Istio's metadata exchange (peer_exchange.lua): the local
 * workload, plus the node id (`x-envoy-peer-metadata-id`) and the pod's name (NAME).
 */
export interface ExchangeIdentity {
  nodeId: string;
  instance: string;
}

/** The module's text: data only (luaLiteral writes every byte of a string as data, never as code). */
export function istioMetricsConfLua(conf: { localWorkload: LocalWorkload; maxSeries: number; exchange?: ExchangeIdentity }): string {
  const local = conf.exchange ? { ...conf.localWorkload, instance: conf.exchange.instance } : conf.localWorkload;
  const exchange = conf.exchange ? { node_id: conf.exchange.nodeId } : {};
  return `-- Written by the apisix-mesh agent at start, for Istio's standard metrics (istio_metrics.lua) and its metadata exchange (peer_exchange.lua).\nreturn ${luaLiteral({ local_workload: local, max_series: conf.maxSeries, ...exchange })}\n`;
}
