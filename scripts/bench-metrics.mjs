#!/usr/bin/env node
// `npm run bench -- metrics`: what one scrape of the pod's merged endpoint (the agent's
// /stats/prometheus: its own metrics, APISIX's export, the app's) costs, against the baseline of the
// agent's metrics alone (what /metrics served before the merge). The sources are local HTTP servers
// in a child process answering bodies of a realistic size: APISIX's export for 1,000 routes
// (nginx-lua-prometheus, ~8 series per route) and an app's 200 series. Rounds alternate baseline and
// merge so that noise on the shared machine hits both alike; scrapes are sequential, as Prometheus's.
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const SCRAPES = 300;
const ROUNDS = 3;

if (process.argv[2] === '--serve-sources') {
  await serveSources();
} else {
  await main();
}

function apisixExport(routes) {
  const lines = ['# HELP apisix_http_status HTTP status codes per service in APISIX', '# TYPE apisix_http_status counter'];
  for (let r = 0; r < routes; r++) {
    for (const code of [200, 404, 503]) lines.push(`apisix_http_status{code="${code}",route="route-${r}",matched_uri="/r${r}/*",matched_host="svc-${r}.shop.svc.cluster.local",service="",consumer="",node="10.1.${r >> 8}.${r & 255}"} ${r * 7 + code}`);
  }
  lines.push('# HELP apisix_bandwidth Total bandwidth in bytes consumed per service in APISIX', '# TYPE apisix_bandwidth counter');
  for (let r = 0; r < routes; r++) {
    for (const type of ['ingress', 'egress']) lines.push(`apisix_bandwidth{type="${type}",route="route-${r}",service="",consumer="",node="10.1.${r >> 8}.${r & 255}"} ${r * 1234}`);
  }
  lines.push('# HELP apisix_http_latency HTTP request latency in milliseconds per service in APISIX', '# TYPE apisix_http_latency histogram');
  for (let r = 0; r < routes; r++) {
    for (const le of ['1', '+Inf']) lines.push(`apisix_http_latency_bucket{type="request",route="route-${r}",service="",consumer="",node="10.1.${r >> 8}.${r & 255}",le="${le}"} ${r}`);
    lines.push(`apisix_http_latency_count{type="request",route="route-${r}",service="",consumer="",node="10.1.${r >> 8}.${r & 255}"} ${r}`);
  }
  return `${lines.join('\n')}\n`;
}

function appExport(series) {
  const lines = ['# TYPE orders_total counter'];
  for (let i = 0; i < series; i++) lines.push(`orders_total{shop="s${i}"} ${i}`);
  return `${lines.join('\n')}\n`;
}

async function serveSources() {
  const { createServer } = await import('node:http');
  const bodies = { '/apisix/prometheus/metrics': apisixExport(1000), '/metrics': appExport(200) };
  const server = createServer((req, res) => {
    const body = bodies[req.url];
    res.statusCode = body ? 200 : 404;
    res.setHeader('content-type', 'text/plain; version=0.0.4');
    res.end(body ?? '');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  process.stdout.write(`${JSON.stringify({ port: server.address().port, apisixBytes: bodies['/apisix/prometheus/metrics'].length, appBytes: bodies['/metrics'].length })}\n`);
  process.on('SIGTERM', () => process.exit(0));
}

function get(port, path) {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let bytes = 0;
      res.on('data', (c) => (bytes += c.length));
      res.on('end', () => resolve(bytes));
    });
    req.on('error', reject);
    req.end();
  });
}

async function round(port, path) {
  const times = [];
  let bytes = 0;
  for (let i = 0; i < SCRAPES; i++) {
    const t = process.hrtime.bigint();
    bytes = await get(port, path);
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  times.sort((a, b) => a - b);
  return { median: times[Math.floor(times.length / 2)], p99: times[Math.floor(times.length * 0.99)], bytes };
}

async function main() {
  const sources = spawn(process.execPath, [fileURLToPath(import.meta.url), '--serve-sources'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const info = JSON.parse(await new Promise((r) => createInterface({ input: sources.stdout }).once('line', r)));
  const { AgentMetrics } = await import(join(root, 'dist/agent/metrics.js'));
  const { buildStatusServer } = await import(join(root, 'dist/agent/status-server.js'));
  const { apisixMetricsSource, appMetricsSource } = await import(join(root, 'dist/agent/telemetry/merge-sources.js'));
  const metrics = new AgentMetrics();
  const merge = {
    sources: [
      apisixMetricsSource(`http://127.0.0.1:${info.port}/apisix/prometheus/metrics`).source,
      appMetricsSource(JSON.stringify({ port: String(info.port), path: '/metrics' }), 15020).source,
    ],
  };
  const merged = buildStatusServer({ ready: () => true, debugConfig: () => ({}) }, metrics, { level: 'silent' }, undefined, merge);
  const agentOnly = buildStatusServer({ ready: () => true, debugConfig: () => ({}) }, metrics, { level: 'silent' }, undefined, { sources: [] });
  await merged.listen({ host: '127.0.0.1', port: 0 });
  await agentOnly.listen({ host: '127.0.0.1', port: 0 });
  const port = (s) => s.server.address().port;
  console.log(`sources: APISIX export ${(info.apisixBytes / 1024).toFixed(0)} KiB (1,000 routes), app ${(info.appBytes / 1024).toFixed(1)} KiB; ${SCRAPES} sequential scrapes per round, ${ROUNDS} rounds`);
  const results = { baseline: [], merged: [] };
  for (let r = 0; r < ROUNDS; r++) {
    results.baseline.push(await round(port(agentOnly), '/stats/prometheus'));
    results.merged.push(await round(port(merged), '/stats/prometheus'));
  }
  const rssBefore = process.memoryUsage().rss;
  await round(port(merged), '/stats/prometheus');
  const rssAfter = process.memoryUsage().rss;
  const best = (list, key) => Math.min(...list.map((x) => x[key]));
  for (const [name, list] of Object.entries(results)) {
    console.log(`${name.padEnd(9)} median ${best(list, 'median').toFixed(2)} ms  p99 ${best(list, 'p99').toFixed(2)} ms  answer ${(list[0].bytes / 1024).toFixed(0)} KiB  (best of ${ROUNDS} rounds)`);
  }
  console.log(`merge costs ${(best(results.merged, 'median') - best(results.baseline, 'median')).toFixed(2)} ms per scrape over the agent's own metrics; RSS change over ${SCRAPES} more merged scrapes: ${((rssAfter - rssBefore) / 1048576).toFixed(1)} MiB`);
  await merged.close();
  await agentOnly.close();
  sources.kill('SIGTERM');
}
