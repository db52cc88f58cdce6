import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { capturedFamilies } from '../../iptables-init/capture.js';
import { emptyNatState, parseNatState } from '../../iptables-init/nat-state.js';
import { parseIptablesOptions, resolveRaw } from '../../iptables-init/options.js';
import { renderApplyDocument, renderCleanupDocument } from '../../iptables-init/restore-document.js';
import { captureRules } from '../../iptables-init/rules.js';

/**
 * Golden iptables-restore documents, one file per configuration: exactly what `--dry-run` prints
 * and what is fed to `iptables-restore --noflush` (the real-kernel suite checks that equality).
 * Refresh with `UPDATE_GOLDEN=1 npx vitest run test/iptables/golden.test.ts` and review the diff.
 */
const testdata = new URL('./testdata/', import.meta.url);
const update = process.env.UPDATE_GOLDEN === '1';

/** A real `iptables-nft-save -t nat` dump of a namespace with our rules, a stale chain and foreign rules (see testdata/SOURCE.md). */
const residue = readFileSync(new URL('residue-ipv4.save', testdata), 'utf8');

interface GoldenCase {
  name: string;
  flags: Record<string, string>;
  /** The nat table found before the run (default: a clean namespace). */
  dump?: string;
  cleanup?: boolean;
}

const cases: GoldenCase[] = [
  { name: 'defaults', flags: {} },
  { name: 'defaults-ipv6', flags: { ipv6: 'on' } },
  { name: 'inbound-ports-include', flags: { 'inbound-ports': '32000,31000', 'exclude-inbound-ports': '15020' } },
  { name: 'exclude-inbound-ports', flags: { 'exclude-inbound-ports': '22,15020,15021,15090' } },
  { name: 'empty-inbound', flags: { 'inbound-ports': '' } },
  { name: 'outbound-ip-ranges-v4', flags: { 'outbound-ip-ranges': '10.0.0.0/8,172.16.0.0/12' } },
  {
    name: 'outbound-ip-ranges-v4-v6',
    flags: {
      ipv6: 'on',
      'outbound-ip-ranges': '10.96.0.0/12,fd00:10:96::/112',
      'exclude-outbound-ip-ranges': '10.96.0.1/32,fd00:10:96::1/128',
    },
  },
  { name: 'v6-ranges-only', flags: { ipv6: 'on', 'outbound-ip-ranges': '2001:db8::/32', 'exclude-outbound-ip-ranges': '2001:db8::/48' } },
  { name: 'exclude-outbound-ip-ranges', flags: { 'exclude-outbound-ip-ranges': '169.254.169.254/32,10.0.0.0/24' } },
  { name: 'outbound-ports-include', flags: { 'outbound-ip-ranges': '', 'outbound-ports': '32000,31000' } },
  { name: 'exclude-outbound-ports', flags: { 'exclude-outbound-ports': '4317,4318' } },
  { name: 'exclude-interfaces', flags: { 'exclude-interfaces': 'eth1,net2' } },
  { name: 'uid-not-gid', flags: { 'proxy-uid': '1337', 'proxy-gid': '2000' } },
  { name: 'loopback-include-range', flags: { 'outbound-ip-ranges': '127.1.2.3/32' } },
  { name: 'no-outbound', flags: { 'outbound-ip-ranges': '' } },
  { name: 'custom-capture-ports', flags: { 'outbound-port': '16001', 'inbound-port': '16006', 'proxy-uid': '101' } },
  { name: 'rerun-replaces-residue', flags: {}, dump: residue },
  { name: 'cleanup-residue', flags: {}, dump: residue, cleanup: true },
];

function render(c: GoldenCase): string {
  const options = parseIptablesOptions(resolveRaw(new Map(Object.entries(c.flags)), {}));
  return capturedFamilies(options.config, false)
    .map((family) => {
      const state = c.dump && family === 4 ? parseNatState(c.dump, family) : emptyNatState(family);
      return c.cleanup ? (renderCleanupDocument(state) ?? '') : renderApplyDocument(captureRules(options.config, family), state);
    })
    .join('');
}

describe('golden iptables-restore documents', () => {
  it('has at least 12 cases, each with its own name', () => {
    expect(cases.length).toBeGreaterThanOrEqual(12);
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
  });

  for (const c of cases) {
    it(c.name, () => {
      const file = new URL(`${c.name}.golden`, testdata);
      const text = render(c);
      if (update || !existsSync(file)) {
        if (!update) throw new Error(`${c.name}.golden is missing; run with UPDATE_GOLDEN=1 to create it`);
        writeFileSync(file, text);
      }
      expect(text).toBe(readFileSync(file, 'utf8'));
    });
  }
});
