import type { IntOrString, V1Container, V1ContainerPort, V1PodSpec, V1Probe } from '@kubernetes/client-node';
import { shortQuote } from '../../cli/short-quote.js';
import {
  APP_PROBERS_ENV,
  AppProbersError,
  appProbePath,
  formatAppProbers,
  MAX_APP_PROBERS,
  MAX_APP_PROBERS_JSON,
  parseAppProbers,
  PROBE_KINDS,
  readAppProber,
  type AppProbers,
} from '../../agent/app-probes/app-probers.js';
import type { InjectionConfig } from '../config/injection-config.js';
import { REWRITE_APP_PROBES_ANNOTATION } from './annotations.js';
import { PodRejection } from './capture.js';
import type { InjectionStatus } from './status.js';

/**
 * App probes rewritten as Istio's injector rewrites them (pkg/kube/inject/app_probe.go): every
 * httpGet, tcpSocket and grpc probe of an app container becomes an httpGet on the agent's status
 * port at `/app-health/<container>/livez|readyz|startupz`, and the original action goes to the
 * agent (env ISTIO_KUBE_APP_PROBERS), which runs it against the app from outside the capture.
 * Without it the kubelet's probes land on APISIX's inbound listener: a tcpSocket probe passes
 * while the app is down (APISIX accepts), HTTPS and gRPC probes meet an HTTP/1.1 listener.
 * `exec` probes, probes naming another `host` and ports that do not resolve stay as they are.
 */

/** The kubelet's probe timeout when a probe names none. */
const DEFAULT_TIMEOUT_SECONDS = 1;

/** Go's strconv.ParseBool, which Istio applies to the annotation. */
function goBool(value: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(value)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(value)) return false;
  return undefined;
}

/** The pod's annotation when it parses as a boolean (Istio's rule), else the configuration's `rewriteAppProbes`. */
export function rewritesAppProbes(annotations: Record<string, string>, config: InjectionConfig): boolean {
  const value = annotations[REWRITE_APP_PROBES_ANNOTATION];
  return (value === undefined ? undefined : goBool(value)) ?? config.rewriteAppProbes;
}

/** The port a probe names, as a number: a name is looked up among the container's ports. */
function resolvePort(port: IntOrString | undefined, ports: readonly V1ContainerPort[] | undefined): number | undefined {
  if (typeof port === 'number') return port;
  if (typeof port !== 'string') return undefined;
  return ports?.find((p) => p.name === port)?.containerPort;
}

/** The agent's prober for `probe`, unvalidated, or null when it is not one the agent takes over. */
function originalAction(probe: V1Probe, container: V1Container, statusPort: number): Record<string, unknown> | null {
  // written even when absent (the API server's default, 1): the same probe before and after the
  // API server filled in its defaults gives the same probers, so a re-invocation changes nothing
  const timeout = { timeoutSeconds: probe.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS };
  if (probe.httpGet) {
    const { host, path, scheme, httpHeaders } = probe.httpGet;
    const port = resolvePort(probe.httpGet.port, container.ports);
    if ((host !== undefined && host !== '') || port === undefined || port === statusPort) return null;
    return { httpGet: { port, ...(path !== undefined ? { path } : {}), ...(scheme !== undefined ? { scheme } : {}), ...(httpHeaders?.length ? { httpHeaders } : {}) }, ...timeout };
  }
  if (probe.tcpSocket) {
    const port = resolvePort(probe.tcpSocket.port, container.ports);
    if ((probe.tcpSocket.host !== undefined && probe.tcpSocket.host !== '') || port === undefined || port === statusPort) return null;
    return { tcpSocket: { port }, ...timeout };
  }
  if (probe.grpc) {
    if (probe.grpc.port === statusPort) return null;
    return { grpc: { port: probe.grpc.port, ...(probe.grpc.service !== undefined && probe.grpc.service !== null ? { service: probe.grpc.service } : {}) }, ...timeout };
  }
  return null;
}

const ACTIONS = new Set(['httpGet', 'tcpSocket', 'grpc']);

/** `probe` with its action (httpGet, tcpSocket or grpc) replaced by `action`, where it stood. */
function withAction(probe: V1Probe, action: Pick<V1Probe, 'httpGet' | 'tcpSocket' | 'grpc'>): V1Probe {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(probe)) {
    if (ACTIONS.has(k)) Object.assign(out, action);
    else out[k] = v;
  }
  return out as V1Probe;
}

export interface RewrittenProbes {
  containers: V1Container[];
  /** what the agent is to probe, path → prober */
  probers: AppProbers;
}

/**
 * `containers` with their probes rewritten to `statusPort`, and the probers the agent gets. The
 * rest of each probe (timeouts, periods, thresholds) stays: the kubelet keeps timing the probe, the
 * agent gives the app the same timeout. Throws PodRejection for a probe the agent could not run
 * faithfully (a path or header it would refuse) and past the agent's limits, naming the opt-out.
 */
export function rewriteAppProbes(
  containers: readonly V1Container[],
  statusPort: number,
  into: AppProbers = new Map(),
  include: (c: V1Container) => boolean = () => true,
): RewrittenProbes {
  const out = containers.map((c) => {
    if (!include(c)) return c;
    let changed: V1Container | undefined;
    for (const [field, kind] of PROBE_KINDS) {
      const probe = c[field];
      if (!probe) continue;
      const raw = originalAction(probe, c, statusPort);
      if (raw === null) continue;
      const path = appProbePath(c.name, kind);
      try {
        into.set(path, readAppProber(raw, `container ${shortQuote(c.name)} ${field}`));
      } catch (err) {
        if (err instanceof AppProbersError) throw new PodRejection(`${err.message}; the agent cannot run this probe for the kubelet (annotation ${REWRITE_APP_PROBES_ANNOTATION}: "false" leaves probes as they are)`);
        throw err;
      }
      changed ??= { ...c };
      // scheme HTTP spelled out (an HTTPS probe's too: the agent speaks HTTPS to the app), as the
      // API server would default it
      changed[field] = withAction(probe, { httpGet: { path, port: statusPort, scheme: 'HTTP' } });
    }
    return changed ?? c;
  });
  if (into.size > MAX_APP_PROBERS) {
    throw new PodRejection(`the pod has ${into.size} probes to rewrite, more than the ${MAX_APP_PROBERS} the agent serves (annotation ${REWRITE_APP_PROBES_ANNOTATION}: "false" leaves probes as they are)`);
  }
  const length = formatAppProbers(into).length;
  if (length > MAX_APP_PROBERS_JSON) {
    throw new PodRejection(`the pod's rewritten probes take ${length} characters, more than the ${MAX_APP_PROBERS_JSON} the agent reads (annotation ${REWRITE_APP_PROBES_ANNOTATION}: "false" leaves probes as they are)`);
  }
  return { containers: out, probers: into };
}

/**
 * `containers` with the probes an earlier injection rewrote put back as they were, from the probers
 * it gave its agent: so that injecting again rewrites from the originals (and gives the same pod),
 * and a pod that leaves sidecar mode or opts out gets its own probes back (with ports as numbers).
 */
export function restoreAppProbes(containers: readonly V1Container[], probers: AppProbers, statusPort: number): V1Container[] {
  if (probers.size === 0) return [...containers];
  return containers.map((c) => {
    let changed: V1Container | undefined;
    for (const [field, kind] of PROBE_KINDS) {
      const probe = c[field];
      const path = appProbePath(c.name, kind);
      const original = probers.get(path);
      if (!probe?.httpGet || original === undefined || probe.httpGet.path !== path || probe.httpGet.port !== statusPort) continue;
      const { timeoutSeconds: _t, ...action } = original;
      changed ??= { ...c };
      changed[field] = withAction(probe, structuredClone(action));
    }
    return changed ?? c;
  });
}

/** The probers an earlier injection (`previous`, its status) gave its agent container `agentName`. */
export function previousAppProbers(spec: V1PodSpec, previous: InjectionStatus, agentName: string): AppProbers {
  const list = previous.containers.includes(agentName) ? spec.containers : previous.initContainers.includes(agentName) ? spec.initContainers : undefined;
  const agent = (list ?? []).find((c) => c.name === agentName);
  const value = agent?.env?.find((e) => e.name === APP_PROBERS_ENV)?.value;
  try {
    return parseAppProbers(value);
  } catch (err) {
    if (err instanceof AppProbersError) throw new PodRejection(`the earlier injection's app probes cannot be read back: ${err.message}`);
    throw err;
  }
}

/** The agent container with the probers it is to serve (a copy: the parts are shared between pods). */
export function agentWithProbers(agent: V1Container, probers: AppProbers): V1Container {
  if (probers.size === 0) return agent;
  return { ...agent, env: [...(agent.env ?? []), { name: APP_PROBERS_ENV, value: formatAppProbers(probers) }] };
}
