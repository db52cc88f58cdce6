// The workload certificate against a fake Istio CA over TLS (test/support/fake-istio-ca.ts), through
// the agent's own wiring (startWorkloadIdentity): what the CSR and the call carry, retries after
// refusals and while the CA is down, renewal at half the lifetime, the old certificate served while
// renewal fails, and the chain and metrics consumers see. Key material never reaches the log.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { connect, createServer, type Server } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startWorkloadIdentity } from '../../agent/identity/start-identity.js';
import type { WorkloadCertificate, WorkloadIdentity } from '../../agent/identity/workload-identity.js';
import type { WorkloadKeyType } from '../../agent/identity/key-type.js';
import { nodeIdentityFromEnv } from '../../agent/xds/node.js';
import { FakeIstioCa } from '../support/fake-istio-ca.js';
import { createTestPki, type TestPki } from '../support/test-pki.js';
import { freePort } from '../support/free-port.js';
import { waitFor } from '../support/wait.js';

const ID = 'spiffe://cluster.local/ns/bookinfo/sa/reviews';
const node = nodeIdentityFromEnv({ POD_NAME: 'reviews-v1-abc', POD_NAMESPACE: 'bookinfo', INSTANCE_IP: '10.0.0.5', SERVICE_ACCOUNT: 'reviews' });

let pki: TestPki;
let ca: FakeIstioCa | undefined;
let identity: WorkloadIdentity | undefined;
let log: string[] = [];
let registry: Registry;

beforeAll(() => {
  pki = createTestPki();
});
afterEach(async () => {
  identity?.stop();
  identity = undefined;
  await ca?.stop();
  ca = undefined;
  // whatever happened in the test, no key material was logged
  for (const line of log) expect(line).not.toMatch(/PRIVATE KEY|MII[A-Za-z0-9+/]{60}/);
});

function files(token = 'token-1') {
  const dir = mkdtempSync(join(tmpdir(), 'identity-'));
  writeFileSync(join(dir, 'root-cert.pem'), pki.root.pem);
  writeFileSync(join(dir, 'istio-token'), `${token}\n`);
  return { dir, rootCertFile: join(dir, 'root-cert.pem'), tokenFile: join(dir, 'istio-token') };
}

function start(caPort: number, f: ReturnType<typeof files>, certTtlMs = 24 * 3600_000, keyType?: WorkloadKeyType): WorkloadIdentity {
  log = [];
  registry = new Registry();
  const logger = { info: (m: string) => log.push(`info ${m}`), warn: (m: string) => log.push(`warn ${m}`), error: (m: string) => log.push(`error ${m}`) };
  return startWorkloadIdentity(
    {
      caAddress: `127.0.0.1:${caPort}`,
      tls: { rootCertFile: f.rootCertFile, tokenFile: f.tokenFile, serverName: 'istiod.istio-system.svc' },
      trustDomain: 'cluster.local',
      certTtlMs,
      ...(keyType ? { keyType } : {}),
      retry: { initialMs: 100, maxMs: 400 },
    },
    node,
    registry,
    logger,
  );
}

async function newCa(port = 0): Promise<FakeIstioCa> {
  const c = new FakeIstioCa(pki);
  c.requiredToken = 'token-1';
  c.expectedSpiffeId = ID;
  await c.start(port);
  return c;
}

const metric = async (name: string) => Number(/ (\S+)$/.exec((await registry.getSingleMetricAsString(name)).split('\n').find((l) => l.startsWith(name)) ?? '')?.[1]);
const certs = (pem: string) => pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];

describe('workload identity from Istio\'s CA', () => {
  // the key type as pilot-agent's ECC_SIGNATURE_ALGORITHM chooses it: default RSA 2048, or ECDSA P-256
  it.each([
    [undefined, { modulusLength: 2048 }],
    ['ecdsa', { namedCurve: 'prime256v1' }],
  ] as const)('with key type %s: asks for exactly the pod\'s SPIFFE id with the token and ClusterID, and exposes the chain, the root and the expiry', async (keyType, keyDetails) => {
    ca = await newCa();
    identity = start(ca.port, files(), undefined, keyType);
    expect(identity.current()).toBeUndefined();
    await waitFor(() => identity!.isReady(), 15_000, 'the first certificate');
    const [request] = ca.requests;
    expect(request).toMatchObject({ authorization: 'Bearer token-1', clusterId: 'Kubernetes', csrSans: [`6:${ID}`], validitySeconds: 86400, outcome: 'issued' });

    const cert = identity.current()!;
    expect(cert.spiffeId).toBe(ID);
    const [leaf, intermediate, ...rest] = certs(cert.certChainPem);
    expect(rest).toEqual([]);
    expect(new X509Certificate(leaf!).subjectAltName).toBe(`URI:${ID}`);
    expect(new X509Certificate(leaf!).checkPrivateKey(createPrivateKey(cert.keyPem))).toBe(true);
    expect(new X509Certificate(leaf!).publicKey.asymmetricKeyDetails).toMatchObject(keyDetails);
    expect(log.some((l) => l.includes(`issued (${keyType ?? 'rsa'} key)`))).toBe(true);
    expect(new X509Certificate(intermediate!).fingerprint256).toBe(new X509Certificate(pki.intermediate.pem).fingerprint256);
    expect(new X509Certificate(cert.rootPem).fingerprint256).toBe(new X509Certificate(pki.root.pem).fingerprint256);
    expect(cert.notAfter.getTime()).toBe(Math.floor(ca.issued[0]!.notAfter! / 1000) * 1000);
    expect(await metric('apisix_mesh_workload_cert_expiry_timestamp_seconds')).toBe(cert.notAfter.getTime() / 1000);
    expect(await metric('apisix_mesh_workload_certs_issued_total')).toBe(1);

    // usable as it is: a TLS server presenting it is verified by a client that trusts only the root
    expect(await handshake(cert)).toBe(`URI:${ID}`);
  });

  it('with a token the CA refuses: no certificate, no crash, retries with back-off; the rotated token is read again', async () => {
    ca = await newCa();
    const f = files('stale-token');
    identity = start(ca.port, f);
    // counted by the agent once the refusal came back (the CA records the request before that)
    await waitFor(async () => (await metric('apisix_mesh_workload_cert_request_failures_total')) >= 3, 20_000, 'three refused requests');
    expect(ca.requests.length).toBeGreaterThanOrEqual(3);
    expect(ca.requests.every((r) => r.outcome === 'UNAUTHENTICATED')).toBe(true);
    expect(identity.isReady()).toBe(false);
    expect(log.some((l) => /^warn workload certificate for spiffe:\/\/cluster.local\/ns\/bookinfo\/sa\/reviews not issued: CA 127.0.0.1:\d+: UNAUTHENTICATED: request authenticate failure; retrying in \d+ ms, no workload certificate yet/.test(l))).toBe(true);
    writeFileSync(f.tokenFile, 'token-1\n');
    await waitFor(() => identity!.isReady(), 10_000, 'a certificate with the rotated token');
    expect(ca.issued[0]!.authorization).toBe('Bearer token-1');
  });

  it('renews at about half the lifetime counted from receipt (istiod back-dates NotBefore), with a new key each time', async () => {
    ca = await newCa();
    ca.lifetimeSeconds = 10;
    identity = start(ca.port, files());
    const seen: WorkloadCertificate[] = [];
    const receivedAt: number[] = [];
    identity.onChange((c) => {
      seen.push(c);
      receivedAt.push(Date.now());
    });
    await waitFor(() => seen.length >= 2, 30_000, 'a renewed certificate');
    // the next request comes half of the lifetime left on arrival (10 s, less NotAfter's whole-second
    // truncation and the transfer) after it arrived, plus the time to make a key and CSR, well before
    // expiry; counted from NotBefore (2 min back) it would come at once
    const gap = ca.requests[1]!.at - receivedAt[0]!;
    expect(gap).toBeGreaterThanOrEqual(4000);
    expect(gap).toBeLessThan(9000);
    expect(seen[1]!.keyPem).not.toBe(seen[0]!.keyPem);
    expect(seen[1]!.notAfter.getTime()).toBeGreaterThan(seen[0]!.notAfter.getTime());
    expect(identity.current()).toBe(seen[1]);
    expect(await metric('apisix_mesh_workload_cert_expiry_timestamp_seconds')).toBe(seen[1]!.notAfter.getTime() / 1000);
  });

  it('keeps serving the current certificate while renewal fails, and takes the next one when the CA recovers', async () => {
    ca = await newCa();
    ca.lifetimeSeconds = 4;
    identity = start(ca.port, files());
    await waitFor(() => identity!.isReady(), 15_000, 'the first certificate');
    const first = identity.current()!;
    ca.failure = { code: grpc.status.UNAVAILABLE, details: 'istiod is restarting' };
    await waitFor(() => ca!.requests.filter((r) => r.outcome === 'UNAVAILABLE').length >= 2, 15_000, 'failed renewals');
    expect(identity.current()).toBe(first);
    expect(identity.isReady()).toBe(true);
    expect(log.some((l) => l.includes('stays served'))).toBe(true);
    ca.failure = undefined;
    await waitFor(() => identity!.current() !== first, 10_000, 'the renewed certificate');
    expect(await metric('apisix_mesh_workload_cert_request_failures_total')).toBeGreaterThanOrEqual(2);
  });

  it('says so in the log when renewal keeps failing until the certificate expires', async () => {
    ca = await newCa();
    ca.lifetimeSeconds = 2;
    identity = start(ca.port, files());
    await waitFor(() => identity!.isReady(), 15_000, 'the first certificate');
    ca.failure = { code: grpc.status.UNAVAILABLE, details: 'istiod is gone' };
    await waitFor(() => log.some((l) => /^error the workload certificate for spiffe:\/\/cluster.local\/ns\/bookinfo\/sa\/reviews expired at .* and could not be renewed/.test(l)), 10_000, 'the expiry error');
    expect(identity.current()!.notAfter.getTime()).toBeLessThanOrEqual(Date.now());
  });

  it('with the CA down at start, has no certificate until the CA comes up', async () => {
    const port = await freePort();
    identity = start(port, files());
    await waitFor(async () => (await metric('apisix_mesh_workload_cert_request_failures_total')) >= 2, 10_000, 'failed attempts');
    expect(identity.isReady()).toBe(false);
    ca = await newCa(port);
    await waitFor(() => identity!.isReady(), 15_000, 'a certificate once the CA is up');
    expect(ca.issued).toHaveLength(1);
  });

  it('refuses a certificate for another identity than the pod\'s (fail closed)', async () => {
    ca = await newCa();
    ca.issueSpiffeId = 'spiffe://cluster.local/ns/bookinfo/sa/admin';
    identity = start(ca.port, files());
    await waitFor(() => ca!.issued.length >= 2, 10_000, 'two issued certificates');
    expect(identity.current()).toBeUndefined();
    expect(log.some((l) => l.includes('SAN is "URI:spiffe://cluster.local/ns/bookinfo/sa/admin"'))).toBe(true);
  });

  it('refuses a CA whose certificate does not chain to the mesh root', async () => {
    const foreign = createTestPki();
    ca = new FakeIstioCa(foreign);
    await ca.start();
    identity = start(ca.port, files());
    await waitFor(async () => (await metric('apisix_mesh_workload_cert_request_failures_total')) >= 2, 10_000, 'failed attempts');
    expect(ca.requests).toHaveLength(0);
    expect(identity.isReady()).toBe(false);
  });
});

/** A TLS server with the certificate; a client trusting only `rootPem` connects. Resolves with the SAN the client saw. */
async function handshake(cert: WorkloadCertificate): Promise<string> {
  const server: Server = createServer({ key: cert.keyPem, cert: cert.certChainPem }, (s) => s.end());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const port = (server.address() as { port: number }).port;
    return await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, ca: cert.rootPem, checkServerIdentity: () => undefined }, () => {
        resolve(socket.getPeerX509Certificate()!.subjectAltName!);
        socket.destroy();
      });
      socket.on('error', reject);
    });
  } finally {
    server.close();
  }
}
