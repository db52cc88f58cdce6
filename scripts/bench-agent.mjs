#!/usr/bin/env node
// `npm run bench -- agent`: the mesh agent on synthetic meshes of 1,000 / 5,000 / 10,000 services
// in istiod's shapes (one EDS cluster with 3 endpoints, one virtual host with a retrying default
// route per service, all on port 80 like a real sidecar's RDS "80").
//   1. full snapshot: decode from protobuf bytes + translate + schema-check + apply to the store,
//      and the heap the agent holds for it;
//   2. one changed endpoint: the agent's incremental path (decode only the pushed assignment,
//      cached per-resource translations, store diff) vs a naive full re-translation of everything
//      (what a translator without caches does), measured in the same run;
//   3. one changed endpoint over a real ADS stream → the watch event leaving the etcd API.
// Plain ESM over dist/ (npm run bench builds first).
import { performance } from 'node:perf_hooks';
import http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { encodeCanonical, decodeMessage } from '../dist/agent/xds/codec.js';
import { envoyRoot, TYPE_URL } from '../dist/agent/xds/protos.js';
import { MeshTranslator } from '../dist/agent/translate/snapshot.js';
import { StoreApplier } from '../dist/agent/apply.js';
import { KvStore } from '../dist/agent/store/store.js';
import { startAgent } from '../dist/agent/agent.js';
import { mesh, cla } from './synthetic-mesh.mjs';

const SIZES = (process.env.BENCH_SIZES ?? '1000,5000,10000').split(',').map(Number);
const gc = globalThis.gc ?? (() => {});
const ms = (t) => `${t.toFixed(1)} ms`;

/** the mesh as istiod puts it on the wire: protobuf bytes per resource */
function encodeAll(m) {
  const out = {};
  for (const kind of ['cluster', 'endpoint', 'listener', 'route']) out[kind] = m[kind].map((r) => encodeCanonical(TYPE_URL[kind], r));
  return out;
}

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
  const xds = decodeMaps(bytes);
  const translator = new MeshTranslator({ podIp: '10.0.0.1' });
  const store = new KvStore();
  const applier = new StoreApplier(store);
  const first = applier.apply(translator.translate(xds));
  const full = performance.now() - t0;
  gc();
  const heap = process.memoryUsage().heapUsed - heapBefore;
  if (first.invalid.length) throw new Error(`invalid objects: ${first.invalid[0].detail}`);

  // one changed endpoint, several times: incremental (as the agent does it) vs naive
  const incremental = [], naive = [];
  const naiveStore = new KvStore();
  new StoreApplier(naiveStore).apply(translator.translate(xds));
  for (let round = 1; round <= 7; round++) {
    const i = (round * 7919) % n;
    const name = `outbound|80||svc-${i}.ns-${i % 50}.svc.cluster.local`;
    const changed = encodeCanonical(TYPE_URL.endpoint, cla(name, i, 3, round * 3));
    bytes.endpoint[i] = changed;
    let t = performance.now();
    xds.endpoints.set(name, decodeMessage(TYPE_URL.endpoint, changed));
    const rev = applier.apply(translator.translate(xds)).revision;
    incremental.push(performance.now() - t);
    if (rev !== store.revision) throw new Error('no revision');
    t = performance.now();
    const fresh = decodeMaps(bytes);
    new StoreApplier(naiveStore).apply(new MeshTranslator({ podIp: '10.0.0.1' }).translate(fresh));
    naive.push(performance.now() - t);
  }
  return { n, upstreams: first.upstreams, routes: first.routes, full, heap, incremental: median(incremental), naive: median(naive) };
}

/** A minimal ADS server (state of the world) for the latency measurement. */
async function adsServer(bytes) {
  const root = envoyRoot();
  const Req = root.lookupType('envoy.service.discovery.v3.DiscoveryRequest');
  const Res = root.lookupType('envoy.service.discovery.v3.DiscoveryResponse');
  const kinds = { [TYPE_URL.cluster]: 'cluster', [TYPE_URL.endpoint]: 'endpoint', [TYPE_URL.listener]: 'listener', [TYPE_URL.route]: 'route' };
  const streams = new Set();
  let version = 0;
  const respond = (call, typeUrl, list) => {
    version++;
    call.write(Res.encode(Res.fromObject({ version_info: String(version), type_url: typeUrl, nonce: `n${version}`, resources: list.map((value) => ({ type_url: typeUrl, value })) })).finish());
  };
  const server = new grpc.Server({ 'grpc.max_send_message_length': -1 });
  server.addService({ StreamAggregatedResources: { path: '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources', requestStream: true, responseStream: true,
    requestSerialize: (v) => Buffer.from(Req.encode(v).finish()), requestDeserialize: (b) => Req.toObject(Req.decode(b)),
    responseSerialize: (v) => Buffer.from(v), responseDeserialize: (b) => b } },
  { StreamAggregatedResources: (call) => {
    streams.add(call);
    call.on('data', (req) => { if (!req.responseNonce && !req.response_nonce) respond(call, req.typeUrl ?? req.type_url, bytes[kinds[req.typeUrl ?? req.type_url]]); });
    call.on('end', () => { streams.delete(call); call.end(); });
    call.on('error', () => streams.delete(call));
  } });
  const port = await new Promise((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return { port, push: (typeUrl, list) => { for (const c of streams) respond(c, typeUrl, list); }, stop: () => server.forceShutdown() };
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
