import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './render.js';

/**
 * Operator scripts. deploy.sh needs a cluster, so here it is only parsed and its usage checked;
 * dev-certs.mjs runs for real (it needs dist/: `npm test` builds first).
 */
describe('scripts/deploy.sh', () => {
  const script = join(repoRoot, 'scripts', 'deploy.sh');

  it('is valid bash', () => {
    expect(spawnSync('bash', ['-n', script]).status).toBe(0);
  });

  it('documents every option it accepts and refuses unknown ones', () => {
    const help = spawnSync('bash', [script, '--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    const accepted = [...readFileSync(script, 'utf8').matchAll(/^\s+(--[a-z-]+)\)/gm)].map((m) => m[1]);
    expect(accepted.length).toBeGreaterThanOrEqual(5);
    for (const option of accepted) expect(help.stdout).toContain(option!);
    const bad = spawnSync('bash', [script, '--no-such-option'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('unknown option --no-such-option');
  });
});

describe('scripts/dev-certs.mjs', () => {
  it('writes a CA and a serving certificate for the given names, the key private to its owner', () => {
    const out = mkdtempSync(join(tmpdir(), 'apisix-mesh-dev-certs-'));
    try {
      const run = spawnSync(process.execPath, [join(repoRoot, 'scripts', 'dev-certs.mjs'), '--out', out, '--days', '2', 'webhook.test', '127.0.0.1'], {
        encoding: 'utf8',
      });
      expect(run.status, run.stderr).toBe(0);
      const ca = new X509Certificate(readFileSync(join(out, 'ca.crt')));
      const leaf = new X509Certificate(readFileSync(join(out, 'tls.crt')));
      expect(ca.ca).toBe(true);
      expect(leaf.verify(ca.publicKey)).toBe(true);
      expect(leaf.checkHost('webhook.test')).toBe('webhook.test');
      expect(leaf.checkIP('127.0.0.1')).toBe('127.0.0.1');
      expect(Date.parse(leaf.validTo) - Date.now()).toBeLessThanOrEqual(2 * 24 * 3600 * 1000);
      expect(statSync(join(out, 'tls.key')).mode & 0o077).toBe(0);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it('refuses a bad --days with exit 2', () => {
    const run = spawnSync(process.execPath, [join(repoRoot, 'scripts', 'dev-certs.mjs'), '--days', '0'], { encoding: 'utf8' });
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('--days must be a positive number');
  });
});
