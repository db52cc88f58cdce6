#!/usr/bin/env node
// `npm run bench -- mtls`: what outbound mutual TLS through the sidecar's TLS relay costs
// (docs/mtls.md), on the pod harness with the real APISIX and a pod certificate from a fake Istio CA.
// Four services the app calls, measured in alternating rounds in the same run:
//   plain        a plaintext cluster: APISIX → the endpoint (the baseline);
//   mtls         ISTIO_MUTUAL: APISIX → the relay (stream subsystem, Lua) → TLS with the workload
//                certificate to an HTTPS server that requires a mesh client certificate;
//   *-close      the same, the server answering `Connection: close`: every request opens a new
//                upstream connection (for mtls, a full TLS handshake and the peer check).
// Traffic (scripts/dataplane-load.mjs): HTTP/1.1 POSTs of 1 KiB answered with 1 KiB from the app, at
// saturation over BENCH_CONNECTIONS keep-alive connections; the CPU time of APISIX's processes
// (nginx master, workers, privileged agent: the relay runs in the workers) per 1,000 requests.
//
// The harness is TypeScript under test/: compiled here into node_modules/.cache, as bench-dataplane does.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { apisixTicks, CLK_TCK, compileHarness, follow, root, spawnIn, stageLoadScript } from './dataplane-pod.mjs';

const env = (name, fallback) => process.env[name] ?? fallback;
const ROUNDS = Number(env('BENCH_ROUNDS', 2));
const CONNECTIONS = Number(env('BENCH_CONNECTIONS', 16));
const WARMUP_MS = Number(env('BENCH_WARMUP_MS', 1500));
const DURATION_MS = Number(env('BENCH_DURATION_MS', 5000));
const BODY = 1024;
const APP_UID = 1000;
const NS = 'bench';
const SERVER_ID = `spiffe://cluster.local/ns/${NS}/sa/server`;
process.env.APISIX_RUNTIME ??= '/var/cache/apisix-mesh/apisix-runtime-3.13.0';

/** name → VIP, endpoint, whether the cluster is ISTIO_MUTUAL, whether the server closes each connection */
const SERVICES = [
  { name: 'plain', vip: '10.96.9.1', ip: '10.0.9.1', mtls: false, close: false },
  { name: 'mtls', vip: '10.96.9.2', ip: '10.0.9.2', mtls: true, close: false },
  { name: 'plain-close', vip: '10.96.9.3', ip: '10.0.9.3', mtls: false, close: true },
  { name: 'mtls-close', vip: '10.96.9.4', ip: '10.0.9.4', mtls: true, close: true },
];
const PORT = 8443;




async function startServer(script, ns, host, port, options) {
  const child = spawnIn(ns, undefined, [script, 'serve', host, String(port), String(BODY), JSON.stringify(options)]);
  await new Promise((resolve, reject) => {
    const exited = follow(child, (m) => m.ready && resolve());
    exited.then(({ code, stderr }) => reject(new Error(`the server on ${host}:${port} exited (${code}): ${stderr}`)));
  });
  return child;
}



async function runLoad(script, ns, url) {
  const child = spawnIn(ns, APP_UID, [script, 'load', JSON.stringify({ url, bodyBytes: BODY, connections: CONNECTIONS, warmupMs: WARMUP_MS, durationMs: DURATION_MS, rate: 0 })]);
  let before, after, result;
  const { code, stderr } = await follow(child, (m) => {
    if (m.phase === 'measure') before = apisixTicks(ns);
    else if (m.phase === 'end') after = apisixTicks(ns);
    else if (m.result) result = m.result;
  });
  if (!result || before === undefined || after === undefined) throw new Error(`the load on ${url} failed (exit ${code}): ${stderr}`);
  return { ...result, cpuMsPer1000: result.completed ? ((after - before) / CLK_TCK / result.completed) * 1e6 : NaN };
}

async function main() {
  const load = compileHarness('apisix-mesh-bench-mtls');
  const [harness, meshCa, xds, pkiLib, caLib, requirements] = await Promise.all([
    load('test/support/pod/pod-harness.js'), load('test/support/pod/mesh-ca.js'), load('test/support/istio-xds.js'),
    load('test/support/test-pki.js'), load('test/support/fake-istio-ca.js'), load('test/support/pod/requirements.js'),
  ]);
  const { dir, script } = stageLoadScript('apisix-mesh-bench-mtls-');
  const pki = pkiLib.createTestPki();
  const server = meshCa.meshLeaf(pki.intermediate, SERVER_ID);
  const tlsDir = join(dir, 'tls');
  mkdirSync(tlsDir, { mode: 0o755 });
  writeFileSync(join(tlsDir, 'cert.pem'), server.cert);
  writeFileSync(join(tlsDir, 'key.pem'), server.key);
  writeFileSync(join(tlsDir, 'ca.pem'), pki.root.pem);

  const ca = new caLib.FakeIstioCa(pki);
  ca.requiredToken = meshCa.TEST_CA_TOKEN;
  const bridge = await meshCa.unixBridge(join(dir, 'ca.sock'), await ca.start());
  const m = new xds.MeshResources();
  const cluster = (s) => xds.outboundCluster(80, xds.fqdn(s.name, NS));
  for (const s of SERVICES) {
    const c = xds.edsCluster(cluster(s));
    m.cluster(s.mtls ? xds.withIstioMutual(c, [SERVER_ID], 'ISTIO_MUTUAL') : c, [{ ip: s.ip, port: PORT }]);
  }
  m.route(xds.routeConfiguration(80, SERVICES.map((s) => xds.serviceVirtualHost(xds.fqdn(s.name, NS), 80, s.vip, [xds.httpRoute('default', { prefix: '/' }, { cluster: cluster(s) })]))));
  m.cluster(xds.passthroughCluster()).cluster(xds.blackHoleCluster());
  m.listener(xds.outboundHttpListener(80)).listener(xds.virtualOutbound());

  const pod = await harness.startPod({
    manifest: requirements.podManifest('client', NS, { app: 'client' }),
    xds: m.resources,
    clusterAddresses: SERVICES.flatMap((s) => [s.vip, s.ip]),
    mutateInjected: meshCa.withTestCa(pki.root.pem),
  });
  const servers = [];
  try {
    await pod.cluster.relay(harness.ISTIOD_IP, 15012, join(dir, 'ca.sock'));
    await pod.kubelet.waitReady(60_000);
    for (const s of SERVICES) servers.push(await startServer(script, pod.network.cluster, s.ip, PORT, { close: s.close, ...(s.mtls ? { tls: { dir: tlsDir } } : {}) }));
    // the first requests wait for the identity in APISIX's stream workers
    for (const s of SERVICES) {
      for (let i = 0; ; i++) {
        const res = await pod.app().http({ url: `http://${s.vip}/`, method: 'POST', body: 'x' });
        if ('status' in res && res.status === 200) break;
        if (i > 100) throw new Error(`${s.name}: no 200 (${JSON.stringify(res).slice(0, 200)})`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const results = Object.fromEntries(SERVICES.map((s) => [s.name, []]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const s of SERVICES) {
        const r = await runLoad(script, pod.network.pod, `http://${s.vip}/`);
        results[s.name].push(r);
        console.log(`round ${round + 1} ${s.name.padEnd(12)} ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  APISIX CPU ${r.cpuMsPer1000.toFixed(0)} ms/1000 req  errors ${r.errors}`);
      }
    }
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const summary = (name) => ({ rps: mean(results[name].map((r) => r.rps)), cpu: mean(results[name].map((r) => r.cpuMsPer1000)) });
    console.log(`\nmeans over ${ROUNDS} rounds:\n| connections to the endpoint | plaintext req/s | mTLS req/s | ratio | plaintext CPU ms/1000 req | mTLS CPU ms/1000 req | ratio |`);
    console.log(`| --- | --- | --- | --- | --- | --- | --- |`);
    for (const [label, plain, mtls] of [['keep-alive', 'plain', 'mtls'], ['one per request', 'plain-close', 'mtls-close']]) {
      const p = summary(plain);
      const t = summary(mtls);
      console.log(`| ${label} | ${p.rps.toFixed(0)} | ${t.rps.toFixed(0)} | ${(t.rps / p.rps).toFixed(2)}× | ${p.cpu.toFixed(0)} | ${t.cpu.toFixed(0)} | ${(t.cpu / p.cpu).toFixed(2)}× |`);
    }
    const errors = pod.apisixErrors();
    if (errors.length) console.log(`APISIX error lines: ${errors.length}\n${errors.slice(0, 5).join('\n')}`);
  } finally {
    for (const s of servers) s.kill();
    await pod.stop();
    await ca.stop();
    bridge.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
