import { mkdtemp, rename, rm, symlink, writeFile, mkdir } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { connect as connectTcp, type Socket } from 'node:net';
import { join } from 'node:path';
import { connect, createServer, type ConnectionOptions, type SecureVersion } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateCa, generateServingCert, type CertificateAuthority } from '../../webhook/certificates/generate.js';
import type { AdmissionReview } from '../../webhook/injection/admission-types.js';
import { startWebhookServer, type WebhookServer } from '../../webhook/server/server.js';
import { podCreateReview } from './helpers.js';

// Real TLS on a loopback socket. The client trusts only the CA bundle and checks the host name,
// as the API server does with the webhook's caBundle and Service DNS name.

const NAMES = ['localhost', '127.0.0.1'];

function servingPair(ca: CertificateAuthority) {
  const s = generateServingCert(ca, NAMES, { days: 1 });
  return { cert: s.certPem, key: s.keyPem };
}

/** Completes a handshake and returns what was negotiated, or rejects with the TLS error. */
function handshake(port: number, opts: ConnectionOptions): Promise<{ protocol: string | null; fingerprint: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ...opts }, () => {
      const result = { protocol: socket.getProtocol(), fingerprint: socket.getPeerCertificate().fingerprint256 };
      socket.end();
      resolve(result);
    });
    socket.on('error', reject);
  });
}

function postInject(url: string, ca: string, body: unknown): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      `${url}/inject`,
      { method: 'POST', ca, headers: { 'content-type': 'application/json' }, agent: false },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

/**
 * Whether the server closes `socket` within `ms` (the socket is destroyed by us otherwise). The
 * client sends nothing, so only the server can end the connection.
 */
function closedByServerWithin(socket: Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const guard = setTimeout(() => {
      socket.destroy();
      resolve(false);
    }, ms);
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(guard);
      resolve(true);
    });
  });
}

async function eventually<T>(probe: () => Promise<T>, ok: (v: T) => boolean, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('HTTPS server', () => {
  const ca = generateCa();
  const pair = servingPair(ca);
  let server: WebhookServer;

  beforeAll(async () => {
    server = await startWebhookServer({ port: 0, host: '127.0.0.1', tls: { pair }, logLevel: 'silent' });
  });
  afterAll(() => server.close());

  it('answers /inject to a client that verifies it against the CA bundle', async () => {
    const body = podCreateReview();
    const res = await postInject(`https://localhost:${server.port}`, ca.certPem, body);
    expect(res.status).toBe(200);
    const answer = JSON.parse(res.body) as AdmissionReview;
    expect(answer.response).toMatchObject({ uid: body.request.uid, allowed: true, patchType: 'JSONPatch' });
  });

  it('is refused by a client that trusts another CA', async () => {
    await expect(handshake(server.port, { ca: generateCa().certPem })).rejects.toThrow(/self[- ]signed|unable to verify|unable to get/i);
  });

  it('is refused by a client that expects another host name', async () => {
    await expect(handshake(server.port, { ca: ca.certPem, servername: 'webhook.other.svc' })).rejects.toMatchObject({
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
  });

  it('speaks TLS 1.3, and TLS 1.2 to a client that offers no more', async () => {
    expect((await handshake(server.port, { ca: ca.certPem })).protocol).toBe('TLSv1.3');
    expect((await handshake(server.port, { ca: ca.certPem, maxVersion: 'TLSv1.2' })).protocol).toBe('TLSv1.2');
  });

  // Node's own default holds a silent connection 120 s before the handshake times out, and forever
  // once the handshake is done; sockets that never speak would pile up.
  it('closes within 10 s a TCP connection that never starts TLS, and a TLS connection that never sends a request', async () => {
    const silentTcp = connectTcp(server.port, '127.0.0.1');
    const silentTls = connect({ host: '127.0.0.1', port: server.port, servername: 'localhost', ca: ca.certPem });
    const handshakeDone = new Promise<boolean>((resolve) => {
      silentTls.once('secureConnect', () => resolve(true));
      silentTls.once('close', () => resolve(false));
    });
    // A connection between two requests is governed by the keep-alive timeout, not cut as silent.
    const keptAlive = connect({ host: '127.0.0.1', port: server.port, servername: 'localhost', ca: ca.certPem }, () => {
      keptAlive.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
    });
    const answered = new Promise<string>((resolve) => keptAlive.once('data', (d: Buffer) => resolve(d.toString('latin1').split('\r\n')[0]!)));
    const [tcpClosed, tlsClosed] = await Promise.all([closedByServerWithin(silentTcp, 10_000), closedByServerWithin(silentTls, 10_000)]);
    expect(await handshakeDone).toBe(true);
    expect({ tcpClosed, tlsClosed }).toEqual({ tcpClosed: true, tlsClosed: true });
    expect(await answered).toBe('HTTP/1.1 200 OK');
    await new Promise((r) => setTimeout(r, 1000));
    expect(keptAlive.destroyed).toBe(false);
    keptAlive.destroy();
  }, 20_000);

  it('refuses TLS 1.1 (while a server that allows it accepts the same client)', async () => {
    // OpenSSL's security level 0 lets this client offer TLS 1.0/1.1 at all; the control server shows
    // that such a handshake works here, so the webhook's refusal is its own minVersion.
    const old: ConnectionOptions = { ca: ca.certPem, minVersion: 'TLSv1' as SecureVersion, maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' };
    const control = createServer({ ...pair, minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' }, (s) => s.end());
    await new Promise<void>((r) => control.listen(0, '127.0.0.1', r));
    try {
      const port = (control.address() as { port: number }).port;
      expect((await handshake(port, old)).protocol).toBe('TLSv1.1');
    } finally {
      control.close();
    }
    await expect(handshake(server.port, old)).rejects.toThrow(/protocol version|unsupported protocol|alert/i);
  });

  it('updateTls serves a new pair from the next handshake, and refuses a pair whose key does not match', async () => {
    const ca2 = generateCa();
    const next = servingPair(ca2);
    const summary = server.updateTls(next);
    expect(summary.subjectAltNames).toContain('DNS:localhost');
    const served = await handshake(server.port, { ca: ca2.certPem });
    expect(served.fingerprint).toBe(summary.fingerprint256);

    const mismatched = { cert: servingPair(ca).cert, key: next.key };
    expect(() => server.updateTls(mismatched)).toThrow(/does not belong/);
    expect(() => server.updateTls({ cert: 'not a pem', key: next.key })).toThrow(/not a PEM X.509 certificate/);
    expect((await handshake(server.port, { ca: ca2.certPem })).fingerprint).toBe(summary.fingerprint256);
    // The new context keeps the TLS floor.
    await expect(
      handshake(server.port, { ca: ca2.certPem, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }),
    ).rejects.toThrow(/protocol version|unsupported protocol|alert/i);
  });
});

describe('HTTPS server with certificate files', () => {
  let dir: string;
  let server: WebhookServer;
  const logs: Array<Record<string, unknown>> = [];
  const ca = generateCa();

  // Laid out like a mounted Kubernetes Secret: tls.crt -> ..data/tls.crt, ..data -> a timestamped
  // directory, and an update swaps the ..data link atomically.
  async function publish(name: string, pair: { cert: string; key: string }): Promise<void> {
    await mkdir(join(dir, name));
    await writeFile(join(dir, name, 'tls.crt'), pair.cert);
    await writeFile(join(dir, name, 'tls.key'), pair.key);
    await symlink(name, join(dir, '..data_tmp'));
    await rename(join(dir, '..data_tmp'), join(dir, '..data'));
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'apisix-mesh-webhook-tls-'));
    await publish('..v1', servingPair(ca));
    await symlink('..data/tls.crt', join(dir, 'tls.crt'));
    await symlink('..data/tls.key', join(dir, 'tls.key'));
    server = await startWebhookServer({
      port: 0,
      host: '127.0.0.1',
      tls: { files: { certFile: join(dir, 'tls.crt'), keyFile: join(dir, 'tls.key') }, reloadIntervalMs: 100 },
      logLevel: 'info',
      logStream: { write: (line) => logs.push(JSON.parse(line)) },
    });
  });
  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves the new certificate after the Secret is updated, without a restart', async () => {
    const before = await handshake(server.port, { ca: ca.certPem });
    const ca2 = generateCa();
    await publish('..v2', servingPair(ca2));
    const after = await eventually(
      () => handshake(server.port, { ca: ca2.certPem }).catch(() => null),
      (r) => r !== null,
      'the new certificate to be served',
    );
    expect(after!.fingerprint).not.toBe(before.fingerprint);
    expect(logs.some((l) => l.msg === 'reloaded the serving certificate' && l.fingerprint256 === after!.fingerprint)).toBe(true);
    // Same server, same port: no restart.
    const res = await postInject(`https://localhost:${server.port}`, ca2.certPem, podCreateReview());
    expect(res.status).toBe(200);
  });

  it('keeps the current certificate when the new files cannot serve, and says so', async () => {
    const current = await handshake(server.port, { rejectUnauthorized: false });
    const other = servingPair(generateCa());
    await publish('..v3', { cert: other.cert, key: servingPair(ca).key });
    await eventually(
      async () => logs.some((l) => l.msg === 'kept the previous serving certificate: the new files cannot serve'),
      (seen) => seen,
      'the refusal to be logged',
    );
    const warning = logs.find((l) => l.msg === 'kept the previous serving certificate: the new files cannot serve')!;
    expect(warning.level).toBe(40);
    expect(warning.reason).toMatch(/does not belong/);
    expect((await handshake(server.port, { rejectUnauthorized: false })).fingerprint).toBe(current.fingerprint);
  });
});
