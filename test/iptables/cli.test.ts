import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// The built command (`npm test` builds first). Nothing here reaches the kernel: every run either
// fails validation or points --iptables-bin-dir at stand-ins that only record that they were run.
const cli = new URL('../../dist/cli/main.js', import.meta.url).pathname;
const golden = (name: string) => readFileSync(new URL(`./testdata/${name}.golden`, import.meta.url), 'utf8');

let bin: string;
const ran = () => (existsSync(join(bin, 'ran')) ? readFileSync(join(bin, 'ran'), 'utf8').trim().split('\n') : []);

beforeAll(() => {
  bin = mkdtempSync(join(tmpdir(), 'ipt-cli-'));
  for (const fam of ['iptables', 'ip6tables']) {
    for (const backend of ['nft', 'legacy']) {
      for (const what of ['save', 'restore']) {
        const file = join(bin, `${fam}-${backend}-${what}`);
        // A namespace with nothing in it: saves print no rules; restore is never expected to run.
        writeFileSync(file, `#!/bin/sh\necho "$(basename "$0") $*" >> "$(dirname "$0")/ran"\n${what === 'save' ? 'printf "*nat\\n:OUTPUT ACCEPT [0:0]\\nCOMMIT\\n"' : 'exit 99'}\n`);
        chmodSync(file, 0o755);
      }
    }
  }
});
afterAll(() => rmSync(bin, { recursive: true, force: true }));

function iptables(args: string[], env: Record<string, string> = {}) {
  rmSync(join(bin, 'ran'), { force: true });
  return spawnSync(process.execPath, [cli, 'iptables', `--iptables-bin-dir=${bin}`, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, ...env },
  });
}

describe('apisix-mesh iptables (the command)', () => {
  it('--dry-run prints the documents and applies nothing', () => {
    const res = iptables(['--dry-run', '--ipv6=off']);
    expect(res.status, res.stderr).toBe(0);
    expect(res.stdout).toBe(golden('defaults'));
    expect(ran()).toEqual(['iptables-legacy-save ', 'iptables-nft-save -t nat']);
  });

  it('prints both families with --ipv6=on, and takes flags from the environment', () => {
    const res = iptables([], { APISIX_MESH_DRY_RUN: 'true', APISIX_MESH_IPV6: 'on' });
    expect(res.status, res.stderr).toBe(0);
    expect(res.stdout).toBe(golden('defaults-ipv6'));
  });

  it('lets a flag beat its environment variable', () => {
    const res = iptables(['--dry-run', '--ipv6=off', '--proxy-uid=1337', '--proxy-gid=2000'], { APISIX_MESH_PROXY_GID: 'nonsense' });
    expect(res.status, res.stderr).toBe(0);
    expect(res.stdout).toBe(golden('uid-not-gid'));
  });

  it('--dry-run still prints a clean-namespace document when the table cannot be read', () => {
    const res = spawnSync(process.execPath, [cli, 'iptables', '--dry-run', '--ipv6=off', '--iptables-bin-dir=/nonexistent'], { encoding: 'utf8' });
    expect(res.status, res.stderr).toBe(0);
    expect(res.stdout).toBe(golden('defaults'));
    expect(res.stderr).toContain('cannot read the nat table (/nonexistent/iptables-save was not found');
  });

  it('falls back to the unsuffixed iptables-save/-restore when there is no -nft variant', () => {
    const plain = mkdtempSync(join(tmpdir(), 'ipt-plain-'));
    try {
      const save = join(plain, 'iptables-save');
      writeFileSync(save, `#!/bin/sh\necho "$(basename "$0") $*" >> "$(dirname "$0")/ran"\nprintf "*nat\\n:OUTPUT ACCEPT [0:0]\\nCOMMIT\\n"\n`);
      chmodSync(save, 0o755);
      const res = spawnSync(process.execPath, [cli, 'iptables', '--dry-run', '--ipv6=off', `--iptables-bin-dir=${plain}`], { encoding: 'utf8' });
      expect(res.status, res.stderr).toBe(0);
      expect(res.stdout).toBe(golden('defaults'));
      expect(readFileSync(join(plain, 'ran'), 'utf8')).toBe('iptables-save -t nat\n');
      expect(res.stderr).not.toContain('cannot read');
    } finally {
      rmSync(plain, { recursive: true, force: true });
    }
  });

  it('fails with status 1 and says why when the table cannot be read for real', () => {
    const res = spawnSync(process.execPath, [cli, 'iptables', '--ipv6=off', '--iptables-bin-dir=/nonexistent'], { encoding: 'utf8' });
    expect(res.status).toBe(1);
    expect(res.stderr).toContain(
      '\napisix-mesh: IPv4: cannot read the nat table: /nonexistent/iptables-save was not found (install iptables, or point --iptables-bin-dir at it)\n',
    );
    expect(res.stderr).not.toMatch(/\n\s+at /);
  });

  const invalid: Array<[string[], Record<string, string>, string]> = [
    [['--inbound-ports=80,http'], {}, '--inbound-ports: "80,http" contains "http", which is not a port in 1-65535'],
    [['--outbound-port=0'], {}, '--outbound-port: "0" is not a port in 1-65535'],
    [['--exclude-outbound-ip-ranges=10.0.0.1'], {}, '--exclude-outbound-ip-ranges: "10.0.0.1" contains "10.0.0.1", which is not a CIDR'],
    [['--outbound-ip-ranges=*,10.0.0.0/8'], {}, '--outbound-ip-ranges: "*,10.0.0.0/8" may not contain "*"'],
    [['--proxy-uid=root'], {}, '--proxy-uid: "root" is not a numeric uid/gid'],
    [['--exclude-interfaces=eth0,bad name'], {}, '--exclude-interfaces: "eth0,bad name" contains "bad name", which is not an interface name'],
    [['--ipv6=maybe'], {}, '--ipv6: "maybe" must be one of auto, on, off'],
    [[], { APISIX_MESH_EXCLUDE_OUTBOUND_PORTS: '4317,x' }, 'APISIX_MESH_EXCLUDE_OUTBOUND_PORTS: "4317,x" contains "x"'],
    [[], { APISIX_MESH_CLEANUP: 'sometimes' }, 'APISIX_MESH_CLEANUP: "sometimes" must be true or false'],
  ];
  for (const [args, env, message] of invalid) {
    it(`exits 2 before touching anything: ${[...args, ...Object.keys(env)].join(' ')}`, () => {
      const res = iptables(args, env);
      expect(res.status).toBe(2);
      expect(res.stderr).toContain(`apisix-mesh: iptables: ${message}`);
      expect(res.stderr).toContain('nothing was changed');
      expect(res.stderr.trim().split('\n')).toHaveLength(1); // one line, no stack trace
      expect(ran()).toEqual([]);
    });
  }

  it('exits 2 before touching anything when the rules would pass the budget', () => {
    const ports = Array.from({ length: 4096 }, (_, i) => i + 1).join(',');
    const res = iptables(['--dry-run', `--outbound-ports=${ports}`]);
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(/^apisix-mesh: iptables: the configuration makes 41\d\d nat rules for IPv4, more than the 4096 allowed .*; nothing was changed\n$/);
    expect(ran()).toEqual([]);
  });

  it('exits 2 on an unknown flag or a missing value', () => {
    expect(iptables(['--no-such-flag']).status).toBe(2);
    expect(iptables(['--inbound-ports']).status).toBe(2);
    expect(ran()).toEqual([]);
  });

  // The init container runs under a 64 Mi memory limit (BENCHMARKS.md: its peak RSS); whatever the
  // webhook or the agent import must not be loaded, nor their libraries.
  it('loads nothing of the webhook or the agent, nor their libraries', () => {
    const record = join(bin, 'modules');
    const hooks = `import { appendFileSync } from 'node:fs'; export async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(${JSON.stringify(record)}, r.url + '\\n'); return r; }`;
    const preload = `import { register } from 'node:module'; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)});`;
    rmSync(record, { force: true });
    const res = spawnSync(process.execPath, ['--import', `data:text/javascript,${encodeURIComponent(preload)}`, cli, 'iptables', '--dry-run', `--iptables-bin-dir=${bin}`], {
      encoding: 'utf8',
    });
    expect(res.status, res.stderr).toBe(0);
    const loaded = readFileSync(record, 'utf8').trim().split('\n');
    const ours = loaded.filter((u) => u.includes('/dist/')).map((u) => u.slice(u.indexOf('/dist/') + '/dist/'.length));
    expect(ours).toContain('iptables-init/capture.js'); // the recording works
    expect(ours.filter((p) => !p.startsWith('iptables-init/') && !p.startsWith('cli/'))).toEqual([]);
    const packages = new Set(loaded.filter((u) => u.includes('/node_modules/')).map((u) => u.split('/node_modules/')[1]!.split('/')[0]));
    expect([...packages]).toEqual(['commander']);
  });

  it('explains every flag and its variable in --help', () => {
    const res = spawnSync(process.execPath, [cli, 'iptables', '--help'], { encoding: 'utf8' });
    expect(res.status).toBe(0);
    for (const flag of ['outbound-port', 'inbound-port', 'proxy-uid', 'proxy-gid', 'inbound-ports', 'exclude-inbound-ports', 'outbound-ip-ranges',
      'exclude-outbound-ip-ranges', 'outbound-ports', 'exclude-outbound-ports', 'exclude-interfaces', 'ipv6', 'dry-run', 'cleanup',
      'iptables-backend', 'iptables-bin-dir']) {
      expect(res.stdout).toContain(`--${flag}`);
      expect(res.stdout.replace(/\s+/g, ' ')).toContain(`APISIX_MESH_${flag.replace(/-/g, '_').toUpperCase()}`);
    }
  });
});
