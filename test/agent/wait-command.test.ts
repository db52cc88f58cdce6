import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../support/free-port.js';

// `apisix-mesh wait`, the agent container's postStart hook: it must return only once something
// answers /version as etcd does, and give up (exit 1, one line) when nothing does.
const cli = new URL('../../dist/cli/main.js', import.meta.url).pathname;

interface Run {
  exited(): boolean;
  result: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

function start(args: string[]): Run {
  const child = spawn(process.execPath, [cli, 'wait', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return {
    exited: () => child.exitCode !== null,
    result: once(child, 'exit').then(([code]) => ({ code: code as number | null, stdout, stderr })),
  };
}

const run = (args: string[]) => start(args).result;

function etcdLike(port: number, body: string): Promise<Server> {
  const server = createServer((_req, res) => res.end(body));
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

describe('apisix-mesh wait', () => {
  let server: Server | undefined;
  afterEach(() => {
    server?.close();
    server = undefined;
  });

  it('returns once the etcd API starts answering, not before', async () => {
    const port = await freePort();
    const waiting = start([`--etcd-address=127.0.0.1:${port}`, '--timeout=20s', '--interval=50ms']);
    await new Promise((r) => setTimeout(r, 800));
    expect(waiting.exited(), 'still waiting while nothing listens').toBe(false);
    server = await etcdLike(port, '{"etcdserver":"3.5.0","etcdcluster":"3.5.0"}');
    const res = await waiting.result;
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/the etcd API on 127\.0\.0\.1:\d+ answered after \d+ ms/);
  });

  it('does not take any HTTP server for etcd', async () => {
    const port = await freePort();
    server = await etcdLike(port, 'hello');
    const res = await run([`--etcd-address=127.0.0.1:${port}`, '--timeout=600ms', '--interval=50ms']);
    expect(res.code).toBe(1);
    expect(res.stderr).toBe(`apisix-mesh: wait: the etcd API on 127.0.0.1:${port} did not answer within 600ms\n`);
  });

  it('refuses a bad address with exit 2', async () => {
    const res = await run(['--etcd-address=nowhere']);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('--etcd-address: expected HOST:PORT');
  });
});
