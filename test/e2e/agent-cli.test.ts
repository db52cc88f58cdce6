// `apisix-mesh agent` as a real process (node dist/cli/main.js) against the fake istiod: it turns
// ready, serves APISIX objects over the etcd API, and stops cleanly on SIGTERM; bad input gives one
// line on stderr and exit 2, never a stack trace.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeIstiod } from '../support/fake-istiod.js';
import { loadCanonical } from '../support/xds-fixtures.js';
import { waitFor } from '../support/wait.js';
import { freePort } from '../support/free-port.js';

const CLI = new URL('../../dist/cli/main.js', import.meta.url).pathname;
const env = { ...process.env, POD_NAME: 'productpage-v1-abc', POD_NAMESPACE: 'default', INSTANCE_IP: '10.244.1.30', SERVICE_ACCOUNT: 'bookinfo-productpage' };


let istiod: FakeIstiod;
let child: ChildProcess | undefined;
let stderr = '';

beforeAll(async () => {
  istiod = new FakeIstiod(loadCanonical('synthetic-reviews-xds-responses.json'));
  await istiod.start();
});
afterAll(async () => {
  if (child && child.exitCode === null) child.kill('SIGKILL');
  await istiod.stop();
});

describe('apisix-mesh agent (the real command)', () => {
  it('runs, turns ready, serves routes over the etcd API and exits 0 on SIGTERM', async () => {
    const etcdPort = await freePort();
    const statusPort = await freePort();
    child = spawn(process.execPath, [CLI, 'agent', '--xds-address', `127.0.0.1:${istiod.port}`, '--etcd-listen', `127.0.0.1:${etcdPort}`, '--status-port', String(statusPort), '--status-host', '127.0.0.1'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    await waitFor(async () => {
      try {
        return (await fetch(`http://127.0.0.1:${statusPort}/healthz/ready`)).status === 200;
      } catch {
        return false;
      }
    }, 20_000, 'readiness');
    const range = await fetch(`http://127.0.0.1:${etcdPort}/v3/kv/range`, {
      method: 'POST',
      body: JSON.stringify({ key: Buffer.from('/apisix/routes/').toString('base64'), range_end: Buffer.from('/apisix/routes0').toString('base64') }),
    });
    const body = (await range.json()) as { kvs?: Array<{ value: string }> };
    const routes = (body.kvs ?? []).map((kv) => Buffer.from(kv.value, 'base64').toString()).filter((v) => v.startsWith('{'));
    expect(routes.length).toBe(3);
    await waitFor(() => /first complete configuration applied/.test(stderr), 5000, 'the readiness log line'); // pino writes asynchronously
    const exited = new Promise<number | null>((resolve) => child!.on('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(stderr).toMatch(/SIGTERM received, shutting down/);
  });

  it('refuses bad input with one line and exit 2', () => {
    const missing = spawnSync(process.execPath, [CLI, 'agent'], { env: { PATH: process.env.PATH }, encoding: 'utf8' });
    expect(missing.status).toBe(2);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
    expect(missing.stderr).toMatch(/missing POD_NAME, POD_NAMESPACE, INSTANCE_IP/);
    const badAddress = spawnSync(process.execPath, [CLI, 'agent', '--xds-address', 'istiod'], { env, encoding: 'utf8' });
    expect(badAddress.status).toBe(2);
    expect(badAddress.stderr).toMatch(/--xds-address: expected HOST:PORT/);
    const badTls = spawnSync(process.execPath, [CLI, 'agent', '--xds-tls', '--root-cert', '/nonexistent/root.pem'], { env, encoding: 'utf8' });
    expect(badTls.status).toBe(2);
    expect(badTls.stderr).toMatch(/--root-cert: \/nonexistent\/root.pem does not exist/);
    expect(badTls.stderr).not.toMatch(/\n\s+at /);
  });

  it('--help explains every flag', () => {
    const help = spawnSync(process.execPath, [CLI, 'agent', '--help'], { encoding: 'utf8' });
    for (const flag of ['--xds-address', '--xds-tls', '--root-cert', '--token-file', '--etcd-listen', '--status-port', '--coalesce', '--max-coalesce', '--warming-timeout', '--log-level']) {
      expect(help.stdout).toContain(flag);
    }
  });
});
