// The agent with a CA, over real sockets: TLS xDS from the fake istiod and the workload certificate from
// the fake Istio CA (both verified against the mesh root, both authenticated with the projected
// token). Readiness waits for the certificate as well as the configuration; the certificate's expiry
// is on /metrics; consumers get it from `agent.identity`; the key never reaches the log.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../../agent/agent.js';
import type { WorkloadCertificate } from '../../agent/identity/workload-identity.js';
import { nodeIdentityFromEnv } from '../../agent/xds/node.js';
import { FakeIstiod } from '../support/fake-istiod.js';
import { FakeIstioCa } from '../support/fake-istio-ca.js';
import { createTestPki, type TestPki } from '../support/test-pki.js';
import { loadCanonical } from '../support/xds-fixtures.js';
import { freePort } from '../support/free-port.js';
import { waitFor } from '../support/wait.js';

const identity = nodeIdentityFromEnv({ POD_NAME: 'productpage-v1-abc', POD_NAMESPACE: 'default', INSTANCE_IP: '10.244.1.30', SERVICE_ACCOUNT: 'bookinfo-productpage' });
const SPIFFE_ID = 'spiffe://cluster.local/ns/default/sa/bookinfo-productpage';

let pki: TestPki;
let istiod: FakeIstiod;
let ca: FakeIstioCa;
let caPort: number;
let agent: RunningAgent;
let logText = '';

beforeAll(async () => {
  pki = createTestPki();
  const dir = mkdtempSync(join(tmpdir(), 'agent-identity-'));
  writeFileSync(join(dir, 'root-cert.pem'), pki.root.pem);
  writeFileSync(join(dir, 'istio-token'), 'token-1\n');
  istiod = new FakeIstiod(loadCanonical('synthetic-reviews-xds-responses.json'));
  istiod.requiredToken = 'token-1';
  const istiodPort = await istiod.start(0, { key: pki.istiodKeyPem, cert: pki.istiodCertChainPem });
  ca = new FakeIstioCa(pki);
  ca.requiredToken = 'token-1';
  ca.expectedSpiffeId = SPIFFE_ID;
  caPort = await freePort(); // the CA starts later: the agent begins without it
  const tls = { rootCertFile: join(dir, 'root-cert.pem'), tokenFile: join(dir, 'istio-token'), serverName: 'istiod.istio-system.svc' };
  agent = await startAgent({
    xdsAddress: `127.0.0.1:${istiodPort}`,
    xdsTls: tls,
    workloadIdentity: { caAddress: `127.0.0.1:${caPort}`, tls, trustDomain: 'cluster.local', certTtlMs: 3600_000, retry: { initialMs: 100, maxMs: 300 } },
    identity,
    etcdHost: '127.0.0.1',
    etcdPort: 0,
    statusHost: '127.0.0.1',
    statusPort: 0,
    coalesceMs: 20,
    backoff: { initialMs: 50, maxMs: 300 },
    logger: pino({ level: 'debug' }, { write: (line: string) => void (logText += line) }),
  });
});

afterAll(async () => {
  await agent?.close();
  await ca?.stop();
  await istiod?.stop();
});

const get = (path: string) => fetch(`http://127.0.0.1:${agent.statusPort}${path}`);

describe('agent with Istio\'s CA', () => {
  it('is not ready while the CA is down, though the configuration is in', async () => {
    await waitFor(() => istiod.requests.length > 0 && agent.store.revision > 0 && /first complete configuration applied/.test(logText), 15_000, 'the first configuration');
    await waitFor(() => /not issued: CA 127.0.0.1:\d+: UNAVAILABLE/.test(logText), 10_000, 'a failed certificate request');
    expect(agent.isReady()).toBe(false);
    const res = await get('/healthz/ready');
    expect(res.status).toBe(503);
    expect(await res.text()).toBe('waiting for the workload certificate from the CA\n');
    expect(agent.identity?.current()).toBeUndefined();
  });

  it('turns ready once the CA issues the certificate, hands it to consumers and shows its expiry', async () => {
    const seen: WorkloadCertificate[] = [];
    agent.identity!.onChange((c) => seen.push(c));
    await ca.start(caPort);
    await waitFor(async () => (await get('/healthz/ready')).status === 200, 15_000, 'readiness');
    expect(seen).toHaveLength(1);
    expect(agent.identity!.current()).toBe(seen[0]);
    expect(seen[0]!.spiffeId).toBe(SPIFFE_ID);
    expect(ca.issued[0]).toMatchObject({ authorization: 'Bearer token-1', clusterId: 'Kubernetes', validitySeconds: 3600 });
    const metrics = await (await get('/metrics')).text();
    expect(metrics).toContain(`apisix_mesh_workload_cert_expiry_timestamp_seconds ${seen[0]!.notAfter.getTime() / 1000}\n`);
    expect(metrics).toMatch(/apisix_mesh_workload_certs_issued_total 1\n/);
    expect(metrics).toMatch(/apisix_mesh_workload_cert_request_failures_total [1-9]\d*\n/);
  });

  it('never writes the key to the log', async () => {
    await waitFor(() => logText.includes(`workload certificate for ${SPIFFE_ID} issued`), 5000, 'the issuance log line');
    const keyBody = agent.identity!.current()!.keyPem.split('\n').slice(1, -2).join('');
    expect(keyBody.length).toBeGreaterThan(1000);
    expect(logText).not.toContain('PRIVATE KEY');
    for (const line of agent.identity!.current()!.keyPem.split('\n').slice(1, -2)) expect(logText).not.toContain(line);
    expect(logText.replace(/\n/g, '')).not.toContain(keyBody);
  });
});
