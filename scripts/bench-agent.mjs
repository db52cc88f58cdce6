#!/usr/bin/env node
// `npm run bench -- agent`: the mesh agent on synthetic meshes of 1,000 / 5,000 / 10,000 services
// in istiod's shapes (one EDS cluster with 3 endpoints, one virtual host with a retrying default
// route per service, all on port 80 like a real sidecar's RDS "80").
//   1. full snapshot: decode from protobuf bytes + translate + schema-check + apply to the store,
//      and the heap the agent holds for it;
//   2. one changed endpoint: the agent's incremental path (decode only the pushed assignment,
//      translate it, rebuild what depends on it, write the changed keys) vs a naive full
//      re-translation of everything (what a translator without state does), in the same run;
//   3. one changed endpoint over a real ADS stream → the watch event leaving the etcd API;
//   4. memory: the agent in its own process (`apisix-mesh agent`, as injected) through the first
//      snapshot, a reconnect to a mesh where every cluster and endpoint changed, and 20 pushes that
//      change every endpoint; peak RSS (VmHWM) after each phase; each build with the node flags its
//      webhook injects. Baselines in the same run: this build on V8's defaults, and another build
//      (BENCH_AGENT_BASELINE_DIST=<its dist>) when given. BENCH_AGENT_PART=memory|speed: one part.
// Plain ESM over dist/ (npm run bench builds first).
import { performance } from 'node:perf_hooks';
import http from 'node:http';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { encodeCanonical, decodeMessage } from '../dist/agent/xds/codec.js';
import { TYPE_URL } from '../dist/agent/xds/protos.js';
import { adsServer, cla, encodeAll, mesh } from './synthetic-mesh.mjs';
import { MeshTranslator } from '../dist/agent/translate/snapshot.js';
import { StoreApplier } from '../dist/agent/apply.js';
import { KvStore } from '../dist/agent/store/store.js';
import { keyFromText } from '../dist/agent/store/keys.js';
import { startAgent } from '../dist/agent/agent.js';
import { upstreamId } from '../dist/agent/translate/ids.js';
import { memory } from './etcd-hostile-clients.mjs';

const SIZES = (process.env.BENCH_SIZES ?? '1000,5000,10000').split(',').map(Number);
const gc = globalThis.gc ?? (() => {});
const ms = (t) => `${t.toFixed(1)} ms`;

function decodeMaps(bytes) {
  const maps = {};
  for (const kind of ['cluster', 'endpoint', 'listener', 'route']) {
    maps[kind] = new Map(bytes[kind].map((b) => {
      const r = decodeMessage(TYPE_URL[kind], b);
      return [kind === 'endpoint' ? r.cluster_name : r.name, r];
    }));
  }
  return { clusters: maps.cluster, endpoints: maps.endpoint, listeners: maps.listener, routeConfigs: maps.route };
}

/** The agent's path: each resource decoded and handed to the translator as a change, not kept. */
function ingestAll(translator, bytes) {
  for (const kind of ['cluster', 'endpoint', 'listener', 'route']) {
    const changed = new Map();
    for (const b of bytes[kind]) {
      const r = decodeMessage(TYPE_URL[kind], b);
      const name = kind === 'endpoint' ? r.cluster_name : r.name;
      changed.set(name, translator.prepare(kind, name, r, b));
    }
    translator.ingest({ kind, changed, removed: [] });
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function inProcess(n) {
  const m = mesh(n);
  const bytes = encodeAll(m);
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  const translator = new MeshTranslator();
  const store = new KvStore();
  const applier = new StoreApplier(store);
  ingestAll(translator, bytes);
  const first = applier.applyChanges(translator.assemble());
  const full = performance.now() - t0;
  gc();
  const heap = process.memoryUsage().heapUsed - heapBefore;
  if (first.invalid.length) throw new Error(`invalid objects: ${first.invalid[0].detail}`);

  // one changed endpoint, several times: incremental (as the agent does it) vs naive
  const incremental = [], naive = [];
  const naiveStore = new KvStore();
  new StoreApplier(naiveStore).apply(new MeshTranslator().translate(decodeMaps(bytes)));
  for (let round = 1; round <= 7; round++) {
    const i = (round * 7919) % n;
    const name = `outbound|80||svc-${i}.ns-${i % 50}.svc.cluster.local`;
    const changed = encodeCanonical(TYPE_URL.endpoint, cla(name, i, 3, round * 3));
    bytes.endpoint[i] = changed;
    const revBefore = store.revision;
    let t = performance.now();
    translator.ingest({ kind: 'endpoint', changed: new Map([[name, translator.prepare('endpoint', name, decodeMessage(TYPE_URL.endpoint, changed), changed)]]), removed: [] });
    const rev = applier.applyChanges(translator.assemble()).revision;
    incremental.push(performance.now() - t);
    if (rev !== revBefore + 1 || store.range({ key: keyFromText('/apisix/'), rangeEnd: keyFromText('/apisix0'), minModRevision: rev }).kvs.length !== 1) throw new Error('not one revision of one key');
    t = performance.now();
    const fresh = decodeMaps(bytes);
    new StoreApplier(naiveStore).apply(new MeshTranslator().translate(fresh));
    naive.push(performance.now() - t);
  }
  return { n, upstreams: first.upstreams, routes: first.routes, full, heap, incremental: median(incremental), naive: median(naive) };
}

function watch(port, onEvent) {
  const req = http.request({ host: '127.0.0.1', port, path: '/v3/watch', method: 'POST' }, (res) => {
    res.on('data', (chunk) => { for (const line of chunk.toString().split('\n')) if (line.includes('"events"')) onEvent(); });
  });
  req.end(JSON.stringify({ create_request: { key: Buffer.from('/apisix/').toString('base64'), range_end: Buffer.from('/apisix0').toString('base64') } }));
  return req;
}

async function overTheWire(n) {
  const m = mesh(n);
  const bytes = encodeAll(m);
  const ads = await adsServer(bytes);
  const agent = await startAgent({ xdsAddress: `127.0.0.1:${ads.port}`, identity: { podName: 'bench', namespace: 'default', podIp: '10.0.0.1', clusterId: 'Kubernetes', dnsDomain: 'default.svc.cluster.local', labels: {}, meta: {}, metaJson: {} },
    etcdHost: '127.0.0.1', etcdPort: 0, statusHost: '127.0.0.1', statusPort: 0, coalesceMs: 0, maxCoalesceMs: 0, logger: { level: 'silent' } });
  while (!agent.isReady()) await new Promise((r) => setTimeout(r, 20));
  let resolveEvent;
  const w = watch(agent.etcdPort, () => resolveEvent?.());
  await new Promise((r) => setTimeout(r, 100));
  const lat = [];
  for (let round = 1; round <= 9; round++) {
    const i = (round * 104729) % n;
    const name = `outbound|80||svc-${i}.ns-${i % 50}.svc.cluster.local`;
    const changed = encodeCanonical(TYPE_URL.endpoint, cla(name, i, 3, round * 3));
    const got = new Promise((r) => (resolveEvent = r));
    const t = performance.now();
    ads.push(TYPE_URL.endpoint, [changed]);
    await got;
    lat.push(performance.now() - t);
  }
  w.destroy();
  await agent.close();
  ads.stop();
  return median(lat);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const b64 = (s) => Buffer.from(s).toString('base64');
const freePort = () => new Promise((res) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => res(port)); }); });

/** The value of one key in the agent's etcd API ('' while it is not there or the API is not up). */
async function valueOf(url, key) {
  try {
    const r = await fetch(`${url}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: b64(key) }) });
    return (await r.json()).kvs?.[0]?.value ?? '';
  } catch { return ''; }
}

async function until(url, key, differsFrom) {
  for (let i = 0; i < 2400; i++) {
    const v = await valueOf(url, key);
    if (v && v !== differsFrom) return v;
    await sleep(25);
  }
  throw new Error(`the agent did not serve a new value of ${key} within 60 s`);
}

/** Phase 4 above; `dist` is the build to run. Returns MiB and the median time a full push takes to land. */
async function agentMemory(n, dist, nodeArgs = [], injectedEnv = {}) {
  let bytes = encodeAll(mesh(n));
  const ads = await adsServer(bytes);
  const etcdPort = await freePort();
  const env = { ...process.env, ...injectedEnv, POD_NAME: 'bench', POD_NAMESPACE: 'default', INSTANCE_IP: '10.0.0.1' };
  const proc = spawn(process.execPath, [...nodeArgs, `${dist}/cli/main.js`, 'agent', '--xds-address', `127.0.0.1:${ads.port}`, '--etcd-listen', `127.0.0.1:${etcdPort}`,
    '--status-port', '0', '--status-host', '127.0.0.1', '--log-level', 'error'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  const url = `http://127.0.0.1:${etcdPort}`;
  // svc-0's upstream: every phase changes it, so its new value means the phase was applied
  const key = `/apisix/upstreams/${upstreamId('outbound|80||svc-0.ns-0.svc.cluster.local')}`;
  try {
    let value = await until(url, key, '');
    await sleep(2000);
    const first = memory(proc.pid);
    bytes = null;
    ads.reconnect(encodeAll(mesh(n, 1)));
    value = await until(url, key, value);
    await sleep(2000);
    const reconnect = memory(proc.pid);
    const pushMs = [];
    for (let p = 1; p <= 20; p++) {
      const endpoints = [];
      for (let i = 0; i < n; i++) endpoints.push(encodeCanonical(TYPE_URL.endpoint, cla(`outbound|80||svc-${i}.ns-${i % 50}.svc.cluster.local`, i, 3, 1 + p * 3)));
      const t = performance.now();
      ads.push(TYPE_URL.endpoint, endpoints);
      value = await until(url, key, value);
      pushMs.push(performance.now() - t);
    }
    await sleep(1000);
    const pushes = memory(proc.pid);
    // latency is what V8 flags could cost: one changed endpoint (svc-0's), pushed to landed
    const oneMs = [];
    for (let round = 1; round <= 9; round++) {
      const t = performance.now();
      ads.push(TYPE_URL.endpoint, [encodeCanonical(TYPE_URL.endpoint, cla('outbound|80||svc-0.ns-0.svc.cluster.local', 0, 3, 100 + round))]);
      value = await until(url, key, value);
      oneMs.push(performance.now() - t);
    }
    return { steady: first.rss, firstPeak: first.peak, reconnectPeak: reconnect.peak, pushesPeak: pushes.peak, after: pushes.rss, pushMs: median(pushMs), oneMs: median(oneMs) };
  } finally {
    proc.kill('SIGINT'); // at once: SIGTERM would wait for the bench's etcd connections (the drain)
    await new Promise((r) => proc.once('exit', r));
    ads.stop();
  }
}

async function memoryPart() {
  const mib = (x) => `${x.toFixed(0)} MiB`;
  const builds = [['this build', new URL('../dist', import.meta.url).pathname]];
  if (process.env.BENCH_AGENT_BASELINE_DIST) builds.push(['baseline', process.env.BENCH_AGENT_BASELINE_DIST]);
  // each build runs as its webhook injects it (node flags), unless BENCH_AGENT_NODE_ARGS says otherwise
  const injectedFlags = async (dist) => (await import(`${dist}/webhook/injection/sidecar-parts.js`)).AGENT_COMMAND?.slice(1, -1) ?? [];
  // ... and with the environment it injects (MALLOC_ARENA_MAX), which the V8-defaults baseline also leaves out
  const injectedEnv = async (dist) => Object.fromEntries(((await import(`${dist}/webhook/injection/sidecar-parts.js`)).AGENT_ENV ?? []).map((e) => [e.name, e.value]));
  const override = process.env.BENCH_AGENT_NODE_ARGS?.split(' ').filter(Boolean);
  console.log(`agent memory, own process: services | build (node flags, environment) | RSS after first snapshot | peak: first snapshot | + reconnect to a changed mesh | + 20 full pushes | RSS after | full push lands in (median) | 1 endpoint changed lands in (median; 100 ms coalescing included)`);
  for (const n of SIZES) {
    const runs = [];
    for (const [name, dist] of builds) runs.push([name, dist, override ?? await injectedFlags(dist), override ? {} : await injectedEnv(dist)]);
    // baselines in every run: this build without the injected environment, and on V8's defaults
    // (what the environment and the flags are worth)
    if (!override) runs.splice(1, 0, [builds[0][0], builds[0][1], runs[0][2], {}], [builds[0][0], builds[0][1], [], {}]);
    for (const [name, dist, nodeArgs, env] of runs) {
      const r = await agentMemory(n, dist, nodeArgs, env);
      const settings = [...nodeArgs, ...Object.entries(env).map(([k, v]) => `${k}=${v}`)].join(' ') || 'none';
      console.log(`${String(n).padStart(6)} | ${name} (${settings}) | ${mib(r.steady)} | ${mib(r.firstPeak)} | ${mib(r.reconnectPeak)} | ${mib(r.pushesPeak)} | ${mib(r.after)} | ${ms(r.pushMs)} | ${ms(r.oneMs)}`);
    }
  }
}

// BENCH_AGENT_PART: `memory` or `speed` runs only that part (default: both)
const part = process.env.BENCH_AGENT_PART ?? 'all';
if (part === 'memory') {
  await memoryPart();
  process.exit(0);
}

console.log('mesh agent: synthetic meshes (1 EDS cluster x 3 endpoints + 1 vhost/route per service); shared 2-core machine, medians of 7-9 rounds');
console.log('services | APISIX objects | full snapshot (decode+translate+check+apply) | agent heap | 1 endpoint changed: incremental | naive full re-translation (baseline) | speed-up | xDS push -> watch event');
// warm-up: compiles the APISIX schema validators and JIT-compiles the hot paths once
await inProcess(50);
for (const n of SIZES) {
  const r = await inProcess(n);
  if (process.env.BENCH_DEBUG) console.error("in-process done", r);
  gc();
  const wire = await overTheWire(n);
  console.log(`${String(n).padStart(8)} | ${String(r.upstreams + r.routes).padStart(14)} | ${ms(r.full).padStart(10)} | ${(r.heap / 1048576).toFixed(0).padStart(5)} MiB | ${ms(r.incremental).padStart(9)} | ${ms(r.naive).padStart(10)} | ${(r.naive / r.incremental).toFixed(1).padStart(6)}x | ${ms(wire)}`);
  if (!(r.incremental < r.naive)) {
    console.error(`the incremental path (${ms(r.incremental)}) did not beat the naive baseline (${ms(r.naive)}) at ${n} services`);
    process.exitCode = 1;
  }
}
if (part === 'all') await memoryPart();
