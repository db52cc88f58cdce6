import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { V1MutatingWebhookConfiguration } from '@kubernetes/client-node';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { generateCa, generateServingCert, type CertificateAuthority } from '../../webhook/certificates/generate.js';
import { FailClosedKeeper, serviceSelfCheck } from '../../webhook/cluster-certs/fail-closed.js';
import { webhookConfigurationClient } from '../../webhook/cluster-certs/kube-api.js';
import { FakeKubeApi } from './fake-kube-api.js';

/**
 * The install that cannot block pod creation: the entries ship `failurePolicy: Ignore` and the
 * webhook sets `Fail` only once it answers over TLS as the API server reaches it (its Service name,
 * the CA of the caBundle). Against the API-server stand-in and a real local HTTPS "webhook".
 */
const NS = 'apisix-mesh-system';
const MWC = 'apisix-mesh-injector';
const SERVICE_NAME = `apisix-mesh-webhook.${NS}.svc`;
const MWC_PATH = `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${MWC}`;

const shipped: V1MutatingWebhookConfiguration = {
  apiVersion: 'admissionregistration.k8s.io/v1',
  kind: 'MutatingWebhookConfiguration',
  metadata: { name: MWC },
  webhooks: ['namespace', 'istio'].map((n) => ({
    name: `${n}.sidecar-injector.apisix-mesh.io`,
    admissionReviewVersions: ['v1'],
    sideEffects: 'None',
    failurePolicy: 'Ignore',
    clientConfig: { service: { name: 'apisix-mesh-webhook', namespace: NS, path: '/inject', port: 443 } },
  })),
};

let apiCa: CertificateAuthority;
let apiCert: { certPem: string; keyPem: string };
let webhookCa: CertificateAuthority;
let otherCa: CertificateAuthority;
let webhookCert: { certPem: string; keyPem: string };
beforeAll(() => {
  apiCa = generateCa({ commonName: 'fake-kube-apiserver-ca' });
  apiCert = generateServingCert(apiCa, ['127.0.0.1'], { days: 1 });
  webhookCa = generateCa({ commonName: 'webhook-ca' });
  otherCa = generateCa({ commonName: 'another-ca' });
  webhookCert = generateServingCert(webhookCa, ['apisix-mesh-webhook', SERVICE_NAME], { days: 1 });
});

let api: FakeKubeApi;
let webhook: Server;
let readyStatus: number;
const lines: string[] = [];
const log = { info: (_o: object, m: string) => void lines.push(`info ${m}`), warn: (_o: object, m: string) => void lines.push(`warn ${m}`), error: (_o: object, m: string) => void lines.push(`error ${m}`) };

beforeEach(async () => {
  api = new FakeKubeApi({ tls: { cert: apiCert.certPem, key: apiCert.keyPem }, token: 'sa-token' });
  await api.start();
  api.putWebhookConfiguration(structuredClone(shipped));
  readyStatus = 503;
  webhook = createServer({ cert: webhookCert.certPem, key: webhookCert.keyPem }, (req, res) => {
    res.statusCode = req.url === '/readyz' ? readyStatus : 404;
    res.end();
  });
  await new Promise<void>((r) => webhook.listen(0, '127.0.0.1', r));
  lines.length = 0;
});

afterEach(async () => {
  webhook.closeAllConnections();
  await new Promise((r) => webhook.close(r));
  await api.stop();
});

function keeper(ca: () => string | undefined = () => webhookCa.certPem) {
  const url = `https://127.0.0.1:${(webhook.address() as AddressInfo).port}/readyz`;
  return new FailClosedKeeper({
    webhookConfiguration: webhookConfigurationClient(api.kubeConfig(apiCa.certPem), MWC),
    selfCheck: serviceSelfCheck(url, SERVICE_NAME, ca, 2000),
    log,
  });
}

const policies = () => api.webhookConfigurations.get(MWC)!.webhooks!.map((w) => w.failurePolicy);

describe('failurePolicy Fail only once the webhook answers', () => {
  it('leaves Ignore while the webhook is not ready, or not trusted by the CA, or has no CA yet', async () => {
    expect(await keeper().checkOnce()).toBe(false); // 503
    readyStatus = 200;
    expect(await keeper(() => otherCa.certPem).checkOnce()).toBe(false); // certificate not from the caBundle's CA
    expect(await keeper(() => undefined).checkOnce()).toBe(false);
    expect(policies()).toEqual(['Ignore', 'Ignore']);
    expect(api.requestsMatching('PATCH', MWC_PATH)).toHaveLength(0);
    expect(lines.filter((l) => l.startsWith('warn the webhook does not answer'))).toHaveLength(3);
  });

  it('sets Fail on every entry once it answers, and again after a re-apply put Ignore back', async () => {
    readyStatus = 200;
    const k = keeper();
    expect(await k.checkOnce()).toBe(true);
    expect(policies()).toEqual(['Fail', 'Fail']);
    expect(await k.checkOnce()).toBe(true); // nothing to change: no write
    expect(api.requestsMatching('PATCH', MWC_PATH)).toHaveLength(1);
    api.putWebhookConfiguration(structuredClone(shipped)); // `kubectl apply -k manifests/` again
    expect(await k.checkOnce()).toBe(true);
    expect(policies()).toEqual(['Fail', 'Fail']);
    expect(api.requestsMatching('PATCH', MWC_PATH)).toHaveLength(2);
  });

  it('keeps checking on its own until the webhook answers', async () => {
    const k = keeper();
    k.start(60_000, 50);
    try {
      await new Promise((r) => setTimeout(r, 300));
      expect(policies()).toEqual(['Ignore', 'Ignore']);
      readyStatus = 200;
      for (let i = 0; i < 100 && policies()[0] !== 'Fail'; i++) await new Promise((r) => setTimeout(r, 20));
      expect(policies()).toEqual(['Fail', 'Fail']);
    } finally {
      k.stop();
    }
  });
});
