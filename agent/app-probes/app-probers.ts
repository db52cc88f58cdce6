import type { V1GRPCAction, V1HTTPGetAction, V1TCPSocketAction } from '@kubernetes/client-node';
import { shortQuote } from '../../cli/short-quote.js';

/**
 * The app probes the injection took over, handed to the agent as Istio's injector hands them to
 * pilot-agent: env `ISTIO_KUBE_APP_PROBERS`, a JSON object from the path the kubelet now probes on
 * the agent's status port (`/app-health/<container>/livez|readyz|startupz`) to the original action
 * (`httpGet`, `tcpSocket` or `grpc`, named ports resolved to numbers) and its `timeoutSeconds`.
 * The webhook writes it (webhook/injection/probe-rewrite.ts), the agent reads it; both validate it
 * here. The agent probes only these entries, always at the pod's own address (never `host`).
 */
export const APP_PROBERS_ENV = 'ISTIO_KUBE_APP_PROBERS';

export type AppProbeKind = 'livez' | 'readyz' | 'startupz';

/** Which Kubernetes probe each path stands for. */
export const PROBE_KINDS = [
  ['livenessProbe', 'livez'],
  ['readinessProbe', 'readyz'],
  ['startupProbe', 'startupz'],
] as const;

export interface AppProber {
  httpGet?: Pick<V1HTTPGetAction, 'path' | 'port' | 'scheme' | 'httpHeaders'> & { port: number };
  tcpSocket?: Pick<V1TCPSocketAction, 'port'> & { port: number };
  grpc?: V1GRPCAction;
  timeoutSeconds?: number;
}

/** path → prober, in the order the injection wrote them */
export type AppProbers = Map<string, AppProber>;

/**
 * Bounds on what the agent accepts (and the webhook writes): an env value is read into memory
 * whole and each entry is an endpoint on a port the whole network reaches. A pod needs three per
 * container; a pod past these is refused by the webhook with the reason.
 */
export const MAX_APP_PROBERS = 96;
export const MAX_APP_PROBERS_JSON = 64 * 1024;
const MAX_HEADERS = 32;
const MAX_PATH_LENGTH = 2048;
const MAX_HEADER_VALUE_LENGTH = 4096;
const MAX_SERVICE_LENGTH = 1024;

export class AppProbersError extends Error {}

/** Kubernetes container names are DNS labels (RFC 1123). */
const CONTAINER_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const PROBE_PATH = /^\/app-health\/([^/]+)\/(livez|readyz|startupz)$/;
/** What Node's HTTP client sends unescaped in a request target (printable ASCII, no space). */
const REQUEST_PATH = /^[\x21-\x7e]*$/;
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$/;
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

export function appProbePath(container: string, kind: AppProbeKind): string {
  return `/app-health/${container}/${kind}`;
}

/** The container and kind a path names, or null when it is not an app-probe path. */
export function parseAppProbePath(path: string): { container: string; kind: AppProbeKind } | null {
  const m = PROBE_PATH.exec(path);
  if (!m || !CONTAINER_NAME.test(m[1]!)) return null;
  return { container: m[1]!, kind: m[2] as AppProbeKind };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function onlyKeys(v: Record<string, unknown>, allowed: readonly string[], where: string): void {
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k)) throw new AppProbersError(`${where}: unknown field ${shortQuote(k)} (known: ${allowed.join(', ')})`);
  }
}

function portNumber(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) {
    throw new AppProbersError(`${where}.port: must be a port number 1-65535, got ${shortQuote(String(JSON.stringify(v)))}`);
  }
  return v;
}

function readHttpGet(v: unknown, where: string): NonNullable<AppProber['httpGet']> {
  if (!isRecord(v)) throw new AppProbersError(`${where}: must be an object`);
  // no `host`: the agent probes the pod's own address only
  onlyKeys(v, ['path', 'port', 'scheme', 'httpHeaders'], where);
  const out: NonNullable<AppProber['httpGet']> = { port: portNumber(v['port'], where) };
  const path = v['path'];
  if (path !== undefined) {
    if (typeof path !== 'string' || path.length > MAX_PATH_LENGTH || !REQUEST_PATH.test(path)) {
      throw new AppProbersError(`${where}.path: must be at most ${MAX_PATH_LENGTH} printable ASCII characters without spaces, got ${shortQuote(String(path))}`);
    }
    out.path = path;
  }
  const scheme = v['scheme'];
  if (scheme !== undefined) {
    if (scheme !== 'HTTP' && scheme !== 'HTTPS') throw new AppProbersError(`${where}.scheme: must be HTTP or HTTPS, got ${shortQuote(String(scheme))}`);
    out.scheme = scheme;
  }
  const headers = v['httpHeaders'];
  if (headers !== undefined) {
    if (!Array.isArray(headers) || headers.length > MAX_HEADERS) throw new AppProbersError(`${where}.httpHeaders: must be a list of at most ${MAX_HEADERS} headers`);
    out.httpHeaders = headers.map((h: unknown, i) => {
      const at = `${where}.httpHeaders[${i}]`;
      if (!isRecord(h)) throw new AppProbersError(`${at}: must be an object`);
      onlyKeys(h, ['name', 'value'], at);
      const { name, value } = h;
      if (typeof name !== 'string' || !HEADER_NAME.test(name)) throw new AppProbersError(`${at}.name: not a header name: ${shortQuote(String(name))}`);
      if (typeof value !== 'string' || value.length > MAX_HEADER_VALUE_LENGTH || !HEADER_VALUE.test(value)) {
        throw new AppProbersError(`${at}.value: must be at most ${MAX_HEADER_VALUE_LENGTH} characters without control characters`);
      }
      return { name, value };
    });
  }
  return out;
}

function readTcpSocket(v: unknown, where: string): NonNullable<AppProber['tcpSocket']> {
  if (!isRecord(v)) throw new AppProbersError(`${where}: must be an object`);
  onlyKeys(v, ['port'], where);
  return { port: portNumber(v['port'], where) };
}

function readGrpc(v: unknown, where: string): V1GRPCAction {
  if (!isRecord(v)) throw new AppProbersError(`${where}: must be an object`);
  onlyKeys(v, ['port', 'service'], where);
  const out: V1GRPCAction = { port: portNumber(v['port'], where) };
  const service = v['service'];
  if (service !== undefined && service !== null) {
    if (typeof service !== 'string' || service.length > MAX_SERVICE_LENGTH) {
      throw new AppProbersError(`${where}.service: must be a string of at most ${MAX_SERVICE_LENGTH} characters`);
    }
    out.service = service;
  }
  return out;
}

/** One prober, validated; throws AppProbersError naming `where`. */
export function readAppProber(v: unknown, where: string): AppProber {
  if (!isRecord(v)) throw new AppProbersError(`${where}: must be an object`);
  onlyKeys(v, ['httpGet', 'tcpSocket', 'grpc', 'timeoutSeconds'], where);
  const actions = (['httpGet', 'tcpSocket', 'grpc'] as const).filter((k) => v[k] !== undefined);
  if (actions.length !== 1) throw new AppProbersError(`${where}: must have exactly one of httpGet, tcpSocket, grpc`);
  const out: AppProber = {};
  if (v['httpGet'] !== undefined) out.httpGet = readHttpGet(v['httpGet'], `${where}.httpGet`);
  if (v['tcpSocket'] !== undefined) out.tcpSocket = readTcpSocket(v['tcpSocket'], `${where}.tcpSocket`);
  if (v['grpc'] !== undefined) out.grpc = readGrpc(v['grpc'], `${where}.grpc`);
  const timeout = v['timeoutSeconds'];
  if (timeout !== undefined) {
    if (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout < 0 || timeout > 2 ** 31 - 1) {
      throw new AppProbersError(`${where}.timeoutSeconds: must be a non-negative integer`);
    }
    out.timeoutSeconds = timeout;
  }
  return out;
}

/** Parses the env value; an empty one means no probers. Throws AppProbersError with a short reason. */
export function parseAppProbers(text: string | undefined): AppProbers {
  const probers: AppProbers = new Map();
  if (text === undefined || text.trim() === '') return probers;
  if (text.length > MAX_APP_PROBERS_JSON) {
    throw new AppProbersError(`${APP_PROBERS_ENV} is ${text.length} characters long, more than the ${MAX_APP_PROBERS_JSON} allowed`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new AppProbersError(`${APP_PROBERS_ENV} is not JSON: ${(err as Error).message.slice(0, 100)}`);
  }
  if (!isRecord(doc)) throw new AppProbersError(`${APP_PROBERS_ENV} must be a JSON object`);
  const entries = Object.entries(doc);
  if (entries.length > MAX_APP_PROBERS) throw new AppProbersError(`${APP_PROBERS_ENV} has ${entries.length} probers, more than the ${MAX_APP_PROBERS} allowed`);
  for (const [path, value] of entries) {
    if (parseAppProbePath(path) === null) {
      throw new AppProbersError(`${APP_PROBERS_ENV}: ${shortQuote(path)} is not /app-health/<container>/livez|readyz|startupz`);
    }
    probers.set(path, readAppProber(value, `${APP_PROBERS_ENV}[${shortQuote(path)}]`));
  }
  return probers;
}

/**
 * The env value for `probers`: compact JSON, paths sorted as Go's encoding/json sorts map keys (the
 * text Istio's injector would write), fields in readAppProber's order, so that injection is stable.
 */
export function formatAppProbers(probers: AppProbers): string {
  return JSON.stringify(Object.fromEntries([...probers].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))));
}
