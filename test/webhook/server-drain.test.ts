import { request as httpsRequest } from 'node:https';
import { describe, expect, it } from 'vitest';
import { generateCa, generateServingCert } from '../../webhook/certificates/generate.js';
import { startWebhookServer } from '../../webhook/server/server.js';

describe('a client that never finishes its request', () => {
  it('gets 408 after the request timeout instead of holding the server', async () => {
    const ca = generateCa();
    const s = generateServingCert(ca, ['localhost'], { days: 1 });
    const server = await startWebhookServer({ port: 0, host: '127.0.0.1', tls: { pair: { cert: s.certPem, key: s.keyPem } }, logLevel: 'silent', requestTimeoutMs: 500 });
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpsRequest(
          `https://localhost:${server.port}/inject`,
          { method: 'POST', ca: ca.certPem, agent: false, headers: { 'content-type': 'application/json', 'content-length': 1000 } },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.write('{"apiVersion":');
      });
      expect(status).toBe(408);
    } finally {
      await server.close();
    }
  });
});

describe('startWebhookServer close()', () => {
  it('turns /readyz to 503 while draining and gives up on a request that never finishes after the drain timeout', async () => {
    const ca = generateCa();
    const s = generateServingCert(ca, ['localhost'], { days: 1 });
    const server = await startWebhookServer({ port: 0, host: '127.0.0.1', tls: { pair: { cert: s.certPem, key: s.keyPem } }, logLevel: 'silent', drainTimeoutMs: 500 });

    const stuck = httpsRequest(`https://localhost:${server.port}/inject`, {
      method: 'POST',
      ca: ca.certPem,
      agent: false,
      headers: { 'content-type': 'application/json', 'content-length': 1000 },
    });
    const failed = new Promise<string>((resolve) => stuck.on('error', (err) => resolve((err as NodeJS.ErrnoException).code ?? err.message)));
    stuck.write('{"apiVersion":');
    await new Promise((r) => setTimeout(r, 200));

    const closing = server.close();
    const readyz = await server.app.inject('/readyz');
    expect(readyz.statusCode).toBe(503);
    expect(readyz.json()).toEqual({ status: 'not ready', reason: 'shutting down' });
    expect(await closing).toEqual({ forced: true });
    expect(await failed).toBe('ECONNRESET');
    // Closing twice is the same close.
    expect(await server.close()).toEqual({ forced: true });
  });
});
