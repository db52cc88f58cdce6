import { X509Certificate } from 'node:crypto';
import { Agent, createServer, request, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { V1MutatingWebhookConfiguration } from '@kubernetes/client-node';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { generateCa, generateServingCert, type CertificateAuthority } from '../../webhook/certificates/generate.js';
import { ClusterApiError, secretStore, webhookConfigurationClient } from '../../webhook/cluster-certs/kube-api.js';
import {
  ClusterCertificateManager,
  type CertificateLog,
  type CertificateObserver,
  type ServingCertificate,
} from '../../webhook/cluster-certs/manager.js';
import { certificateMetrics } from '../../webhook/cluster-certs/metrics.js';
import { Registry } from 'prom-client';
import { certificatesFromSecretData, defaultCertificatePolicy } from '../../webhook/cluster-certs/stored-certificates.js';
import { startWebhookServer } from '../../webhook/server/server.js';
import { FakeKubeApi } from './fake-kube-api.js';

/**
 * The in-cluster certificate manager against a local HTTPS server that answers like the API
 * server (see fake-kube-api.ts), through a real @kubernetes/client-node KubeConfig.
 */
const NS = 'apisix-mesh-system';
const SECRET = 'apisix-mesh-webhook-certs';
const MWC = 'apisix-mesh-injector';
const SERVICE_NAMES = ['apisix-mesh-webhook', `apisix-mesh-webhook.${NS}`, `apisix-mesh-webhook.${NS}.svc`, `apisix-mesh-webhook.${NS}.svc.cluster.local`];
const SECRET_PATH = `/api/v1/namespaces/${NS}/secrets/${SECRET}`;
const MWC_PATH = `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${MWC}`;
const DAY = 24 * 60 * 60 * 1000;

const webhookConfiguration: V1MutatingWebhookConfiguration = {
  apiVersion: 'admissionregistration.k8s.io/v1',
  kind: 'MutatingWebhookConfiguration',
  metadata: { name: MWC },
  webhooks: [
    {
      name: 'sidecar-injector.apisix-mesh.io',
      admissionReviewVersions: ['v1'],
      sideEffects: 'None',
      clientConfig: { service: { name: 'apisix-mesh-webhook', namespace: NS, path: '/inject', port: 443 } },
    },
  ],
};

let apiCa: CertificateAuthority;
let apiCert: { certPem: string; keyPem: string };
beforeAll(() => {
  apiCa = generateCa({ commonName: 'fake-kube-apiserver-ca' });
  apiCert = generateServingCert(apiCa, ['127.0.0.1'], { days: 1 });
});

class MemoryLog implements CertificateLog {
  readonly lines: string[] = [];
  info = (_o: object, msg: string) => void this.lines.push(`info ${msg}`);
  warn = (_o: object, msg: string) => void this.lines.push(`warn ${msg}`);
  error = (_o: object, msg: string) => void this.lines.push(`error ${msg}`);
}

let api: FakeKubeApi;
let clock: Date;
const managers: ClusterCertificateManager[] = [];

function manager(log = new MemoryLog(), observer?: CertificateObserver): ClusterCertificateManager {
  const kc = api.kubeConfig(apiCa.certPem);
  const m: ClusterCertificateManager = new ClusterCertificateManager({
    ...(observer ? { observer } : {}),
    secret: secretStore(kc, NS, SECRET),
    webhookConfiguration: webhookConfigurationClient(kc, MWC),
    policy: defaultCertificatePolicy(SERVICE_NAMES),
    log,
    now: () => clock,
  });
  managers.push(m);
  return m;
}

function storedCaBundle(): string {
  const b64 = api.webhookConfigurations.get(MWC)!.webhooks![0]!.clientConfig.caBundle!;
  return Buffer.from(b64, 'base64').toString('utf8');
}

function storedCertificates() {
  return certificatesFromSecretData(api.secrets.get(`${NS}/${SECRET}`)?.data);
}

/** Connects like the API server calls a webhook: verify against caBundle, SNI = the Service name. */
async function servingVerifies(cert: ServingCertificate, caBundle: string): Promise<string> {
  const server = createServer({ cert: cert.cert, key: cert.key, minVersion: 'TLSv1.2' }, (_q, r) => r.end('ok'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    return await get(server, { ca: caBundle, servername: `apisix-mesh-webhook.${NS}.svc` });
  } finally {
    server.close();
  }
}

function get(server: Server, options: { ca: string; servername: string; agent?: Agent; path?: string }): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: (server.address() as AddressInfo).port,
        path: options.path ?? '/',
        ca: options.ca,
        servername: options.servername,
        agent: options.agent ?? false,
      },
      (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve(body));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

beforeEach(async () => {
  // Real time: the TLS clients below check validity against the real clock.
  clock = new Date();
  api = new FakeKubeApi({ tls: { cert: apiCert.certPem, key: apiCert.keyPem }, token: 'sa-token' });
  await api.start();
  api.putWebhookConfiguration(webhookConfiguration);
});

afterEach(async () => {
  for (const m of managers.splice(0)) m.stop();
  await api.stop();
});

describe('ClusterCertificateManager against an API server', () => {
  it('fills the empty Secret the manifests ship, then patches the caBundle; the API server can verify it', async () => {
    const shipped = api.putSecret(NS, SECRET);
    shipped.metadata!.annotations = { 'kubectl.kubernetes.io/last-applied-configuration': '{"kind":"Secret"}' };
    shipped.metadata!.labels = { 'app.kubernetes.io/name': 'apisix-mesh-webhook' };
    const serving = await manager().ensure();

    expect(api.requests.map((r) => `${r.method} ${r.path} ${r.status}`)).toEqual([
      `GET ${SECRET_PATH} 200`,
      `PUT ${SECRET_PATH} 200`,
      `GET ${MWC_PATH} 200`,
      `PATCH ${MWC_PATH} 200`,
    ]);
    for (const r of api.requests) expect(r.authorization).toBe('Bearer sa-token');
    const put = api.requests[1]!.body as { metadata: { resourceVersion: string }; data: Record<string, string> };
    expect(put.metadata.resourceVersion).toBe(shipped.metadata!.resourceVersion);
    expect(Object.keys(put.data).sort()).toEqual(['ca.crt', 'ca.key', 'tls.crt', 'tls.key']);
    // Only the data changes: labels and kubectl's last-applied annotation survive the update.
    const after = api.secrets.get(`${NS}/${SECRET}`)!;
    expect(after.metadata!.annotations).toEqual(shipped.metadata!.annotations);
    expect(after.metadata!.labels).toEqual(shipped.metadata!.labels);
    expect(after.type).toBe('Opaque');
    expect(api.requests[3]!.contentType).toBe('application/json-patch+json');

    const stored = storedCertificates();
    expect(stored.servingCert).toBe(serving.cert);
    expect(storedCaBundle().trim()).toBe(stored.caCert!.trim());
    expect(await servingVerifies(serving, storedCaBundle())).toBe('ok');
    const leaf = new X509Certificate(serving.cert);
    for (const name of SERVICE_NAMES) expect(leaf.checkHost(name)).toBe(name);
    expect(Date.parse(leaf.validTo) - clock.getTime()).toBeLessThanOrEqual(31 * DAY);
  });

  it('reuses what the Secret already holds: no write to the Secret nor to the webhook configuration', async () => {
    api.putSecret(NS, SECRET);
    const first = await manager().ensure();
    api.requests.length = 0;

    const second = await manager().ensure();
    expect(second).toEqual(first);
    expect(api.requests.map((r) => `${r.method} ${r.path}`)).toEqual([`GET ${SECRET_PATH}`, `GET ${MWC_PATH}`]);
  });

  it('creates the Secret when it is missing and RBAC allows it', async () => {
    await manager().ensure();
    expect(api.requests.map((r) => `${r.method} ${r.status}`).slice(0, 2)).toEqual(['GET 404', 'POST 201']);
    expect(storedCertificates().caCert).toBeDefined();
  });

  it('says what to do when the Secret is missing and may not be created', async () => {
    api.forbidden.add(`POST /api/v1/namespaces/${NS}/secrets`);
    const failure = manager().ensure();
    await expect(failure).rejects.toThrow(ClusterApiError);
    await expect(failure).rejects.toThrow(/does not exist and the webhook may not create it/);
  });

  it('names the RBAC when the webhook configuration may not be read', async () => {
    api.putSecret(NS, SECRET);
    api.forbidden.add(`GET ${MWC_PATH}`);
    await expect(manager().ensure()).rejects.toThrow(
      `reading MutatingWebhookConfiguration ${MWC}: forbidden (check the webhook's RBAC in manifests/webhook-certs/rbac.yaml)`,
    );
  });

  it('fails clearly when the webhook configuration is not installed', async () => {
    api.putSecret(NS, SECRET);
    api.webhookConfigurations.clear();
    await expect(manager().ensure()).rejects.toThrow(/not found \(are the manifests applied\?\)/);
  });

  it('converges two replicas started at once on one CA (resourceVersion conflict on update)', async () => {
    api.putSecret(NS, SECRET);
    api.holdSecretReads(2);
    const logA = new MemoryLog();
    const [a, b] = await Promise.all([manager(logA).ensure(), manager().ensure()]);

    expect(a).toEqual(b);
    const puts = api.requestsMatching('PUT', SECRET_PATH);
    expect(puts.map((p) => p.status).sort()).toEqual([200, 409]);
    // The loser read again and took the winner's certificates.
    expect(api.requestsMatching('GET', SECRET_PATH)).toHaveLength(3);
    expect(storedCertificates().servingCert).toBe(a.cert);
    expect(await servingVerifies(b, storedCaBundle())).toBe('ok');
  });

  it('converges two replicas when both find no Secret (AlreadyExists on create)', async () => {
    api.holdSecretReads(2);
    const [a, b] = await Promise.all([manager().ensure(), manager().ensure()]);
    expect(a).toEqual(b);
    expect(api.requestsMatching('POST', '/secrets').map((p) => p.status).sort()).toEqual([201, 409]);
  });

  it('renews the serving certificate with the same CA before it expires, without touching the caBundle', async () => {
    api.putSecret(NS, SECRET);
    const m = manager();
    const first = await m.ensure();
    const ca = storedCertificates().caCert;
    api.requests.length = 0;

    clock = new Date(clock.getTime() + 21 * DAY); // a third of 30 days left: renew
    const renewed = await m.ensure();
    expect(renewed.cert).not.toBe(first.cert);
    expect(storedCertificates().caCert).toBe(ca);
    expect(api.requests.map((r) => `${r.method} ${r.path}`)).toEqual([`GET ${SECRET_PATH}`, `PUT ${SECRET_PATH}`, `GET ${MWC_PATH}`]);
    expect(new X509Certificate(renewed.cert).verify(new X509Certificate(ca!).publicKey)).toBe(true);
  });

  it('rotates the CA before it expires and trusts old and new CA in the caBundle meanwhile', async () => {
    api.putSecret(NS, SECRET);
    const m = manager();
    const first = await m.ensure();
    const oldCa = storedCertificates().caCert!;

    clock = new Date(clock.getTime() + (3650 - 60) * DAY);
    const next = await m.ensure();
    const stored = storedCertificates();
    expect(stored.caCert).not.toBe(oldCa);
    expect(stored.previousCaCert).toBe(oldCa);
    const bundle = storedCaBundle();
    expect(bundle).toContain(stored.caCert!.trim());
    expect(bundle).toContain(oldCa.trim());
    // Replicas still serving the old certificate keep working while they catch up.
    expect(new X509Certificate(first.cert).verify(new X509Certificate(oldCa).publicKey)).toBe(true);
    expect(new X509Certificate(next.cert).verify(new X509Certificate(stored.caCert!).publicKey)).toBe(true);
  });

  it('puts the caBundle back when a re-apply of the manifests removed it', async () => {
    api.putSecret(NS, SECRET);
    const m = manager();
    await m.ensure();
    api.putWebhookConfiguration(webhookConfiguration); // `kubectl replace` without caBundle
    await m.ensure();
    expect(api.requestsMatching('PATCH', MWC_PATH)).toHaveLength(2);
    expect(storedCaBundle()).toContain(storedCertificates().caCert!.trim());
  });
});

describe('renewal while serving', () => {
  it('swaps the certificate for new connections without dropping an open one', async () => {
    api.putSecret(NS, SECRET);
    const m = manager();
    // Issued 25 days ago: still valid now, but due for renewal at the next check.
    const realNow = clock;
    clock = new Date(realNow.getTime() - 25 * DAY);
    const first = await m.ensure();
    clock = realNow;
    // The real webhook server, as `apisix-mesh webhook` wires it to the manager.
    const webhook = await startWebhookServer({ port: 0, host: '127.0.0.1', tls: { pair: first }, logLevel: 'silent' });
    const server = webhook.app.server as unknown as Server;
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const ca = storedCaBundle();
    const servername = `apisix-mesh-webhook.${NS}.svc`;
    try {
      const sockets: TLSSocket[] = [];
      agent.on('free', (socket) => sockets.push(socket as TLSSocket));
      expect(await get(server, { ca, servername, agent, path: '/healthz' })).toContain('ok');
      const openSocket = sockets[0]!;
      expect(openSocket.getPeerX509Certificate()!.fingerprint256).toBe(new X509Certificate(first.cert).fingerprint256);

      const served = new Promise<ServingCertificate>((resolve) =>
        m.startRenewal((cert) => {
          webhook.updateTls(cert);
          resolve(cert);
        }, 20),
      );
      const renewed = await served;
      expect(renewed.cert).not.toBe(first.cert);

      // The kept-alive connection still works, on the same socket, with the old certificate.
      expect(await get(server, { ca, servername, agent, path: '/healthz' })).toContain('ok');
      expect(sockets.at(-1)).toBe(openSocket);
      expect(openSocket.destroyed).toBe(false);
      // A new connection gets the renewed certificate, trusted through the unchanged caBundle.
      const fresh = await new Promise<string>((resolve, reject) => {
        const req = request(
          { host: '127.0.0.1', port: (server.address() as AddressInfo).port, ca: storedCaBundle(), servername, agent: false },
          (res) => {
            resolve((res.socket as TLSSocket).getPeerX509Certificate()!.fingerprint256);
            res.resume();
          },
        );
        req.on('error', reject);
        req.end();
      });
      expect(fresh).toBe(new X509Certificate(renewed.cert).fingerprint256);
    } finally {
      agent.destroy();
      await webhook.close();
    }
  });

  it('keeps the current certificate and retries when a check fails', async () => {
    api.putSecret(NS, SECRET);
    const log = new MemoryLog();
    const registry = new Registry();
    let m: ClusterCertificateManager | undefined;
    m = manager(log, certificateMetrics(registry, () => m!.servingNotAfter()));
    await m.ensure();
    api.forbidden.add(`GET ${SECRET_PATH}`);
    const served: ServingCertificate[] = [];
    m.startRenewal((cert) => served.push(cert), 10);
    await waitFor(() => log.lines.some((l) => l.startsWith('error certificate check failed')));
    expect(served).toEqual([]);

    api.forbidden.clear();
    clock = new Date(clock.getTime() + 25 * DAY);
    await waitFor(() => served.length === 1);
    m.stop();
    expect(served[0]!.cert).toBe(storedCertificates().servingCert);
    const metrics = await registry.metrics();
    expect(metrics).toMatch(/apisix_mesh_webhook_certificate_checks_total\{result="failed"\} [1-9]/);
    expect(metrics).toContain('apisix_mesh_webhook_certificates_issued_total{what="ca-and-serving"} 1');
    expect(metrics).toContain('apisix_mesh_webhook_certificates_issued_total{what="serving"} 1');
    expect(metrics).toContain(
      `apisix_mesh_webhook_certificate_not_after_seconds ${Date.parse(new X509Certificate(served[0]!.cert).validTo) / 1000}`,
    );
  });
});

describe('renewal when the server refuses the new certificate once', () => {
  it('offers it again at the next check', async () => {
    api.putSecret(NS, SECRET);
    const log = new MemoryLog();
    const m = manager(log);
    const realNow = clock;
    clock = new Date(realNow.getTime() - 25 * DAY);
    await m.ensure();
    clock = realNow;
    const offered: string[] = [];
    m.startRenewal((cert) => {
      offered.push(cert.cert);
      if (offered.length === 1) throw new Error('cannot serve this pair');
    }, 10);
    await waitFor(() => offered.length === 2);
    m.stop();
    expect(offered[1]).toBe(offered[0]);
    expect(log.lines).toContain('error certificate check failed; keeping the current certificate');
    expect(log.lines).toContain('info now serving the renewed certificate');
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
