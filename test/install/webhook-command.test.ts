import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { generateCa, generateServingCert } from '../../webhook/certificates/generate.js';
import { certificatesFromSecretData } from '../../webhook/cluster-certs/stored-certificates.js';
import { FakeKubeApi } from './fake-kube-api.js';
import { repoRoot } from './render.js';

/**
 * The built `apisix-mesh webhook` in its in-cluster certificate mode (as the base manifests run
 * it), against the API-server stand-in through a kubeconfig file. Needs `npm run build` (npm test
 * builds first).
 */
const NS = 'apisix-mesh-system';
const cli = join(repoRoot, 'dist', 'cli', 'main.js');

function runCli(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH, ...env }, timeout: 20_000 });
}

/** Like runCli, without blocking this process's event loop, where the fake API server answers. */
function runCliAsync(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [cli, ...args], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (c) => (stderr += c));
    proc.on('exit', (status) => resolve({ status, stderr }));
  });
}

describe('apisix-mesh webhook with in-cluster certificates', () => {
  let api: FakeKubeApi;
  let dir: string;
  let kubeconfig: string;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    const ca = generateCa({ commonName: 'fake-kube-apiserver-ca' });
    const cert = generateServingCert(ca, ['127.0.0.1'], { days: 1 });
    api = new FakeKubeApi({ tls: { cert: cert.certPem, key: cert.keyPem }, token: 'file-token' });
    await api.start();
    dir = mkdtempSync(join(tmpdir(), 'apisix-mesh-install-'));
    kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'fake', cluster: { server: api.url, 'certificate-authority-data': Buffer.from(ca.certPem).toString('base64') } }],
        users: [{ name: 'webhook', user: { token: 'file-token' } }],
        contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'webhook' } }],
        'current-context': 'fake',
      }),
    );
  });

  afterAll(async () => {
    child?.kill('SIGKILL');
    await api.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('explains every certificate flag in --help', () => {
    const help = runCli(['webhook', '--help']);
    expect(help.status).toBe(0);
    for (const flag of ['--cert-secret', '--webhook-config', '--service', '--namespace', '--cert-check-interval']) {
      expect(help.stdout).toContain(flag);
    }
  });

  it('refuses cluster certificate flags together with certificate files', () => {
    const run = runCli(['webhook', '--cert-secret', 'x', '--tls-cert', 'a.pem', '--tls-key', 'b.pem']);
    expect(run.status).toBe(2);
    expect(run.stderr.trim()).toBe(
      'apisix-mesh: --cert-secret/--webhook-config/--service/--namespace manage certificates in the cluster; they exclude --tls-cert/--tls-key/--self-signed',
    );
  });

  it('exits 1 with one line naming the RBAC when it may not read its Secret', async () => {
    api.putSecret(NS, 'forbidden-secret');
    api.forbidden.add(`GET /api/v1/namespaces/${NS}/secrets/forbidden-secret`);
    const run = await runCliAsync(['webhook', '--port', '0', '--namespace', NS, '--cert-secret', 'forbidden-secret'], { KUBECONFIG: kubeconfig });
    expect(run.status).toBe(1);
    expect(run.stderr).toBe(
      `apisix-mesh: in-cluster certificates: reading Secret ${NS}/forbidden-secret: forbidden (check the webhook's RBAC in manifests/webhook-certs/rbac.yaml)\n`,
    );
  });

  it('fills its Secret, patches the caBundle, and serves a certificate the API server would trust', async () => {
    api.putSecret(NS, 'apisix-mesh-webhook-certs');
    api.putWebhookConfiguration({
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'MutatingWebhookConfiguration',
      metadata: { name: 'apisix-mesh-injector' },
      webhooks: [
        {
          name: 'sidecar-injector.apisix-mesh.io',
          admissionReviewVersions: ['v1'],
          sideEffects: 'None',
          clientConfig: { service: { name: 'apisix-mesh-webhook', namespace: NS, path: '/inject', port: 443 } },
        },
      ],
    });
    // As in the Deployment: defaults for the names, namespace from POD_NAMESPACE.
    child = spawn(process.execPath, [cli, 'webhook', '--port', '0', '--host', '127.0.0.1', '--cert-secret', 'apisix-mesh-webhook-certs'], {
      env: { PATH: process.env.PATH, KUBECONFIG: kubeconfig, POD_NAMESPACE: NS },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: Array<Record<string, unknown>> = [];
    let stderr = '';
    child.stderr!.on('data', (c) => (stderr += c));
    const port = await new Promise<number>((resolve, reject) => {
      let buffer = '';
      child!.stdout!.on('data', (chunk: Buffer) => {
        buffer += chunk.toString();
        let nl;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = JSON.parse(buffer.slice(0, nl)) as Record<string, unknown>;
          buffer = buffer.slice(nl + 1);
          lines.push(line);
          if (line.msg === 'webhook listening') resolve(line.port as number);
        }
      });
      child!.on('exit', (code) => reject(new Error(`webhook exited ${code}: ${stderr}`)));
    });

    expect(lines.map((l) => l.msg)).toEqual(
      expect.arrayContaining([
        'issued a new CA and serving certificate: no CA stored yet',
        'patched the caBundle of the MutatingWebhookConfiguration',
      ]),
    );
    const stored = certificatesFromSecretData(api.secrets.get(`${NS}/apisix-mesh-webhook-certs`)!.data);
    const caBundle = Buffer.from(
      api.webhookConfigurations.get('apisix-mesh-injector')!.webhooks![0]!.clientConfig.caBundle!,
      'base64',
    ).toString();
    expect(caBundle.trim()).toBe(stored.caCert!.trim());

    const get = (path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request(
          { host: '127.0.0.1', port, path, ca: caBundle, servername: `apisix-mesh-webhook.${NS}.svc`, agent: false },
          (res) => {
            let body = '';
            res.on('data', (c) => (body += c));
            res.on('end', () => resolve({ status: res.statusCode!, body }));
          },
        );
        req.on('error', reject);
        req.end();
      });
    expect((await get('/healthz')).status).toBe(200);

    // The certificate metrics sit next to the webhook's own.
    const metrics = (await get('/metrics')).body;
    const notAfter = Date.parse(new X509Certificate(stored.servingCert!).validTo) / 1000;
    expect(metrics).toContain(`apisix_mesh_webhook_certificate_not_after_seconds ${notAfter}`);
    expect(metrics).toContain('apisix_mesh_webhook_certificate_checks_total{result="ok"} 1');
    expect(metrics).toContain('apisix_mesh_webhook_certificates_issued_total{what="ca-and-serving"} 1');
    expect(metrics).toContain('apisix_mesh_webhook_requests_total');

    const exited = new Promise<number | null>((resolve) => child!.on('exit', resolve));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    child = undefined;
  });
});
