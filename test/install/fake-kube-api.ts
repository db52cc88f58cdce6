import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { KubeConfig, type V1MutatingWebhookConfiguration, type V1Secret } from '@kubernetes/client-node';
import jsonpatch, { type Operation } from 'fast-json-patch';

/**
 * A stand-in for kube-apiserver that answers the handful of calls the certificate manager makes
 * the way the real one does: Status bodies with reason and code, 404 NotFound, 409 AlreadyExists
 * on create, 409 Conflict on an update with a stale resourceVersion, JSON Patch with `test`
 * operations (422 when one fails), 415 for another patch type, bearer-token check. Every request
 * is recorded so tests assert on what the client really sent.
 */

export interface RecordedRequest {
  method: string;
  path: string;
  contentType: string | undefined;
  authorization: string | undefined;
  body: unknown;
  status: number;
}

export interface FakeKubeApiOptions {
  tls: { cert: string; key: string };
  token: string;
}

type Handler = (req: IncomingMessage, body: unknown) => { status: number; body: unknown };

export class FakeKubeApi {
  readonly requests: RecordedRequest[] = [];
  readonly secrets = new Map<string, V1Secret>();
  readonly webhookConfigurations = new Map<string, V1MutatingWebhookConfiguration>();
  /** `METHOD /path` → answer 403 Forbidden, as RBAC would. */
  readonly forbidden = new Set<string>();
  private revision = 100;
  private server: Server | undefined;
  private heldReads: Array<() => void> = [];
  private holdReadsUntil = 0;

  constructor(private readonly options: FakeKubeApiOptions) {}

  async start(): Promise<void> {
    this.server = createServer({ cert: this.options.tls.cert, key: this.options.tls.key, minVersion: 'TLSv1.2' }, (req, res) => {
      void this.handle(req, res);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  get url(): string {
    return `https://127.0.0.1:${(this.server!.address() as AddressInfo).port}`;
  }

  /** A KubeConfig for this server, verifying it against `caPem` as a real client would. */
  kubeConfig(caPem: string): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: this.url, caData: Buffer.from(caPem).toString('base64'), skipTLSVerify: false }],
      users: [{ name: 'webhook', token: this.options.token }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'webhook' }],
      currentContext: 'fake',
    });
    return kc;
  }

  /** Holds Secret GET answers until `count` of them arrived, so concurrent clients read the same version. */
  holdSecretReads(count: number): void {
    this.holdReadsUntil = count;
  }

  putSecret(namespace: string, name: string, data?: Record<string, string>): V1Secret {
    const secret: V1Secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name, namespace, resourceVersion: this.nextRevision(), uid: `uid-${name}` },
      type: 'Opaque',
      ...(data ? { data } : {}),
    };
    this.secrets.set(`${namespace}/${name}`, secret);
    return secret;
  }

  putWebhookConfiguration(config: V1MutatingWebhookConfiguration): void {
    const copy = structuredClone(config);
    copy.metadata = { ...copy.metadata, resourceVersion: this.nextRevision() };
    this.webhookConfigurations.set(copy.metadata.name!, copy);
  }

  requestsMatching(method: string, pathPart: string): RecordedRequest[] {
    return this.requests.filter((r) => r.method === method && r.path.includes(pathPart));
  }

  private nextRevision(): string {
    this.revision += 1;
    return String(this.revision);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = text;
    }
    const path = new URL(req.url ?? '/', 'https://x').pathname;
    const record: RecordedRequest = {
      method: req.method ?? '',
      path,
      contentType: req.headers['content-type'],
      authorization: req.headers.authorization,
      body,
      status: 0,
    };
    this.requests.push(record);

    let answer: { status: number; body: unknown };
    if (req.headers.authorization !== `Bearer ${this.options.token}`) {
      answer = status(401, 'Unauthorized', 'Unauthorized');
    } else if (this.forbidden.has(`${req.method} ${path}`)) {
      answer = status(403, 'Forbidden', `${req.method} ${path} is forbidden: User "system:serviceaccount:test" cannot do it`);
    } else {
      answer = this.route(req.method ?? '', path)(req, body);
    }
    if (req.method === 'GET' && path.includes('/secrets/') && this.holdReadsUntil > 0) {
      await new Promise<void>((resolve) => {
        this.heldReads.push(resolve);
        if (this.heldReads.length >= this.holdReadsUntil) {
          this.holdReadsUntil = 0;
          for (const release of this.heldReads.splice(0)) release();
        }
      });
    }
    record.status = answer.status;
    res.writeHead(answer.status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(answer.body));
  }

  private route(method: string, path: string): Handler {
    let m = /^\/api\/v1\/namespaces\/([^/]+)\/secrets\/([^/]+)$/.exec(path);
    if (m) {
      const [, namespace, name] = m as unknown as [string, string, string];
      if (method === 'GET') return () => this.getSecret(namespace, name);
      if (method === 'PUT') return (_req, body) => this.replaceSecret(namespace, name, body as V1Secret);
    }
    m = /^\/api\/v1\/namespaces\/([^/]+)\/secrets$/.exec(path);
    if (m && method === 'POST') return (_req, body) => this.createSecret(m![1]!, body as V1Secret);
    m = /^\/apis\/admissionregistration\.k8s\.io\/v1\/mutatingwebhookconfigurations\/([^/]+)$/.exec(path);
    if (m) {
      const name = m[1]!;
      if (method === 'GET') return () => this.getWebhookConfiguration(name);
      if (method === 'PATCH') return (req, body) => this.patchWebhookConfiguration(name, req.headers['content-type'], body);
    }
    return () => status(404, 'NotFound', `the server could not find the requested resource (${method} ${path})`);
  }

  private getSecret(namespace: string, name: string) {
    const secret = this.secrets.get(`${namespace}/${name}`);
    return secret ? { status: 200, body: secret } : notFound('secrets', name);
  }

  private createSecret(namespace: string, body: V1Secret) {
    const name = body.metadata?.name ?? '';
    if (this.secrets.has(`${namespace}/${name}`)) {
      return status(409, 'AlreadyExists', `secrets "${name}" already exists`, { name, kind: 'secrets' });
    }
    if (body.metadata?.resourceVersion) {
      return status(500, 'InternalError', 'resourceVersion should not be set on objects to be created');
    }
    const stored: V1Secret = { ...body, metadata: { ...body.metadata, namespace, resourceVersion: this.nextRevision() } };
    this.secrets.set(`${namespace}/${name}`, stored);
    return { status: 201, body: stored };
  }

  private replaceSecret(namespace: string, name: string, body: V1Secret) {
    const current = this.secrets.get(`${namespace}/${name}`);
    if (!current) return notFound('secrets', name);
    const expected = body.metadata?.resourceVersion;
    if (expected && expected !== current.metadata!.resourceVersion) {
      return status(
        409,
        'Conflict',
        `Operation cannot be fulfilled on secrets "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        { name, kind: 'secrets' },
      );
    }
    const stored: V1Secret = { ...body, metadata: { ...body.metadata, namespace, resourceVersion: this.nextRevision() } };
    this.secrets.set(`${namespace}/${name}`, stored);
    return { status: 200, body: stored };
  }

  private getWebhookConfiguration(name: string) {
    const config = this.webhookConfigurations.get(name);
    return config ? { status: 200, body: config } : notFound('mutatingwebhookconfigurations.admissionregistration.k8s.io', name);
  }

  private patchWebhookConfiguration(name: string, contentType: string | undefined, body: unknown) {
    const config = this.webhookConfigurations.get(name);
    if (!config) return notFound('mutatingwebhookconfigurations.admissionregistration.k8s.io', name);
    if (contentType?.split(';')[0] !== 'application/json-patch+json') {
      return status(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml`);
    }
    try {
      const patched = jsonpatch.applyPatch(structuredClone(config), body as Operation[], true, false).newDocument;
      patched.metadata = { ...patched.metadata, resourceVersion: this.nextRevision() };
      this.webhookConfigurations.set(name, patched);
      return { status: 200, body: patched };
    } catch (err) {
      return status(422, 'Invalid', `the server rejected our request due to an error in our request: ${(err as Error).message}`);
    }
  }
}

function notFound(kind: string, name: string) {
  return status(404, 'NotFound', `${kind} "${name}" not found`, { name, kind });
}

function status(code: number, reason: string, message: string, details?: object) {
  return {
    status: code,
    body: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code },
  };
}
