#!/usr/bin/env node
// `npm run bench -- webhook`: the real webhook (`node dist/cli/main.js webhook`, HTTPS, default log
// level) against a protocol floor: a bare Fastify HTTPS endpoint with the same TLS settings that
// parses the same AdmissionReview and answers `allowed: true` without a patch. Both run in child
// processes so that the load generator (this process) does not share their event loop.
//
// Per server: requests/s at a fixed concurrency over keep-alive connections (closed loop), then
// latency at a fixed 200 requests/s (open loop: requests are sent on schedule whether or not earlier
// ones have answered, and latency counts from the scheduled time), then the server's RSS.
// Rounds alternate floor/webhook so that noise on the shared machine hits both alike. A third
// server, the floor answering with a string as long as the webhook's patch, separates the cost of
// sending a patch at all from the cost of computing it.
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
const ROUNDS = 3;

if (process.argv[2] === '--serve-floor') {
  await serveFloor(process.argv[3], process.argv[4], Number(process.argv[5] ?? 0));
} else {
  await main();
}

/**
 * The floor: same TLS, same body parsing, no injection, no logging, no metrics. With `padBytes`, the
 * answer also carries a `patch` string of that length, to show what sending a patch of the
 * webhook's size costs by itself.
 */
async function serveFloor(certFile, keyFile, padBytes) {
  const pad = padBytes > 0 ? { patchType: 'JSONPatch', patch: 'A'.repeat(padBytes) } : {};
  const { default: Fastify } = await import('fastify');
  const app = Fastify({
    https: { cert: readFileSync(certFile), key: readFileSync(keyFile), minVersion: 'TLSv1.2' },
    bodyLimit: 6 * 1024 * 1024,
  });
  app.post('/inject', async (req) => {
    const review = req.body;
    return { apiVersion: review.apiVersion, kind: review.kind, response: { uid: review.request.uid, allowed: true, ...pad } };
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

  // The size of the webhook's base64 patch for this pod, for the padded floor.
  const { reviewAdmission } = await import(join(root, 'dist/webhook/injection/review.js'));
  const { defaultInjectionConfig } = await import(join(root, 'dist/webhook/config/index.js'));
  const { reviewResponse } = await import(join(root, 'dist/webhook/server/admission-codec.js'));
  const request = JSON.parse(compact.toString()).request;
  const patchBytes = reviewResponse('admission.k8s.io/v1', request.uid, reviewAdmission(request, defaultInjectionConfig)).response.patch.length;

  const servers = {
    floor: [fileURLToPath(import.meta.url), '--serve-floor', certFile, keyFile],
    'floor+pad': [fileURLToPath(import.meta.url), '--serve-floor', certFile, keyFile, String(patchBytes)],
    webhook: [join(root, 'dist/cli/main.js'), 'webhook', '--tls-cert', certFile, '--tls-key', keyFile, '--port', '0', '--host', '127.0.0.1'],
  };
  console.log(
    `body: AdmissionReview v1, Pod CREATE of the Bookinfo reviews Deployment (${compact.length} bytes); ` +
      `concurrency ${CONCURRENCY}, keep-alive; ${ROUNDS} alternating rounds; node ${process.version}`,
  );
  const results = { floor: [], 'floor+pad': [], webhook: [] };
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const name of ['floor', 'floor+pad', 'webhook']) {
        const r = await measure(servers[name], ca.certPem, compact, name);
        results[name].push(r);
        console.log(
          `round ${round} ${name.padEnd(9)} ${r.rps.toFixed(0).padStart(6)} req/s  ${r.cpuUs.toFixed(0).padStart(4)} µs CPU/req  ` +
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
  // On a shared machine req/s swings with the neighbours' load; the server's own CPU time per
  // request does much less, so its ratio is printed as well.
  const cpu = (name) => median(results[name].map((r) => r.cpuUs));
  console.log(`  server CPU per request (median of rounds): floor ${cpu('floor').toFixed(0)} µs, webhook ${cpu('webhook').toFixed(0)} µs -> floor/webhook = ${((100 * cpu('floor')) / cpu('webhook')).toFixed(0)} %`);
  console.log(`  floor answering with a ${patchBytes}-byte patch string (no injection): ${best('floor+pad').rps.toFixed(0)} req/s, ${cpu('floor+pad').toFixed(0)} µs CPU/req -> carrying the patch alone costs ${(cpu('floor+pad') - cpu('floor')).toFixed(0)} µs/req`);
  const errors = Object.values(results).flat().reduce((n, r) => n + r.errors, 0);
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
  const cpuBefore = cpuSecondsOf(child.pid);
  const throughput = await closedLoop(target, body, THROUGHPUT_MS);
  const cpuUs = ((cpuSecondsOf(child.pid) - cpuBefore) * 1e6) / throughput.done;
  const paced = await openLoop(target, body, PACED_RPS, PACED_MS);
  const { rssMiB, hwmMiB } = memoryOf(child.pid);
  agent.destroy();
  child.kill('SIGTERM');
  await new Promise((resolve) => child.on('exit', resolve));
  return { rps: throughput.done / (THROUGHPUT_MS / 1000), cpuUs, errors: throughput.errors + paced.errors, ...percentiles(paced.latencies), rssMiB, hwmMiB };
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
    // a send up to 1 ms early (timer granularity) counts from when it left, a late one from its slot
    const from = Math.max(due, performance.now());
    pending.push(
      post(target, body).then((res) => {
        if (res.status === 200) latencies.push(performance.now() - from);
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

/** User + system CPU time of a process, from /proc (clock ticks of 1/100 s). */
function cpuSecondsOf(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function memoryOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMiB: kb('VmRSS') / 1024, hwmMiB: kb('VmHWM') / 1024 };
}
