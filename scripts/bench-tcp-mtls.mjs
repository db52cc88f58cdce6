#!/usr/bin/env node
// `npm run bench -- tcp-mtls`: what Istio's inbound mTLS in front of a TCP port costs on the sidecar
// (docs/mtls.md "Inbound mTLS in front of TCP ports"), on the pod harness with the real APISIX and a
// pod certificate from a fake Istio CA. One TCP port of the app under PeerAuthentication PERMISSIVE,
// so the same port is measured both ways in alternating rounds of the same run:
//   plain   a cluster client's plaintext: the L4 front → the app (the baseline);
//   mtls    a mesh client's TLS (a workload certificate of the mesh, Istio's ALPN): the L4 front →
//           its stream TLS listener on loopback (handshake, peer checks) → the app;
//   mtls-resumed  the same, each client loop offering its last TLS session (Envoy keeps one per
//           cluster): new connections only (a stream is one handshake whatever);
//   http-mtls, http-mtls-resumed  a reference for the handshake's cost: the same new connections to an
//           HTTP port of the same pod under PERMISSIVE (Istio's HTTP ALPN), terminated by APISIX's HTTP
//           TLS listener (15082), whose 1 KiB that is no HTTP request gets a 400 and the close.
// Two loads from the cluster namespace (scripts/dataplane-load.mjs): one long stream written as fast
// as it goes (bytes per second, APISIX's CPU-seconds per GiB), and new connections, each writing
// 1 KiB then closing, over BENCH_CONNECTIONS loops (connections per second, APISIX's CPU per 1,000
// connections: for mtls, one full handshake each, an RSA 2048 signature among it, as the test PKI's
// and Istio's keys are; for mtls-resumed, a resumed one where the server took the session).
// BENCH_KEY_TYPE=ecdsa: the pod's workload key (agent --key-type) and the mesh client's are ECDSA
// P-256 instead of RSA 2048 (docs/mtls.md "Key type"); the CA's chain stays RSA as Istio's default CA is.
//
// The harness is TypeScript under test/: compiled here into node_modules/.cache, as bench-mtls does.
import { rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { apisixTicks, CLK_TCK, compileHarness, follow, root, spawnIn, stageLoadScript } from './dataplane-pod.mjs';

const env = (name, fallback) => process.env[name] ?? fallback;
const ROUNDS = Number(env('BENCH_ROUNDS', 2));
const CONNECTIONS = Number(env('BENCH_CONNECTIONS', 4));
const WARMUP_MS = Number(env('BENCH_WARMUP_MS', 1500));
const DURATION_MS = Number(env('BENCH_DURATION_MS', 5000));
const APP_UID = 1000;
const NS = 'bench';
const POD_NAME = 'db';
const CLIENT_ID = `spiffe://cluster.local/ns/${NS}/sa/client`;
const PORT = 5001;
const HTTP_PORT = 5002;
const KEY_TYPE = env('BENCH_KEY_TYPE', 'rsa');
if (!['rsa', 'ecdsa'].includes(KEY_TYPE)) throw new Error(`BENCH_KEY_TYPE: rsa or ecdsa, got ${KEY_TYPE}`);
process.env.APISIX_RUNTIME ??= '/var/cache/apisix-mesh/apisix-runtime-3.13.0';






/** One load (`stream` or `connect`) from the cluster namespace; APISIX's CPU seconds over its window. */
async function runLoad(script, podNs, clusterNs, mode, args) {
  const child = spawnIn(clusterNs, undefined, [script, mode, JSON.stringify({ warmupMs: WARMUP_MS, durationMs: DURATION_MS, ...args })]);
  let before, after, result;
  const { code, stderr } = await follow(child, (m) => {
    if (m.phase === 'measure') before = apisixTicks(podNs);
    else if (m.phase === 'end') after = apisixTicks(podNs);
    else if (m.result) result = m.result;
  });
  if (!result || before === undefined || after === undefined) throw new Error(`the ${mode} load failed (exit ${code}): ${stderr}`);
  return { ...result, cpuSeconds: (after - before) / CLK_TCK };
}

async function main() {
  const load = compileHarness('apisix-mesh-bench-tcp-mtls');
  const [harness, meshCa, xds, pkiLib, caLib, requirements, network] = await Promise.all([
    load('test/support/pod/pod-harness.js'), load('test/support/pod/mesh-ca.js'), load('test/support/istio-xds.js'),
    load('test/support/test-pki.js'), load('test/support/fake-istio-ca.js'), load('test/support/pod/requirements.js'), load('test/support/pod/network.js'),
  ]);
  const { dir, script } = stageLoadScript('apisix-mesh-bench-tcp-mtls-');
  const pki = pkiLib.createTestPki();
  const client = meshCa.meshLeaf(pki.intermediate, CLIENT_ID, 3600, KEY_TYPE);
  const tls = { ca: pki.root.pem, cert: client.cert, key: client.key, servername: `outbound_.${PORT}_._.${xds.fqdn(POD_NAME, NS)}`, alpn: ['istio-peer-exchange', 'istio'] };

  const ca = new caLib.FakeIstioCa(pki);
  ca.requiredToken = meshCa.TEST_CA_TOKEN;
  const bridge = await meshCa.unixBridge(join(dir, 'ca.sock'), await ca.start());
  const m = new xds.MeshResources();
  m.cluster(xds.passthroughCluster()).cluster(xds.blackHoleCluster()).cluster(xds.inboundPassthroughCluster()).cluster(xds.inboundCluster(PORT)).cluster(xds.inboundCluster(HTTP_PORT));
  m.listener(xds.virtualInbound([
    { port: PORT, service: xds.fqdn(POD_NAME, NS), protocol: 'tcp', mtls: 'PERMISSIVE' },
    { port: HTTP_PORT, service: xds.fqdn(POD_NAME, NS), mtls: 'PERMISSIVE' },
  ])).listener(xds.virtualOutbound());
  const httpTls = { ...tls, servername: `outbound_.${HTTP_PORT}_._.${xds.fqdn(POD_NAME, NS)}`, alpn: ['istio-http/1.1', 'istio', 'http/1.1'] };

  const pod = await harness.startPod({
    manifest: requirements.podManifest(POD_NAME, NS, { app: POD_NAME }, [{ name: POD_NAME, ports: [PORT, HTTP_PORT] }]),
    xds: m.resources,
    mutateInjected: meshCa.withTestCa(pki.root.pem, KEY_TYPE),
  });
  let sink;
  try {
    await pod.cluster.relay(harness.ISTIOD_IP, 15012, join(dir, 'ca.sock'));
    await pod.kubelet.waitReady(60_000);
    sink = spawnIn(pod.network.pod, APP_UID, [script, 'sink', '0.0.0.0', String(PORT)]);
    await new Promise((resolve, reject) => {
      const exited = follow(sink, (msg) => msg.ready && resolve());
      exited.then(({ code, stderr }) => reject(new Error(`the sink exited (${code}): ${stderr}`)));
    });
    // the first connections wait for the identity in APISIX's stream workers
    for (let i = 0; ; i++) {
      const res = await pod.cluster.tcp(network.POD_IP, PORT, [{ send: 'x', want: 0 }], 3000, undefined, tls);
      if (res.peerSan && !res.error) break;
      if (i > 100) throw new Error(`no mTLS connection: ${JSON.stringify(res).slice(0, 200)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const setups = { plain: {}, mtls: { tls } };
    const results = { stream: { plain: [], mtls: [] }, connect: { plain: [], mtls: [], 'mtls-resumed': [], 'http-mtls': [], 'http-mtls-resumed': [] } };
    const connectOnly = {
      'mtls-resumed': { port: PORT, tls, resume: true },
      'http-mtls': { port: HTTP_PORT, tls: httpTls },
      'http-mtls-resumed': { port: HTTP_PORT, tls: httpTls, resume: true },
    };
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, extra] of Object.entries(connectOnly)) {
        const c = await runLoad(script, pod.network.pod, pod.network.cluster, 'connect', { host: network.POD_IP, concurrency: CONNECTIONS, ...extra });
        results.connect[name].push({ rps: c.rps, cpuPer1000: (c.cpuSeconds / c.completed) * 1e6, errors: c.errors });
        console.log(`round ${round + 1} ${name} connections ${c.rps.toFixed(0).padStart(5)}/s  APISIX ${((c.cpuSeconds / c.completed) * 1e6).toFixed(0)} CPU-ms/1000  resumed ${c.resumed} of ${c.completed}  errors ${c.errors}`);
      }
      for (const [name, extra] of Object.entries(setups)) {
        const s = await runLoad(script, pod.network.pod, pod.network.cluster, 'stream', { host: network.POD_IP, port: PORT, ...extra });
        const gib = s.bytes / 2 ** 30;
        results.stream[name].push({ mibps: s.bytesPerSecond / 2 ** 20, cpuPerGib: s.cpuSeconds / gib, errors: s.errors });
        const c = await runLoad(script, pod.network.pod, pod.network.cluster, 'connect', { host: network.POD_IP, port: PORT, concurrency: CONNECTIONS, ...extra });
        results.connect[name].push({ rps: c.rps, cpuPer1000: (c.cpuSeconds / c.completed) * 1e6, errors: c.errors });
        console.log(`round ${round + 1} ${name.padEnd(6)} stream ${(s.bytesPerSecond / 2 ** 20).toFixed(0).padStart(5)} MiB/s  APISIX ${(s.cpuSeconds / gib).toFixed(2)} CPU-s/GiB  errors ${s.errors} | connections ${c.rps.toFixed(0).padStart(5)}/s  APISIX ${((c.cpuSeconds / c.completed) * 1e6).toFixed(0)} CPU-ms/1000  errors ${c.errors}`);
      }
    }
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const of = (kind, name, key) => mean(results[kind][name].map((r) => r[key]));
    const ratio = (a, b) => `${(a / b).toFixed(2)}×`;
    console.log(`\n${KEY_TYPE} workload keys, means over ${ROUNDS} rounds (load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}):`);
    console.log('| load | plaintext through the front | mTLS through the stream TLS listener | ratio |');
    console.log('| --- | --- | --- | --- |');
    console.log(`| one stream, MiB/s | ${of('stream', 'plain', 'mibps').toFixed(0)} | ${of('stream', 'mtls', 'mibps').toFixed(0)} | ${ratio(of('stream', 'mtls', 'mibps'), of('stream', 'plain', 'mibps'))} |`);
    console.log(`| one stream, APISIX CPU-s per GiB | ${of('stream', 'plain', 'cpuPerGib').toFixed(2)} | ${of('stream', 'mtls', 'cpuPerGib').toFixed(2)} | ${ratio(of('stream', 'mtls', 'cpuPerGib'), of('stream', 'plain', 'cpuPerGib'))} |`);
    console.log(`| new connections (${CONNECTIONS} loops), per second | ${of('connect', 'plain', 'rps').toFixed(0)} | ${of('connect', 'mtls', 'rps').toFixed(0)} | ${ratio(of('connect', 'mtls', 'rps'), of('connect', 'plain', 'rps'))} |`);
    console.log(`| new connections, APISIX CPU-ms per 1,000 | ${of('connect', 'plain', 'cpuPer1000').toFixed(0)} | ${of('connect', 'mtls', 'cpuPer1000').toFixed(0)} | ${ratio(of('connect', 'mtls', 'cpuPer1000'), of('connect', 'plain', 'cpuPer1000'))} |`);
    console.log(`| new connections, TLS session resumed, per second | ${of('connect', 'plain', 'rps').toFixed(0)} | ${of('connect', 'mtls-resumed', 'rps').toFixed(0)} | ${ratio(of('connect', 'mtls-resumed', 'rps'), of('connect', 'plain', 'rps'))} |`);
    console.log(`| new connections, TLS session resumed, APISIX CPU-ms per 1,000 | ${of('connect', 'plain', 'cpuPer1000').toFixed(0)} | ${of('connect', 'mtls-resumed', 'cpuPer1000').toFixed(0)} | ${ratio(of('connect', 'mtls-resumed', 'cpuPer1000'), of('connect', 'plain', 'cpuPer1000'))} |`);
    console.log(`\nreference, the same new connections on APISIX's HTTP mTLS listener (each answered 400): full handshake ${of('connect', 'http-mtls', 'rps').toFixed(0)}/s, ${of('connect', 'http-mtls', 'cpuPer1000').toFixed(0)} APISIX CPU-ms per 1,000 (TCP listener ${of('connect', 'mtls', 'cpuPer1000').toFixed(0)}); resumed ${of('connect', 'http-mtls-resumed', 'rps').toFixed(0)}/s, ${of('connect', 'http-mtls-resumed', 'cpuPer1000').toFixed(0)} (TCP listener ${of('connect', 'mtls-resumed', 'cpuPer1000').toFixed(0)})`);
    const errors = pod.apisixErrors();
    if (errors.length) console.log(`APISIX error lines: ${errors.length}\n${errors.slice(0, 5).join('\n')}`);
    if ([...Object.values(results.stream), ...Object.values(results.connect)].flat().some((r) => r.errors > 0)) process.exitCode = 1;
  } finally {
    sink?.kill();
    await pod.stop();
    await ca.stop();
    bridge.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
