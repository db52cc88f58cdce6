import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { describeWhenAvailable, firstMissing, missingCommand } from '../support/requirements.js';
import { freePort } from '../support/free-port.js';

/**
 * The 34 scenarios recorded from a real etcd 3.4.23 (test/fixtures/etcd-gateway), replayed with the
 * recorder itself (`record.py --no-spawn`) against `node dist/cli/main.js etcd`, a fresh process per
 * scenario, and compared with `compare.py`. The one deliberate difference: Node's HTTP server adds
 * `Connection: keep-alive` to every answer (Go omits it; HTTP/1.1 means the same either way, and
 * lua-resty-http does not read it), which compare.py reports as a header warning.
 * The emulator runs with a 1 s progress-notify interval, as etcd was for `watch_progress`, and
 * numbers revisions from 1 as a fresh etcd does (its default starts at the clock).
 */
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const fixtures = join(root, 'test/fixtures/etcd-gateway');
const cli = join(root, 'dist/cli/main.js');


describeWhenAvailable(
  'etcd gateway replays every recorded etcd scenario',
  firstMissing(missingCommand('python3', 'the recorder is a python3 script'), missingCommand('curl', 'the recorder uses curl')),
  () => {
    it('record.py --no-spawn + compare.py: all 34 scenarios ok', { timeout: 600_000 }, async () => {
      expect(existsSync(cli), `${cli} is missing: run npm run build (npm test does)`).toBe(true);
      const work = mkdtempSync(join(tmpdir(), 'etcd-replay-'));
      try {
        const port = await freePort();
        const hooks = join(work, 'hooks.sh');
        writeFileSync(
          hooks,
          [
            `start() { "${process.execPath}" "${cli}" etcd --listen 127.0.0.1:${port} --initial-revision 1 --progress-notify-interval 1s --log-level warn & echo $! > "${work}/emu.pid";`,
            `  for i in $(seq 1 200); do curl -s -o /dev/null http://127.0.0.1:${port}/version && return 0; sleep 0.05; done; return 1; }`,
            `stop() { p=$(cat "${work}/emu.pid"); kill $p 2>/dev/null; while kill -0 $p 2>/dev/null; do sleep 0.05; done; }`,
          ].join('\n'),
        );
        const out = join(work, 'out');
        const rec = spawnSync(
          'python3',
          [
            'record.py',
            '--no-spawn',
            '--base',
            `http://127.0.0.1:${port}`,
            '--out',
            out,
            '--hook-start',
            `. "${hooks}"; start`,
            '--hook-stop',
            `. "${hooks}"; stop`,
          ],
          { cwd: fixtures, encoding: 'utf8', timeout: 540_000 },
        );
        expect(rec.status, rec.stderr).toBe(0);
        const cmp = spawnSync('python3', ['compare.py', fixtures, out], { cwd: fixtures, encoding: 'utf8' });
        expect(cmp.stderr).toBe('');
        const lines = cmp.stdout.split('\n').filter((l) => l.trim());
        const verdicts = lines.filter((l) => /^(ok|FAIL) /.test(l));
        const failures = lines.filter((l) => l.startsWith('FAIL') || (/^\s/.test(l) && !l.includes('(warning)')));
        expect(failures, cmp.stdout).toEqual([]);
        expect(verdicts).toHaveLength(34);
        expect(cmp.status).toBe(0);
        // Header warnings are allowed only for the deliberate difference named above.
        const warnings = lines.filter((l) => l.includes('(warning)'));
        const unexplained = warnings.filter((w) => {
          const m = /headers (\{.*?\}) != (\{.*\})$/.exec(w);
          if (!m) return true;
          const parse = (s: string) => JSON.parse(s.replace(/'/g, '"')) as Record<string, string>;
          const want = parse(m[1]!);
          const got = parse(m[2]!);
          if (got.Connection !== 'keep-alive' || 'Connection' in want) return true;
          delete got.Connection;
          return JSON.stringify(Object.entries(want).sort()) !== JSON.stringify(Object.entries(got).sort());
        });
        expect(unexplained).toEqual([]);
      } finally {
        try {
          execFileSync('sh', ['-c', `[ -f "${work}/emu.pid" ] && kill $(cat "${work}/emu.pid") 2>/dev/null || true`]);
        } catch {
          /* already gone */
        }
        rmSync(work, { recursive: true, force: true });
      }
    });
  },
);
