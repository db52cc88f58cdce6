import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

// The built CLI, as users and the container image run it (`npm test` builds first).
const cli = new URL('../../dist/cli/main.js', import.meta.url).pathname;
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

describe('apisix-mesh CLI', () => {
  it('prints its version', () => {
    const out = execFileSync(process.execPath, [cli, 'version'], { encoding: 'utf8' });
    expect(out).toBe(`apisix-mesh ${pkg.version} (node ${process.version})\n`);
  });

  it('has --help on every command', () => {
    for (const command of ['inject', 'webhook', 'iptables', 'agent', 'etcd', 'wait']) {
      const res = spawnSync(process.execPath, [cli, command, '--help'], { encoding: 'utf8' });
      expect(res.status, command).toBe(0);
      expect(res.stdout, command).toContain(`Usage: apisix-mesh ${command}`);
    }
  });

  it('exits 2 with a hint on an unknown command', () => {
    const res = spawnSync(process.execPath, [cli, 'no-such-command'], { encoding: 'utf8' });
    expect(res.status).toBe(2);
    expect(res.stderr).toContain("unknown command 'no-such-command'");
  });
});
