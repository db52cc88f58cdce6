// The status port's routes, with Fastify's inject (no socket).
import { describe, expect, it } from 'vitest';
import { buildStatusServer } from '../../agent/status-server.js';
import { AgentMetrics } from '../../agent/metrics.js';

describe('status server', () => {
  let ready = false;
  const metrics = new AgentMetrics();
  const app = buildStatusServer({ ready: () => ready, debugConfig: () => ({ routes: [{ id: 'r1' }] }), debugXds: () => ({ appliedXdsVersions: { cluster: 'v1' } }) }, metrics, { level: 'silent' });

  it('/healthz/ready is 503 until the first complete snapshot, then 200', async () => {
    expect((await app.inject({ url: '/healthz/ready' })).statusCode).toBe(503);
    ready = true;
    expect((await app.inject({ url: '/healthz/ready' })).statusCode).toBe(200);
  });

  it('/healthz/configured follows the configuration alone, not the certificate /healthz/ready also waits for', async () => {
    let configured = false;
    let certificate = false;
    const agent = buildStatusServer({ ready: () => configured && certificate, configured: () => configured, debugConfig: () => ({}) }, new AgentMetrics(), { level: 'silent' });
    const codes = async () => [(await agent.inject({ url: '/healthz/configured' })).statusCode, (await agent.inject({ url: '/healthz/ready' })).statusCode];
    expect(await codes()).toEqual([503, 503]);
    configured = true;
    expect(await codes()).toEqual([200, 503]);
    certificate = true;
    expect(await codes()).toEqual([200, 200]);
  });

  it('/metrics speaks Prometheus text with the agent\'s metrics', async () => {
    metrics.xdsNacks.inc({ type: 'cluster' });
    metrics.skipped.set({ kind: 'route', reason: 'passthrough' }, 2);
    const res = await app.inject({ url: '/metrics' });
    expect(res.headers['content-type']).toMatch(/text\/plain/);
    expect(res.body).toMatch(/apisix_mesh_xds_nacks_total\{type="cluster"\} 1/);
    expect(res.body).toMatch(/apisix_mesh_skipped_resources\{kind="route",reason="passthrough"\} 2/);
  });

  it('/debug/config answers loopback clients only', async () => {
    expect((await app.inject({ url: '/debug/config', remoteAddress: '127.0.0.1' })).json()).toEqual({ routes: [{ id: 'r1' }] });
    expect((await app.inject({ url: '/debug/config', remoteAddress: '10.1.2.3' })).statusCode).toBe(403);
    expect((await app.inject({ url: '/debug/xds', remoteAddress: '::1' })).json()).toEqual({ appliedXdsVersions: { cluster: 'v1' } });
    const refused = await app.inject({ url: '/debug/xds?x=1', remoteAddress: '10.1.2.3' });
    expect(refused.statusCode).toBe(403);
    expect(refused.json()).toEqual({ error: '/debug/xds is served to loopback clients only' });
  });
});
