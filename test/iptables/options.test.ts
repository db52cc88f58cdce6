import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { captureConfigToArgs, CaptureConfigError, defaultCaptureConfig, MAX_LIST_LENGTH, parseCidrList, type CaptureConfig } from '../../iptables-init/capture-config.js';
import { envVarOf, parseIptablesOptions, resolveRaw, switchFlags, valueFlags } from '../../iptables-init/options.js';
import { captureRules, MAX_RULES_PER_FAMILY, ruleBudgetExcess } from '../../iptables-init/rules.js';

const parse = (cli: Record<string, string | true> = {}, env: NodeJS.ProcessEnv = {}) =>
  parseIptablesOptions(resolveRaw(new Map(Object.entries(cli)), env));

function parseError(cli: Record<string, string>, env: NodeJS.ProcessEnv = {}): CaptureConfigError {
  try {
    parse(cli, env);
  } catch (err) {
    if (err instanceof CaptureConfigError) return err;
    throw err;
  }
  throw new Error(`accepted ${JSON.stringify({ cli, env })}`);
}

/** `captureConfigToArgs` output (`--flag=value`) as the CLI map the command builds. */
function argsToCli(args: string[]): Record<string, string> {
  return Object.fromEntries(args.map((a) => [a.slice(2, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]));
}

describe('iptables flags and environment', () => {
  it('defaults to the contract defaults, gid following the uid', () => {
    const o = parse();
    expect(o.config).toEqual(defaultCaptureConfig);
    expect(o).toMatchObject({ dryRun: false, cleanup: false, backend: 'auto' });
    expect(parse({ 'proxy-uid': '101' }).config.proxyGid).toBe(101);
  });

  it('reads every flag from APISIX_MESH_<FLAG_UPPER_SNAKE>', () => {
    expect(envVarOf('exclude-outbound-ip-ranges')).toBe('APISIX_MESH_EXCLUDE_OUTBOUND_IP_RANGES');
    const o = parse(
      {},
      {
        APISIX_MESH_OUTBOUND_PORT: '16001',
        APISIX_MESH_INBOUND_PORT: '16006',
        APISIX_MESH_PROXY_UID: '101',
        APISIX_MESH_PROXY_GID: '102',
        APISIX_MESH_INBOUND_PORTS: '8080, 9090',
        APISIX_MESH_EXCLUDE_INBOUND_PORTS: '22',
        APISIX_MESH_OUTBOUND_IP_RANGES: '10.0.0.0/8,fd00::/8',
        APISIX_MESH_EXCLUDE_OUTBOUND_IP_RANGES: '10.0.0.1/32',
        APISIX_MESH_OUTBOUND_PORTS: '443',
        APISIX_MESH_EXCLUDE_OUTBOUND_PORTS: '4317',
        APISIX_MESH_EXCLUDE_INTERFACES: 'eth1',
        APISIX_MESH_IPV6: 'on',
        APISIX_MESH_IPTABLES_BACKEND: 'legacy',
        APISIX_MESH_IPTABLES_BIN_DIR: '/opt/bin',
        APISIX_MESH_DRY_RUN: 'true',
        APISIX_MESH_CLEANUP: '1',
      },
    );
    expect(o.config).toEqual({
      outboundPort: 16001,
      inboundPort: 16006,
      proxyUid: 101,
      proxyGid: 102,
      inboundPorts: [8080, 9090],
      excludeInboundPorts: [22],
      outboundIpRanges: ['10.0.0.0/8', 'fd00::/8'],
      excludeOutboundIpRanges: ['10.0.0.1/32'],
      outboundPorts: [443],
      excludeOutboundPorts: [4317],
      excludeInterfaces: ['eth1'],
      ipv6: 'on',
    } satisfies CaptureConfig);
    expect(o).toMatchObject({ dryRun: true, cleanup: true, backend: 'legacy', binDir: '/opt/bin' });
  });

  it('lets a flag beat its variable, also when the flag is empty', () => {
    const env = { APISIX_MESH_INBOUND_PORTS: '8080', APISIX_MESH_DRY_RUN: 'false', APISIX_MESH_OUTBOUND_PORT: 'junk' };
    const o = parse({ 'inbound-ports': '', 'dry-run': true, 'outbound-port': '15001' }, env);
    expect(o.config.inboundPorts).toEqual([]);
    expect(o.dryRun).toBe(true);
    expect(parse({}, { APISIX_MESH_DRY_RUN: 'false' }).dryRun).toBe(false);
  });

  it('reads back exactly what captureConfigToArgs wrote (the webhook contract)', () => {
    const config: CaptureConfig = {
      ...defaultCaptureConfig,
      proxyGid: 2000,
      inboundPorts: [],
      excludeInboundPorts: [],
      outboundIpRanges: ['10.0.0.0/8', '2001:db8::/32'],
      excludeOutboundIpRanges: ['10.0.0.1/32'],
      outboundPorts: [5432],
      excludeOutboundPorts: [4317, 4318],
      excludeInterfaces: ['net1'],
      ipv6: 'off',
    };
    expect(parse(argsToCli(captureConfigToArgs(config))).config).toEqual(config);
    expect(parse(argsToCli(captureConfigToArgs(defaultCaptureConfig))).config).toEqual(defaultCaptureConfig);
  });

  it('has an explained flag for every option', () => {
    for (const f of [...valueFlags, ...switchFlags]) expect(f.description.length, f.name).toBeGreaterThan(10);
  });

  // Every validation error names the flag (or variable) and the value.
  const bad: Array<[string, string, RegExp]> = [
    ['outbound-port', '0', /not a port in 1-65535/],
    ['outbound-port', '70000', /not a port in 1-65535/],
    ['inbound-port', 'http', /not a port number/],
    ['proxy-uid', '-1', /not a numeric uid\/gid/],
    ['proxy-gid', 'istio', /not a numeric uid\/gid/],
    ['inbound-ports', '80,abc', /contains "abc"/],
    ['inbound-ports', '8080,*', /may not contain "\*"/],
    ['exclude-inbound-ports', '*', /may not contain "\*"/],
    ['exclude-inbound-ports', '65536', /contains "65536"/],
    ['outbound-ip-ranges', '10.0.0.0', /contains "10.0.0.0", which is not a CIDR/],
    ['outbound-ip-ranges', '10.0.0.0/33', /which is not a CIDR/],
    ['outbound-ip-ranges', '300.0.0.0/8', /which is not a CIDR/],
    ['exclude-outbound-ip-ranges', '*', /may not contain "\*"/],
    ['exclude-outbound-ip-ranges', 'fd00::/129', /which is not a CIDR/],
    ['exclude-outbound-ip-ranges', 'fe80::1%eth0/64', /which is not a CIDR/],
    ['outbound-ports', '1-100', /contains "1-100"/],
    ['exclude-outbound-ports', '0', /contains "0"/],
    ['exclude-interfaces', 'eth0 eth1', /which is not an interface name/],
    ['exclude-interfaces', 'averyveryverylongname', /which is not an interface name/],
    ['exclude-interfaces', 'a/b', /which is not an interface name/],
    ['ipv6', 'yes', /must be one of auto, on, off/],
    ['iptables-backend', 'nftables', /must be one of auto, nft, legacy/],
  ];
  for (const [flag, value, reason] of bad) {
    it(`refuses --${flag}=${value}, naming flag and value`, () => {
      const err = parseError({ [flag]: value });
      expect(err.source).toBe(`--${flag}`);
      expect(err.message).toContain(`--${flag}: ${JSON.stringify(value)}`);
      expect(err.message).toMatch(reason);
    });
  }

  it('names the variable when the bad value came from the environment', () => {
    const err = parseError({}, { APISIX_MESH_EXCLUDE_OUTBOUND_PORTS: '80,x' });
    expect(err.message).toBe('APISIX_MESH_EXCLUDE_OUTBOUND_PORTS: "80,x" contains "x", which is not a port in 1-65535');
    expect(parseError({}, { APISIX_MESH_DRY_RUN: 'maybe' }).message).toBe('APISIX_MESH_DRY_RUN: "maybe" must be true or false');
  });
});

describe('hostile values: bounded work, bounded messages', () => {
  /** `n` distinct IPv4 /32s, comma-separated (16 characters each, with the comma). */
  const cidrs = (n: number): string => Array.from({ length: n }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`).join(',');
  /** Exactly `n` characters: whole entries of `list` (repeated as needed), then commas (empty entries). */
  const fill = (entries: string, n: number): string => {
    const text = entries.repeat(Math.ceil(n / entries.length) + 1).slice(0, n);
    return text.slice(0, text.lastIndexOf(',') + 1).padEnd(n, ',');
  };
  const listFlags: Array<[string, (length: number) => string]> = [
    ['inbound-ports', (n) => fill('8080,', n)],
    ['exclude-inbound-ports', (n) => fill('8080,', n)],
    ['outbound-ip-ranges', (n) => fill(`${cidrs(Math.ceil(n / 11))},`, n)],
    ['exclude-outbound-ip-ranges', (n) => fill(`${cidrs(Math.ceil(n / 11))},`, n)],
    ['outbound-ports', (n) => fill('443,', n)],
    ['exclude-outbound-ports', (n) => fill('443,', n)],
    ['exclude-interfaces', (n) => fill('eth1,', n)],
  ];

  for (const [flag, listOf] of listFlags) {
    it(`--${flag}: accepts a list of ${MAX_LIST_LENGTH} characters, refuses one longer with a short message`, () => {
      const atLimit = listOf(MAX_LIST_LENGTH);
      expect(atLimit.length).toBe(MAX_LIST_LENGTH);
      expect(() => parse({ [flag]: atLimit })).not.toThrow();
      const over = listOf(MAX_LIST_LENGTH + 1);
      const err = parseError({ [flag]: over });
      expect(err.source).toBe(`--${flag}`);
      expect(err.message).toContain(`is longer than the ${MAX_LIST_LENGTH} characters a list may have`);
      expect(err.message).toContain(`(${MAX_LIST_LENGTH + 1} characters)`);
      expect(err.message.length).toBeLessThan(300);
    });
  }

  it('refuses a 3 MB list from the environment too, without echoing it', () => {
    const err = parseError({}, { APISIX_MESH_EXCLUDE_OUTBOUND_IP_RANGES: cidrs(200_000) });
    expect(err.source).toBe('APISIX_MESH_EXCLUDE_OUTBOUND_IP_RANGES');
    expect(err.message.length).toBeLessThan(300);
  });

  it('quotes only a prefix of a bad value and of a bad item', () => {
    const longItem = `8080,${'9'.repeat(60_000)}`;
    const err = parseError({ 'outbound-ports': longItem });
    expect(err.message).toMatch(/^--outbound-ports: "8080,9+"… \(60005 characters\) contains "9+"… \(60000 characters\), which is not a port in 1-65535$/);
    expect(err.message.length).toBeLessThan(300);
    const badCidr = parseError({ 'exclude-outbound-ip-ranges': `10.0.0.0/8,${'a'.repeat(50_000)}/8` });
    expect(badCidr.message).toContain('which is not a CIDR');
    expect(badCidr.message.length).toBeLessThan(300);
    expect(parseError({ 'outbound-port': '1'.repeat(100_000) }).message.length).toBeLessThan(300);
    expect(parseError({ ipv6: 'x'.repeat(100_000) }).message.length).toBeLessThan(300);
  });

  it('keeps the first of repeated entries, in order, at the size limit', () => {
    const list = `${cidrs(2000)},${cidrs(2000)}`.slice(0, MAX_LIST_LENGTH);
    const parsed = parse({ 'exclude-outbound-ip-ranges': list }).config.excludeOutboundIpRanges;
    expect(parsed).toEqual(cidrs(2000).split(','));
  });
});

describe('a CIDR that is not one says what is wrong with it', () => {
  it.each([
    ['10.0.0.0/33', 'the prefix length 33 is more than 32 for an IPv4 address'],
    ['fd00::/129', 'the prefix length 129 is more than 128 for an IPv6 address'],
    ['10.0.0.1', 'no prefix length (for this address alone: 10.0.0.1/32)'],
    ['10.0.0.300/8', '"10.0.0.300" is not an IPv4 or IPv6 address'],
    ['10.0.0.0/x', 'the prefix length "x" is not a number'],
    ['fe80::1%eth0/64', 'a zone index (%…) names one link, not a range'],
  ])('%s', (value, reason) => {
    expect(() => parseCidrList(`192.168.0.0/16,${value}`, 'traffic.sidecar.istio.io/excludeOutboundIPRanges')).toThrow(`which is not a CIDR: ${reason}`);
  });
});

describe('the rule budget', () => {
  const fixed = (family: 4 | 6) => {
    const { rules, jumps } = captureRules(defaultCaptureConfig, family);
    return rules.length + jumps.length;
  };
  const ports = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

  it(`allows ${MAX_RULES_PER_FAMILY} rules per family and refuses one more, naming the family and the count`, () => {
    const atBudget = { ...defaultCaptureConfig, outboundPorts: ports(MAX_RULES_PER_FAMILY - fixed(4)) };
    expect(ruleBudgetExcess(atBudget)).toBeNull();
    const over = { ...atBudget, outboundPorts: ports(MAX_RULES_PER_FAMILY - fixed(4) + 1) };
    expect(ruleBudgetExcess(over)).toBe(`${MAX_RULES_PER_FAMILY + 1} nat rules for IPv4, more than the ${MAX_RULES_PER_FAMILY} allowed (use fewer or wider CIDRs, fewer ports, or "*" with exclusions)`);
  });

  it('counts IPv6 rules unless IPv6 is off', () => {
    const v6 = Array.from({ length: MAX_RULES_PER_FAMILY }, (_, i) => `fd00::${i.toString(16)}/128`);
    const config = { ...defaultCaptureConfig, excludeOutboundIpRanges: v6 };
    expect(ruleBudgetExcess(config)).toMatch(/ nat rules for IPv6, /);
    expect(ruleBudgetExcess({ ...config, ipv6: 'off' })).toBeNull();
  });
});

describe('captureConfigToArgs and the command parser are inverses', () => {
  const port = fc.integer({ min: 1, max: 65535 });
  const ports = fc.uniqueArray(port, { maxLength: 4 });
  const cidr = fc.oneof(
    fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 32 })).map(([a, b]) => `${a}/${b}`),
    fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 128 })).map(([a, b]) => `${a}/${b}`),
  );
  const cidrs = fc.uniqueArray(cidr, { maxLength: 3 });
  const id = fc.integer({ min: 0, max: 4294967294 });
  const ifname = fc.stringMatching(/^[a-z][a-z0-9_.-]{0,14}$/);
  const config: fc.Arbitrary<CaptureConfig> = fc.record({
    outboundPort: port,
    inboundPort: port,
    proxyUid: id,
    proxyGid: id,
    inboundPorts: fc.oneof(fc.constant('*' as const), ports),
    excludeInboundPorts: ports,
    outboundIpRanges: fc.oneof(fc.constant('*' as const), cidrs),
    excludeOutboundIpRanges: cidrs,
    outboundPorts: ports,
    excludeOutboundPorts: ports,
    excludeInterfaces: fc.uniqueArray(ifname, { maxLength: 3 }),
    ipv6: fc.constantFrom('auto' as const, 'on' as const, 'off' as const),
  });

  it('for any configuration the webhook can build', () => {
    fc.assert(
      fc.property(config, (c) => {
        expect(parse(argsToCli(captureConfigToArgs(c))).config).toEqual(c);
      }),
      { numRuns: 300 },
    );
  });
});
