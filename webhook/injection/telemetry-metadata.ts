import type { V1Container, V1EnvVar, V1Pod } from '@kubernetes/client-node';
import { shortQuote } from '../../cli/short-quote.js';
import {
  CANONICAL_NAME_LABEL,
  CANONICAL_REVISION_LABEL,
  PROMETHEUS_MERGE_ANNOTATION,
  PROMETHEUS_SCRAPE_ENV,
} from './annotations.js';
import { PodRejection } from './capture.js';

/**
 * Istio's pod metadata for telemetry, as its injector writes it (pkg/kube/inject): the Prometheus
 * "metrics merge" and the canonical-service labels. Pure functions; sidecar.ts applies them.
 */

/** Where the merged endpoint answers on the agent's status port (pilot-agent's path). */
export const MERGED_METRICS_PATH = '/stats/prometheus';

/** The app's own scrape settings, moved into the agent's environment (Istio's JSON shape). */
export interface PrometheusScrapeConfiguration {
  scrape: string;
  path: string;
  port: string;
}

/**
 * Prometheus reads `prometheus.io/scrape`, `prometheus.io.scrape` and `prometheus-io/scrape` alike:
 * it maps every character outside [a-zA-Z0-9_] of an annotation name to `_`. Istio compares the
 * sanitized names, so every spelling is moved (and cleared) together.
 */
const sanitize = (name: string): string => name.replace(/[^a-zA-Z0-9_]/g, '_');
const SCRAPE = 'prometheus_io_scrape';
const PORT = 'prometheus_io_port';
const PATH = 'prometheus_io_path';

/** Go's strconv.ParseBool, which Istio uses for these annotations: null when not a boolean. */
export function parseGoBool(value: string): boolean | null {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(value)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(value)) return false;
  return null;
}

export interface PrometheusMerge {
  /** the pod's annotations afterwards (the input object itself when nothing changes) */
  annotations: Record<string, string>;
  /** the agent's `ISTIO_PROMETHEUS_ANNOTATIONS`, or null for none */
  scrapeEnv: string | null;
}

export interface PrometheusMergeSettings {
  /** mesh-wide switch (Istio's meshConfig.enablePrometheusMerge) */
  enabled: boolean;
  /** the agent's status port, which serves the merged endpoint */
  statusPort: number;
  /** ports the mesh listens on: an app's metrics cannot be there */
  reservedPorts: readonly number[];
  /**
   * the agent's `ISTIO_PROMETHEUS_ANNOTATIONS` of an earlier injection of this pod: kept when the
   * annotations already point at the agent (re-injection), where Istio would lose the app's scrape
   */
  previousScrapeEnv: string | null;
}

/**
 * Istio's `applyPrometheusMerge`: unless the pod says `prometheus.io/scrape: "false"` (any
 * spelling) or opts out with `prometheus.istio.io/merge-metrics: "false"` (or the mesh turned the
 * merge off), the pod's `prometheus.io/*` annotations (every spelling) are moved into the agent's
 * `ISTIO_PROMETHEUS_ANNOTATIONS` as `{"scrape","path","port"}` and replaced with
 * scrape `"true"`, port = the agent's status port, path `/stats/prometheus`. Annotations that
 * already name the agent's port are left as they are (a re-injection).
 * Refused (as Istio's validation does): a merge-metrics value that is not a boolean, an app port
 * that is not a port number, or a port of the mesh itself (the agent would scrape the mesh, or
 * itself, as the app).
 */
export function applyPrometheusMerge(annotations: Record<string, string>, settings: PrometheusMergeSettings): PrometheusMerge {
  const unchanged: PrometheusMerge = { annotations, scrapeEnv: null };
  const mergeValue = annotations[PROMETHEUS_MERGE_ANNOTATION];
  let enabled = settings.enabled;
  if (mergeValue !== undefined) {
    const parsed = parseGoBool(mergeValue);
    if (parsed === null) throw new PodRejection(`annotation ${PROMETHEUS_MERGE_ANNOTATION}: ${shortQuote(mergeValue)} must be "true" or "false"`);
    enabled = parsed;
  }
  const found: PrometheusScrapeConfiguration = { scrape: '', path: '', port: '' };
  let scrapeWanted = true;
  let portSeen = false;
  for (const [key, value] of Object.entries(annotations)) {
    switch (sanitize(key)) {
      case SCRAPE:
        found.scrape = value;
        if (parseGoBool(value) === false) scrapeWanted = false;
        break;
      case PATH:
        found.path = value;
        break;
      case PORT:
        found.port = value;
        portSeen = true;
        break;
    }
  }
  if (!enabled || !scrapeWanted) return unchanged;
  const target = String(settings.statusPort);
  if (portSeen && found.port === target) return { annotations, scrapeEnv: settings.previousScrapeEnv };
  if (portSeen) checkAppPort(found.port, settings.reservedPorts);

  const moved: Record<string, string> = {};
  for (const [key, value] of Object.entries(annotations)) {
    const s = sanitize(key);
    if (s !== SCRAPE && s !== PATH && s !== PORT) moved[key] = value;
  }
  moved['prometheus.io/port'] = target;
  moved['prometheus.io/path'] = MERGED_METRICS_PATH;
  moved['prometheus.io/scrape'] = 'true';
  const empty = found.scrape === '' && found.path === '' && found.port === '';
  return { annotations: moved, scrapeEnv: empty ? null : JSON.stringify(found) };
}

function checkAppPort(value: string, reserved: readonly number[]): void {
  const port = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(port >= 1 && port <= 65535)) {
    throw new PodRejection(`annotation prometheus.io/port: ${shortQuote(value)} is not a port number (1-65535)`);
  }
  if (reserved.includes(port)) {
    throw new PodRejection(`annotation prometheus.io/port: ${port} is a port of the apisix-mesh sidecar, not of the app`);
  }
}

/** The agent container's environment with (or without, for null) the app's scrape settings. */
export function withScrapeEnv(env: readonly V1EnvVar[] | undefined, scrapeEnv: string | null): V1EnvVar[] {
  const rest = (env ?? []).filter((e) => e.name !== PROMETHEUS_SCRAPE_ENV);
  return scrapeEnv === null ? rest : [...rest, { name: PROMETHEUS_SCRAPE_ENV, value: scrapeEnv }];
}

/** The value of `ISTIO_PROMETHEUS_ANNOTATIONS` in a container's environment, or null. */
export function scrapeEnvOf(env: readonly V1EnvVar[] | undefined): string | null {
  return env?.find((e) => e.name === PROMETHEUS_SCRAPE_ENV)?.value ?? null;
}

/**
 * The inverse of `applyPrometheusMerge`, for a pod that leaves sidecar mode: the annotations that
 * point at the agent's status port (its container's first port) are taken out and the app's own
 * settings, kept in the agent's `ISTIO_PROMETHEUS_ANNOTATIONS`, put back. A value that does not
 * parse puts nothing back.
 */
export function restorePrometheusAnnotations(annotations: Record<string, string>, agent: V1Container): Record<string, string> {
  const statusPort = agent.ports?.[0]?.containerPort;
  const port = Object.entries(annotations).find(([k]) => sanitize(k) === PORT)?.[1];
  if (statusPort === undefined || port !== String(statusPort)) return annotations;
  const rest: Record<string, string> = {};
  for (const [key, value] of Object.entries(annotations)) {
    const s = sanitize(key);
    if (s !== SCRAPE && s !== PATH && s !== PORT) rest[key] = value;
  }
  const moved = parseScrapeEnv(scrapeEnvOf(agent.env));
  if (moved?.scrape) rest['prometheus.io/scrape'] = moved.scrape;
  if (moved?.path) rest['prometheus.io/path'] = moved.path;
  if (moved?.port) rest['prometheus.io/port'] = moved.port;
  return rest;
}

/** `ISTIO_PROMETHEUS_ANNOTATIONS` parsed, or null when absent or not Istio's shape. */
export function parseScrapeEnv(text: string | null): PrometheusScrapeConfiguration | null {
  if (text === null || text.length > 4096) return null;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  const v = value as Record<string, unknown>;
  const str = (x: unknown): string | null => (x === undefined ? '' : typeof x === 'string' ? x : null);
  const scrape = str(v.scrape);
  const path = str(v.path);
  const port = str(v.port);
  if (scrape === null || path === null || port === null) return null;
  return { scrape, path, port };
}

/** A CronJob's Job is named `<cronjob>-<scheduled time in minutes, 8-10 digits>`. */
const CRONJOB_JOB_NAME = /^(.+)-\d{8,10}$/;

/**
 * The workload's name as Istio's `GetDeployMetaFromPod` guesses it from a pod being created: the
 * controller's name, without the ReplicaSet's `-<pod-template-hash>` (a Deployment; Argo Rollouts
 * likewise), the DeploymentConfig label for OpenShift's ReplicationControllers, a CronJob's name for
 * its Jobs; the pod's own name otherwise. Istio stops there with an empty name for a pod that has a
 * generateName and no controller; the generateName without its trailing `-` is used instead.
 */
export function workloadName(pod: V1Pod): string {
  const meta = pod.metadata ?? {};
  const labels = meta.labels ?? {};
  let name = meta.name ?? '';
  if (meta.generateName) {
    const controller = (meta.ownerReferences ?? []).find((r) => r.controller === true);
    if (controller !== undefined) {
      name = controller.name;
      const hash = labels['pod-template-hash'];
      const rolloutHash = labels['rollouts-pod-template-hash'];
      if (controller.kind === 'ReplicaSet' && hash && controller.name.endsWith(hash)) {
        name = trimSuffix(controller.name, `-${hash}`);
      } else if (controller.kind === 'ReplicaSet' && rolloutHash && controller.name.endsWith(rolloutHash)) {
        name = trimSuffix(controller.name, `-${rolloutHash}`);
      } else if (controller.kind === 'ReplicationController' && labels.deploymentconfig) {
        name = labels.deploymentconfig;
      } else if (controller.kind === 'Job') {
        name = CRONJOB_JOB_NAME.exec(controller.name)?.[1] ?? name;
      }
    }
  }
  if (name === '') name = meta.name ?? '';
  if (name === '' && meta.generateName) name = meta.generateName.replace(/-+$/, '');
  return name;
}

const trimSuffix = (s: string, suffix: string): string => (s.endsWith(suffix) ? s.slice(0, -suffix.length) : s);

/**
 * A label value Kubernetes accepts (63 characters at most, alphanumeric at both ends): a workload
 * name may be longer (a Deployment's may have 253 characters), and an invalid label would make the
 * API server refuse the pod after the injection.
 */
function asLabelValue(value: string): string {
  return value.slice(0, 63).replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
}

/**
 * Istio's canonical-service labels (its sidecar template), by which Kiali and Istio's dashboards
 * and telemetry group a workload: name = the label itself, else `app.kubernetes.io/name`, else
 * `app`, else the workload's name; revision = the label itself, else `app.kubernetes.io/version`,
 * else `version`, else `latest`. An empty label counts as absent (Go templates' `default`). A name
 * that is no label value (over 63 characters) is cut to one.
 */
export function canonicalServiceLabels(pod: V1Pod): Record<string, string> {
  const labels = pod.metadata?.labels ?? {};
  const first = (...values: Array<string | undefined>): string | undefined => values.find((v) => v !== undefined && v !== '');
  const name = first(labels[CANONICAL_NAME_LABEL], labels['app.kubernetes.io/name'], labels.app) ?? asLabelValue(workloadName(pod));
  const revision = first(labels[CANONICAL_REVISION_LABEL], labels['app.kubernetes.io/version'], labels.version) ?? 'latest';
  // A pod template (`apisix-mesh inject`) has no name: its pods get the name when they are created.
  return { ...(name !== '' ? { [CANONICAL_NAME_LABEL]: name } : {}), [CANONICAL_REVISION_LABEL]: revision };
}
