/**
 * Hostile annotation values: a list longer than a list may be is refused with a short message,
 * every refusal quotes at most a prefix of the value, and a pod the webhook admits gets an init
 * container whose arguments Linux can exec (each under its 128 KiB per-argument limit). Speed is
 * measured in scripts/bench-injection.mjs, not here.
 */
import { spawnSync } from 'node:child_process';
import type { V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { MAX_LIST_LENGTH } from '../../iptables-init/capture-config.js';
import { MAX_RULES_PER_FAMILY } from '../../iptables-init/rules.js';
import { defaultInjectionConfig, type InjectionConfig } from '../../webhook/config/injection-config.js';
import { parseInjectionConfig } from '../../webhook/config/parse-config.js';
import { TRAFFIC } from '../../webhook/injection/annotations.js';
import { reviewAdmission } from '../../webhook/injection/review.js';
import { injectPod } from '../../webhook/injection/inject-pod.js';
import { NAMES } from '../../webhook/injection/sidecar-parts.js';
import { podCreate } from './helpers.js';

function pod(annotations: Record<string, string>): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'p', namespace: 'shop', annotations },
    spec: { containers: [{ name: 'app', image: 'app:1', ports: [{ containerPort: 8080 }] }] },
  };
}

/** Distinct valid entries, comma-separated, exactly `n` characters long (padded with empty entries). */
function distinctList(entry: (i: number) => string, n: number): string {
  let text = '';
  for (let i = 0; ; i++) {
    const next = `${entry(i)},`;
    if (text.length + next.length > n) break;
    text += next;
  }
  return text.padEnd(n, ',');
}
const port = (i: number): string => `${1 + (i % 65535)}`;
const cidr = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`;
const ifname = (i: number): string => `e${i}`;

/** Every list annotation of sidecar mode, with a generator of valid entries. */
const LISTS: Array<[string, (i: number) => string]> = [
  [TRAFFIC.includeInboundPorts, port],
  [TRAFFIC.excludeInboundPorts, (i) => port(i + 20_000)],
  [TRAFFIC.includeOutboundIPRanges, cidr],
  [TRAFFIC.excludeOutboundIPRanges, cidr],
  [TRAFFIC.includeOutboundPorts, port],
  [TRAFFIC.excludeOutboundPorts, (i) => port(i + 30_000)],
  [TRAFFIC.excludeInterfaces, ifname],
];

const rejection = (annotations: Record<string, string>, config: InjectionConfig = defaultInjectionConfig): string => {
  const outcome = reviewAdmission(podCreate(pod(annotations)), config);
  if (outcome.kind !== 'rejected') throw new Error(`expected a refusal, got ${outcome.kind}`);
  return outcome.message;
};

describe('annotation size limits', () => {
  it.each(LISTS)('%s: a list longer than the limit is refused, naming the annotation, in a short message', (name, entry) => {
    const message = rejection({ [name]: distinctList(entry, MAX_LIST_LENGTH + 1) });
    expect(message).toContain(name);
    expect(message).toContain(`longer than the ${MAX_LIST_LENGTH} characters a list may have`);
    expect(message.length).toBeLessThan(300);
  });

  it.each(LISTS)('%s: 3 MB of it is refused in a short message', (name, entry) => {
    expect(rejection({ [name]: distinctList(entry, 3_000_000) }).length).toBeLessThan(300);
  });

  it.each([
    ['sidecar.istio.io/interceptionMode'],
    ['sidecar.istio.io/nativeSidecar'],
    ['apisix-mesh.io/mode'],
    [TRAFFIC.excludeOutboundPorts],
  ])('%s: a 3 MB bad value is quoted by a prefix only', (name) => {
    const message = rejection({ [name]: 'x'.repeat(3_000_000) });
    expect(message).toContain(name);
    expect(message).toContain('"xxxxxxxx');
    expect(message).toContain('(3000000 characters)');
    expect(message.length).toBeLessThan(300);
  });

  it('quotes a prefix of a long bad entry inside a list', () => {
    const message = rejection({ [TRAFFIC.excludeOutboundIPRanges]: `10.0.0.0/8,${'f'.repeat(60_000)}/8` });
    expect(message).toContain('which is not a CIDR');
    expect(message.length).toBeLessThan(300);
  });

  it('a refusal for a long container name or object kind is short too', () => {
    const longName = 'a'.repeat(100_000);
    const collision = reviewAdmission(
      podCreate({ ...pod({}), spec: { containers: [{ name: longName, image: 'a', ports: [{ containerPort: 15001 }] }] } }),
      defaultInjectionConfig,
    );
    expect(collision.kind === 'rejected' && collision.message.length).toBeLessThan(300);
    const kind = reviewAdmission(podCreate({ ...pod({}), kind: 'K'.repeat(100_000) }), defaultInjectionConfig);
    expect(kind.kind === 'rejected' && kind.message.length).toBeLessThan(300);
  });
});

/** The init container's arguments of an injected pod, or the refusal. */
function initArgs(annotations: Record<string, string>, config: InjectionConfig = defaultInjectionConfig): string[] | string {
  const result = injectPod(pod(annotations), 'sidecar', config);
  if (result.kind === 'rejected') return result.message;
  const init = result.pod.spec!.initContainers!.find((c) => c.name === NAMES.init)!;
  return init.args!;
}

/** Runs /bin/true with `args` as the init container would run the mesh image: it fails with E2BIG past the kernel's limits. */
const execError = (args: string[]): string | undefined => (spawnSync('true', args).error as NodeJS.ErrnoException | undefined)?.code;

describe('an admitted pod can start its init container', () => {
  it('the longest lists the size limit and the rule budget allow: admitted, and the arguments exec', () => {
    // Long entries make the most text per rule: full-length IPv6 CIDRs, 15-character interface names.
    const longCidr = (i: number): string => `fd00:0000:0000:0000:0000:0000:${(i >> 16).toString(16).padStart(4, '0')}:${(i & 0xffff).toString(16).padStart(4, '0')}/128`;
    const args = initArgs({
      [TRAFFIC.includeOutboundIPRanges]: distinctList(longCidr, MAX_LIST_LENGTH),
      [TRAFFIC.excludeOutboundIPRanges]: distinctList((i) => longCidr(i + 100_000), MAX_LIST_LENGTH),
      [TRAFFIC.excludeInterfaces]: distinctList((i) => `if${String(i).padStart(13, '0')}`, 500 * 16),
    });
    if (typeof args === 'string') throw new Error(`refused: ${args}`);
    expect(Math.max(...args.map((a) => Buffer.byteLength(a)))).toBeLessThan(128 * 1024);
    expect(args.reduce((n, a) => n + Buffer.byteLength(a) + 1, 0)).toBeGreaterThan(2 * MAX_LIST_LENGTH);
    expect(execError(args)).toBeUndefined();
  });

  it.each(LISTS)('%s past 128 KiB (about 9k entries): refused, never admitted with an argument Linux refuses', (name, entry) => {
    const result = initArgs({ [name]: distinctList(entry, 140_000) });
    expect(typeof result === 'string' ? result : `admitted; exec: ${execError(result)}`).toContain(name);
  });

  it('refuses a pod whose rules would pass the budget the init container is sized for', () => {
    const ports = Array.from({ length: MAX_RULES_PER_FAMILY }, (_, i) => i + 1).join(',');
    const message = rejection({ [TRAFFIC.includeOutboundPorts]: ports });
    expect(message).toMatch(new RegExp(`^the traffic.sidecar.istio.io/\\* annotations \\(with the injection configuration\\) make \\d+ nat rules for IPv4, more than the ${MAX_RULES_PER_FAMILY} allowed`));
    // Just within the budget: admitted.
    expect(initArgs({ [TRAFFIC.includeOutboundPorts]: Array.from({ length: MAX_RULES_PER_FAMILY - 100 }, (_, i) => i + 1).join(',') })).toBeInstanceOf(Array);
  });

  it('refuses a pod whose own ports plus the mesh ones pass the limit (rather than an init container that refuses them)', () => {
    const annotation = distinctList((i) => port(i + 20_000), MAX_LIST_LENGTH);
    const message = rejection({ [TRAFFIC.excludeInboundPorts]: annotation });
    expect(message).toContain('--exclude-inbound-ports would be');
    expect(message).toContain(TRAFFIC.excludeInboundPorts);
    expect(message.length).toBeLessThan(400);
  });

  it('refuses pods when a list of the configuration passes the limit (a configuration built in code)', () => {
    const excludeIpRanges = distinctList(cidr, MAX_LIST_LENGTH + 100).split(',').filter(Boolean);
    const config = { ...defaultInjectionConfig, outboundCapture: { ...defaultInjectionConfig.outboundCapture, excludeIpRanges } };
    const message = rejection({}, config);
    expect(message).toContain('--exclude-outbound-ip-ranges would be');
    expect(message).toContain('injection configuration');
    // The pod's own annotation replaces the configuration's list.
    expect(initArgs({ [TRAFFIC.excludeOutboundIPRanges]: '10.0.0.0/8' }, config)).toContain('--exclude-outbound-ip-ranges=10.0.0.0/8');
  });

  it('the configuration file refuses such a list when it is loaded', () => {
    const cidrs = distinctList(cidr, MAX_LIST_LENGTH + 100).split(',').filter(Boolean);
    expect(() => parseInjectionConfig(`outboundCapture:\n  excludeIpRanges: [${cidrs.join(', ')}]\n`, 'config.yaml')).toThrow(
      `config.yaml: outboundCapture.excludeIpRanges: is ${cidrs.join(',').length} characters long as a comma-separated list, more than the ${MAX_LIST_LENGTH} a list may have`,
    );
  });
});

describe('gateway mode', () => {
  it('refuses when the merged Istio annotation would pass the limit (Istio passes it as one argument too)', () => {
    // As long as a list may be, give or take one entry; the gateway's 80 and 443 push it past.
    const existing = distinctList((i) => port(i + 1000), MAX_LIST_LENGTH).replace(/,+$/, '');
    expect(existing.length + ',80,443'.length).toBeGreaterThan(MAX_LIST_LENGTH);
    const outcome = reviewAdmission(podCreate(pod({ 'apisix-mesh.io/mode': 'gateway', [TRAFFIC.excludeInboundPorts]: existing })), defaultInjectionConfig);
    expect(outcome.kind).toBe('rejected');
    const message = outcome.kind === 'rejected' ? outcome.message : '';
    expect(message).toContain(`annotation ${TRAFFIC.excludeInboundPorts}: with the gateway's own entries it would be`);
    expect(message.length).toBeLessThan(300);
  });

  it('refuses an oversized gateway annotation in a short message', () => {
    const message = rejection({
      'apisix-mesh.io/mode': 'gateway',
      'apisix-mesh.io/gateway-exclude-outbound-ip-ranges': distinctList(cidr, 3_000_000),
    });
    expect(message).toContain('apisix-mesh.io/gateway-exclude-outbound-ip-ranges');
    expect(message.length).toBeLessThan(300);
  });
});
