// `apisix-mesh agent` as a real process (node dist/cli/main.js) against the fake istiod: it turns
// ready, serves APISIX objects over the etcd API, and stops cleanly on SIGTERM; bad input gives one
// line on stderr and exit 2, never a stack trace.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeIstiod } from '../support/fake-istiod.js';
import { loadCanonical } from '../support/xds-fixtures.js';
import { waitFor } from '../support/wait.js';
import { freePort } from '../support/free-port.js';
import { FakeIstioCa } from '../support/fake-istio-ca.js';
import { createTestPki } from '../support/test-pki.js';
import { defaultInjectionConfig } from '../../webhook/config/injection-config.js';
import { injectSidecar } from '../../webhook/injection/sidecar.js';

const CLI = new URL('../../dist/cli/main.js', import.meta.url).pathname;
const env = { ...process.env, POD_NAME: 'productpage-v1-abc', POD_NAMESPACE: 'default', INSTANCE_IP: '10.244.1.30', SERVICE_ACCOUNT: 'bookinfo-productpage' };


// A node process that starts, connects, translates and (with TLS) gets a certificate: ~1.5 s alone,
// 11 s with six busy loops on two cores, and more than 20 s once in CI beside the data-plane suites.
const STARTUP_MS = 60_000;

/** A TLS fake istiod and Istio CA listening on `listen` (a port or `[::1]:0`), with the root and token files the agent reads; stopped after `use`. */
async function withTlsIstiodAndCa(listen: number | string, use: (s: { xdsPort: number; caPort: number; dir: string; istiod: FakeIstiod; ca: FakeIstioCa }) => Promise<void>): Promise<void> {
  const pki = createTestPki();
  const dir = mkdtempSync(join(tmpdir(), 'agent-cli-tls-'));
  writeFileSync(join(dir, 'root-cert.pem'), pki.root.pem);
  writeFileSync(join(dir, 'istio-token'), 'token-1\n');
  const tlsIstiod = new FakeIstiod(loadCanonical('synthetic-reviews-xds-responses.json'));
  tlsIstiod.requiredToken = 'token-1';
  const ca = new FakeIstioCa(pki);
  ca.requiredToken = 'token-1';
  ca.expectedSpiffeId = 'spiffe://cluster.local/ns/default/sa/bookinfo-productpage';
  try {
    const xdsPort = await tlsIstiod.start(listen, { key: pki.istiodKeyPem, cert: pki.istiodCertChainPem });
    const caPort = await ca.start(listen);
    await use({ xdsPort, caPort, dir, istiod: tlsIstiod, ca });
  } finally {
    await ca.stop();
    await tlsIstiod.stop();
  }
}

/** The agent with `args` (its root and token files from `dir`) until its status port says ready; then `check` (given its log so far), then it is killed. */
async function agentUntilReady(args: string[], dir: string, check: (log: () => string) => Promise<void> | void): Promise<void> {
  const statusPort = await freePort();
  const agent = spawn(process.execPath, [
    CLI, 'agent', ...args, '--root-cert', join(dir, 'root-cert.pem'), '--token-file', join(dir, 'istio-token'),
    '--etcd-listen', `127.0.0.1:${await freePort()}`, '--status-port', String(statusPort), '--status-host', '127.0.0.1',
  ], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  agent.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  try {
    await waitFor(async () => (await fetch(`http://127.0.0.1:${statusPort}/healthz/ready`).catch(() => undefined))?.status === 200, STARTUP_MS, 'readiness').catch((err: Error) => {
      throw new Error(`${err.message}; the agent logged:\n${log.slice(-3000)}`);
    });
    await check(() => log);
  } finally {
    agent.kill('SIGKILL');
  }
}

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
    }, STARTUP_MS, 'readiness');
    // one connection for this request only (fetch would keep it open for the server's keep-alive time)
    const body = await new Promise<{ kvs?: Array<{ value: string }> }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: etcdPort, path: '/v3/kv/range', method: 'POST', agent: false }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve(JSON.parse(text) as { kvs?: Array<{ value: string }> }));
      });
      req.on('error', reject);
      req.end(JSON.stringify({ key: Buffer.from('/apisix/routes/').toString('base64'), range_end: Buffer.from('/apisix/routes0').toString('base64') }));
    });
    const routes = (body.kvs ?? []).map((kv) => Buffer.from(kv.value, 'base64').toString()).filter((v) => v.startsWith('{'));
    expect(routes.length).toBe(3);
    await waitFor(() => /first complete configuration applied/.test(stderr), 5000, 'the readiness log line'); // pino writes asynchronously
    // an etcd client like APISIX: the agent serves until it has gone (APISIX drains meanwhile)
    const client = net.connect(etcdPort, '127.0.0.1');
    await new Promise((resolve) => client.once('connect', resolve));
    let exitCode: number | null | undefined;
    const exited = new Promise<number | null>((resolve) => child!.on('exit', (code) => resolve((exitCode = code))));
    child.kill('SIGTERM');
    await waitFor(() => /SIGTERM received, serving APISIX until it has closed its etcd connections/.test(stderr), 5000, 'the drain log line');
    expect(exitCode).toBeUndefined();
    client.destroy();
    expect(await exited).toBe(0);
    expect(stderr).toMatch(/APISIX has closed its etcd connections, shutting down/);
  }, STARTUP_MS + 30_000);

  it('with --xds-tls and a CA: TLS xDS, a workload certificate from the CA, then ready', async () => {
    await withTlsIstiodAndCa(0, async ({ xdsPort, caPort, dir, ca }) => {
      const args = ['--xds-address', `127.0.0.1:${xdsPort}`, '--xds-tls', '--xds-server-name', 'istiod.istio-system.svc', '--ca-address', `127.0.0.1:${caPort}`, '--cert-ttl', '12h'];
      await agentUntilReady(args, dir, async (log) => {
        expect(ca.issued).toHaveLength(1);
        expect(ca.issued[0]!.validitySeconds).toBe(43200);
        await waitFor(() => log().includes('workload certificate for spiffe://cluster.local/ns/default/sa/bookinfo-productpage issued'), 5000, 'the log line');
      });
    });
  }, STARTUP_MS + 30_000);

  // An IPv6-only cluster's istiod: its ClusterIP as `istiodAddress`, `[fd00:…]:15012` (here ::1). The
  // agent runs with the injection's own arguments for istiod; only the ports differ, since the fake
  // istiod and CA are two servers here (one in a cluster).
  it('with istiod at an IPv6 literal, as injected: TLS xDS and the workload certificate from [::1], then ready', async () => {
    await withTlsIstiodAndCa('[::1]:0', async ({ xdsPort, caPort, dir, istiod: tlsIstiod, ca }) => {
      const app = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'default' }, spec: { containers: [{ name: 'app', image: 'app:1' }] } };
      const injected = injectSidecar(app, { ...defaultInjectionConfig, istiodAddress: `[::1]:${xdsPort}` }).spec!.containers.find((c) => c.name === 'apisix-mesh-agent')!.args!;
      const istiodArgs = injected
        .filter((a) => /^--(xds-address|xds-tls|ca-address|xds-server-name)\b/.test(a))
        .map((a) => (a.startsWith('--ca-address=') ? `--ca-address=[::1]:${caPort}` : a));
      expect(istiodArgs).toEqual([`--xds-address=[::1]:${xdsPort}`, '--xds-tls', `--ca-address=[::1]:${caPort}`, '--xds-server-name=istiod.istio-system.svc']);
      await agentUntilReady(istiodArgs, dir, (log) => {
        expect(tlsIstiod.streamMetadata[0]).toEqual({ authorization: 'Bearer token-1', clusterid: 'Kubernetes' });
        expect(ca.issued).toHaveLength(1);
        expect(log()).toContain(`xDS from [::1]:${xdsPort} (TLS)`);
      });
    });
  }, STARTUP_MS + 30_000);

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
    const usage = (args: string[], e: NodeJS.ProcessEnv = env) => spawnSync(process.execPath, [CLI, 'agent', ...args], { env: e, encoding: 'utf8' });
    for (const [args, message] of [
      [['--ca-address', 'istiod'], /--ca-address: expected HOST:PORT/],
      // an IPv6 address without brackets is also a valid longer address: refused with the form to write
      [['--xds-address', 'fd00::1:15012'], /^apisix-mesh: --xds-address: an IPv6 address goes in brackets: \[fd00::1\]:15012, got "fd00::1:15012"$/m],
      [['--ca-address', 'fd00::1'], /--ca-address: an IPv6 address needs a port, and brackets around the address: \[fd00::1\]:PORT/],
      [['--xds-address', '[istiod]:15012'], /--xds-address: \[istiod\] is not an IPv6 address/],
      [['--xds-address', '[fd00::1]:150120'], /--xds-address: expected HOST:PORT/],
      [['--ca-address', '127.0.0.1:15012', '--trust-domain', 'Cluster.Local'], /--trust-domain: trust domain "Cluster.Local" is not a SPIFFE trust domain/],
      [['--cert-ttl', 'a day'], /--cert-ttl: expected a duration/],
      [['--key-type', 'ed25519'], /^apisix-mesh: --key-type: expected rsa or ecdsa, got "ed25519"$/m],
      [['--ca-address', '127.0.0.1:15012', '--root-cert', '/nonexistent/root.pem'], /--root-cert: \/nonexistent\/root.pem does not exist/],
    ] as const) {
      const r = usage([...args]);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    // the app probes the injection hands over: refused at start, quoted short, rather than served wrong
    const badProbers = usage([], { ...env, ISTIO_KUBE_APP_PROBERS: JSON.stringify({ '/app-health/app/readyz': { httpGet: { port: 80, host: `evil${'x'.repeat(200)}` } } }) });
    expect(badProbers.status).toBe(2);
    expect(badProbers.stderr).toMatch(/app probes: .*unknown field "host"/);
    expect(badProbers.stderr.trim().split('\n')).toHaveLength(1);
    expect(badProbers.stderr).not.toContain('x'.repeat(100));
    // pilot-agent's variable: only ECDSA (or unset) means something, anything else would fail every CSR
    const badEcc = usage([], { ...env, ECC_SIGNATURE_ALGORITHM: 'ecdsa' });
    expect(badEcc.status).toBe(2);
    expect(badEcc.stderr).toMatch(/^apisix-mesh: ECC_SIGNATURE_ALGORITHM: expected ECDSA \(or unset for RSA\), got "ecdsa"$/m);
    expect(badEcc.stderr.trim().split('\n')).toHaveLength(1);
    const p384 = usage([], { ...env, ECC_SIGNATURE_ALGORITHM: 'ECDSA', ECC_CURVE: 'P384' });
    expect(p384.status).toBe(2);
    expect(p384.stderr).toMatch(/ECC_CURVE: P384 is not supported/);
    // the flag wins over the variable: the start goes on to the next check (the trust domain)
    const flagWins = usage(['--key-type', 'rsa', '--ca-address', '127.0.0.1:15012', '--trust-domain', 'Cluster.Local'], { ...env, ECC_SIGNATURE_ALGORITHM: 'nonsense' });
    expect(flagWins.stderr).toMatch(/--trust-domain: trust domain "Cluster.Local"/);
    const { SERVICE_ACCOUNT: _sa, ...noServiceAccount } = env;
    const noSa = usage(['--xds-tls'], noServiceAccount);
    expect(noSa.status).toBe(2);
    expect(noSa.stderr).toMatch(/SERVICE_ACCOUNT is not set, and the workload certificate names it \(or --ca-address none\)/);
  });

  it('--help explains every flag', () => {
    const help = spawnSync(process.execPath, [CLI, 'agent', '--help'], { encoding: 'utf8' });
    for (const flag of ['--xds-address', '--xds-tls', '--root-cert', '--token-file', '--ca-address', '--trust-domain', '--cert-ttl', '--key-type', '--etcd-listen', '--status-port', '--coalesce', '--max-coalesce', '--warming-timeout', '--log-level']) {
      expect(help.stdout).toContain(flag);
    }
    expect(help.stdout.replace(/\s+/g, ' ')).toMatch(/--key-type <rsa\|ecdsa> key of the workload certificate: rsa \(2048 bits\) or ecdsa \(P-256/);
  });
});
