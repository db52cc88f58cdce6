import { isScalar, parseDocument, visit } from 'yaml';
import { shortQuote } from '../../cli/short-quote.js';
import { MAX_WORKER_PROCESSES } from '../config/injection-config.js';
import { PROXY_CONFIG_ANNOTATION } from './annotations.js';
import { PodRejection } from './capture.js';

/**
 * Istio's per-pod ProxyConfig (`proxy.istio.io/config`, YAML or JSON), which Istio merges over the
 * mesh's `defaultConfig`. Two of its fields mean something for the APISIX sidecar:
 * `concurrency` (APISIX's worker processes, worker-processes.ts) and
 * `holdApplicationUntilProxyStarts` (the app starts once APISIX is ready, apisix-start-hold.ts);
 * every other field tunes Envoy or pilot-agent and is named in a warning. A text that is not a
 * ProxyConfig is refused, as Istio's injector refuses it.
 */

/** The fields the sidecar honours. */
const HONOURED_FIELDS: readonly string[] = ['concurrency', 'holdApplicationUntilProxyStarts'];

/**
 * A ProxyConfig is a few hundred bytes; Kubernetes allows 256 KiB of annotations in all. Anything
 * this long is a mistake, refused before it is parsed.
 */
const MAX_PROXY_CONFIG_LENGTH = 16 * 1024;

/**
 * What the pod's ProxyConfig says that the sidecar does not do: every field but the two it honours
 * is Envoy's or pilot-agent's (the sidecar's settings come from apisix-mesh's configuration file),
 * and `concurrency: 0` costs a copy of the configuration per CPU of the node.
 */
export function proxyConfigWarnings(annotations: Record<string, string>): string[] {
  const proxyConfig = readProxyConfig(annotations);
  const warnings: string[] = [];
  const ignored = proxyConfig.fields.filter((field) => !HONOURED_FIELDS.includes(field));
  if (ignored.length > 0) {
    const named = ignored.slice(0, 8).join(', ') + (ignored.length > 8 ? `, … (${ignored.length} fields)` : '');
    warnings.push(
      `annotation ${PROXY_CONFIG_ANNOTATION}: only concurrency (APISIX's worker processes) and holdApplicationUntilProxyStarts apply to the APISIX sidecar; not honoured: ${named} ` +
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

/** What the sidecar reads of a ProxyConfig (undefined: not set), and the names of its top-level fields. */
export interface ProxyConfigRead {
  concurrency: number | undefined;
  holdApplicationUntilProxyStarts: boolean | undefined;
  fields: string[];
}

/**
 * A review reads the annotation twice (the injection, then its warnings): the last text's outcome is
 * kept, so that a long one is parsed once. Pure, so a memo of one entry is enough.
 */
let last: { text: string; read: ProxyConfigRead | PodRejection } | undefined;

const NONE: ProxyConfigRead = { concurrency: undefined, holdApplicationUntilProxyStarts: undefined, fields: [] };

/** The pod's ProxyConfig as the sidecar reads it; throws `PodRejection` for one that is not a ProxyConfig. */
export function readProxyConfig(annotations: Record<string, string>): ProxyConfigRead {
  const text = annotations[PROXY_CONFIG_ANNOTATION];
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
  return {
    concurrency: concurrencyOf(proxyConfig.concurrency),
    holdApplicationUntilProxyStarts: holdOf(proxyConfig.holdApplicationUntilProxyStarts),
    fields: Object.keys(proxyConfig),
  };
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

function holdOf(value: unknown): boolean | undefined {
  if (value === undefined || value === null) return undefined;
  // a BoolValue: protobuf's JSON reader takes true and false only
  if (typeof value !== 'boolean') {
    const quoted = typeof value === 'string' ? shortQuote(value) : shortQuote(JSON.stringify(value) ?? String(value));
    throw new PodRejection(`annotation ${PROXY_CONFIG_ANNOTATION}: holdApplicationUntilProxyStarts ${quoted} must be true or false`);
  }
  return value;
}
