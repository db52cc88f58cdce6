import {
  CaptureConfigError,
  defaultCaptureConfig,
  parseCidrList,
  parseCidrSelection,
  parseId,
  parseInterfaceList,
  parseIpv6Mode,
  parsePort,
  parsePortList,
  parsePortSelection,
  type CaptureConfig,
} from './capture-config.js';
import type { BackendChoice } from './backend.js';

/**
 * The `apisix-mesh iptables` flags. Each is also read from `APISIX_MESH_<FLAG_UPPER_SNAKE>`; a flag
 * given on the command line beats the variable. Values are raw strings here and parsed in one
 * place, so that every error names where the value came from.
 */
export interface FlagSpec {
  /** The long flag without dashes. */
  name: string;
  /** Placeholder in --help, absent for switches. */
  arg?: string;
  description: string;
  /** Shown in --help and used when neither flag nor variable is set; absent = computed. */
  defaultText?: string;
}

const list = (l: readonly (string | number)[]): string => l.join(',');

export const valueFlags: readonly FlagSpec[] = [
  { name: 'outbound-port', arg: '<port>', description: "where captured outbound TCP goes (APISIX's outbound listener)", defaultText: `${defaultCaptureConfig.outboundPort}` },
  { name: 'inbound-port', arg: '<port>', description: "where captured inbound TCP goes (APISIX's inbound listener)", defaultText: `${defaultCaptureConfig.inboundPort}` },
  { name: 'proxy-uid', arg: '<uid>', description: 'traffic of processes with this uid (the agent and APISIX) is never captured', defaultText: `${defaultCaptureConfig.proxyUid}` },
  { name: 'proxy-gid', arg: '<gid>', description: 'traffic of processes with this gid is never captured (default: the proxy uid)' },
  { name: 'inbound-ports', arg: '<ports>', description: '"*" (every port but the excluded ones) or a comma-separated list of ports to capture inbound; empty = no inbound capture', defaultText: '*' },
  { name: 'exclude-inbound-ports', arg: '<ports>', description: 'ports never captured inbound (only meaningful with --inbound-ports=*)', defaultText: list(defaultCaptureConfig.excludeInboundPorts) },
  { name: 'outbound-ip-ranges', arg: '<cidrs>', description: '"*" or comma-separated CIDRs (IPv4 and IPv6 mixed) whose outbound TCP is captured; empty = none', defaultText: '*' },
  { name: 'exclude-outbound-ip-ranges', arg: '<cidrs>', description: 'CIDRs never captured outbound; beats every include', defaultText: '' },
  { name: 'outbound-ports', arg: '<ports>', description: 'destination ports captured outbound whatever the IP', defaultText: '' },
  { name: 'exclude-outbound-ports', arg: '<ports>', description: 'destination ports never captured outbound (not even the proxy calling its own pod IP)', defaultText: '' },
  { name: 'exclude-interfaces', arg: '<names>', description: 'network interfaces captured in neither direction', defaultText: '' },
  { name: 'ipv6', arg: '<mode>', description: 'IPv6 rules too: auto (when the pod has a global IPv6 address), on, off', defaultText: defaultCaptureConfig.ipv6 },
  { name: 'iptables-backend', arg: '<backend>', description: 'auto (legacy only when iptables-legacy already holds rules, as Istio decides; else nft, or the unsuffixed iptables-save/-restore when no -nft variant exists), nft, legacy', defaultText: 'auto' },
  { name: 'iptables-bin-dir', arg: '<dir>', description: 'take iptables-*-save/-restore from this directory instead of PATH' },
];

export const switchFlags: readonly FlagSpec[] = [
  { name: 'dry-run', description: 'print the iptables-restore document(s) that would be applied and change nothing' },
  { name: 'cleanup', description: 'remove exactly what this command installed (our jumps and APISIX_MESH_* chains) and nothing else' },
];

export const envVarOf = (flag: string): string => `APISIX_MESH_${flag.replace(/-/g, '_').toUpperCase()}`;

/** Where each value came from: the flag, the environment variable, or nowhere (default). */
export interface RawValue {
  value: string;
  source: string;
}

/**
 * Picks each flag's raw value: command line first, then environment. `cli` maps flag name to the
 * value given on the command line (absent when not given).
 */
export function resolveRaw(
  cli: ReadonlyMap<string, string | true>,
  env: NodeJS.ProcessEnv,
): Map<string, RawValue> {
  const raw = new Map<string, RawValue>();
  for (const spec of [...valueFlags, ...switchFlags]) {
    const fromCli = cli.get(spec.name);
    if (fromCli !== undefined) {
      raw.set(spec.name, { value: fromCli === true ? 'true' : fromCli, source: `--${spec.name}` });
      continue;
    }
    const fromEnv = env[envVarOf(spec.name)];
    if (fromEnv !== undefined) raw.set(spec.name, { value: fromEnv, source: envVarOf(spec.name) });
  }
  return raw;
}

export interface IptablesOptions {
  config: CaptureConfig;
  dryRun: boolean;
  cleanup: boolean;
  backend: BackendChoice;
  binDir?: string;
}

function parseSwitch(value: string, source: string): boolean {
  const v = value.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['', '0', 'false', 'no', 'off'].includes(v)) return false;
  throw new CaptureConfigError(source, value, 'must be true or false');
}

function parseBackend(value: string, source: string): BackendChoice {
  const v = value.trim();
  if (v === 'auto' || v === 'nft' || v === 'legacy') return v;
  throw new CaptureConfigError(source, value, 'must be one of auto, nft, legacy');
}

/** Turns raw values into options; throws CaptureConfigError naming the flag or variable. */
export function parseIptablesOptions(raw: ReadonlyMap<string, RawValue>): IptablesOptions {
  const d = defaultCaptureConfig;
  const get = <T>(name: string, parse: (value: string, source: string) => T, fallback: T): T => {
    const r = raw.get(name);
    return r === undefined ? fallback : parse(r.value, r.source);
  };
  const proxyUid = get('proxy-uid', parseId, d.proxyUid);
  const config: CaptureConfig = {
    outboundPort: get('outbound-port', parsePort, d.outboundPort),
    inboundPort: get('inbound-port', parsePort, d.inboundPort),
    proxyUid,
    proxyGid: get('proxy-gid', parseId, proxyUid),
    inboundPorts: get('inbound-ports', parsePortSelection, d.inboundPorts),
    excludeInboundPorts: get('exclude-inbound-ports', parsePortList, [...d.excludeInboundPorts]),
    outboundIpRanges: get('outbound-ip-ranges', parseCidrSelection, d.outboundIpRanges),
    excludeOutboundIpRanges: get('exclude-outbound-ip-ranges', parseCidrList, [...d.excludeOutboundIpRanges]),
    outboundPorts: get('outbound-ports', parsePortList, [...d.outboundPorts]),
    excludeOutboundPorts: get('exclude-outbound-ports', parsePortList, [...d.excludeOutboundPorts]),
    excludeInterfaces: get('exclude-interfaces', parseInterfaceList, [...d.excludeInterfaces]),
    ipv6: get('ipv6', parseIpv6Mode, d.ipv6),
  };
  const binDir = raw.get('iptables-bin-dir')?.value.trim();
  return {
    config,
    dryRun: get('dry-run', parseSwitch, false),
    cleanup: get('cleanup', parseSwitch, false),
    backend: get('iptables-backend', parseBackend, 'auto'),
    ...(binDir ? { binDir } : {}),
  };
}
