import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { freePort } from '../support/free-port.js';

/** `apisix-mesh etcd` as a user runs it: the built CLI (npm test builds first). */
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const cli = join(root, 'dist/cli/main.js');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, 'etcd', ...args], { encoding: 'utf8', timeout: 20_000 });

describe('apisix-mesh etcd', () => {
  it('is built', () => expect(existsSync(cli), 'run npm run build (npm test does)').toBe(true));

  it('--help explains every flag', () => {
    const r = run('--help');
    expect(r.status).toBe(0);
    for (const flag of ['--listen', '--grpc-listen', '--read-only', '--max-history', '--max-history-bytes', '--progress-notify-interval', '--root-password-env', '--log-level',
      '--initial-revision', '--max-leases', '--watch-buffer-bytes', '--watch-buffer-total-bytes', '--watch-drain-grace', '--range-cache-bytes']) {
      expect(r.stdout).toContain(flag);
    }
  });

  it('bad flags are one clear line and exit 2, no stack trace', () => {
    for (const [args, text] of [
      [['--listen', 'nonsense'], '--listen: expected HOST:PORT'],
      [['--max-history', '0'], '--max-history: expected a positive whole number'],
      [['--progress-notify-interval', 'soon'], '--progress-notify-interval: expected a duration'],
      [['--root-password-env', 'APISIX_MESH_TEST_UNSET_VAR'], 'environment variable APISIX_MESH_TEST_UNSET_VAR is empty or unset'],
      [['--root-password-env', 'X', '--grpc-listen', '127.0.0.1:0'], 'auth is only served on the HTTP gateway'],
      [['--initial-revision', 'soon'], '--initial-revision: expected "clock" or a whole number from 1'],
      [['--initial-revision', '0'], '--initial-revision: expected "clock" or a whole number from 1'],
      [['--watch-buffer-bytes', '-1'], '--watch-buffer-bytes: expected a positive whole number'],
      [['--max-leases', 'x'.repeat(5000)], '--max-leases: expected a positive whole number'],
      [['--watch-drain-grace', 'never'], '--watch-drain-grace: expected a duration'],
    ] as const) {
      const r = run(...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toContain(text);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr.length, 'a bad value is quoted short').toBeLessThan(300);
    }
  });

  it('says at start when gRPC (what etcdctl speaks) is not served', async () => {
    const firstLine = async (args: string[]): Promise<string> => {
      const child = spawn(process.execPath, [cli, 'etcd', '--listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      const line = await new Promise<string>((resolve) => {
        const take = (d: Buffer) => {
          out += d;
          if (out.includes('\n')) resolve(out.split('\n')[0]!);
        };
        child.stdout.on('data', take);
        child.stderr.on('data', take);
      });
      child.kill();
      return line;
    };
    expect(await firstLine([])).toContain('etcd API listening (HTTP/JSON only: gRPC, which etcdctl speaks, is not served)');
    expect(await firstLine(['--grpc-listen', '127.0.0.1:0'])).toContain('"msg":"etcd API listening"');
  });

  it('a port in use is a one-line failure (exit 1)', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = (blocker.address() as { port: number }).port;
    try {
      const r = run('--listen', `127.0.0.1:${port}`);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/^apisix-mesh: cannot listen: .*EADDRINUSE/);
    } finally {
      blocker.close();
    }
  });

  it('serves, logs the first request of each client connection at debug level, stops on SIGTERM', async () => {
    const port = await new Promise<number>((r) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => r(p));
      });
    });
    const child = spawn(process.execPath, [cli, 'etcd', '--listen', `127.0.0.1:${port}`, '--log-level', 'debug']);
    let log = '';
    child.stderr.on('data', (d: Buffer) => (log += d.toString()));
    try {
      for (let i = 0; i < 100 && !log.includes('listening'); i++) await new Promise((r) => setTimeout(r, 50));
      const v = await fetch(`http://127.0.0.1:${port}/version`);
      expect(((await v.json()) as { etcdcluster: string }).etcdcluster).toBe('3.4.0');
      for (let i = 0; i < 50 && !log.includes('first request'); i++) await new Promise((r) => setTimeout(r, 20));
      expect(log).toContain('"path":"/version"');
    } finally {
      child.kill('SIGTERM');
    }
    const code = await new Promise((r) => child.once('exit', r));
    expect(code).toBe(0);
  });
});

describe('apisix-mesh etcd across a restart', () => {
  const start = async (port: number) => {
    const child = spawn(process.execPath, [cli, 'etcd', '--listen', `127.0.0.1:${port}`, '--log-level', 'warn']);
    for (let i = 0; i < 100; i++) {
      try {
        if ((await fetch(`http://127.0.0.1:${port}/version`)).ok) return child;
      } catch {
        /* not up yet */
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGKILL');
    throw new Error('the emulator did not come up');
  };
  const stop = async (child: ReturnType<typeof spawn>) => {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  };
  const b64 = (s: string) => Buffer.from(s).toString('base64');

  it('never goes back: revisions start above the old ones, and a watch from an old revision is told "compacted"', async () => {
    const port = await freePort();
    const put = async () => {
      const r = await fetch(`http://127.0.0.1:${port}/v3/kv/put`, { method: 'POST', body: JSON.stringify({ key: b64('/apisix/routes/1'), value: b64('{}') }) });
      return Number(((await r.json()) as { header: { revision: string } }).header.revision);
    };
    let child = await start(port);
    let before: number;
    try {
      for (let i = 0; i < 50; i++) await put();
      before = await put();
    } finally {
      await stop(child);
    }
    child = await start(port);
    try {
      const after = await put();
      expect(after).toBeGreaterThan(before);
      // A client that watched the old process resumes from its next revision.
      const ctrl = new AbortController();
      const r = await fetch(`http://127.0.0.1:${port}/v3/watch`, {
        method: 'POST',
        body: JSON.stringify({ create_request: { key: b64('/apisix/'), range_end: b64('/apisix0'), start_revision: before + 1 } }),
        signal: ctrl.signal,
      });
      const reader = r.body!.getReader();
      let text = '';
      const deadline = Date.now() + 5000;
      while (text.split('\n').filter(Boolean).length < 2 && Date.now() < deadline) {
        const { value, done } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString();
      }
      ctrl.abort();
      const [created, cancel] = text.split('\n').filter(Boolean).map((l) => JSON.parse(l).result);
      expect(created.created).toBe(true);
      expect(cancel.canceled).toBe(true);
      expect(Number(cancel.compact_revision)).toBeGreaterThan(before);
    } finally {
      await stop(child);
    }
  });

  it('--initial-revision 1 numbers revisions as a fresh etcd does', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, [cli, 'etcd', '--listen', `127.0.0.1:${port}`, '--initial-revision', '1', '--log-level', 'warn']);
    try {
      let rev: string | undefined;
      for (let i = 0; i < 100 && rev === undefined; i++) {
        try {
          const r = await fetch(`http://127.0.0.1:${port}/v3/kv/put`, { method: 'POST', body: JSON.stringify({ key: b64('/a'), value: b64('1') }) });
          rev = ((await r.json()) as { header: { revision: string } }).header.revision;
        } catch {
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      expect(rev).toBe('2');
    } finally {
      child.kill('SIGTERM');
    }
  });
});
