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

  describe('with --status-address: then the agent\'s first configuration (/healthz/configured)', () => {
    let status: Server | undefined;
    afterEach(() => {
      status?.close();
      status = undefined;
    });

    function agentStatus(port: number, isReady: () => boolean): Promise<Server> {
      const srv = createServer((req, res) => {
        if (req.url !== '/healthz/configured') return res.writeHead(404).end();
        res.writeHead(isReady() ? 200 : 503).end(isReady() ? 'configured\n' : 'waiting for the first complete configuration from istiod\n');
      });
      return new Promise((resolve) => srv.listen(port, '127.0.0.1', () => resolve(srv)));
    }

    it('returns once the agent has its configuration, not when the etcd API answers', async () => {
      const [etcdPort, statusPort] = [await freePort(), await freePort()];
      server = await etcdLike(etcdPort, '{"etcdserver":"3.5.0","etcdcluster":"3.5.0"}');
      let ready = false;
      status = await agentStatus(statusPort, () => ready);
      const waiting = start([`--etcd-address=127.0.0.1:${etcdPort}`, `--status-address=127.0.0.1:${statusPort}`, '--config-timeout=20s', '--interval=50ms']);
      await new Promise((r) => setTimeout(r, 800));
      expect(waiting.exited(), 'still waiting while the agent answers 503').toBe(false);
      ready = true;
      const res = await waiting.result;
      expect(res.code, res.stderr).toBe(0);
      expect(res.stdout).toMatch(/the etcd API on 127\.0\.0\.1:\d+ answered after \d+ ms\n/);
      expect(res.stdout).toMatch(/the agent on 127\.0\.0\.1:\d+ had its first configuration after \d+ ms more\n$/);
    });

    it('lets APISIX start anyway once --config-timeout passes (exit 0, saying so)', async () => {
      const [etcdPort, statusPort] = [await freePort(), await freePort()];
      server = await etcdLike(etcdPort, '{"etcdserver":"3.5.0","etcdcluster":"3.5.0"}');
      status = await agentStatus(statusPort, () => false);
      const res = await run([`--etcd-address=127.0.0.1:${etcdPort}`, `--status-address=127.0.0.1:${statusPort}`, '--config-timeout=600ms', '--interval=50ms']);
      expect(res.code, res.stderr).toBe(0);
      expect(res.stdout).toContain(`the agent on 127.0.0.1:${statusPort} had no configuration within 600ms; APISIX starts without it and receives it when the agent has it\n`);
    });

    it('refuses a bad status address with exit 2', async () => {
      const res = await run(['--etcd-address=127.0.0.1:1', '--status-address=nowhere']);
      expect(res.code).toBe(2);
      expect(res.stderr).toContain('--status-address: expected HOST:PORT');
    });
  });

  it('refuses a bad address with exit 2', async () => {
    const res = await run(['--etcd-address=nowhere']);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('--etcd-address: expected HOST:PORT');
  });
});
