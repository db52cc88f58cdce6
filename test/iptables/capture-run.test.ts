// The init container's run with IPv6 rules puts ::6 (the IPv6 inbound forwarding source) on lo, as
// istio-iptables does, and fails loudly when it cannot: APISIX could not bind it otherwise and every
// inbound IPv6 forward would fail. The programs are recorded, not run (the pod harness runs them for
// real: test/dataplane/ipv6.test.ts).
import { describe, expect, it } from 'vitest';
import { CliError } from '../../cli/errors.js';
import { defaultCaptureConfig } from '../../iptables-init/capture-config.js';
import { runCapture, type CaptureRun } from '../../iptables-init/capture.js';
import type { ProcessResult } from '../../iptables-init/run-process.js';

function recordingRun(options: { globalIpv6: boolean; ip?: ProcessResult }): { run: CaptureRun; started: string[] } {
  const started: string[] = [];
  const run: CaptureRun = {
    config: { ...defaultCaptureConfig },
    action: 'apply',
    dryRun: false,
    backend: 'nft',
    globalIpv6: options.globalIpv6,
    run: async (file, args) => {
      started.push([file, ...args].join(' '));
      if (file === 'ip') return options.ip ?? { code: 0, stdout: '', stderr: '' };
      return { code: 0, stdout: file.includes('save') ? '*nat\nCOMMIT\n' : '', stderr: '' };
    },
    log: () => undefined,
    print: () => undefined,
  };
  return { run, started };
}

describe('apisix-mesh iptables: the IPv6 inbound forwarding source', () => {
  it('adds ::6/128 to lo once the IPv6 rules are in place, and only then', async () => {
    const v6 = recordingRun({ globalIpv6: true });
    await runCapture(v6.run);
    expect(v6.started.filter((c) => c.startsWith('ip ') || c.includes('restore'))).toEqual([
      'iptables-nft-restore --noflush -w',
      'ip6tables-nft-restore --noflush -w',
      'ip -6 addr replace ::6/128 dev lo',
    ]);
    const v4 = recordingRun({ globalIpv6: false });
    await runCapture(v4.run);
    expect(v4.started.some((c) => c.startsWith('ip '))).toBe(false);
  });

  it('fails the init container when ::6 cannot be added, saying what breaks', async () => {
    const failing = recordingRun({ globalIpv6: true, ip: { code: 2, stdout: '', stderr: 'RTNETLINK answers: Operation not permitted\n' } });
    const err = await runCapture(failing.run).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as Error).message).toMatch(/::6\/128 could not be added to lo \(ip exited with status 2: RTNETLINK answers: Operation not permitted\): inbound IPv6 forwards would fail/);
    const missing = recordingRun({ globalIpv6: true, ip: { code: null, stdout: '', stderr: '', startError: Object.assign(new Error('spawn ip ENOENT'), { code: 'ENOENT' }) } });
    expect(((await runCapture(missing.run).catch((e: unknown) => e)) as Error).message).toMatch(/ip was not found \(install iproute2\)/);
  });
});
