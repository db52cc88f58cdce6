#!/usr/bin/env node
// `npm run bench -- webhook`: the real webhook (`node dist/cli/main.js webhook`, HTTPS, default log
// level) against a protocol floor: a bare Fastify HTTPS endpoint with the same TLS settings that
// parses the same AdmissionReview and answers `allowed: true` without a patch. Both run in child
// processes so that the load generator (this process) does not share their event loop.
//
// Per server: requests/s at a fixed concurrency over keep-alive connections (closed loop), then
// latency at a fixed 200 requests/s (open loop: requests are sent on schedule whether or not earlier
// ones have answered, and latency counts from the scheduled time), then the server's RSS.
// Rounds alternate floor/webhook so that noise on the shared machine hits both alike.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const CONCURRENCY = 16;
const WARMUP_MS = 2000;
const THROUGHPUT_MS = 6000;
const PACED_RPS = 200;
const PACED_MS = 5000;
const ROUNDS = 2;

if (process.argv[2] === '--serve-floor') {
  await serveFloor(process.argv[3], process.argv[4]);
} else {
  await main();
}

/** The floor: same TLS, same body parsing, no injection, no logging, no metrics. */
async function serveFloor(certFile, keyFile) {
  const { default: Fastify } = await import('fastify');
  const app = Fastify({
    https: { cert: readFileSync(certFile), key: readFileSync(keyFile), minVersion: 'TLSv1.2' },
    bodyLimit: 6 * 1024 * 1024,
  });
  app.post('/inject', async (req) => {
    const review = req.body;
    return { apiVersion: review.apiVersion, kind: review.kind, response: { uid: review.request.uid, allowed: true } };
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  process.stdout.write(JSON.stringify({ msg: 'webhook listening', port: app.server.address().port }) + '\n');
  process.on('SIGTERM', () => app.close().then(() => process.exit(0)));
}

async function main() {
  const { generateCa, generateServingCert } = await import(join(root, 'dist/webhook/certificates/generate.js'));
  const dir = mkdtempSync(join(tmpdir(), 'apisix-mesh-bench-webhook-'));
  const ca = generateCa();
  const serving = generateServingCert(ca, ['localhost', '127.0.0.1'], { days: 1 });
  const certFile = join(dir, 'tls.crt');
  const keyFile = join(dir, 'tls.key');
  writeFileSync(certFile, serving.certPem);
  writeFileSync(keyFile, serving.keyPem);
  const body = readFileSync(join(root, 'test/webhook/testdata/pod-create-review.json'));
  const compact = Buffer.from(JSON.stringify(JSON.parse(body.toString())));

  const servers = {
    floor: [fileURLToPath(import.meta.url), '--serve-floor', certFile, keyFile],
    webhook: [join(root, 'dist/cli/main.js'), 'webhook', '--tls-cert', certFile, '--tls-key', keyFile, '--port', '0', '--host', '127.0.0.1'],
  };
  console.log(
    `body: AdmissionReview v1, Pod CREATE of the Bookinfo reviews Deployment (${compact.length} bytes); ` +
      `concurrency ${CONCURRENCY}, keep-alive; ${ROUNDS} alternating rounds; node ${process.version}`,
  );
  const results = { floor: [], webhook: [] };
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const name of ['floor', 'webhook']) {
        const r = await measure(servers[name], ca.certPem, compact, name);
        results[name].push(r);
        console.log(
          `round ${round} ${name.padEnd(7)} ${r.rps.toFixed(0).padStart(6)} req/s  ` +
            `@${PACED_RPS} rps: p50 ${r.p50.toFixed(2)} ms p99 ${r.p99.toFixed(2)} ms max ${r.max.toFixed(2)} ms  ` +
            `RSS ${r.rssMiB.toFixed(0)} MiB (peak ${r.hwmMiB.toFixed(0)} MiB)${r.errors ? `  ERRORS ${r.errors}` : ''}`,
        );
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const best = (name) => results[name].reduce((a, b) => (b.rps > a.rps ? b : a));
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const floor = best('floor');
  const webhook = best('webhook');
  console.log('\nsummary (best round for req/s; latency and RSS of the same round)');
  console.log(`  floor    ${floor.rps.toFixed(0)} req/s, p50 ${floor.p50.toFixed(2)} ms, p99 ${floor.p99.toFixed(2)} ms, RSS ${floor.rssMiB.toFixed(0)} MiB`);
  console.log(`  webhook  ${webhook.rps.toFixed(0)} req/s, p50 ${webhook.p50.toFixed(2)} ms, p99 ${webhook.p99.toFixed(2)} ms, RSS ${webhook.rssMiB.toFixed(0)} MiB`);
  console.log(`  ratio    webhook/floor = ${((100 * webhook.rps) / floor.rps).toFixed(0)} % (aim >= 50 %); median p99 of the webhook ${median(results.webhook.map((r) => r.p99)).toFixed(2)} ms (aim < 10 ms)`);
  const errors = [...results.floor, ...results.webhook].reduce((n, r) => n + r.errors, 0);
  if (errors > 0) {
    console.error(`${errors} requests failed`);
    process.exit(1);
  }
}

async function measure(args, caPem, body, name) {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      try {
        const entry = JSON.parse(line);
        if (entry.msg === 'webhook listening') resolve(entry.port);
      } catch {}
    });
    child.on('exit', (code) => reject(new Error(`${name} exited with ${code}`)));
  });
  // Keep draining the server's log lines, as a log collector would.
  child.stdout.resume();
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY, ca: caPem });
  const target = { hostname: 'localhost', port, path: '/inject', method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } };

  const first = await post(target, body);
  if (first.status !== 200 || !first.text.includes('"response"')) throw new Error(`${name}: unexpected answer ${first.status} ${first.text.slice(0, 200)}`);
  if (name === 'webhook' && !first.text.includes('"patchType":"JSONPatch"')) throw new Error('webhook: the pod was not injected');

  await closedLoop(target, body, WARMUP_MS);
  const throughput = await closedLoop(target, body, THROUGHPUT_MS);
  const paced = await openLoop(target, body, PACED_RPS, PACED_MS);
  const { rssMiB, hwmMiB } = memoryOf(child.pid);
  agent.destroy();
  child.kill('SIGTERM');
  await new Promise((resolve) => child.on('exit', resolve));
  return { rps: throughput.done / (THROUGHPUT_MS / 1000), errors: throughput.errors + paced.errors, ...percentiles(paced.latencies), rssMiB, hwmMiB };
}

function post(target, body) {
  return new Promise((resolve) => {
    const req = request(target, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.on('error', (err) => resolve({ status: 0, text: err.message }));
    req.end(body);
  });
}

/** CONCURRENCY workers, each sending its next request as soon as the previous answered. */
async function closedLoop(target, body, durationMs) {
  const end = Date.now() + durationMs;
  let done = 0;
  let errors = 0;
  const worker = async () => {
    while (Date.now() < end) {
      const res = await post(target, body);
      if (res.status === 200) done++;
      else errors++;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { done, errors };
}

/** Requests on a fixed schedule; latency from the scheduled send time (no coordinated omission). */
async function openLoop(target, body, rps, durationMs) {
  const count = Math.round((rps * durationMs) / 1000);
  const interval = 1000 / rps;
  const start = performance.now() + 10;
  const latencies = [];
  let errors = 0;
  const pending = [];
  for (let i = 0; i < count; i++) {
    const due = start + i * interval;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    pending.push(
      post(target, body).then((res) => {
        if (res.status === 200) latencies.push(performance.now() - due);
        else errors++;
      }),
    );
  }
  await Promise.all(pending);
  return { latencies, errors };
}

function percentiles(latencies) {
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return { p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] ?? NaN };
}

function memoryOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMiB: kb('VmRSS') / 1024, hwmMiB: kb('VmHWM') / 1024 };
}
