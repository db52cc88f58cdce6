import type { V1ResourceRequirements } from '@kubernetes/client-node';
import { isScalar, parseDocument, visit } from 'yaml';
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
  const proxyConfig = readProxyConfig(annotations[PROXY_CONFIG_ANNOTATION]);
  const warnings: string[] = [];
  const ignored = proxyConfig.fields.filter((field) => field !== 'concurrency');
  if (ignored.length > 0) {
    const named = ignored.slice(0, 8).join(', ') + (ignored.length > 8 ? `, … (${ignored.length} fields)` : '');
    warnings.push(
      `annotation ${PROXY_CONFIG_ANNOTATION}: only concurrency (APISIX's worker processes) applies to the APISIX sidecar; not honoured: ${named} ` +
        "(the sidecar's other settings come from apisix-mesh's configuration file)",
    );
  }
  if (proxyConfig.concurrency === 0) {
    warnings.push(
      `annotation ${PROXY_CONFIG_ANNOTATION}: concurrency 0 runs one APISIX worker per CPU of the node (nginx's worker_processes auto), ` +
        "each with its own copy of the mesh's configuration; set a number, or leave concurrency out to follow the CPU limit",
    );
  }
  return warnings;
}

/** `concurrency` from the pod's ProxyConfig: undefined when the pod does not set it. */
function annotatedConcurrency(annotations: Record<string, string>): number | undefined {
  return readProxyConfig(annotations[PROXY_CONFIG_ANNOTATION]).concurrency;
}

/** What the sidecar reads of a ProxyConfig: its concurrency, and the names of its top-level fields. */
interface ProxyConfigRead {
  concurrency: number | undefined;
  fields: string[];
}

/**
 * A review reads the annotation twice (the injection, then its warnings): the last text's outcome is
 * kept, so that a long one is parsed once. Pure, so a memo of one entry is enough.
 */
let last: { text: string; read: ProxyConfigRead | PodRejection } | undefined;

const NONE: ProxyConfigRead = { concurrency: undefined, fields: [] };

function readProxyConfig(text: string | undefined): ProxyConfigRead {
  if (text === undefined) return NONE;
  if (text !== last?.text) {
    let read: ProxyConfigRead | PodRejection;
    try {
      read = parseProxyConfig(text);
    } catch (err) {
      if (!(err instanceof PodRejection)) throw err;
      read = err;
    }
    last = { text, read };
  }
  if (last!.read instanceof PodRejection) throw new PodRejection(last!.read.message);
  return last!.read;
}

function parseProxyConfig(text: string): ProxyConfigRead {
  const refuse = (why: string): never => {
    throw new PodRejection(`annotation ${PROXY_CONFIG_ANNOTATION}: ${shortQuote(text)} ${why}`);
  };
  if (text.length > MAX_PROXY_CONFIG_LENGTH) refuse(`is longer than the ${MAX_PROXY_CONFIG_LENGTH} characters a ProxyConfig may have here`);
  // uniqueKeys off: the library compares each key with every other (quadratic); a Set below does it
  // in one pass. No aliases: a ProxyConfig has no use for them, and they are how a short text grows.
  const doc = parseDocument(text, { uniqueKeys: false, prettyErrors: false });
  const syntax = doc.errors[0];
  if (syntax) refuse(`is not a ProxyConfig in YAML or JSON (${shortQuote(syntax.message.split('\n')[0]!, 120)})`);
  let problem: string | undefined;
  visit(doc, {
    Map(_, map) {
      const seen = new Set<unknown>();
      for (const pair of map.items) {
        if (!isScalar(pair.key)) {
          problem = 'a key that is not a scalar';
          return visit.BREAK;
        }
        if (seen.has(pair.key.value)) {
          problem = `key ${shortQuote(String(pair.key.value), 64)} twice in one mapping`;
          return visit.BREAK;
        }
        seen.add(pair.key.value);
      }
      return undefined;
    },
    Alias() {
      problem = 'an alias (*name)';
      return visit.BREAK;
    },
  });
  if (problem !== undefined) refuse(`is not a ProxyConfig in YAML or JSON (${problem})`);
  const value: unknown = doc.toJS({ maxAliasCount: 0 });
  if (value === null || value === undefined) return NONE;
  if (typeof value !== 'object' || Array.isArray(value)) refuse('is not a ProxyConfig (a mapping of its fields, e.g. "concurrency: 1")');
  const proxyConfig = value as Record<string, unknown>;
  return { concurrency: concurrencyOf(proxyConfig.concurrency), fields: Object.keys(proxyConfig) };
}

function concurrencyOf(value: unknown): number | undefined {
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
