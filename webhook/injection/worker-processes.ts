import type { V1ResourceRequirements } from '@kubernetes/client-node';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { shortQuote } from '../../cli/short-quote.js';
import { MAX_WORKER_PROCESSES, type InjectionConfig } from '../config/injection-config.js';
import { PROXY_CONFIG_ANNOTATION } from './annotations.js';
import { PodRejection } from './capture.js';
import { quantityOf } from './proxy-resources.js';

/**
 * How many nginx workers the pod's APISIX runs: what Istio's `concurrency` (Envoy's worker threads)
 * means for this sidecar, decided in Istio's order (pilot-agent's ConstructProxyConfig):
 *
 * 1. `concurrency` in the pod's `proxy.istio.io/config` annotation (a ProxyConfig, YAML or JSON);
 * 2. the mesh-wide setting, here the configuration's `apisixWorkerProcesses` when it is a number
 *    (Istio's `meshConfig.defaultConfig.concurrency`);
 * 3. the APISIX container's CPU limit rounded up to whole CPUs (Istio's `ISTIO_CPU_LIMIT`, the
 *    proxy's `limits.cpu` through the downward API with divisor 1), from `proxyCPULimit` or the
 *    configuration's `resources.apisix`;
 * 4. without a CPU limit, 2. Envoy would take one thread per CPU of the node; an APISIX worker holds
 *    its own copy of the mesh's configuration (~25 MiB per 1,000 services), so a worker per CPU of
 *    a large node would multiply the pod's memory by the node's size.
 *
 * `concurrency: 0` is Istio's "one per CPU of the node": nginx's `worker_processes auto`, honoured as
 * asked, with a warning (`proxyConfigWarnings`), as pilot-agent warns.
 */
export type WorkerProcesses = number | 'auto';

/** Without a CPU limit: what Istio's charts give a sidecar by default (`limits.cpu: 2000m`). */
export const WORKERS_WITHOUT_CPU_LIMIT = 2;
/**
 * A ProxyConfig is a few hundred bytes; Kubernetes allows 256 KiB of annotations in all. Anything
 * this long is a mistake, refused before it is parsed.
 */
const MAX_PROXY_CONFIG_LENGTH = 16 * 1024;

export function workerProcessesFor(
  annotations: Record<string, string>,
  config: Pick<InjectionConfig, 'apisixWorkerProcesses'>,
  apisixResources: V1ResourceRequirements,
): WorkerProcesses {
  const concurrency = annotatedConcurrency(annotations);
  if (concurrency !== undefined) return concurrency === 0 ? 'auto' : concurrency;
  if (config.apisixWorkerProcesses !== 'cpu-limit') return config.apisixWorkerProcesses;
  const cpuLimit = apisixResources.limits?.cpu;
  if (cpuLimit === undefined) return WORKERS_WITHOUT_CPU_LIMIT;
  const cores = quantityOf('limits.cpu of the APISIX container', String(cpuLimit));
  // the downward API rounds a CPU quantity up to the divisor (1): 500m → 1, 2500m → 3
  return Math.min(MAX_WORKER_PROCESSES, Math.max(1, Math.ceil(cores - 1e-9)));
}

/**
 * What the pod's ProxyConfig says that the sidecar does not do: every field but `concurrency` is
 * Envoy's or pilot-agent's (the sidecar's settings come from apisix-mesh's configuration file), and
 * `concurrency: 0` costs a copy of the configuration per CPU of the node.
 */
export function proxyConfigWarnings(annotations: Record<string, string>): string[] {
  const proxyConfig = parsedProxyConfig(annotations);
  if (proxyConfig === undefined) return [];
  const warnings: string[] = [];
  const ignored = Object.keys(proxyConfig).filter((field) => field !== 'concurrency');
  if (ignored.length > 0) {
    const named = ignored.slice(0, 8).join(', ') + (ignored.length > 8 ? `, … (${ignored.length} fields)` : '');
    warnings.push(
      `annotation ${PROXY_CONFIG_ANNOTATION}: only concurrency (APISIX's worker processes) applies to the APISIX sidecar; not honoured: ${named} ` +
        "(the sidecar's other settings come from apisix-mesh's configuration file)",
    );
  }
  if (annotatedConcurrency(annotations) === 0) {
    warnings.push(
      `annotation ${PROXY_CONFIG_ANNOTATION}: concurrency 0 runs one APISIX worker per CPU of the node (nginx's worker_processes auto), ` +
        "each with its own copy of the mesh's configuration; set a number, or leave concurrency out to follow the CPU limit",
    );
  }
  return warnings;
}

/** `concurrency` from the pod's ProxyConfig: undefined when the pod does not set it. */
function annotatedConcurrency(annotations: Record<string, string>): number | undefined {
  const value = parsedProxyConfig(annotations)?.concurrency;
  if (value === undefined || value === null) return undefined;
  // ProxyConfig's concurrency is an Int32Value: JSON gives a number, and protobuf's JSON reader also
  // takes the number as a string
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\d{1,3}$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > MAX_WORKER_PROCESSES) {
    const quoted = typeof value === 'number' ? String(value) : typeof value === 'string' ? shortQuote(value) : shortQuote(JSON.stringify(value) ?? String(value));
    throw new PodRejection(
      `annotation ${PROXY_CONFIG_ANNOTATION}: concurrency ${quoted} must be an integer in 0-${MAX_WORKER_PROCESSES} (APISIX's worker processes; 0: one per CPU of the node)`,
    );
  }
  return n;
}

/** The annotation's ProxyConfig as a mapping, undefined when absent or empty; refused when unreadable. */
function parsedProxyConfig(annotations: Record<string, string>): Record<string, unknown> | undefined {
  const text = annotations[PROXY_CONFIG_ANNOTATION];
  if (text === undefined) return undefined;
  if (text.length > MAX_PROXY_CONFIG_LENGTH) {
    throw new PodRejection(`annotation ${PROXY_CONFIG_ANNOTATION}: ${shortQuote(text)} is longer than the ${MAX_PROXY_CONFIG_LENGTH} characters a ProxyConfig may have here`);
  }
  let doc: unknown;
  try {
    // no aliases: a ProxyConfig has no use for them, and they are how a short YAML text grows large
    doc = parseYaml(text, { maxAliasCount: 0, uniqueKeys: true, prettyErrors: false });
  } catch (err) {
    if (!(err instanceof YAMLParseError) && !(err instanceof Error && /alias/i.test(err.message))) throw err;
    throw new PodRejection(`annotation ${PROXY_CONFIG_ANNOTATION}: ${shortQuote(text)} is not a ProxyConfig in YAML or JSON (${shortQuote(err.message.split('\n')[0]!, 120)})`);
  }
  if (doc === null || doc === undefined) return undefined;
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new PodRejection(`annotation ${PROXY_CONFIG_ANNOTATION}: ${shortQuote(text)} is not a ProxyConfig (a mapping of its fields, e.g. "concurrency: 1")`);
  }
  return doc as Record<string, unknown>;
}
