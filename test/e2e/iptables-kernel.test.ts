import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { removeOtherUidsDir } from '../support/other-uids.js';
import { describeWhenAvailable, firstMissing, missingCommand, missingRoot } from '../support/requirements.js';
import {
  connectFrom,
  createPair,
  natDump,
  newNetnsName,
  podIf,
  podIp,
  podIp6,
  remoteIp,
  remoteIp6,
  remoteOtherIp,
  remoteOtherIp6,
  runIptables,
  sh,
  startListener,
  type Connection,
  type Listener,
  type NetnsPair,
  type Outcome,
} from '../iptables/support/netns.js';

/**
 * The capture rules on a real kernel: a pod namespace and a remote-host namespace joined by a veth
 * pair, the rules installed by the built `apisix-mesh iptables`, listeners on the capture ports, the
 * app ports and the remote host, and real TCP connections as an app uid, as the proxy uid and from
 * the remote host. For captured connections the listener reports SO_ORIGINAL_DST.
 */
const missing = firstMissing(
  missingRoot(),
  missingCommand('ip', 'install iproute2'),
  missingCommand('iptables-nft-restore', 'install iptables'),
  missingCommand('iptables-legacy-save', 'install iptables'),
  missingCommand('setpriv', 'install util-linux'),
  missingCommand('python3', 'install python3'),
);

const app = { uid: 1000, gid: 1000 };
const proxy = { uid: 1337, gid: 1337 };
/** Another uid in the proxy's group: the gid rules keep it out of capture. */
const proxyGroup = { uid: 1000, gid: 1337 };

/** Where a connection landed: `pod:15001`, `remote:80`, or the error. */
const landed = (o: Outcome | undefined): string => (o?.answer ? `${o.answer.role}:${o.answer.port}` : `error:${o?.error}`);

/** UDP-only rules of someone else, which must survive everything we do. */
const foreignRules = {
  4: '*nat\n:FOREIGN_CHAIN - [0:0]\n-A FOREIGN_CHAIN -j RETURN\n-A PREROUTING -p udp -j FOREIGN_CHAIN\n-A OUTPUT -p udp -d 10.99.0.0/16 -j RETURN\nCOMMIT\n',
  6: '*nat\n:FOREIGN_CHAIN - [0:0]\n-A FOREIGN_CHAIN -j RETURN\n-A PREROUTING -p udp -j FOREIGN_CHAIN\n-A OUTPUT -p udp -d fd00:99::/64 -j RETURN\nCOMMIT\n',
};

const exclusions = ['--exclude-outbound-ports=4317', `--exclude-outbound-ip-ranges=${remoteOtherIp}/32,${remoteOtherIp6}/128`];

/** A directory of wrappers around the real save/restore programs, for --iptables-bin-dir. */
function wrapperDir(restoreFilter: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'ipt-bin-'));
  for (const fam of ['iptables', 'ip6tables']) {
    for (const backend of ['nft', 'legacy']) {
      const save = `${fam}-${backend}-save`;
      const restore = `${fam}-${backend}-restore`;
      writeFileSync(join(dir, save), `#!/bin/sh\nexec ${sh(['sh', '-c', `command -v ${save}`]).trim()} "$@"\n`);
      writeFileSync(join(dir, restore), `#!/bin/sh\n${restoreFilter} | ${sh(['sh', '-c', `command -v ${restore}`]).trim()} "$@"\n`);
      chmodSync(join(dir, save), 0o755);
      chmodSync(join(dir, restore), 0o755);
    }
  }
  return dir;
}

describeWhenAvailable('apisix-mesh iptables on a real kernel (network namespaces)', missing, () => {
  let pair: NetnsPair;
  const listeners: Listener[] = [];
  const tmpDirs: string[] = [];
  let before: Record<4 | 6, string>;

  beforeAll(async () => {
    pair = createPair();
    for (const fam of [4, 6] as const) {
      sh(['ip', 'netns', 'exec', pair.pod, fam === 4 ? 'iptables-nft-restore' : 'ip6tables-nft-restore', '--noflush'], foreignRules[fam]);
    }
    before = { 4: natDump(pair.pod, 4), 6: natDump(pair.pod, 6) };
    listeners.push(await startListener(pair.pod, 'pod', [15001, 15006, 8080, 9090, 15020]));
    listeners.push(await startListener(pair.remote, 'remote', [80, 8080, 4317]));
  });

  afterAll(() => {
    for (const l of listeners) l.stop();
    pair?.destroy();
    for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
    removeOtherUidsDir();
  });

  it('applies exactly what --dry-run printed: one save and one restore per family (IPv6 by auto), then ::6 on lo', () => {
    const dryRun = runIptables(pair.pod, ['--dry-run', ...exclusions]);
    expect(dryRun.status, dryRun.stderr).toBe(0);
    expect(dryRun.stdout).toContain('# apisix-mesh iptables: IPv6 capture rules'); // fd00:77::2 is global
    expect(dryRun.stderr).toContain('capture rules for IPv4 and IPv6 (the pod has a global IPv6 address)');
    expect(natDump(pair.pod, 4)).toBe(before[4]); // dry run changed nothing

    const dir = wrapperDir('tee -a "$(dirname "$0")/applied"');
    tmpDirs.push(dir);
    const res = runIptables(pair.pod, [...exclusions, `--iptables-bin-dir=${dir}`]);
    expect(res.status, res.stderr).toBe(0);
    expect(readFileSync(join(dir, 'applied'), 'utf8')).toBe(dryRun.stdout);
    expect(res.stdout).toBe(dryRun.stdout); // the installed rules are printed, as istio-init does
    // the legacy probe, the save and the restore per family, then `ip` for the IPv6 forwarding source
    expect(res.stderr).toContain('started 7 process(es): ');
    expect(spawnSync('ip', ['-n', pair.pod, '-6', 'addr', 'show', 'dev', 'lo'], { encoding: 'utf8' }).stdout).toContain('inet6 ::6/128');
    expect(res.stderr).toMatch(/IPv4: installed \d+ nat rules/);
    expect(natDump(pair.pod, 4)).toContain(':APISIX_MESH_OUTPUT');
    expect(natDump(pair.pod, 6)).toContain('-A APISIX_MESH_OUTPUT -s ::6/128 -o lo -j RETURN');
  });

  it("keeps Istio's behavioural truths for the default pod", () => {
    const fromRemote = connectFrom(pair.remote, [
      { tag: 'in-app', host: podIp, port: 8080 },
      { tag: 'in-status', host: podIp, port: 15020 },
      { tag: 'in-app-v6', host: podIp6, port: 8080 },
      { tag: 'in-udp', host: podIp, port: 8080, udp: true },
    ]);
    expect(landed(fromRemote.get('in-app'))).toBe('pod:15006');
    expect(fromRemote.get('in-app')?.answer?.origDst).toBe(`${podIp}:8080`);
    expect(landed(fromRemote.get('in-status'))).toBe('pod:15020');
    expect(landed(fromRemote.get('in-app-v6'))).toBe('pod:15006');
    expect(fromRemote.get('in-app-v6')?.answer?.origDst).toBe(`[${podIp6}]:8080`);
    expect(landed(fromRemote.get('in-udp'))).toBe('pod:8080'); // only TCP is captured

    const appConns: Connection[] = [
      { tag: 'out-remote', host: remoteIp, port: 80 },
      { tag: 'out-remote-v6', host: remoteIp6, port: 80 },
      { tag: 'localhost', host: '127.0.0.1', port: 8080 },
      { tag: 'localhost-v6', host: '::1', port: 8080 },
      { tag: 'own-pod-ip', host: podIp, port: 8080 },
      { tag: 'out-udp', host: remoteIp, port: 80, udp: true },
    ];
    const asApp = connectFrom(pair.pod, appConns, app);
    expect(landed(asApp.get('out-remote'))).toBe('pod:15001');
    expect(asApp.get('out-remote')?.answer?.origDst).toBe(`${remoteIp}:80`);
    expect(landed(asApp.get('out-remote-v6'))).toBe('pod:15001');
    expect(asApp.get('out-remote-v6')?.answer?.origDst).toBe(`[${remoteIp6}]:80`);
    expect(landed(asApp.get('localhost'))).toBe('pod:8080');
    expect(landed(asApp.get('localhost-v6'))).toBe('pod:8080');
    expect(landed(asApp.get('own-pod-ip'))).toBe('pod:8080');
    expect(landed(asApp.get('out-udp'))).toBe('remote:80');

    const asProxy = connectFrom(
      pair.pod,
      [
        { tag: 'out-remote', host: remoteIp, port: 80 },
        { tag: 'own-pod-ip', host: podIp, port: 8080 },
        { tag: 'own-pod-ip-v6', host: podIp6, port: 8080 },
        { tag: 'localhost', host: '127.0.0.1', port: 8080 },
        { tag: 'passthrough', host: podIp, port: 8080, localAddress: '127.0.0.6' },
      ],
      proxy,
    );
    expect(landed(asProxy.get('out-remote'))).toBe('remote:80'); // no loop
    expect(landed(asProxy.get('own-pod-ip'))).toBe('pod:15006'); // a VIP that resolved to itself
    expect(asProxy.get('own-pod-ip')?.answer?.origDst).toBe(`${podIp}:8080`);
    expect(landed(asProxy.get('own-pod-ip-v6'))).toBe('pod:15006');
    expect(landed(asProxy.get('localhost'))).toBe('pod:8080');
    expect(landed(asProxy.get('passthrough'))).toBe('pod:8080'); // inbound passthrough to the app

    const asGroup = connectFrom(pair.pod, [{ tag: 'out-remote', host: remoteIp, port: 80 }], proxyGroup);
    expect(landed(asGroup.get('out-remote'))).toBe('remote:80');
  });

  it('never captures excluded ports and ranges', () => {
    const asApp = connectFrom(
      pair.pod,
      [
        { tag: 'excluded-port', host: remoteIp, port: 4317 },
        { tag: 'excluded-range', host: remoteOtherIp, port: 80 },
        { tag: 'excluded-range-v6', host: remoteOtherIp6, port: 80 },
      ],
      app,
    );
    expect(landed(asApp.get('excluded-port'))).toBe('remote:4317');
    expect(landed(asApp.get('excluded-range'))).toBe('remote:80');
    expect(landed(asApp.get('excluded-range-v6'))).toBe('remote:80');
  });

  it('leaves the same iptables-save output when applied again', () => {
    const first = { 4: natDump(pair.pod, 4), 6: natDump(pair.pod, 6) };
    const res = runIptables(pair.pod, exclusions);
    expect(res.status, res.stderr).toBe(0);
    expect(res.stderr).toContain('replacing the ones already there');
    expect(natDump(pair.pod, 4)).toBe(first[4]);
    expect(natDump(pair.pod, 6)).toBe(first[6]);
    expect(first[4].match(/-j APISIX_MESH_OUTPUT/g)).toHaveLength(1);
  });

  it('replaces rules that differ: include lists, then excluded interfaces', () => {
    const res = runIptables(pair.pod, ['--inbound-ports=8080', `--outbound-ip-ranges=${remoteOtherIp}/32`, '--outbound-ports=8080']);
    expect(res.status, res.stderr).toBe(0);
    const inbound = connectFrom(pair.remote, [
      { tag: 'listed', host: podIp, port: 8080 },
      { tag: 'unlisted', host: podIp, port: 9090 },
    ]);
    expect(landed(inbound.get('listed'))).toBe('pod:15006');
    expect(landed(inbound.get('unlisted'))).toBe('pod:9090');
    const outbound = connectFrom(
      pair.pod,
      [
        { tag: 'included-range', host: remoteOtherIp, port: 80 },
        { tag: 'other-range', host: remoteIp, port: 80 },
        { tag: 'included-port', host: remoteIp, port: 8080 },
        { tag: 'previously-excluded-port', host: remoteOtherIp, port: 4317 },
      ],
      app,
    );
    expect(landed(outbound.get('included-range'))).toBe('pod:15001');
    expect(outbound.get('included-range')?.answer?.origDst).toBe(`${remoteOtherIp}:80`);
    expect(landed(outbound.get('other-range'))).toBe('remote:80');
    expect(landed(outbound.get('included-port'))).toBe('pod:15001');
    expect(outbound.get('included-port')?.answer?.origDst).toBe(`${remoteIp}:8080`);
    expect(landed(outbound.get('previously-excluded-port'))).toBe('pod:15001');

    const nic = runIptables(pair.pod, [`--exclude-interfaces=${podIf}`]);
    expect(nic.status, nic.stderr).toBe(0);
    expect(landed(connectFrom(pair.remote, [{ tag: 'in', host: podIp, port: 8080 }]).get('in'))).toBe('pod:8080');
    const out = connectFrom(
      pair.pod,
      [
        { tag: 'via-excluded-nic', host: remoteIp, port: 80 },
        { tag: 'via-lo', host: podIp, port: 8080 },
      ],
      app,
    );
    expect(landed(out.get('via-excluded-nic'))).toBe('remote:80');
    expect(landed(out.get('via-lo'))).toBe('pod:8080');
  });

  it('leaves no partial rules when iptables-restore fails', () => {
    const installed = { 4: natDump(pair.pod, 4), 6: natDump(pair.pod, 6) };
    // The real restore, fed our document with one rule it cannot accept appended.
    const dir = wrapperDir("sed 's/^COMMIT$/-A APISIX_MESH_OUTPUT -j NO_SUCH_CHAIN\\nCOMMIT/'");
    tmpDirs.push(dir);
    const res = runIptables(pair.pod, ['--outbound-ports=5432', `--iptables-bin-dir=${dir}`]);
    expect(res.status).toBe(1);
    expect(res.stderr).toMatch(/^apisix-mesh: IPv4: .*iptables-nft-restore exited with status \d+.*the restore is atomic, so nothing of this document was applied$/m);
    expect(res.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(natDump(pair.pod, 4)).toBe(installed[4]);
    expect(natDump(pair.pod, 6)).toBe(installed[6]);
  });

  it('--cleanup removes our jumps and chains only, leaving the nat table as before', () => {
    const dry = runIptables(pair.pod, ['--cleanup', '--dry-run']);
    expect(dry.status, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('-X APISIX_MESH_OUTPUT');
    const res = runIptables(pair.pod, [], { APISIX_MESH_CLEANUP: 'true' });
    expect(res.status, res.stderr).toBe(0);
    expect(natDump(pair.pod, 4)).toBe(before[4]);
    expect(natDump(pair.pod, 6)).toBe(before[6]);
    expect(natDump(pair.pod, 4)).toContain('-A OUTPUT -d 10.99.0.0/16 -p udp -j RETURN');
    expect(landed(connectFrom(pair.pod, [{ tag: 'out', host: remoteIp, port: 80 }], app).get('out'))).toBe('remote:80');

    const again = runIptables(pair.pod, ['--cleanup']);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toContain('IPv4: no apisix-mesh rules installed, nothing to remove');
  });
});

describeWhenAvailable('apisix-mesh iptables backend choice and documents (real iptables)', missing, () => {
  let ns: string;
  beforeAll(() => {
    ns = newNetnsName('be');
    sh(['ip', 'netns', 'add', ns]);
  });
  afterAll(() => {
    if (ns) sh(['ip', 'netns', 'del', ns]);
  });

  it('every golden document is accepted by iptables-restore --test', () => {
    const testdata = new URL('../iptables/testdata/', import.meta.url).pathname;
    const goldens = readdirSync(testdata).filter((f) => f.endsWith('.golden') && !/residue/.test(f));
    expect(goldens.length).toBeGreaterThanOrEqual(12);
    for (const file of goldens) {
      const docs = readFileSync(join(testdata, file), 'utf8').split(/(?=^# apisix-mesh iptables: )/m);
      for (const doc of docs) {
        const restore = doc.includes('IPv6') ? 'ip6tables-nft-restore' : 'iptables-nft-restore';
        sh(['ip', 'netns', 'exec', ns, restore, '--test', '--noflush'], doc);
      }
    }
  });

  it('--ipv6=auto stays IPv4-only without a global IPv6 address', () => {
    const res = runIptables(ns, ['--dry-run']);
    expect(res.status, res.stderr).toBe(0);
    expect(res.stderr).toContain('capture rules for IPv4 (the pod has no global IPv6 address), dry run: nothing is changed');
    expect(res.stdout).toContain('# apisix-mesh iptables: IPv4 capture rules');
    expect(res.stdout).not.toContain('IPv6');
  });

  it('uses iptables-legacy when legacy already holds rules, nft otherwise', () => {
    sh(['ip', 'netns', 'exec', ns, 'iptables-legacy', '-t', 'filter', '-A', 'INPUT', '-p', 'tcp', '--dport', '9', '-j', 'ACCEPT']);
    const res = runIptables(ns, ['--ipv6=off']);
    expect(res.status, res.stderr).toBe(0);
    expect(res.stderr).toContain('IPv4: iptables-legacy already holds rules');
    expect(res.stderr).toContain('started 2 process(es): iptables-legacy-save, iptables-legacy-restore');
    expect(natDump(ns, 4, 'legacy')).toContain('-A OUTPUT -j APISIX_MESH_OUTPUT');
    expect(natDump(ns, 4, 'nft')).not.toContain('APISIX_MESH');
    const installed = natDump(ns, 4, 'legacy');
    const again = runIptables(ns, ['--ipv6=off']);
    expect(again.status, again.stderr).toBe(0);
    expect(natDump(ns, 4, 'legacy')).toBe(installed);

    const cleanup = runIptables(ns, ['--cleanup', '--ipv6=off']);
    expect(cleanup.status, cleanup.stderr).toBe(0);
    expect(natDump(ns, 4, 'legacy')).not.toContain('APISIX_MESH');
  });
});
