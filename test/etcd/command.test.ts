import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/** `apisix-mesh etcd` as a user runs it: the built CLI (npm test builds first). */
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const cli = join(root, 'dist/cli/main.js');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, 'etcd', ...args], { encoding: 'utf8', timeout: 20_000 });

describe('apisix-mesh etcd', () => {
  it('is built', () => expect(existsSync(cli), 'run npm run build (npm test does)').toBe(true));

  it('--help explains every flag', () => {
    const r = run('--help');
    expect(r.status).toBe(0);
    for (const flag of ['--listen', '--grpc-listen', '--read-only', '--max-history', '--max-history-bytes', '--progress-notify-interval', '--root-password-env', '--log-level']) {
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
    ] as const) {
      const r = run(...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toContain(text);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
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
