import { isIPv4 } from 'node:net';
import type { CaptureConfig } from './capture-config.js';

/**
 * The nat rules for one address family, in istio-iptables' order (REDIRECT mode), with our own chain
 * names. Pure: the same configuration always gives the same rules, which is what the golden files pin.
 */

export type Family = 4 | 6;

/** Every chain this tool owns starts with this prefix; cleanup and re-runs recognise ours by it. */
export const chainPrefix = 'APISIX_MESH_';

export const chains = Object.freeze({
  /** PREROUTING (TCP) jumps here: inbound exclusions, then the redirect to the inbound port. */
  inbound: 'APISIX_MESH_INBOUND',
  /** `REDIRECT` to the outbound port (APISIX's outbound listener). */
  redirect: 'APISIX_MESH_REDIRECT',
  /** `REDIRECT` to the inbound port (APISIX's inbound listener). */
  inRedirect: 'APISIX_MESH_IN_REDIRECT',
  /** OUTPUT jumps here: who and what is never captured, then what is. */
  output: 'APISIX_MESH_OUTPUT',
});

/** The chains every run creates (or, when they exist, flushes and refills), in declaration order. */
export const ownChains: readonly string[] = [chains.inbound, chains.redirect, chains.inRedirect, chains.output];

/** One `-A <chain> <spec...>` line of the nat table. */
export interface Rule {
  chain: string;
  spec: string[];
}

export interface FamilyRules {
  family: Family;
  /** Rules inside our own chains, in order. */
  rules: Rule[];
  /** Rules in built-in chains; each is a jump into one of ours (so they can be found again). */
  jumps: Rule[];
}

const loopback = { 4: '127.0.0.1/32', 6: '::1/128' } as const;
/** The source address APISIX binds to for inbound passthrough to the app (Envoy's convention). */
const passthroughSource = { 4: '127.0.0.6/32', 6: '::6/128' } as const;

export function cidrFamily(cidr: string): Family {
  return isIPv4(cidr.slice(0, cidr.indexOf('/'))) ? 4 : 6;
}

/** The CIDRs of `list` that belong to `family`; `*` stays `*`. */
function forFamily(list: '*' | readonly string[], family: Family): '*' | string[] {
  return list === '*' ? '*' : list.filter((c) => cidrFamily(c) === family);
}

function isLoopbackCidr(cidr: string): boolean {
  const addr = cidr.slice(0, cidr.indexOf('/'));
  return cidrFamily(cidr) === 4 ? addr.startsWith('127.') : addr === '::1';
}

export function captureRules(config: CaptureConfig, family: Family): FamilyRules {
  const rules: Rule[] = [];
  const jumps: Rule[] = [];
  const add = (chain: string, ...spec: string[]): void => {
    rules.push({ chain, spec });
  };

  const includeRanges = forFamily(config.outboundIpRanges, family);
  const excludeRanges = forFamily(config.excludeOutboundIpRanges, family) as string[];

  // Inbound. Excluded interfaces return inside our chain rather than in PREROUTING itself (as
  // istio-iptables does), so that every rule we put into a built-in chain is a jump to one of ours.
  const inboundOn = config.inboundPorts === '*' || config.inboundPorts.length > 0;
  if (inboundOn) {
    for (const ifname of config.excludeInterfaces) add(chains.inbound, '-i', ifname, '-j', 'RETURN');
    if (config.inboundPorts === '*') {
      for (const port of config.excludeInboundPorts) add(chains.inbound, '-p', 'tcp', '--dport', `${port}`, '-j', 'RETURN');
      add(chains.inbound, '-p', 'tcp', '-j', chains.inRedirect);
    } else {
      for (const port of config.inboundPorts) add(chains.inbound, '-p', 'tcp', '--dport', `${port}`, '-j', chains.inRedirect);
    }
    jumps.push({ chain: 'PREROUTING', spec: ['-p', 'tcp', '-j', chains.inbound] });
  }

  add(chains.redirect, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', `${config.outboundPort}`);
  add(chains.inRedirect, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', `${config.inboundPort}`);

  // Outbound, in istio-iptables' order: excluded interfaces and ports first (they beat even the
  // proxy's self-call rule), the passthrough source, the proxy/app loopback split, the proxy's own
  // traffic, localhost, excluded ranges, and only then what is captured.
  for (const ifname of config.excludeInterfaces) add(chains.output, '-o', ifname, '-j', 'RETURN');
  for (const port of config.excludeOutboundPorts) add(chains.output, '-p', 'tcp', '--dport', `${port}`, '-j', 'RETURN');
  add(chains.output, '-o', 'lo', '-s', passthroughSource[family], '-j', 'RETURN');
  // With a loopback include range, app traffic over lo must reach the capture rules below.
  const loopbackIncluded = includeRanges !== '*' && includeRanges.some(isLoopbackCidr);
  for (const [match, id] of [
    ['--uid-owner', config.proxyUid],
    ['--gid-owner', config.proxyGid],
  ] as const) {
    // The proxy calling its own pod IP (a service VIP that resolved to itself) enters via the
    // inbound listener, like any other inbound connection.
    add(chains.output, '-o', 'lo', '!', '-d', loopback[family], '-p', 'tcp', '-m', 'owner', match, `${id}`, '-j', chains.inRedirect);
    // The app calling itself over lo (localhost or its pod IP) stays direct.
    if (!loopbackIncluded) add(chains.output, '-o', 'lo', '-m', 'owner', '!', match, `${id}`, '-j', 'RETURN');
    add(chains.output, '-m', 'owner', match, `${id}`, '-j', 'RETURN');
  }
  add(chains.output, '-d', loopback[family], '-j', 'RETURN');
  for (const cidr of excludeRanges) add(chains.output, '-d', cidr, '-j', 'RETURN');
  for (const port of config.outboundPorts) add(chains.output, '-p', 'tcp', '--dport', `${port}`, '-j', chains.redirect);
  if (includeRanges === '*') add(chains.output, '-j', chains.redirect);
  else for (const cidr of includeRanges) add(chains.output, '-d', cidr, '-j', chains.redirect);
  jumps.push({ chain: 'OUTPUT', spec: ['-j', chains.output] });

  return { family, rules, jumps };
}

/**
 * The most nat rules installed per address family. Every new connection walks the OUTPUT rules in
 * order, and the work and memory of installing them grow with their number: at this budget the
 * init container's peak stays within its memory limit (BENCHMARKS.md). Real configurations need
 * tens of rules; thousands of CIDRs are better expressed as fewer, wider ones.
 */
export const MAX_RULES_PER_FAMILY = 4096;

/**
 * What is wrong when `config` would make more than `MAX_RULES_PER_FAMILY` rules in a family it may
 * install (with `ipv6: off` only IPv4 counts), as a phrase naming the count; null when all fit.
 */
export function ruleBudgetExcess(config: CaptureConfig): string | null {
  const families: Family[] = config.ipv6 === 'off' ? [4] : [4, 6];
  for (const family of families) {
    const { rules, jumps } = captureRules(config, family);
    const count = rules.length + jumps.length;
    if (count > MAX_RULES_PER_FAMILY) {
      return `${count} nat rules for IPv${family}, more than the ${MAX_RULES_PER_FAMILY} allowed (use fewer or wider CIDRs, fewer ports, or "*" with exclusions)`;
    }
  }
  return null;
}
