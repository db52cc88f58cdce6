import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { PARTS } from '../../cli/program.js';

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
      // wrapped for an 80-column terminal (commander stops wrapping beside long option names by default)
      const longest = Math.max(...res.stdout.split('\n').map((l) => l.length));
      expect(longest, `${command} --help line length`).toBeLessThanOrEqual(80);
    }
  });

  it('exits 2 with a hint on an unknown command', () => {
    const res = spawnSync(process.execPath, [cli, 'no-such-command'], { encoding: 'utf8' });
    expect(res.status).toBe(2);
    expect(res.stderr).toContain("unknown command 'no-such-command'");
  });

  // `apisix-mesh <command>` loads only the part that PARTS says owns it; a command missing there
  // still works (every part is loaded) but loses that saving.
  it('knows which part registers which command', async () => {
    for (const part of PARTS) {
      const program = new Command();
      (await part.load())(program);
      expect(program.commands.map((c) => c.name()).sort(), 'add the command to PARTS in cli/program.ts').toEqual([...part.commands].sort());
    }
  });

  it('lists every command in the top-level help', () => {
    const res = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8' });
    expect(res.status).toBe(0);
    for (const command of ['version', 'inject', 'webhook', 'iptables', 'agent', 'etcd']) expect(res.stdout).toMatch(new RegExp(`\\n  ${command} `));
  });
});
