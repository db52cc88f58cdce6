import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWhenAvailable, firstMissing, missingCommand } from '../support/requirements.js';
import { startEmulatorProcess } from '../support/emulator-process.js';

/**
 * The 34 scenarios recorded from a real etcd 3.4.23 (test/fixtures/etcd-gateway), replayed with the
 * recorder itself (`record.py --no-spawn`) against `node dist/cli/main.js etcd`, a fresh process per
 * scenario, and compared with `compare.py`. The one deliberate difference: Node's HTTP server adds
 * `Connection: keep-alive` to every answer (Go omits it; HTTP/1.1 means the same either way, and
 * lua-resty-http does not read it), which compare.py reports as a header warning.
 * The emulator runs with a 1 s progress-notify interval, as etcd was for `watch_progress`, and
 * numbers revisions from 1 as a fresh etcd does (its default starts at the clock).
 *
 * Most of a scenario's time is its watch streams, which run for their recorded duration (a stream
 * proves that nothing more arrives in that time). Scenarios are independent (each has its own
 * emulator and port), so they run concurrently, longest first; each stream still runs its full time.
 */
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const fixtures = join(root, 'test/fixtures/etcd-gateway');
const cli = join(root, 'dist/cli/main.js');
const run = promisify(execFile);

interface Fixture {
  steps: Array<{ kind: string; duration_s?: number }>;
}

/** Scenario names (one `<name>.json` each) with the seconds their streams run, longest first. */
function scenariosLongestFirst(): Array<{ name: string; streamSeconds: number }> {
  return readdirSync(fixtures)
    .filter((f) => f.endsWith('.json'))
    .map((f) => {
      const fixture = JSON.parse(readFileSync(join(fixtures, f), 'utf8')) as Fixture;
      const streamSeconds = fixture.steps.reduce((sum, s) => sum + (s.kind === 'stream' ? (s.duration_s ?? 0) : 0), 0);
      return { name: f.slice(0, -'.json'.length), streamSeconds };
    })
    .sort((a, b) => b.streamSeconds - a.streamSeconds || a.name.localeCompare(b.name));
}

/** Header warnings are allowed only for the deliberate difference named above. */
function unexplainedWarnings(lines: string[]): string[] {
  return lines
    .filter((l) => l.includes('(warning)'))
    .filter((w) => {
      const m = /headers (\{.*?\}) != (\{.*\})$/.exec(w);
      if (!m) return true;
      const parse = (s: string) => JSON.parse(s.replace(/'/g, '"')) as Record<string, string>;
      const want = parse(m[1]!);
      const got = parse(m[2]!);
      if (got.Connection !== 'keep-alive' || 'Connection' in want) return true;
      delete got.Connection;
      return JSON.stringify(Object.entries(want).sort()) !== JSON.stringify(Object.entries(got).sort());
    });
}

/** Replays one scenario against a fresh emulator; returns compare.py's output lines. */
async function replay(name: string, out: string): Promise<{ lines: string[]; stderr: string; emulatorLog: string }> {
  const emulator = await startEmulatorProcess(cli, ['--progress-notify-interval', '1s', '--initial-revision', '1']);
  try {
    // The stop hook (the `stop_server` action, and the end of the scenario) must return only once
    // the emulator is gone, as record.py's own etcd stop does.
    const pid = emulator.pid;
    const stop = `kill ${pid} 2>/dev/null; while kill -0 ${pid} 2>/dev/null; do sleep 0.02; done`;
    await run('python3', ['record.py', '--no-spawn', '--base', emulator.url, '--out', out, '--hook-stop', stop, name], {
      cwd: fixtures,
      timeout: 120_000,
    });
  } finally {
    await emulator.stop();
  }
  const cmp = await run('python3', ['compare.py', join(fixtures, `${name}.json`), join(out, `${name}.json`)], {
    cwd: fixtures,
  }).catch((err: { stdout?: string; stderr?: string }) => ({ stdout: err.stdout ?? '', stderr: err.stderr ?? '' }));
  return { lines: cmp.stdout.split('\n').filter((l) => l.trim()), stderr: cmp.stderr, emulatorLog: emulator.log() };
}

describeWhenAvailable(
  'etcd gateway replays every recorded etcd scenario',
  firstMissing(missingCommand('python3', 'the recorder is a python3 script'), missingCommand('curl', 'the recorder uses curl')),
  () => {
    const scenarios = scenariosLongestFirst();
    let work = '';
    beforeAll(() => {
      work = mkdtempSync(join(tmpdir(), 'etcd-replay-'));
    });
    afterAll(() => rmSync(work, { recursive: true, force: true }));

    it('the built CLI exists and the fixtures are every scenario record.py knows (34)', async () => {
      expect(existsSync(cli), `${cli} is missing: run npm run build (npm test does)`).toBe(true);
      const { stdout } = await run('python3', ['record.py', '--list'], { cwd: fixtures });
      const known = stdout.split('\n').filter((l) => l.trim()).map((l) => l.split(/\s+/)[0]!);
      expect(scenarios.map((s) => s.name).sort()).toEqual(known.sort());
      expect(scenarios).toHaveLength(34);
    });

    describe.concurrent('record.py --no-spawn + compare.py', () => {
      for (const { name } of scenarios) {
        it(name, { timeout: 150_000 }, async ({ expect }) => {
          const { lines, stderr, emulatorLog } = await replay(name, join(work, name));
          expect(stderr).toBe('');
          const verdicts = lines.filter((l) => /^(ok|FAIL) /.test(l));
          const failures = lines.filter((l) => l.startsWith('FAIL') || (/^\s/.test(l) && !l.includes('(warning)')));
          expect(failures, `${lines.join('\n')}\nemulator log:\n${emulatorLog}`).toEqual([]);
          expect(verdicts).toHaveLength(1);
          expect(verdicts[0]!.startsWith(`ok   ${name}.json`)).toBe(true);
          expect(unexplainedWarnings(lines)).toEqual([]);
        });
      }
    });
  },
);
