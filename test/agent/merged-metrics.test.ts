// The status port's merged Prometheus endpoint against real HTTP servers on loopback standing in
// for APISIX's export and the app: what is merged, in which order, and what happens when a source
// is down, slow, too big or answers an error.
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AgentMetrics } from '../../agent/metrics.js';
import { buildStatusServer } from '../../agent/status-server.js';
import { apisixMetricsSource, appMetricsSource } from '../../agent/telemetry/merge-sources.js';

type Handler = (path: string, res: ServerResponse, headers: Record<string, string | string[] | undefined>) => void;

async function listen(handler: { current: Handler }): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => handler.current(req.url ?? '', res, req.headers));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

const APISIX_TEXT = '# HELP apisix_http_status HTTP status codes\n# TYPE apisix_http_status counter\napisix_http_status{code="200",route="r1"} 7\n';
const APP_TEXT = '# TYPE orders_placed_total counter\norders_placed_total 42\n';

describe('merged metrics on /stats/prometheus', () => {
  const apisix = { current: ((_p, res) => res.end(APISIX_TEXT)) as Handler };
  const appHandler = { current: ((_p, res) => res.end(APP_TEXT)) as Handler };
  let apisixServer: { server: Server; port: number };
  let appServer: { server: Server; port: number };
  let status: FastifyInstance;
  let statusUrl: string;
  let metrics: AgentMetrics;
  let seenPaths: string[] = [];
  let seenHeaders: Array<Record<string, string | string[] | undefined>> = [];

  beforeAll(async () => {
    apisixServer = await listen(apisix);
    appServer = await listen(appHandler);
    metrics = new AgentMetrics();
    const apisixSource = apisixMetricsSource(`http://127.0.0.1:${apisixServer.port}/apisix/prometheus/metrics`).source!;
    const app = appMetricsSource(JSON.stringify({ scrape: 'true', path: '/manage/prometheus', port: String(appServer.port) }), 15020).source!;
    status = buildStatusServer({ ready: () => true, debugConfig: () => ({}) }, metrics, { level: 'silent' }, undefined, {
      sources: [apisixSource, app],
      limits: { defaultTimeoutMs: 1500, maxBytesPerSource: 64 * 1024 },
    });
    await status.listen({ host: '127.0.0.1', port: 0 });
    statusUrl = `http://127.0.0.1:${(status.server.address() as AddressInfo).port}`;
  });

  afterEach(() => {
    apisix.current = (p, res, h) => {
      seenPaths.push(`apisix ${p}`);
      seenHeaders.push(h);
      res.end(APISIX_TEXT);
    };
    appHandler.current = (p, res) => {
      seenPaths.push(`app ${p}`);
      res.end(APP_TEXT);
    };
    seenPaths = [];
    seenHeaders = [];
  });

  afterAll(async () => {
    await status.close();
    apisixServer.server.closeAllConnections();
    appServer.server.closeAllConnections();
    await Promise.all([apisixServer, appServer].map((s) => new Promise((r) => s.server.close(r))));
  });

  it('serves the agent\'s metrics, then APISIX\'s, then the app\'s, as Prometheus text; /metrics stays the agent\'s own', async () => {
    apisix.current = (p, res, h) => {
      seenPaths.push(`apisix ${p}`);
      seenHeaders.push(h);
      res.end(APISIX_TEXT);
    };
    appHandler.current = (p, res) => {
      seenPaths.push(`app ${p}`);
      res.end(APP_TEXT);
    };
    for (const path of ['/stats/prometheus', '/stats/prometheus']) {
      const res = await fetch(`${statusUrl}${path}`, { headers: { 'X-Prometheus-Scrape-Timeout-Seconds': '10' } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
      const body = await res.text();
      const agentAt = body.indexOf('apisix_mesh_xds_connected');
      const apisixAt = body.indexOf('apisix_http_status{code="200",route="r1"} 7');
      const appAt = body.indexOf('orders_placed_total 42');
      expect(agentAt).toBeGreaterThanOrEqual(0);
      expect(apisixAt).toBeGreaterThan(agentAt);
      expect(appAt).toBeGreaterThan(apisixAt);
      expect(body).not.toContain("# apisix-mesh:");
    }
    expect(seenPaths).toEqual(['apisix /apisix/prometheus/metrics', 'app /manage/prometheus', 'apisix /apisix/prometheus/metrics', 'app /manage/prometheus']);
    // sources are asked for the text format, whatever Prometheus itself accepts
    expect(String(seenHeaders[0]!.accept)).toMatch(/^text\/plain;version=0\.0\.4/);
    const own = await (await fetch(`${statusUrl}/metrics`)).text();
    expect(own).toContain('apisix_mesh_xds_connected');
    expect(own).not.toContain('apisix_http_status');
    expect(seenPaths).toHaveLength(4); // /metrics scraped nothing
  });

  it('leaves out an app that is down with a comment line, keeps the rest, and counts the failure', async () => {
    const down = await listen({ current: () => undefined });
    const downPort = down.port;
    await new Promise((r) => down.server.close(r)); // nothing listens there now: connection refused
    const m = new AgentMetrics();
    const s = buildStatusServer({ ready: () => true, debugConfig: () => ({}) }, m, { level: 'silent' }, undefined, {
      sources: [apisixMetricsSource(`http://127.0.0.1:${apisixServer.port}/apisix/prometheus/metrics`).source!, appMetricsSource(`{"port":"${downPort}"}`, 15020).source!],
    });
    try {
      const res = await s.inject({ url: '/stats/prometheus' });
      expect(res.statusCode).toBe(200);
      expect(res.body).toContain(`# apisix-mesh: app metrics (http://127.0.0.1:${downPort}/metrics) skipped: ECONNREFUSED\n`);
      expect(res.body).toContain('apisix_http_status{code="200",route="r1"} 7');
      expect(res.body).toMatch(/apisix_mesh_scrape_failures_total\{source="app"\} 1/);
    } finally {
      await s.close();
    }
  });

  it('cuts a source that does not answer within Prometheus\'s scrape timeout, and still answers in time', async () => {
    appHandler.current = () => undefined; // accepts, never answers
    const started = Date.now();
    const res = await fetch(`${statusUrl}/stats/prometheus`, { headers: { 'X-Prometheus-Scrape-Timeout-Seconds': '0.6' } });
    const body = await res.text();
    expect(res.status).toBe(200);
    expect(body).toMatch(/# apisix-mesh: app metrics \(http:\/\/127\.0\.0\.1:\d+\/manage\/prometheus\) skipped: no complete answer within 350 ms\n/);
    expect(body).toContain('apisix_http_status{code="200",route="r1"} 7');
    expect(Date.now() - started).toBeLessThan(1500); // not the 1.5 s default: the header's deadline
  });

  it('cuts a source that trickles its body past the deadline', async () => {
    apisix.current = (_p, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('apisix_partial 1\n');
      // the rest never comes
    };
    const res = await fetch(`${statusUrl}/stats/prometheus`);
    const body = await res.text();
    expect(body).toMatch(/apisix metrics .* skipped: no complete answer within 1500 ms/);
    expect(body).not.toContain('apisix_partial');
    expect(body).toContain('orders_placed_total 42');
  });

  it('leaves out a source over the size limit, declared or streamed', async () => {
    const big = `# TYPE filler gauge\n${'filler 1\n'.repeat(10_000)}`; // 90 kB > 64 KiB
    apisix.current = (_p, res) => res.end(big); // with Content-Length
    appHandler.current = (_p, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' }); // chunked: no length up front
      res.write(big.slice(0, 40_000));
      res.end(big.slice(40_000));
    };
    const body = await (await fetch(`${statusUrl}/stats/prometheus`)).text();
    expect(body).toMatch(/apisix metrics .* skipped: answer of 90020 bytes is over the limit of 65536\n/);
    expect(body).toMatch(/app metrics .* skipped: answer is over the limit of 65536 bytes\n/);
    expect(body).not.toContain('filler 1');
    expect(body).toContain('apisix_mesh_xds_connected');
  });

  it('serves scrapes that arrive while one is under way from that one (one merge in memory at a time)', async () => {
    let hits = 0;
    appHandler.current = (_p, res) => {
      hits += 1;
      setTimeout(() => res.end(APP_TEXT), 200);
    };
    const bodies = await Promise.all(Array.from({ length: 20 }, () => fetch(`${statusUrl}/stats/prometheus`).then((r) => r.text())));
    expect(hits).toBe(1);
    for (const body of bodies) expect(body).toContain('orders_placed_total 42');
    await fetch(`${statusUrl}/stats/prometheus`);
    expect(hits).toBe(2); // the next one after it finished scrapes again
  });

  it('leaves out a source that answers an error status, and drops an OpenMetrics # EOF from the app', async () => {
    apisix.current = (_p, res) => {
      res.statusCode = 500;
      res.end('apisix_should_not_appear 1\n');
    };
    appHandler.current = (_p, res) => {
      res.setHeader('content-type', 'application/openmetrics-text; version=1.0.0');
      res.end('# TYPE orders_placed counter\norders_placed_total 42\n# EOF\n');
    };
    const body = await (await fetch(`${statusUrl}/stats/prometheus`)).text();
    expect(body).toMatch(/apisix metrics .* skipped: answered HTTP 500\n/);
    expect(body).not.toContain('apisix_should_not_appear');
    expect(body).toContain('orders_placed_total 42\n');
    expect(body).not.toContain('# EOF');
  });
});

describe('what the merge writes between the sources', () => {
  it('ends every source with a newline, drops only a final # EOF, and serves the notes about an unusable app configuration', async () => {
    const bodies: Record<string, string> = { '/1': 'a_total 1', '/2': 'b_total 2\n# EOF here is not the end\nc_total 3\n# EOF\n' };
    const handler = { current: ((p, res) => res.end(bodies[p])) as Handler };
    const { server, port } = await listen(handler);
    const problem = appMetricsSource('{"port":"15020"}', 15020).problem!;
    const s = buildStatusServer({ ready: () => true, debugConfig: () => ({}) }, new AgentMetrics(), { level: 'silent' }, undefined, {
      sources: [{ name: 'one', url: new URL(`http://127.0.0.1:${port}/1`) }, { name: 'two', url: new URL(`http://127.0.0.1:${port}/2`) }],
      notes: [problem],
    });
    try {
      const body = (await s.inject({ url: '/stats/prometheus' })).body;
      expect(body).toContain(`# apisix-mesh: ${problem}\n`);
      expect(body).toMatch(/\na_total 1\nb_total 2\n# EOF here is not the end\nc_total 3\n$/);
    } finally {
      await s.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

describe('merge sources from the agent\'s flags and environment', () => {
  it('reads Istio\'s ISTIO_PROMETHEUS_ANNOTATIONS with pilot-agent\'s defaults (/metrics, port 80)', () => {
    expect(appMetricsSource('{"scrape":"true","port":"9102"}', 15020).source?.url.href).toBe('http://127.0.0.1:9102/metrics');
    expect(appMetricsSource('{"path":"/m?x=1"}', 15020).source?.url.href).toBe('http://127.0.0.1/m?x=1');
    expect(appMetricsSource('{"scrape":"false","port":"9102"}', 15020)).toEqual({});
    expect(appMetricsSource(undefined, 15020)).toEqual({});
  });

  it('refuses values that would scrape anything but a path on the app\'s loopback port, with a reason', () => {
    for (const [value, why] of [
      ['{"port":"15020"}', 'the agent\'s own status port'],
      ['{"port":"70000"}', 'not a port number'],
      ['{"port":"80 "}', 'not a port number'],
      ['{"path":"//evil.example/x"}', 'not an absolute URL path'],
      ['{"path":"http://evil.example/"}', 'not an absolute URL path'],
      ['{"path":"/a b"}', 'not an absolute URL path'],
      ['{"port":8080}', '"port" is not a string'],
      ['[1]', 'not a JSON object'],
      ['{', 'not JSON'],
    ] as const) {
      const got = appMetricsSource(value, 15020);
      expect(got.source, value).toBeUndefined();
      expect(got.problem, value).toContain(why);
    }
  });

  it('takes APISIX\'s export only on loopback http', () => {
    expect(apisixMetricsSource('none')).toEqual({});
    expect(apisixMetricsSource('http://127.0.0.1:15090/apisix/prometheus/metrics').source?.name).toBe('apisix');
    expect(apisixMetricsSource('http://10.0.0.1:15090/x').problem).toMatch(/loopback/);
    expect(apisixMetricsSource('https://127.0.0.1/x').problem).toMatch(/only http/);
  });
});
