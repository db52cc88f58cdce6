import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import type { V1ResourceRequirements } from '@kubernetes/client-node';
import { shortQuote } from '../../cli/short-quote.js';
import { parseHostPort } from '../../cli/host-port.js';
import { MAX_LIST_LENGTH } from '../../iptables-init/capture-config.js';
import { TRUST_DOMAIN_PATTERN } from '../../agent/identity/spiffe-id.js';
import { WORKLOAD_KEY_TYPES } from '../../agent/identity/key-type.js';
import { defaultInjectionConfig, MAX_WORKER_PROCESSES, type InjectionConfig } from './injection-config.js';
import { quantityValue } from './quantity.js';

/** A configuration file that cannot be used; the message names the file and the field. */
export class InjectionConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InjectionConfigError';
  }
}

class FieldError extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(reason);
  }
}

/** A field reader: checks one value (never undefined) and returns it typed. */
type Reader<T> = (value: unknown, field: string) => T;

const describe = (v: unknown): string =>
  v === null ? 'null' : Array.isArray(v) ? 'a list' : typeof v === 'object' ? 'a mapping' : typeof v === 'string' ? shortQuote(v) : JSON.stringify(v);

const nonEmptyString: Reader<string> = (v, field) => {
  if (typeof v !== 'string' || v.trim() === '') throw new FieldError(field, `must be a non-empty string, got ${describe(v)}`);
  return v;
};

const boolean: Reader<boolean> = (v, field) => {
  if (typeof v !== 'boolean') throw new FieldError(field, `must be true or false, got ${describe(v)}`);
  return v;
};

function integer(min: number, max: number): Reader<number> {
  return (v, field) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new FieldError(field, `must be an integer in ${min}-${max}, got ${describe(v)}`);
    }
    return v;
  };
}

const port = integer(1, 65535);

/** A number of APISIX workers, or `cpu-limit`: Istio's rule (webhook/injection/worker-processes.ts). */
const workerProcesses: Reader<number | 'cpu-limit'> = (v, field) => {
  if (v === 'cpu-limit') return v;
  if (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= MAX_WORKER_PROCESSES) return v;
  throw new FieldError(field, `must be an integer in 1-${MAX_WORKER_PROCESSES} or cpu-limit (the APISIX container's CPU limit rounded up), got ${describe(v)}`);
};

function oneOf<T extends string>(...allowed: T[]): Reader<T> {
  return (v, field) => {
    if (typeof v !== 'string' || !(allowed as string[]).includes(v)) {
      throw new FieldError(field, `must be one of ${allowed.join(', ')}, got ${describe(v)}`);
    }
    return v as T;
  };
}

function listOf<T>(item: Reader<T>): Reader<T[]> {
  return (v, field) => {
    if (!Array.isArray(v)) throw new FieldError(field, `must be a list, got ${describe(v)}`);
    return v.map((x, i) => item(x, `${field}[${i}]`));
  };
}

/**
 * Empty, or an absolute path nginx can take as it is: it is written unquoted into nginx.conf, so
 * nothing that could end or extend the directive (spaces, `;`, quotes, braces, `$`).
 */
const accessLogFile: Reader<string> = (v, field) => {
  if (v === '' || (typeof v === 'string' && v.length <= 255 && /^\/[A-Za-z0-9._\/-]+$/.test(v))) return v;
  throw new FieldError(field, `must be empty (no access log) or an absolute path such as /dev/stdout, got ${describe(v)}`);
};

const cidr: Reader<string> = (v, field) => {
  const text = typeof v === 'string' ? v : '';
  const [addr = '', bits = '', extra] = text.split('/');
  const family = isIP(addr);
  if (extra !== undefined || family === 0 || !/^\d{1,3}$/.test(bits) || Number(bits) > (family === 4 ? 32 : 128)) {
    throw new FieldError(field, `must be a CIDR (address/prefix-length), got ${describe(v)}`);
  }
  return `${addr}/${Number(bits)}`;
};

/** `*` (everything) or a list of CIDRs. */
const cidrSelection: Reader<'*' | string[]> = (v, field) => {
  if (v === '*') return '*';
  if (!Array.isArray(v)) throw new FieldError(field, `must be "*" or a list of CIDRs, got ${describe(v)}`);
  return listOf(cidr)(v, field);
};

/** Kubernetes-style DNS label (namespace names). */
const dnsLabel: Reader<string> = (v, field) => {
  if (typeof v !== 'string' || !/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(v)) {
    throw new FieldError(field, `must be a namespace name (DNS label), got ${describe(v)}`);
  }
  return v;
};

const hostPort: Reader<string> = (v, field) => {
  const s = nonEmptyString(v, field);
  const parsed = parseHostPort(s);
  if ('problem' in parsed || parsed.port < 1) {
    throw new FieldError(field, `must be host:port (${'problem' in parsed ? parsed.problem : 'port 0'}), got ${describe(v)}`);
  }
  return s;
};

/** A DNS name as a certificate carries it (the TLS server name), or empty. */
const serverName: Reader<string> = (v, field) => {
  if (typeof v !== 'string' || (v !== '' && !/^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(v))) {
    throw new FieldError(field, `must be a DNS name in lower case (the name istiod's certificate carries), got ${describe(v)}`);
  }
  return v;
};

const trustDomain: Reader<string> = (v, field) => {
  if (typeof v !== 'string' || !TRUST_DOMAIN_PATTERN.test(v)) {
    throw new FieldError(field, `must be a SPIFFE trust domain (lowercase letters, digits, ".", "-", "_"), got ${describe(v)}`);
  }
  return v;
};

/** A resource quantity as Kubernetes writes them (`100m`, `0.5`, `128Mi`, `1e3`). */
const quantity: Reader<string> = (v, field) => {
  const s = typeof v === 'number' ? String(v) : v;
  if (typeof s !== 'string' || quantityValue(s) === null) {
    throw new FieldError(field, `must be a resource quantity such as 100m or 128Mi, got ${describe(v)}`);
  }
  return s;
};

function quantities(v: unknown, field: string): Record<string, string> {
  const map = mapping(v, field);
  const out: Record<string, string> = {};
  for (const [k, q] of Object.entries(map)) {
    if (!/^[a-zA-Z0-9./-]+$/.test(k)) throw new FieldError(`${field}.${k}`, 'is not a resource name');
    out[k] = quantity(q, `${field}.${k}`);
  }
  return out;
}

const resources: Reader<V1ResourceRequirements> = (v, field) => {
  const map = mapping(v, field);
  const out: V1ResourceRequirements = {};
  for (const [k, q] of Object.entries(map)) {
    if (k === 'requests') out.requests = quantities(q, `${field}.requests`);
    else if (k === 'limits') out.limits = quantities(q, `${field}.limits`);
    else throw new FieldError(`${field}.${k}`, 'is not a known field (requests, limits)');
  }
  return out;
};

function mapping(v: unknown, field: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new FieldError(field, `must be a mapping, got ${describe(v)}`);
  }
  return v as Record<string, unknown>;
}

/** Reads a mapping whose keys are exactly those of `readers`; absent keys keep `defaults`. */
function section<T extends object>(readers: { [K in keyof T]: Reader<T[K]> }, defaults: Readonly<T>): Reader<T> {
  return (v, field) => {
    const map = mapping(v, field);
    const out = structuredClone(defaults) as T;
    for (const [k, value] of Object.entries(map)) {
      const path = field === '' ? k : `${field}.${k}`;
      if (!Object.hasOwn(readers, k)) {
        throw new FieldError(path, `is not a known field (known: ${Object.keys(readers).join(', ')})`);
      }
      if (value === undefined || value === null) continue; // `key:` with no value keeps the default
      out[k as keyof T] = readers[k as keyof T](value, path);
    }
    return out;
  };
}

const d = defaultInjectionConfig;
/** istiod's plaintext xDS port, the address `istiodTls: false` implies unless the file names one */
const PLAINTEXT_ISTIOD_ADDRESS = 'istiod.istio-system.svc:15010';

const readConfig: Reader<InjectionConfig> = section<InjectionConfig>(
  {
    images: section({ mesh: nonEmptyString, apisix: nonEmptyString, pullPolicy: oneOf('Always', 'IfNotPresent', 'Never') }, d.images),
    ports: section(
      { outbound: port, inbound: port, agentStatus: port, apisixStatus: port, apisixMetrics: port, etcd: port },
      d.ports,
    ),
    proxyUid: integer(1, 4294967294),
    proxyGid: integer(1, 4294967294),
    resources: section({ init: resources, agent: resources, apisix: resources }, d.resources),
    defaultMode: oneOf('sidecar', 'none'),
    enablePrometheusMerge: boolean,
    istiodAddress: hostPort,
    istiodTls: boolean,
    istiodServerName: serverName,
    trustDomain,
    workloadKeyType: oneOf(...WORKLOAD_KEY_TYPES),
    agentLiteMode: boolean,
    apisixWorkerProcesses: workerProcesses,
    holdApplicationUntilProxyStarts: boolean,
    // the bounds lua_gc.lua checks too: below 100 a cycle would start before the last one ended
    apisixLuaGc: section({ pause: integer(100, 1000), stepmul: integer(100, 10000) }, d.apisixLuaGc),
    accessLogFile,
    nativeSidecars: boolean,
    rewriteAppProbes: boolean,
    inboundCapture: oneOf('all', 'declared'),
    outboundCapture: section({ includeIpRanges: cidrSelection, excludeIpRanges: listOf(cidr), excludePorts: listOf(port) }, d.outboundCapture),
    gateway: section(
      { inboundPorts: listOf(port), excludeOutboundPorts: listOf(port), excludeOutboundIpRanges: listOf(cidr) },
      d.gateway,
    ),
    excludedNamespaces: listOf(dnsLabel),
    webhookNamespace: dnsLabel,
  },
  d,
);

/**
 * The lists that become one argument of an init container (ours, or Istio's in gateway mode) must
 * fit the same limit as a pod's annotation; otherwise every pod that does not override them would
 * be refused.
 */
function checkListLengths(config: InjectionConfig): void {
  const lists: [string, '*' | readonly (string | number)[]][] = [
    ['outboundCapture.includeIpRanges', config.outboundCapture.includeIpRanges],
    ['outboundCapture.excludeIpRanges', config.outboundCapture.excludeIpRanges],
    ['outboundCapture.excludePorts', config.outboundCapture.excludePorts],
    ['gateway.inboundPorts', config.gateway.inboundPorts],
    ['gateway.excludeOutboundPorts', config.gateway.excludeOutboundPorts],
    ['gateway.excludeOutboundIpRanges', config.gateway.excludeOutboundIpRanges],
  ];
  for (const [field, list] of lists) {
    const length = list === '*' ? 1 : list.join(',').length;
    if (length > MAX_LIST_LENGTH) {
      throw new FieldError(field, `is ${length} characters long as a comma-separated list, more than the ${MAX_LIST_LENGTH} a list may have`);
    }
  }
}

function checkPortsDistinct(config: InjectionConfig): void {
  const seen = new Map<number, string>();
  for (const [name, p] of Object.entries(config.ports)) {
    const other = seen.get(p);
    if (other) throw new FieldError(`ports.${name}`, `must differ from ports.${other} (both ${p})`);
    seen.set(p, name);
  }
}

/**
 * Parses the configuration file's text. An empty document means "all defaults". `sourceName` (the
 * file name) starts every error message.
 */
export function parseInjectionConfig(text: string, sourceName: string): InjectionConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text, { prettyErrors: false, uniqueKeys: true });
  } catch (err) {
    const reason = err instanceof YAMLParseError || err instanceof Error ? err.message : String(err);
    throw new InjectionConfigError(`${sourceName}: not valid YAML: ${reason}`);
  }
  if (doc === null || doc === undefined) return structuredClone(defaultInjectionConfig) as InjectionConfig;
  try {
    const config = readConfig(doc, '');
    if (!config.istiodTls && (doc as Record<string, unknown>)['istiodAddress'] == null) config.istiodAddress = PLAINTEXT_ISTIOD_ADDRESS;
    checkPortsDistinct(config);
    checkListLengths(config);
    return config;
  } catch (err) {
    if (err instanceof FieldError) {
      throw new InjectionConfigError(`${sourceName}: ${err.field === '' ? 'the document' : err.field}: ${err.message}`);
    }
    throw err;
  }
}

/** Reads and parses the configuration file at `path`. */
export async function loadInjectionConfig(path: string): Promise<InjectionConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new InjectionConfigError(`${path}: cannot read the injection configuration (${reason})`);
  }
  return parseInjectionConfig(text, path);
}
