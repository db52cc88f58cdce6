import { isIP } from 'node:net';
import { shortQuote } from '../cli/short-quote.js';

/**
 * The capture configuration: the one contract between the webhook (which builds it from a pod and
 * its `traffic.sidecar.istio.io/*` annotations) and the init container (which turns it into nat
 * rules). It travels as command-line flags; `captureConfigToArgs` and the `iptables` command's
 * parser are inverses of each other. Semantics follow istio-iptables (REDIRECT mode).
 */
export interface CaptureConfig {
  /** Where captured outbound TCP goes (APISIX's outbound listener). */
  outboundPort: number;
  /** Where captured inbound TCP goes (APISIX's inbound listener). */
  inboundPort: number;
  /** Traffic of this uid is never captured (the agent and APISIX run as it). */
  proxyUid: number;
  /** Traffic of this gid is never captured; defaults to the uid. */
  proxyGid: number;
  /** `'*'` captures every inbound port but the excluded ones; a list captures only those; `[]` none. */
  inboundPorts: '*' | number[];
  /** Never captured inbound; only meaningful when `inboundPorts` is `'*'`. */
  excludeInboundPorts: number[];
  /** `'*'` captures every destination; a CIDR list only those; `[]` none (ports may still capture). */
  outboundIpRanges: '*' | string[];
  /** Destinations never captured; evaluated before every include. */
  excludeOutboundIpRanges: string[];
  /** Destination ports captured whatever the IP. */
  outboundPorts: number[];
  /** Destination ports never captured. */
  excludeOutboundPorts: number[];
  /** Interfaces captured in neither direction. */
  excludeInterfaces: string[];
  /** `auto`: IPv6 rules when the pod has a global IPv6 address. */
  ipv6: 'auto' | 'on' | 'off';
}

export const defaultCaptureConfig: Readonly<CaptureConfig> = Object.freeze({
  outboundPort: 15001,
  inboundPort: 15006,
  proxyUid: 1337,
  proxyGid: 1337,
  inboundPorts: '*',
  excludeInboundPorts: [15020, 15021, 15090],
  outboundIpRanges: '*',
  excludeOutboundIpRanges: [],
  outboundPorts: [],
  excludeOutboundPorts: [],
  excludeInterfaces: [],
  ipv6: 'auto',
});

/**
 * A value that cannot be captured. `source` names where it came from — a flag (`--inbound-ports`)
 * or a pod annotation — so that the person who wrote it can find it. The message quotes at most a
 * short prefix of the value.
 */
export class CaptureConfigError extends Error {
  constructor(
    readonly source: string,
    readonly value: string,
    reason: string,
  ) {
    super(`${source}: ${shortQuote(value)} ${reason}`);
    this.name = 'CaptureConfigError';
  }
}

/**
 * The longest list (ports, CIDRs, interfaces) accepted, in characters: about 4 000 IPv4 CIDRs, far
 * more than any capture configuration needs (every entry is one nat rule that each new connection
 * walks). It bounds the work of parsing a hostile annotation, and it keeps every list the webhook
 * passes to the init container as one argument under Linux's 128 KiB per-argument limit
 * (MAX_ARG_STRLEN; past it the exec fails with "Argument list too long"). Seven lists make at most
 * ~450 KiB of arguments (and the rule budget, `MAX_RULES_PER_FAMILY`, keeps real ones far below),
 * under a quarter of the usual ARG_MAX (2 MiB with an 8 MiB stack limit), which Linux shares
 * between the arguments and the environment (Kubernetes adds ~7 variables per Service).
 */
export const MAX_LIST_LENGTH = 65_536;

/** Longer than any CIDR's text (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128` is 49). */
const MAX_CIDR_LENGTH = 64;

function splitList(value: string, source: string): string[] {
  if (value.length > MAX_LIST_LENGTH) {
    throw new CaptureConfigError(source, value, `is longer than the ${MAX_LIST_LENGTH} characters a list may have`);
  }
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** A TCP port, 1–65535. */
export function parsePort(value: string, source: string): number {
  const trimmed = value.trim();
  if (!/^\d{1,5}$/.test(trimmed)) throw new CaptureConfigError(source, value, 'is not a port number');
  const port = Number(trimmed);
  if (port < 1 || port > 65535) throw new CaptureConfigError(source, value, 'is not a port in 1-65535');
  return port;
}

/** A comma-separated port list; empty means none. `*` is refused (use `parsePortSelection`). */
export function parsePortList(value: string, source: string): number[] {
  const ports = new Set<number>();
  for (const item of splitList(value, source)) {
    if (item === '*') throw new CaptureConfigError(source, value, 'may not contain "*" (it is an exclude or port list)');
    let port: number;
    try {
      port = parsePort(item, source);
    } catch {
      throw new CaptureConfigError(source, value, `contains ${shortQuote(item)}, which is not a port in 1-65535`);
    }
    ports.add(port);
  }
  // A Set keeps the first occurrence's order, so the list reads as written, without repeats.
  return [...ports];
}

/** `*` or a port list (empty = nothing). */
export function parsePortSelection(value: string, source: string): '*' | number[] {
  return value.trim() === '*' ? '*' : parsePortList(value, source);
}

/**
 * One CIDR, IPv4 or IPv6, returned in canonical text as given (a bare address is refused, as Istio's
 * `netip.ParsePrefix` refuses it). Host bits may be set (Istio accepts `127.0.0.1/24`).
 */
export function parseCidr(value: string, source: string): string {
  const problem = cidrProblem(value);
  if (problem !== null) throw new CaptureConfigError(source, value, `is not a CIDR: ${problem}`);
  const slash = value.indexOf('/');
  return `${value.slice(0, slash)}/${Number(value.slice(slash + 1))}`;
}

/** What is wrong with a CIDR, in words a user can act on, or null. */
function cidrProblem(value: string): string | null {
  if (value.length > MAX_CIDR_LENGTH) return `longer than ${MAX_CIDR_LENGTH} characters`;
  const slash = value.indexOf('/');
  const addr = slash < 0 ? value : value.slice(0, slash);
  // A zone index (`fe80::1%eth0`) is an address of one link, not a prefix iptables can match.
  if (addr.includes('%')) return 'a zone index (%…) names one link, not a range';
  const family = isIP(addr);
  if (family === 0) return `${shortQuote(addr)} is not an IPv4 or IPv6 address`;
  const max = family === 4 ? 32 : 128;
  if (slash < 0) return `no prefix length (for this address alone: ${addr}/${max})`;
  const bits = value.slice(slash + 1);
  if (!/^\d{1,3}$/.test(bits)) return `the prefix length ${shortQuote(bits)} is not a number`;
  if (Number(bits) > max) return `the prefix length ${bits} is more than ${max} for an IPv${family} address`;
  return null;
}

/** A comma-separated CIDR list; empty means none. `*` is refused. */
export function parseCidrList(value: string, source: string): string[] {
  const cidrs = new Set<string>();
  for (const item of splitList(value, source)) {
    if (item === '*') throw new CaptureConfigError(source, value, 'may not contain "*" (it is an exclude list)');
    const problem = cidrProblem(item);
    if (problem !== null) throw new CaptureConfigError(source, value, `contains ${shortQuote(item)}, which is not a CIDR: ${problem}`);
    cidrs.add(parseCidr(item, source));
  }
  return [...cidrs];
}

/** `*` or a CIDR list (empty = nothing). */
export function parseCidrSelection(value: string, source: string): '*' | string[] {
  return value.trim() === '*' ? '*' : parseCidrList(value, source);
}

/** A uid or gid: 0–4294967294. */
export function parseId(value: string, source: string): number {
  const trimmed = value.trim();
  if (!/^\d{1,10}$/.test(trimmed) || Number(trimmed) > 4294967294) {
    throw new CaptureConfigError(source, value, 'is not a numeric uid/gid');
  }
  return Number(trimmed);
}

/** Linux interface names: 1–15 bytes, no `/`, whitespace or `:`, not `.`/`..`. */
export function parseInterfaceList(value: string, source: string): string[] {
  const names = new Set<string>();
  for (const item of splitList(value, source)) {
    if (item.length > 15 || !/^[A-Za-z0-9_.@+-]+$/.test(item) || item === '.' || item === '..') {
      throw new CaptureConfigError(source, value, `contains ${shortQuote(item)}, which is not an interface name`);
    }
    names.add(item);
  }
  return [...names];
}

export function parseIpv6Mode(value: string, source: string): CaptureConfig['ipv6'] {
  const v = value.trim();
  if (v === 'auto' || v === 'on' || v === 'off') return v;
  throw new CaptureConfigError(source, value, 'must be one of auto, on, off');
}

const joinList = (list: readonly (string | number)[]): string => list.join(',');
const selection = (s: '*' | readonly (string | number)[]): string => (s === '*' ? '*' : joinList(s));

/**
 * The `apisix-mesh iptables` arguments that reproduce `config` exactly (every flag given, so the init
 * container does not depend on its own defaults matching the webhook's).
 */
export function captureConfigToArgs(config: CaptureConfig): string[] {
  return [
    `--outbound-port=${config.outboundPort}`,
    `--inbound-port=${config.inboundPort}`,
    `--proxy-uid=${config.proxyUid}`,
    `--proxy-gid=${config.proxyGid}`,
    `--inbound-ports=${selection(config.inboundPorts)}`,
    `--exclude-inbound-ports=${joinList(config.excludeInboundPorts)}`,
    `--outbound-ip-ranges=${selection(config.outboundIpRanges)}`,
    `--exclude-outbound-ip-ranges=${joinList(config.excludeOutboundIpRanges)}`,
    `--outbound-ports=${joinList(config.outboundPorts)}`,
    `--exclude-outbound-ports=${joinList(config.excludeOutboundPorts)}`,
    `--exclude-interfaces=${joinList(config.excludeInterfaces)}`,
    `--ipv6=${config.ipv6}`,
  ];
}

/**
 * The arguments of `captureConfigToArgs(config)` whose value is longer than `MAX_LIST_LENGTH`, as
 * `{flag, length}`: the init container would refuse them (and past 128 KiB could not even start).
 * A list can outgrow what its source said when the webhook adds to it (the mesh's own excluded
 * inbound ports), or come from the injection configuration rather than from a pod.
 */
export function oversizedArgs(config: CaptureConfig): { flag: string; length: number }[] {
  const oversized: { flag: string; length: number }[] = [];
  for (const arg of captureConfigToArgs(config)) {
    const eq = arg.indexOf('=');
    const length = arg.length - eq - 1;
    if (length > MAX_LIST_LENGTH) oversized.push({ flag: arg.slice(0, eq), length });
  }
  return oversized;
}
