// The agent's app probes (agent/app-probes/) against real servers on loopback: what the kubelet's
// httpGet, tcpSocket and grpc probes would have judged, run by the agent from 127.0.0.6 (the
// source the capture rules never redirect), and the status port's /app-health/ routes serving
// exactly the injected probers.
import { createServer as createHttpServer, type IncomingHttpHeaders, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppProbeService, runAppProbe } from '../../agent/app-probes/app-probe-service.js';
import { parseAppProbers, type AppProber } from '../../agent/app-probes/app-probers.js';
import type { ProbeTarget } from '../../agent/app-probes/probe-target.js';
import { AgentMetrics } from '../../agent/metrics.js';
import { buildStatusServer } from '../../agent/status-server.js';
import { generateCa, generateServingCert } from '../../webhook/certificates/generate.js';

const TARGET: ProbeTarget = { host: '127.0.0.1', localAddress: '127.0.0.6' };
const KUBELET = { 'user-agent': 'kube-probe/1.31', accept: '*/*' };

interface Seen {
  url: string;
  headers: IncomingHttpHeaders;
  peer: string;
}

/**
 * An HTTP(S) app: `/status/<code>` answers that code, `/hang` never answers, `/go?status=&location=`
 * answers that status with that Location (none when empty), `/loop` redirects to itself; records
 * each request.
 */
function appHandler(seen: Seen[]) {
  return (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
    seen.push({ url: req.url ?? '', headers: req.headers, peer: req.socket.remoteAddress ?? '' });
    if (req.url === '/hang') return;
    const url = new URL(req.url ?? '/', 'http://app');
    if (url.pathname === '/go' || url.pathname === '/loop') {
      const location = url.pathname === '/loop' ? '/loop' : url.searchParams.get('location') ?? '';
      res.writeHead(Number(url.searchParams.get('status') ?? 302), location ? { location } : {});
      return res.end('moved');
    }
    const m = /^\/status\/(\d{3})$/.exec(req.url ?? '');
    const code = m ? Number(m[1]) : 200;
    res.writeHead(code, code >= 300 && code < 400 ? { location: '/status/500' } : {});
    res.end(`answered ${code}`);
  };
}

async function listen<S extends HttpServer | TcpServer>(server: S): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** A port nothing listens on: one that was just closed. */
async function closedPort(): Promise<number> {
  const s = createTcpServer();
  const port = await listen(s);
  await new Promise((r) => s.close(r));
  return port;
}

// The health service the app runs, made with grpc-js (the reference implementation of the
// protocol), its messages from the test's own definition of grpc.health.v1.
const Request = new protobuf.Type('HealthCheckRequest').add(new protobuf.Field('service', 1, 'string'));
const Response = new protobuf.Type('HealthCheckResponse').add(new protobuf.Field('status', 1, 'int32'));
new protobuf.Root().define('grpc.health.v1').add(Request).add(Response);
const HEALTH_SERVICE: grpc.ServiceDefinition = {
  Check: {
    path: '/grpc.health.v1.Health/Check',
    requestStream: false,
    responseStream: false,
    requestSerialize: (v: object) => Buffer.from(Request.encode(v).finish()),
    requestDeserialize: (b: Buffer) => Request.decode(b) as unknown as { service: string },
    responseSerialize: (v: object) => Buffer.from(Response.encode(v).finish()),
    responseDeserialize: (b: Buffer) => Response.decode(b),
  },
};
/** service name → ServingStatus (1 SERVING, 2 NOT_SERVING); others are NOT_FOUND, as grpc-health-check answers */
const HEALTH: Record<string, number> = { '': 1, 'shop.Cart': 1, 'shop.Down': 2 };

describe('app probes run by the agent against real servers', () => {
  const seen: Seen[] = [];
  const http = createHttpServer(appHandler(seen));
  const ca = generateCa({ keyBits: 1024 });
  const cert = generateServingCert(ca, ['app.example'], { days: 1 }, 1024);
  const https = createHttpsServer({ cert: cert.certPem, key: cert.keyPem }, appHandler(seen));
  const tcpPeers: string[] = [];
  const tcp = createTcpServer((s) => {
    tcpPeers.push(s.remoteAddress ?? '');
    s.resume(); // reads what a client sends (a gRPC preface), and so its end
    s.end();
  });
  const grpcServer = new grpc.Server();
  let ports: { http: number; https: number; tcp: number; grpc: number; closed: number };

  beforeAll(async () => {
    grpcServer.addService(HEALTH_SERVICE, {
      Check: (call: grpc.ServerUnaryCall<{ service: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        const status = HEALTH[call.request.service];
        if (status === undefined) cb({ code: grpc.status.NOT_FOUND, details: 'unknown service' });
        else cb(null, { status });
      },
    });
    const grpcPort = await new Promise<number>((resolve, reject) =>
      grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
    );
    ports = { http: await listen(http), https: await listen(https), tcp: await listen(tcp), grpc: grpcPort, closed: await closedPort() };
  });
  afterAll(async () => {
    http.closeAllConnections();
    https.closeAllConnections();
    await Promise.all([http, https, tcp].map((s) => new Promise((r) => s.close(r))));
    grpcServer.forceShutdown();
  });

  const run = (prober: AppProber, headers: IncomingHttpHeaders = KUBELET) => runAppProbe(prober, TARGET, headers);

  describe('httpGet', () => {
    it('200 passes, from 127.0.0.6 (outside the capture), with the kubelet\'s User-Agent', async () => {
      seen.length = 0;
      expect(await run({ httpGet: { port: ports.http, path: '/status/200' } })).toMatchObject({ status: 200 });
      expect(seen).toEqual([expect.objectContaining({ url: '/status/200', peer: '127.0.0.6' })]);
      expect(seen[0]!.headers['user-agent']).toBe('kube-probe/1.31');
    });

    // The kubelet's and pilot-agent's prober: Go's http.Client with the kubelet's redirect checker
    const go = (status: number, location: string) => `/go?status=${status}&location=${encodeURIComponent(location)}`;

    it('a redirect to the pod itself is followed: the page it points at decides (302 to a 500 fails, 301 to a 200 passes)', async () => {
      seen.length = 0;
      expect(await run({ httpGet: { port: ports.http, path: '/status/302' } })).toMatchObject({ status: 500 });
      expect(seen.map((s) => s.url)).toEqual(['/status/302', '/status/500']);
      seen.length = 0;
      expect(await run({ httpGet: { port: ports.http, path: go(301, '/status/200') } })).toMatchObject({ status: 200 });
      expect(seen.map((s) => [s.url, s.peer])).toEqual([[go(301, '/status/200'), '127.0.0.6'], ['/status/200', '127.0.0.6']]);
    });

    it('a redirect to the same host on another port and scheme is followed (307 and 308 too), from 127.0.0.6', async () => {
      seen.length = 0;
      const there = `https://127.0.0.1:${ports.https}/status/204`;
      expect(await run({ httpGet: { port: ports.http, path: go(307, there) } })).toMatchObject({ status: 204 });
      expect(await run({ httpGet: { port: ports.http, path: go(308, `https://127.0.0.1:${ports.https}/status/503`) } })).toMatchObject({ status: 503 });
      expect(seen.map((s) => s.url)).toEqual([go(307, there), '/status/204', go(308, `https://127.0.0.1:${ports.https}/status/503`), '/status/503']);
      expect(seen.every((s) => s.peer === '127.0.0.6')).toBe(true);
    });

    it('a redirect to another host is not followed and passes (the kubelet\'s warning; pilot-agent answers 200)', async () => {
      seen.length = 0;
      const outcome = await run({ httpGet: { port: ports.http, path: go(302, `http://localhost:${ports.http}/status/500`) } });
      expect(outcome).toEqual({ status: 200, detail: '302 (redirect to localhost, not followed)' });
      expect(seen).toHaveLength(1);
    });

    it('the probe\'s Host header goes with a relative redirect, not with an absolute one (Go\'s client)', async () => {
      const host = [{ name: 'Host', value: 'app.example' }];
      seen.length = 0;
      expect(await run({ httpGet: { port: ports.http, path: go(302, '/status/200'), httpHeaders: host } })).toMatchObject({ status: 200 });
      expect(seen.map((s) => s.headers.host)).toEqual(['app.example', 'app.example']);
      seen.length = 0;
      expect(await run({ httpGet: { port: ports.http, path: go(302, `http://127.0.0.1:${ports.http}/status/200`), httpHeaders: host } })).toMatchObject({ status: 200 });
      expect(seen.map((s) => s.headers.host)).toEqual(['app.example', `127.0.0.1:${ports.http}`]);
      expect(seen[1]!.headers['user-agent']).toBe('kube-probe/1.31');
    });

    it('a redirect loop fails once ten requests were made ("stopped after 10 redirects")', async () => {
      seen.length = 0;
      expect(await run({ httpGet: { port: ports.http, path: '/loop' } })).toMatchObject({ status: 500, detail: expect.stringContaining('stopped after 10 redirects') });
      expect(seen).toHaveLength(10);
    });

    it('3xx that Go does not follow (300, 304), and a redirect without Location, are answers: they pass as 200', async () => {
      seen.length = 0;
      for (const path of [go(300, '/status/500'), go(304, '/status/500'), go(302, '')]) {
        expect(await run({ httpGet: { port: ports.http, path } })).toMatchObject({ status: 200 });
      }
      expect(seen).toHaveLength(3);
    });

    it('500 and 404 fail with the app\'s status', async () => {
      expect(await run({ httpGet: { port: ports.http, path: '/status/500' } })).toMatchObject({ status: 500 });
      expect(await run({ httpGet: { port: ports.http, path: '/status/404' } })).toMatchObject({ status: 404 });
    });

    it('a closed port fails with a short reason', async () => {
      const outcome = await run({ httpGet: { port: ports.closed, path: '/' } });
      expect(outcome).toEqual({ status: 500, detail: `http://127.0.0.1:${ports.closed}/: ECONNREFUSED` });
    });

    it('an app that does not answer fails after the probe\'s timeout', async () => {
      const outcome = await run({ httpGet: { port: ports.http, path: '/hang' }, timeoutSeconds: 1 });
      expect(outcome).toMatchObject({ status: 500, detail: expect.stringContaining('no answer within 1000 ms') });
    });

    it('the probe\'s headers replace the kubelet\'s; Host sets the request\'s host; a missing path is /', async () => {
      seen.length = 0;
      const prober: AppProber = {
        httpGet: { port: ports.http, httpHeaders: [{ name: 'Host', value: 'app.example' }, { name: 'User-Agent', value: 'mine' }, { name: 'X-Probe', value: 'a' }, { name: 'X-Probe', value: 'b' }] },
      };
      expect(await run(prober, { ...KUBELET, 'x-from-caller': 'no' })).toMatchObject({ status: 200 });
      expect(seen[0]!.url).toBe('/');
      expect(seen[0]!.headers).toMatchObject({ host: 'app.example', 'user-agent': 'mine', 'x-probe': 'a, b', accept: '*/*' });
      expect(seen[0]!.headers['x-from-caller']).toBeUndefined();
    });

    it('HTTPS to a self-signed certificate passes without verification, as the kubelet\'s', async () => {
      seen.length = 0;
      expect(await run({ httpGet: { port: ports.https, path: '/status/204', scheme: 'HTTPS' } })).toMatchObject({ status: 204 });
      expect(seen).toEqual([expect.objectContaining({ url: '/status/204', peer: '127.0.0.6' })]);
      expect(await run({ httpGet: { port: ports.https, path: '/status/503', scheme: 'HTTPS' } })).toMatchObject({ status: 503 });
    });

    it('HTTP to an HTTPS port fails (the scheme is the probe\'s)', async () => {
      const outcome = await run({ httpGet: { port: ports.https, path: '/status/200' } });
      expect(outcome.status).toBeGreaterThanOrEqual(400);
    });
  });

  describe('tcpSocket', () => {
    it('an open port passes, connected from 127.0.0.6', async () => {
      tcpPeers.length = 0;
      expect(await run({ tcpSocket: { port: ports.tcp } })).toEqual({ status: 200, detail: 'connected' });
      await expect.poll(() => tcpPeers).toEqual(['127.0.0.6']);
    });

    it('a closed port fails', async () => {
      expect(await run({ tcpSocket: { port: ports.closed } })).toEqual({ status: 500, detail: `tcp 127.0.0.1:${ports.closed}: ECONNREFUSED` });
    });
  });

  describe('grpc (grpc.health.v1 Health/Check)', () => {
    it('SERVING passes: the server as a whole (no service) and a named service', async () => {
      expect(await run({ grpc: { port: ports.grpc } })).toEqual({ status: 200, detail: 'SERVING' });
      expect(await run({ grpc: { port: ports.grpc, service: 'shop.Cart' } })).toEqual({ status: 200, detail: 'SERVING' });
    });

    it('NOT_SERVING fails', async () => {
      expect(await run({ grpc: { port: ports.grpc, service: 'shop.Down' } })).toEqual({ status: 500, detail: `grpc 127.0.0.1:${ports.grpc}: NOT_SERVING` });
    });

    it('an unknown service fails with the server\'s NOT_FOUND', async () => {
      expect(await run({ grpc: { port: ports.grpc, service: 'shop.Nope' } })).toEqual({ status: 500, detail: `grpc 127.0.0.1:${ports.grpc}: NOT_FOUND (unknown service)` });
    });

    it('a closed port, and a server that does not speak gRPC, fail', async () => {
      expect(await run({ grpc: { port: ports.closed } })).toMatchObject({ status: 500, detail: expect.stringContaining('ECONNREFUSED') });
      expect(await run({ grpc: { port: ports.tcp }, timeoutSeconds: 1 })).toMatchObject({ status: 500 });
    });
  });
});

describe('the status port serves the declared app probes only', () => {
  const tcpPeers: string[] = [];
  const tcp = createTcpServer((s) => {
    tcpPeers.push(s.remoteAddress ?? '');
    s.end();
  });
  let port: number;
  let closed: number;
  beforeAll(async () => {
    port = await listen(tcp);
    closed = await closedPort();
  });
  afterAll(async () => {
    await new Promise((r) => tcp.close(r));
  });

  const statusServer = () =>
    buildStatusServer(
      { ready: () => true, debugConfig: () => ({}) },
      new AgentMetrics(),
      { level: 'silent' },
      new AppProbeService(parseAppProbers(JSON.stringify({ '/app-health/app/readyz': { tcpSocket: { port } }, '/app-health/app/livez': { tcpSocket: { port: closed } } })), TARGET),
    );

  it('a declared path runs its probe; the answer is the outcome', async () => {
    const app = statusServer();
    const ready = await app.inject({ url: '/app-health/app/readyz', headers: KUBELET });
    expect(ready.statusCode).toBe(200);
    const live = await app.inject({ url: '/app-health/app/livez', headers: KUBELET });
    expect(live.statusCode).toBe(500);
    expect(live.body).toBe(`tcp 127.0.0.1:${closed}: ECONNREFUSED\n`);
  });

  it('any other path is 404, and nothing in the request chooses the target', async () => {
    const app = statusServer();
    tcpPeers.length = 0;
    for (const url of ['/app-health/app/startupz', '/app-health/other/readyz', '/app-health/app/readyz/', '/app-health/app%2Freadyz']) {
      expect((await app.inject({ url })).statusCode, url).toBe(404);
    }
    expect(tcpPeers).toEqual([]);
    // a query, a Host header or an absolute-form target change nothing: still the declared port
    const res = await app.inject({ url: `/app-health/app/readyz?port=${closed}&host=10.0.0.1`, headers: { host: '10.0.0.1:9999' } });
    expect(res.statusCode).toBe(200);
    await expect.poll(() => tcpPeers).toEqual(['127.0.0.6']);
  });

  it('concurrent requests for one path share one probe of the app', async () => {
    const app = statusServer();
    tcpPeers.length = 0;
    const answers = await Promise.all(Array.from({ length: 20 }, () => app.inject({ url: '/app-health/app/readyz' })));
    expect(answers.every((a) => a.statusCode === 200)).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(tcpPeers.length).toBeLessThan(20);
    expect(tcpPeers.length).toBeGreaterThanOrEqual(1);
  });
});

describe('ISTIO_KUBE_APP_PROBERS as the agent reads it', () => {
  it('takes Istio\'s format: path → one action and its timeout', () => {
    const text = JSON.stringify({
      '/app-health/web/livez': { httpGet: { path: '/healthz', port: 8080, scheme: 'HTTPS', httpHeaders: [{ name: 'X-A', value: 'b' }] }, timeoutSeconds: 3 },
      '/app-health/web/readyz': { tcpSocket: { port: 8080 } },
      '/app-health/web/startupz': { grpc: { port: 9090, service: 'svc' }, timeoutSeconds: 1 },
    });
    const probers = parseAppProbers(text);
    expect([...probers.keys()]).toEqual(['/app-health/web/livez', '/app-health/web/readyz', '/app-health/web/startupz']);
    expect(probers.get('/app-health/web/livez')).toEqual({ httpGet: { port: 8080, path: '/healthz', scheme: 'HTTPS', httpHeaders: [{ name: 'X-A', value: 'b' }] }, timeoutSeconds: 3 });
    expect(parseAppProbers(undefined).size).toBe(0);
    expect(parseAppProbers('').size).toBe(0);
  });

  it.each([
    ['not JSON', '{', /not JSON/],
    ['a list', '[]', /must be a JSON object/],
    ['a path outside /app-health', JSON.stringify({ '/healthz/ready': { tcpSocket: { port: 1 } } }), /is not \/app-health/],
    ['a host (the agent probes the pod only)', JSON.stringify({ '/app-health/a/livez': { httpGet: { port: 80, host: 'example.com' } } }), /unknown field "host"/],
    ['a tcpSocket host', JSON.stringify({ '/app-health/a/livez': { tcpSocket: { port: 80, host: '10.0.0.1' } } }), /unknown field "host"/],
    ['a named port', JSON.stringify({ '/app-health/a/livez': { tcpSocket: { port: 'http' } } }), /port number/],
    ['two actions', JSON.stringify({ '/app-health/a/livez': { tcpSocket: { port: 80 }, grpc: { port: 81 } } }), /exactly one/],
    ['a header with a line break', JSON.stringify({ '/app-health/a/livez': { httpGet: { port: 80, httpHeaders: [{ name: 'X', value: 'a\r\nB: c' }] } } }), /control characters/],
    ['a path with a space', JSON.stringify({ '/app-health/a/livez': { httpGet: { port: 80, path: '/a b' } } }), /printable ASCII/],
    ['too many probers', JSON.stringify(Object.fromEntries(Array.from({ length: 97 }, (_, i) => [`/app-health/c${i}/livez`, { tcpSocket: { port: 80 } }]))), /97 probers, more than the 96/],
    ['too long', JSON.stringify({ '/app-health/a/livez': { httpGet: { port: 80, path: `/${'x'.repeat(70_000)}` } } }), /more than the 65536 allowed/],
  ])('refuses %s, quoting it short', (_what, text, reason) => {
    let message = '';
    try {
      parseAppProbers(text);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(reason);
    expect(message.length).toBeLessThan(300);
  });
});
