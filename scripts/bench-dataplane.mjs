#!/usr/bin/env node
// `npm run bench -- dataplane`: what the sidecar costs, on the pod harness (test/support/pod) with
// the real APISIX. Three setups, measured in alternating rounds in the same run:
//   direct   the same two namespaces without capture rules and without a proxy (the baseline);
//   nginx    the injected pod with its capture rules, APISIX's container running a bare nginx
//            `proxy_pass` of the same OpenResty build instead (the floor for an nginx-based proxy);
//   sidecar  the injected pod as it is: capture rules, APISIX 3.x, the agent, a fake istiod serving
//            a synthetic mesh of 1,000 services (scripts/synthetic-mesh.mjs) plus the inbound listener.
//   jwt      (BENCH_JWT=1) the sidecar with istiod's RequestAuthentication (RS256, inline JWKS) and an
//            ALLOW requiring a request principal on the inbound listener; inbound requests carry one
//            valid token (clients reuse their tokens). Only inbound: that is where istiod puts them.
// TCP (unless BENCH_TCP=0): one long TCP stream to a port no listener declares, which the L4 front
// passes through as raw TCP (outbound: the app to a host in the cluster; inbound: a cluster client to
// the app), direct vs sidecar: bytes per second and the proxy's CPU-seconds per GiB.
// Traffic (scripts/dataplane-load.mjs, in the namespaces): HTTP/1.1 keep-alive POSTs of 1 KiB
// answered with 1 KiB; outbound = the app (pod, app uid) calls a service, inbound = a client in the
// cluster namespace calls the app. Each at a fixed open-loop rate and at saturation; CPU time of the
// proxy's processes and of the agent from /proc/PID/stat over the measured window, and the context
// switches of the proxy's processes per request (/proc/PID/status). BENCH_BASELINE_ROOT and
// BENCH_OTHER_ROOT add built trees as the setups `before` and `other` (e.g. with
// scripts/bench-no-front.patch applied: what the L4 front costs). Then the memory
// of APISIX (all processes) and of the agent in a fresh pod with 0, 1,000 and 10,000 services.
//
// The harness is TypeScript under test/ and not part of dist/: it is compiled here, as it is, into
// node_modules/.cache (tsc, incremental), and imported from there.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { generateKeyPairSync, sign } from 'node:crypto';
import { dirname, join } from 'node:path';
import YAML from 'yaml';
import { cla, endpointIp, mesh, serviceHost, serviceVip } from './synthetic-mesh.mjs';
import { CLK_TCK, compileHarness, cpuTicks, follow, pidsIn, readOr, root, spawnIn, stageLoadScript } from './dataplane-pod.mjs';

const env = (name, fallback) => process.env[name] ?? fallback;
const ROUNDS = Number(env('BENCH_ROUNDS', 2));
/**
 * A built checkout of an earlier version (e.g. a git worktree of the commit before a change, after
 * `npm ci && npm run build`): measured as a fourth setup, `before`, in the same rounds, so that a
 * change's cost is read against the same machine at the same time.
 */
const BASELINE_ROOT = process.env.BENCH_BASELINE_ROOT;
/**
 * A second built checkout, measured as `other` in the same rounds (e.g. a measurement-only variant
 * such as APISIX's HTTP listener on the capture ports, to read what a piece costs on its own).
 */
const OTHER_ROOT = process.env.BENCH_OTHER_ROOT;
/** which setups to measure (default all): e.g. `sidecar,before` for a change's cost alone */
const ONLY = env('BENCH_SETUPS', '').split(',').filter(Boolean);
const wanted = (name) => ONLY.length === 0 || ONLY.includes(name);
const RATE = Number(env('BENCH_RATE', 1000));
const CONNECTIONS = Number(env('BENCH_CONNECTIONS', 16));
const WARMUP_MS = Number(env('BENCH_WARMUP_MS', 1500));
const DURATION_MS = Number(env('BENCH_DURATION_MS', 5000));
const SERVICES = Number(env('BENCH_SERVICES', 1000));
const MEMORY_SIZES = env('BENCH_MEMORY_SIZES', '0,1000,10000').split(',').filter(Boolean).map(Number);
const BODY = 1024;
const APP_PORT = 9080;
const APP_UID = 1000;
const PROXY_UID = 1337;
const TARGET = 1; // the service the app calls: svc-1 (VIP 10.96.0.1:80, endpoints 10.0.1.1-3:8080)
const DEADLINE_MS = 15 * 60_000;
/** BENCH_DIAGNOSE=1: also APISIX with its access log (off by default), and a perf profile of APISIX at saturation */
const DIAGNOSE = env('BENCH_DIAGNOSE', '') === '1';
/**
 * BENCH_VARIANTS=a,b: the sidecar with one thing changed, each measured as its own setup in the same
 * rounds (what that thing costs per request): `log` APISIX's access log on (`accessLogFile: /dev/stdout`;
 * off by default); `same` a second pod
 * of the sidecar exactly as it is (the run's own noise between two identical setups); `phases` the
 * sidecar with its Lua phases and pieces timed in CPU time (scripts/bench-lua/, printed at the end);
 * `gc` the sidecar with other settings of LuaJIT's collector (BENCH_LUA_GC below); `one-worker` the
 * sidecar of a pod annotated `proxy.istio.io/config: "concurrency: 1"` (one APISIX worker instead of 2).
 */
const VARIANTS = env('BENCH_VARIANTS', '').split(',').filter(Boolean);
/**
 * BENCH_LUA_HEAP=1: in the memory series, each HTTP worker collects its garbage fully every second
 * and reports its live Lua heap (scripts/bench-lua/apisix_mesh_bench_heap.lua); the PSS figures then
 * hold less garbage too. Without it PSS includes whatever LuaJIT's incremental collector has not
 * reached yet, which differs between builds that allocate differently.
 */
const LUA_HEAP = env('BENCH_LUA_HEAP', '') === '1';
/**
 * BENCH_VARIANTS=gc with BENCH_LUA_GC=<pause>:<stepmul>[,...] (default 200:200, LuaJIT's own): one
 * more sidecar setup per setting, LuaJIT's collector set so in every APISIX process over what the
 * injection configured (scripts/bench-lua/apisix_mesh_bench_gc.lua, which also samples each HTTP
 * worker's Lua heap every 10 ms: its largest is printed after the traffic).
 * BENCH_MEMORY_LUA_GC=<pause>:<stepmul>: the same for the memory series' pod.
 */
const LUA_GC = env('BENCH_LUA_GC', '200:200').split(',');
const MEMORY_LUA_GC = env('BENCH_MEMORY_LUA_GC', '');
/** BENCH_MEMORY_AGENT_LITE=1: the memory series' pod injected with `agentLiteMode: true` (the agent's node in V8's lite mode) */
const MEMORY_AGENT_LITE = env('BENCH_MEMORY_AGENT_LITE', '') === '1';
/** BENCH_MEMORY_CONCURRENCY=<n>: the memory series' pod annotated `proxy.istio.io/config: "concurrency: <n>"` (APISIX's workers) */
const MEMORY_CONCURRENCY = env('BENCH_MEMORY_CONCURRENCY', '');
/** BENCH_HOLD_S=<seconds>: keeps the pods that long after their memory is printed (APISIX's pids too), to read /proc */
const HOLD_S = Number(env('BENCH_HOLD_S', '0'));
const JWT = env('BENCH_JWT', '') === '1';
/** BENCH_RBAC=1: also the sidecar with an AuthorizationPolicy of 10 ALLOW policies × 10 rules inbound, every rule evaluated (with BENCH_BASELINE_ROOT: the same on the baseline tree too, `before-rbac`) */
const RBAC = env('BENCH_RBAC', '') === '1';
/** one-endpoint changes measured at the largest memory size (0: none) */
const ENDPOINT_CHANGES = Number(env('BENCH_ENDPOINT_CHANGES', 10));
/** BENCH_RETRY_BASELINE=1: also the sidecar without route retry policies (outbound then skips the retry location) */
const RETRY_BASELINE = env('BENCH_RETRY_BASELINE', '') === '1';
/**
 * BENCH_MTLS=1: also the sidecar with PeerAuthentication PERMISSIVE on the app's port and a workload
 * certificate from a fake Istio CA; inbound plaintext and inbound mTLS (a mesh client's certificate,
 * Envoy's SNI and ALPN) measured on that same pod, with keep-alive and with a new connection per request.
 */
const MTLS = env('BENCH_MTLS', '') === '1';
const ISTIO = { vcpu: 0.2, mb: 60, addedP90: 0.228, addedP99: 0.298 };
/**
 * BENCH_ROUTES=N (N > 1): outbound requests go to N services in turn (the Host header of each
 * request; each service's route has its own retry policy, so its own access-phase work), all
 * backed by the target's endpoints: what a request costs when more routes are busy than a
 * per-route cache holds (APISIX's serverless plugin keeps compiled functions for 8 routes).
 */
const ROUTES = Number(env('BENCH_ROUTES', 0));
/** BENCH_TCP=0: no TCP stream runs; BENCH_HTTP=0: no HTTP runs (the TCP figures alone) */
const TCP = env('BENCH_TCP', '1') !== '0';
const HTTP = env('BENCH_HTTP', '1') !== '0';
/** the TCP stream's port: declared by no listener of the synthetic mesh (raw pass-through both ways) */
const TCP_PORT = 5001;
const GIB = 1024 ** 3;

process.env.APISIX_RUNTIME ??= '/var/cache/apisix-mesh/apisix-runtime-3.13.0';

// ---------------------------------------------------------------- processes in namespaces
// (the harness compiled, the load script staged, spawnIn/follow: scripts/dataplane-pod.mjs)


async function startServer(script, ns, uid, host, port) {
  const child = spawnIn(ns, uid, [script, 'serve', host, String(port), String(BODY)]);
  await new Promise((resolve, reject) => {
    const exited = follow(child, (m) => m.ready && resolve());
    exited.then(({ code, stderr }) => reject(new Error(`the server on ${host}:${port} exited (${code}): ${stderr}`)));
  });
  return child;
}

/** One load run; the CPU time of `pids()` (by role) over its measured window. */
async function runLoad(script, ns, uid, url, rate, pids, headers = {}, attempt = 1, extra = {}) {
  const child = spawnIn(ns, uid, [script, 'load', JSON.stringify({ url, bodyBytes: BODY, connections: CONNECTIONS, warmupMs: WARMUP_MS, durationMs: DURATION_MS, rate, headers, ...extra })]);
  let before, after, result;
  const { code, stderr } = await follow(child, (m) => {
    if (m.phase === 'measure') before = cpuByRole(pids());
    else if (m.phase === 'end') after = cpuByRole(pids());
    else if (m.result) result = m.result;
  });
  if (!result || !before || !after) {
    const what = `the load on ${url} failed (exit ${code}, ${['before', 'after', 'result'].filter((k, i) => ![before, after, result][i]).join(', ')} missing): ${stderr}`;
    // a run lost on the shared machine is run again once, and says so
    if (attempt === 1) {
      console.log(`${what.slice(0, 300)}; again`);
      return runLoad(script, ns, uid, url, rate, pids, headers, 2, extra);
    }
    throw new Error(what);
  }
  const perThousand = (role) => (result.completed > 0 ? ((after[role] - before[role]) / CLK_TCK / result.completed) * 1000 : NaN);
  const switchesPerRequest = result.completed > 0 ? (after.proxySwitches - before.proxySwitches) / result.completed : NaN;
  return { ...result, proxyCpu: perThousand('proxy'), agentCpu: perThousand('agent'), switchesPerRequest };
}

async function startSink(script, ns, uid) {
  const child = spawnIn(ns, uid, [script, 'sink', '0.0.0.0', String(TCP_PORT)]);
  await new Promise((resolve, reject) => {
    const exited = follow(child, (m) => m.ready && resolve());
    exited.then(({ code, stderr }) => reject(new Error(`the TCP sink in ${ns} exited (${code}): ${stderr}`)));
  });
  return child;
}

/** One TCP stream run; the proxy's CPU-seconds per GiB over its measured window. */
async function runTcpStream(script, ns, uid, host, pids) {
  const child = spawnIn(ns, uid, [script, 'stream', JSON.stringify({ host, port: TCP_PORT, warmupMs: WARMUP_MS, durationMs: DURATION_MS })]);
  let before, after, result;
  const { code, stderr } = await follow(child, (m) => {
    if (m.phase === 'measure') before = cpuByRole(pids());
    else if (m.phase === 'end') after = cpuByRole(pids());
    else if (m.result) result = m.result;
  });
  if (!result || !before || !after) throw new Error(`the TCP stream to ${host}:${TCP_PORT} failed (exit ${code}): ${stderr}`);
  const perGiB = result.bytes > 0 ? ((after.proxy - before.proxy) / CLK_TCK / result.bytes) * GIB : NaN;
  return { ...result, proxyCpuPerGiB: perGiB };
}

// ---------------------------------------------------------------- /proc

/** proxy: nginx/OpenResty processes (master, workers, APISIX's privileged agent); agent: the mesh agent. */
function rolesIn(ns) {
  const roles = { proxy: [], agent: [] };
  for (const pid of pidsIn(ns)) {
    const argv = readOr(`/proc/${pid}/cmdline`, '').split('\0');
    if (argv[0]?.startsWith('nginx: ')) roles.proxy.push(pid);
    else if (argv.some((a) => a.endsWith('dist/cli/main.js')) && argv.includes('agent')) roles.agent.push(pid);
  }
  return roles;
}


/** context switches of a process's main thread (each is a sleep or preemption: wake-ups cost CPU) */
function switches(pid) {
  const status = readOr(`/proc/${pid}/status`, '');
  const n = (field) => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
  return n('voluntary_ctxt_switches') + n('nonvoluntary_ctxt_switches');
}

function cpuByRole(roles) {
  const sum = (pids) => pids.reduce((t, pid) => t + cpuTicks(pid), 0);
  return { proxy: sum(roles.proxy), agent: sum(roles.agent), proxySwitches: roles.proxy.reduce((t, pid) => t + switches(pid), 0) };
}

/** kB from a /proc status-like file */
function kb(text, field) {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** RSS summed over processes (shared pages counted in each) and PSS (each page once: what a cgroup sees). */
function memoryOf(pids) {
  let rss = 0, pss = 0;
  for (const pid of pids) {
    rss += kb(readOr(`/proc/${pid}/status`, ''), 'VmRSS');
    pss += kb(readOr(`/proc/${pid}/smaps_rollup`, ''), 'Pss');
  }
  return { rssMiB: rss / 1024, pssMiB: pss / 1024, processes: pids.length };
}

// ---------------------------------------------------------------- the setups

/**
 * 10 ALLOW policies of 10 path rules each, as istiod writes an AuthorizationPolicy's rules; only the
 * last rule of the last policy matches, so every request is judged against all 100.
 */
function tenByTenPolicy(xds) {
  const policies = {};
  for (let i = 0; i < 10; i++) {
    const permissions = [];
    for (let j = 0; j < 10; j++) permissions.push(i === 9 && j === 9 ? { any: true } : { url_path: { path: { prefix: `/never-${i}-${j}/` } } });
    policies[`ns[bench]-policy[p${i}]-rule[0]`] = { permissions, principals: [{ any: true }] };
  }
  return xds.rbacHttpFilter('ALLOW', policies);
}

function trafficMesh(xds, n, jwt, rbac, mtls) {
  const m = mesh(n);
  // the busy routes' services, on the target's endpoints (the only ones the bench's cluster has)
  for (let i = TARGET + 1; i < TARGET + ROUTES && i < n; i++) m.endpoint[i] = { ...cla(m.endpoint[i].cluster_name, TARGET, 3) };
  m.cluster.push(xds.blackHoleCluster(), xds.inboundPassthroughCluster(), xds.inboundCluster(APP_PORT));
  let inbound = xds.virtualInbound([{ port: APP_PORT, service: xds.fqdn('bench', 'bench'), ...(mtls ? { mtls: 'PERMISSIVE' } : {}) }]);
  if (jwt) {
    const requirePrincipal = xds.rbacHttpFilter('ALLOW', { 'ns[bench]-policy[jwt]-rule[0]': { permissions: [{ any: true }], principals: [xds.requestPrincipals(['*'])] } });
    inbound = xds.withHttpFilters(inbound, [xds.jwtAuthnFilter([{ issuer: jwt.issuer, jwks: jwt.jwks }]), requirePrincipal], (c) => c.filter_chain_match?.destination_port === APP_PORT);
  }
  if (rbac) inbound = xds.withHttpFilters(inbound, [tenByTenPolicy(xds)], (c) => c.filter_chain_match?.destination_port === APP_PORT);
  m.listener.push(xds.virtualOutbound(), inbound);
  return m;
}

/** An RS256 key, its JWKS and one valid token (an hour), for the jwt setup. */
function jwtMaterial() {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const issuer = 'https://issuer.bench';
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const signed = `${b64({ alg: 'RS256', kid: 'k', typ: 'JWT' })}.${b64({ iss: issuer, sub: 'client', exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  const token = `${signed}.${sign('sha256', Buffer.from(signed), privateKey).toString('base64url')}`;
  return { issuer, jwks: JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'k', alg: 'RS256' }] }), headers: { authorization: `Bearer ${token}` } };
}

const endpoints = [0, 1, 2].map((k) => endpointIp(TARGET, k));

/** The mesh with no route retry policy (Istio's `retries: {attempts: 0}` everywhere). */
function withoutRetries(m) {
  for (const rc of m.route) for (const vh of rc.virtual_hosts) for (const r of vh.routes) if (r.route) delete r.route.retry_policy;
  return m;
}

/** A directory APISIX's workers can read a measuring hook (scripts/bench-lua/<module>.lua) from and write their figures to. */
function benchLuaDir(module) {
  const dir = mkdtempSync(`/var/tmp/${module.replace(/_/g, '-')}-`);
  chmodSync(dir, 0o777);
  copyFileSync(join(root, `scripts/bench-lua/${module}.lua`), join(dir, `${module}.lua`));
  chmodSync(join(dir, `${module}.lua`), 0o644);
  return dir;
}

/** The directory of scripts/bench-lua/apisix_mesh_bench_gc.lua set to `setting` (`<pause>:<stepmul>`). */
function gcHookDir(setting) {
  if (!/^\d+:\d+$/.test(setting)) throw new Error(`a LuaJIT collector setting is <pause>:<stepmul>, got ${JSON.stringify(setting)}`);
  const dir = benchLuaDir('apisix_mesh_bench_gc');
  writeFileSync(join(dir, 'gc.conf'), setting);
  return dir;
}

/** The largest Lua heap each HTTP worker's sampler saw (apisix_mesh_bench_gc.lua), MiB, by worker id. */
function luaPeaks(dir) {
  return readdirSync(dir).filter((f) => /^peak-\d+$/.test(f)).sort().map((f) => Number(readFileSync(join(dir, f), 'utf8')) / 1024);
}

async function hold(what, pids) {
  console.log(`holding ${what} for ${HOLD_S} s: APISIX pids ${pids.join(' ')}`);
  await new Promise((r) => setTimeout(r, HOLD_S * 1000));
}

/** APISIX's lua_module_hook replaced by the measuring hook `module` in `dir` (which loads the sidecar's). */
function withBenchHook(h, pod, dir, module) {
  return editApisixConfig(h, pod, (doc) => {
    doc.apisix.extra_lua_path = `${doc.apisix.extra_lua_path};${dir}/?.lua`;
    doc.apisix.lua_module_hook = module;
  });
}

/**
 * The live Lua heap of each HTTP worker after a full collection (BENCH_LUA_HEAP=1), MiB, by worker
 * id: the workers' files are removed, which asks each for a new figure, and read once all are back.
 */
async function luaHeaps(dir, workers) {
  const files = () => readdirSync(dir).filter((n) => /^heap-\d+$/.test(n)).sort();
  for (const n of files()) rmSync(join(dir, n), { force: true });
  const deadline = Date.now() + 120_000;
  while (files().length < workers && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
  return files().map((n) => Number(readFileSync(join(dir, n), 'utf8')) / 1024);
}

/** The workers' cumulative phase timings (`phases` variant): µs of CPU per request for each piece. */
function printPhases(dir) {
  const sum = {};
  for (const name of readdirSync(dir).filter((n) => n.startsWith('phases-'))) {
    for (const [k, [ns, n]] of Object.entries(JSON.parse(readFileSync(join(dir, name), 'utf8')))) {
      sum[k] ??= [0, 0];
      sum[k][0] += ns;
      sum[k][1] += n;
    }
  }
  // every request has one log phase; an access phase that hands over to a retry location (ngx.exec)
  // never returns to its timer, so the access figures are those of requests without the hand-over
  const requests = sum['log (total)']?.[1] ?? 0;
  console.log(`\nLua phases of the \`phases\` setup, CPU time per request over ${requests} requests (all its runs, warm-ups included; nested pieces count in their phase too; each timed piece adds its clock reads):`);
  for (const [k, [ns, n]] of Object.entries(sum).sort((a, b) => b[1][0] - a[1][0])) {
    console.log(`  ${k.padEnd(48)} ${f(ns / 1000 / Math.max(1, requests), 2)} µs per request (${n} calls, ${f(ns / 1000 / Math.max(1, n), 2)} µs per call)`);
  }
}

function bareNginxConf(prefix, podIp) {
  return `daemon off;
worker_processes 2;
pid ${prefix}/nginx.pid;
error_log stderr warn;
events { worker_connections 10240; }
http {
    access_log off;
    client_body_temp_path ${prefix}/client_body_temp;
    proxy_temp_path ${prefix}/proxy_temp;
    upstream outbound_service {
${endpoints.map((ip) => `        server ${ip}:8080;`).join('\n')}
        keepalive 320;
    }
    upstream inbound_app {
        server ${podIp}:${APP_PORT};
        keepalive 320;
    }
    server {
        listen 15001;
        location / { proxy_pass http://outbound_service; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
    server {
        listen 15006;
        location / { proxy_pass http://inbound_app; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_bind 127.0.0.6; }
    }
    server {
        listen 15021;
        location / { return 200 "ready\\n"; }
    }
}
`;
}

/** The injected APISIX config.yaml (an annotation the config container copies) with `edit` applied. */
function editApisixConfig(h, pod, edit) {
  const key = h.annotations.APISIX_CONFIG_ANNOTATION;
  const doc = YAML.parse(pod.metadata.annotations[key]);
  edit(doc);
  pod.metadata.annotations[key] = YAML.stringify(doc);
  return pod;
}

/**
 * The injected pod; `bare` swaps APISIX's command for a bare nginx of the same OpenResty build,
 * `withAccessLog` turns APISIX's access log on (`accessLogFile: /dev/stdout`: what a line per request costs),
 * `noRetry` drops the routes' retry policies (what the hand-over to a retry location costs).
 */
/**
 * The mtls setup's certificates: a fake Istio CA (over TLS on a unix socket the harness relays to
 * istiod's address on 15012) that issues the pod's certificate, and a mesh client's certificate.
 */
async function mtlsMaterial(h) {
  const pki = h.pki.createTestPki();
  const dir = mkdtempSync('/var/tmp/apisix-mesh-bench-mtls-');
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, 'root-cert.pem'), pki.root.pem, { mode: 0o644 });
  writeFileSync(join(dir, 'istio-token'), 'bench-token\n', { mode: 0o644 });
  const ca = new h.ca.FakeIstioCa(pki);
  ca.requiredToken = 'bench-token';
  await ca.start(`unix:${join(dir, 'ca.sock')}`);
  const key = h.pki.rsaKey();
  const leaf = h.pki.issueLeaf(pki.intermediate, h.forge.pki.setRsaPublicKey(key.n, key.e), 'spiffe://cluster.local/ns/bench/sa/client', 24 * 3600);
  return {
    relays: [{ ip: h.harness.ISTIOD_IP, port: 15012, unixPath: join(dir, 'ca.sock') }],
    addCa: (p) => {
      const agent = [...p.spec.containers, ...(p.spec.initContainers ?? [])].find((c) => c.args?.[0] === 'agent');
      agent.args.push('--ca-address=istiod.istio-system.svc:15012', '--xds-server-name=istiod.istio-system.svc', `--root-cert=${join(dir, 'root-cert.pem')}`, `--token-file=${join(dir, 'istio-token')}`);
      return p;
    },
    tls: {
      ca: pki.root.pem,
      cert: h.forge.pki.certificateToPem(leaf) + pki.intermediate.pem,
      key: h.forge.pki.privateKeyToPem(key),
      servername: `outbound_.${APP_PORT}_._.bench.bench.svc.cluster.local`,
      alpn: ['istio-http/1.1', 'istio', 'http/1.1'],
    },
    stop: async () => {
      await ca.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function startMeshPod(h, script, { bare, services, withAccessLog, noRetry, baseline, jwt, rbac, mtls, phases, gc, concurrency }) {
  // not under /tmp: APISIX's container mounts a volume there, and the harness rewrites every /tmp
  // path in its command line into that volume
  const prefix = bare ? mkdtempSync('/var/tmp/apisix-mesh-bench-nginx-') : undefined;
  let pod;
  try {
    if (prefix) {
      chmodSync(prefix, 0o755);
      for (const d of ['client_body_temp', 'proxy_temp']) mkdirSync(join(prefix, d));
      writeFileSync(join(prefix, 'nginx.conf'), bareNginxConf(prefix, h.network.POD_IP));
      spawnSync('chown', ['-R', `${PROXY_UID}:${PROXY_UID}`, prefix]);
    }
    const openresty = join(process.env.APISIX_RUNTIME, 'prefix/openresty/bin/openresty');
    const manifest = h.requirements.podManifest('bench', 'bench', { app: 'bench' }, [{ name: 'app', ports: [APP_PORT] }]);
    if (concurrency !== undefined) manifest.metadata.annotations = { 'proxy.istio.io/config': `concurrency: ${concurrency}` };
    pod = await h.harness.startPod({
      manifest,
      xds: noRetry ? withoutRetries(trafficMesh(h.xds, services, jwt, rbac)) : trafficMesh(h.xds, services, jwt, rbac, mtls),
      clusterAddresses: endpoints,
      ...(mtls ? { clusterRelays: mtls.relays } : {}),
      ...(baseline ? { projectRoot: baseline.root } : {}),
      mutateInjected: mtls
        ? mtls.addCa
        : baseline
        ? (p) => baseline.inject(p)
        : withAccessLog
        ? (p) =>
            editApisixConfig(h, p, (doc) => {
              delete doc.nginx_config.http.enable_access_log;
              doc.nginx_config.http.access_log = '/dev/stdout';
            })
        : phases
        ? (p) => withBenchHook(h, p, phases, 'apisix_mesh_bench_phases')
        : gc
        ? (p) => withBenchHook(h, p, gc, 'apisix_mesh_bench_gc')
        : bare
        ? (p) => {
            const c = p.spec.containers.find((x) => x.name === 'apisix-mesh-apisix');
            // the image's entrypoint runs any other command as it is (`exec "$@"`)
            c.args = [openresty, '-p', prefix, '-c', join(prefix, 'nginx.conf')];
            return p;
          }
        : undefined,
    });
    await pod.kubelet.waitReady(120_000);
    if (!bare && !(await pod.waitSynced(120_000))) throw new Error('APISIX did not catch up with the agent');
    const servers = [await startServer(script, pod.network.cluster, undefined, '0.0.0.0', 8080), await startServer(script, pod.network.pod, APP_UID, '0.0.0.0', APP_PORT)];
    // a bare nginx has no L4 front: its capture ports speak HTTP only
    if (TCP && !bare && !baseline) servers.push(await startSink(script, pod.network.cluster), await startSink(script, pod.network.pod, APP_UID));
    return {
      pod,
      ...(TCP && !bare && !baseline ? { tcp: { outbound: endpoints[0], inbound: h.network.POD_IP } } : {}),
      ns: pod.network.pod,
      cluster: pod.network.cluster,
      outboundUrl: `http://${serviceVip(TARGET)}/`,
      inboundUrl: `http://${h.network.POD_IP}:${APP_PORT}/`,
      ...(jwt ? { dirs: ['inbound'], inboundHeaders: jwt.headers } : {}),
      ...(ROUTES > 1 && !bare && !jwt && !mtls ? { dirs: ['outbound'], loads: { outbound: { extra: { hosts: Array.from({ length: ROUTES }, (_, k) => serviceHost(TARGET + k)) } } } } : {}),
      ...(mtls
        ? {
            dirs: ['inbound', 'inbound-mtls', 'inbound-new', 'inbound-mtls-new'],
            loads: {
              'inbound-mtls': { url: `https://${h.network.POD_IP}:${APP_PORT}/`, extra: { tls: mtls.tls } },
              'inbound-new': { extra: { fresh: true } },
              'inbound-mtls-new': { url: `https://${h.network.POD_IP}:${APP_PORT}/`, extra: { tls: mtls.tls, fresh: true } },
            },
          }
        : {}),
      roles: () => rolesIn(pod.network.pod),
      stop: async () => {
        for (const s of servers) s.kill();
        await pod.stop();
        await mtls?.stop();
        if (prefix) rmSync(prefix, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await pod?.stop();
    if (prefix) rmSync(prefix, { recursive: true, force: true });
    throw err;
  }
}

async function startDirect(h, script) {
  const network = h.network.createPodNetwork();
  try {
    network.addClusterAddresses(...endpoints);
    const servers = [await startServer(script, network.cluster, undefined, '0.0.0.0', 8080), await startServer(script, network.pod, APP_UID, '0.0.0.0', APP_PORT)];
    if (TCP) servers.push(await startSink(script, network.cluster), await startSink(script, network.pod, APP_UID));
    return {
      ...(TCP ? { tcp: { outbound: endpoints[0], inbound: h.network.POD_IP } } : {}),
      ns: network.pod,
      cluster: network.cluster,
      outboundUrl: `http://${endpoints[0]}:8080/`,
      inboundUrl: `http://${h.network.POD_IP}:${APP_PORT}/`,
      roles: () => ({ proxy: [], agent: [] }),
      stop: async () => {
        for (const s of servers) s.kill();
        network.destroy();
      },
    };
  } catch (err) {
    network.destroy();
    throw err;
  }
}

// ---------------------------------------------------------------- measurement and report

const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '-');
const load1 = () => loadavg().map((x) => x.toFixed(2)).join(' ');
/** The best of the rounds: on a shared machine the neighbours only ever add time (min; max for a rate). */
const best = (xs, higherIsBetter = false) => {
  const s = xs.filter(Number.isFinite);
  return s.length ? (higherIsBetter ? Math.max(...s) : Math.min(...s)) : NaN;
};

async function measureSetup(name, setup, script, round, results) {
  for (const dir of setup.dirs ?? ['outbound', 'inbound']) {
    const ns = dir === 'outbound' ? setup.ns : setup.cluster;
    const uid = dir === 'outbound' ? APP_UID : undefined;
    const spec = setup.loads?.[dir] ?? {};
    const url = spec.url ?? (dir === 'outbound' ? setup.outboundUrl : setup.inboundUrl);
    const headers = dir.startsWith('inbound') ? setup.inboundHeaders : undefined;
    let roles = setup.roles();
    const fixed = await runLoad(script, ns, uid, url, RATE, () => roles, headers, 1, spec.extra);
    roles = setup.roles();
    const sat = await runLoad(script, ns, uid, url, 0, () => roles, headers, 1, spec.extra);
    const row = { round, name, dir, fixed, sat, load: load1() };
    results.push(row);
    console.log(
      `round ${round} ${name.padEnd(7)} ${dir.padEnd(16)} @${RATE}/s: ${f(fixed.rps, 0).padStart(5)} req/s p50/p90/p99 ${f(fixed.p50)}/${f(fixed.p90)}/${f(fixed.p99)} ms` +
        ` proxy ${f(fixed.proxyCpu, 3)} agent ${f(fixed.agentCpu, 3)} CPU-s/1k | saturation: ${f(sat.rps, 0).padStart(5)} req/s p50/p90/p99 ${f(sat.p50)}/${f(sat.p90)}/${f(sat.p99)} ms` +
        ` proxy ${f(sat.proxyCpu, 3)} CPU-s/1k, ${f(fixed.switchesPerRequest)} / ${f(sat.switchesPerRequest)} proxy context switches per request${fixed.errors + sat.errors ? ` ERRORS ${fixed.errors + sat.errors}` : ''} | load ${row.load}`,
    );
  }
}

/** One long TCP stream each way (setups with `tcp`: direct and the sidecars with the L4 front). */
async function measureTcp(name, setup, round, script, tcpResults) {
  for (const dir of ['outbound', 'inbound']) {
    const ns = dir === 'outbound' ? setup.ns : setup.cluster;
    const uid = dir === 'outbound' ? APP_UID : undefined;
    const roles = setup.roles();
    const r = await runTcpStream(script, ns, uid, setup.tcp[dir], () => roles);
    tcpResults.push({ round, name, dir, ...r });
    console.log(`round ${round} ${name.padEnd(7)} ${dir.padEnd(8)} one TCP stream: ${f(r.bytesPerSecond / 2 ** 20, 0).padStart(5)} MiB/s, proxy ${f(r.proxyCpuPerGiB, 3)} CPU-s/GiB${r.errors ? ` ERRORS ${r.errors}` : ''} | load ${load1()}`);
  }
}

function summariseTcp(tcpResults) {
  if (!tcpResults.length) return;
  const pick = (name, dir, get, up) => best(tcpResults.filter((r) => r.name === name && r.dir === dir).map(get), up);
  console.log(`
TCP: one long stream through the L4 front's raw pass-through, best of ${ROUNDS} rounds (highest rate, lowest CPU)`);
  console.log('setup   | hop      | MiB/s | proxy CPU-s per GiB');
  for (const name of [...new Set(tcpResults.map((r) => r.name))]) {
    for (const dir of ['outbound', 'inbound']) {
      console.log(`${name.padEnd(7)} | ${dir.padEnd(8)} | ${f(pick(name, dir, (r) => r.bytesPerSecond, true) / 2 ** 20, 0)} | ${f(pick(name, dir, (r) => r.proxyCpuPerGiB), 3)}`);
    }
  }
  if (tcpResults.some((r) => r.name === 'direct') && tcpResults.some((r) => r.name === 'sidecar')) {
    for (const dir of ['outbound', 'inbound']) {
      const ratio = pick('sidecar', dir, (r) => r.bytesPerSecond, true) / pick('direct', dir, (r) => r.bytesPerSecond, true);
      console.log(`  ${dir}: sidecar/direct TCP throughput ${f(ratio)}x`);
    }
  }
}

function summarise(results) {
  const pick = (name, dir, get, higherIsBetter) => best(results.filter((r) => r.name === name && r.dir === dir).map(get), higherIsBetter);
  console.log(`\nsummary: best of ${ROUNDS} rounds (lowest latency and CPU, highest rate; every round is printed above)`);
  console.log('latency in ms; CPU in CPU-seconds per 1,000 requests = vCPU at 1,000 req/s');
  console.log('setup   | hop      | p50 / p90 / p99 @rate | proxy CPU @rate | agent CPU @rate | saturation req/s | sat p50 / p99 | proxy CPU @sat');
  for (const name of [...new Set(results.map((r) => r.name))]) {
    for (const dir of [...new Set(results.filter((r) => r.name === name).map((r) => r.dir))]) {
      if (!results.some((r) => r.name === name && r.dir === dir)) continue;
      const g = (k, up) => pick(name, dir, k, up);
      console.log(
        `${name.padEnd(7)} | ${dir.padEnd(16)} | ${f(g((r) => r.fixed.p50))} / ${f(g((r) => r.fixed.p90))} / ${f(g((r) => r.fixed.p99))} | ${f(g((r) => r.fixed.proxyCpu), 3)} | ${f(g((r) => r.fixed.agentCpu), 4)} | ` +
          `${f(g((r) => r.sat.rps, true), 0)} | ${f(g((r) => r.sat.p50))} / ${f(g((r) => r.sat.p99))} | ${f(g((r) => r.sat.proxyCpu), 3)}`,
      );
    }
  }
  if (results.some((r) => r.name === 'other')) {
    for (const name of ['sidecar', 'before'].filter((n) => results.some((r) => r.name === n))) {
      for (const dir of ['outbound', 'inbound']) {
        const ratio = pick(name, dir, (r) => r.sat.rps, true) / pick('other', dir, (r) => r.sat.rps, true);
        const cpu = pick(name, dir, (r) => r.sat.proxyCpu) / pick('other', dir, (r) => r.sat.proxyCpu);
        console.log(`  ${dir}: ${name}/other saturation throughput ${f(ratio)}x, proxy CPU per request ${f(cpu)}x`);
      }
    }
  }
  if (results.some((r) => r.name === 'before')) {
    for (const dir of ['outbound', 'inbound']) {
      const ratio = pick('sidecar', dir, (r) => r.sat.rps, true) / pick('before', dir, (r) => r.sat.rps, true);
      const cpu = pick('sidecar', dir, (r) => r.sat.proxyCpu) / pick('before', dir, (r) => r.sat.proxyCpu);
      console.log(`  ${dir}: sidecar/before saturation throughput ${f(ratio)}x, proxy CPU per request ${f(cpu)}x`);
    }
  }
  for (const dir of ['outbound', 'inbound']) {
    const ratio = pick('sidecar', dir, (r) => r.sat.rps, true) / pick('nginx', dir, (r) => r.sat.rps, true);
    const cpuRatio = pick('nginx', dir, (r) => r.sat.proxyCpu) / pick('sidecar', dir, (r) => r.sat.proxyCpu);
    console.log(`  ${dir}: sidecar/nginx saturation throughput ${f(ratio)}x, by proxy CPU per request ${f(cpuRatio)}x (aim >= 0.80x)`);
  }
  const added = (k) => ['outbound', 'inbound'].reduce((t, dir) => t + pick('sidecar', dir, (r) => r.fixed[k]) - pick('direct', dir, (r) => r.fixed[k]), 0);
  console.log(`  both hops (outbound + inbound) add p90 ${f(added('p90'), 3)} ms, p99 ${f(added('p99'), 3)} ms over direct at ${RATE} req/s (Istio 1.20, two Envoys with mTLS: +${ISTIO.addedP90} / +${ISTIO.addedP99} ms)`);
  const vcpu = Math.max(...['outbound', 'inbound'].map((dir) => pick('sidecar', dir, (r) => r.fixed.proxyCpu + r.fixed.agentCpu)));
  console.log(`  APISIX + agent at ${RATE} req/s through one hop: ${f(vcpu, 3)} vCPU (worse hop; aim < ${ISTIO.vcpu}; Istio 1.24 Envoy: ${ISTIO.vcpu} vCPU)`);
  if (results.some((r) => r.name === 'mtls')) {
    for (const [tls, plain, how] of [['inbound-mtls', 'inbound', 'keep-alive'], ['inbound-mtls-new', 'inbound-new', 'one connection per request']]) {
      const rate = pick('mtls', tls, (r) => r.sat.rps, true) / pick('mtls', plain, (r) => r.sat.rps, true);
      const cpu = pick('mtls', tls, (r) => r.sat.proxyCpu) / pick('mtls', plain, (r) => r.sat.proxyCpu);
      console.log(`  inbound, ${how}, same pod (PERMISSIVE): mTLS/plaintext saturation throughput ${f(rate)}x, proxy CPU per request ${f(cpu)}x`);
    }
  }
  if (results.some((r) => r.name === 'rbac')) {
    const rate = pick('rbac', 'inbound', (r) => r.sat.rps, true) / pick('sidecar', 'inbound', (r) => r.sat.rps, true);
    const cpu = pick('rbac', 'inbound', (r) => r.sat.proxyCpu) / pick('sidecar', 'inbound', (r) => r.sat.proxyCpu);
    console.log(`  inbound with 10 ALLOW policies x 10 rules (all evaluated) vs none: saturation throughput ${f(rate)}x, proxy CPU per request ${f(cpu)}x (aim: under 10 % lower)`);
  }
  if (results.some((r) => r.name === 'before-rbac')) {
    const rate = pick('rbac', 'inbound', (r) => r.sat.rps, true) / pick('before-rbac', 'inbound', (r) => r.sat.rps, true);
    const cpu = pick('rbac', 'inbound', (r) => r.sat.proxyCpu) / pick('before-rbac', 'inbound', (r) => r.sat.proxyCpu);
    console.log(`  inbound with the same policy, this tree vs BENCH_BASELINE_ROOT: saturation throughput ${f(rate)}x, proxy CPU per request ${f(cpu)}x`);
  }
  if (results.some((r) => r.name === 'jwt')) {
    const rate = pick('jwt', 'inbound', (r) => r.sat.rps, true) / pick('sidecar', 'inbound', (r) => r.sat.rps, true);
    const cpu = pick('jwt', 'inbound', (r) => r.sat.proxyCpu) / pick('sidecar', 'inbound', (r) => r.sat.proxyCpu);
    console.log(`  inbound with RequestAuthentication + ALLOW on the principal vs none: saturation throughput ${f(rate)}x, proxy CPU per request ${f(cpu)}x`);
  }
}

/**
 * The earlier checkout's pod: its agent (staged from that checkout) and its own APISIX config.yaml;
 * agent flags the earlier agent does not know are dropped.
 */
async function baselineOf(h, baselineRoot) {
  const { renderApisixConfig } = await import(join(baselineRoot, 'dist/webhook/injection/apisix-config.js'));
  const { defaultInjectionConfig } = await import(join(baselineRoot, 'dist/webhook/config/injection-config.js'));
  const help = spawnSync(process.execPath, [join(baselineRoot, 'dist/cli/main.js'), 'agent', '--help'], { encoding: 'utf8' }).stdout;
  return {
    root: baselineRoot,
    inject(pod) {
      pod.metadata.annotations[h.annotations.APISIX_CONFIG_ANNOTATION] = renderApisixConfig(defaultInjectionConfig, 2); // an earlier checkout takes the config alone, a later one the pod's workers too
      for (const c of [...(pod.spec.initContainers ?? []), ...pod.spec.containers]) {
        if (c.name === 'apisix-mesh-agent') c.args = c.args.filter((a) => !a.startsWith('--') || help.includes(a.split('=')[0]));
      }
      return pod;
    },
  };
}

/** Where APISIX's processes spend their CPU at saturation (outbound): perf, by object and by symbol. */
async function profileApisix(setup, script) {
  const pids = setup.roles().proxy;
  const data = join(mkdtempSync(join(tmpdir(), 'apisix-mesh-bench-perf-')), 'perf.data');
  try {
    const run = runLoad(script, setup.ns, APP_UID, setup.outboundUrl, 0, () => ({ proxy: [], agent: [] }));
    await new Promise((r) => setTimeout(r, WARMUP_MS));
    // not spawnSync: this process is the pods' kubelet and must keep draining APISIX's output
    const perf = spawn('perf', ['record', '-F', '499', '-g', '-o', data, '-p', pids.join(','), '--', 'sleep', String(Math.max(1, Math.floor(DURATION_MS / 1000) - 1))], { stdio: ['ignore', 'pipe', 'pipe'] });
    const rec = await follow(perf, () => undefined);
    await run;
    if (rec.code !== 0) return console.log(`perf record failed: ${rec.stderr.slice(0, 300)}`);
    const report = (sort, rows) =>
      spawnSync('perf', ['report', '-i', data, '--stdio', '--no-children', '--sort', sort, '-g', 'none', '--percent-limit', '0.4'], { encoding: 'utf8', maxBuffer: 64 << 20 })
        .stdout.split('\n')
        .filter((l) => /^\s+\d/.test(l))
        .slice(0, rows);
    console.log(`\nperf profile of APISIX (${pids.length} processes) at outbound saturation, by object:`);
    for (const l of report('dso', 12)) console.log(`  ${l.trim()}`);
    console.log('by symbol, outside the kernel (percent of all samples):');
    for (const l of report('dso,sym', 200).filter((l) => !l.includes('[kernel')).slice(0, 25)) console.log(`  ${l.trim()}`);
  } finally {
    rmSync(dirname(data), { recursive: true, force: true });
  }
}

/**
 * Until APISIX answers for service `i` (the newest of a push) from its own endpoints, ten times in a
 * row on new connections (so both workers hold it, their routers rebuilt): the revision the harness
 * compares (waitSynced) can match before APISIX has loaded a large push.
 */
async function waitServing(pod, i, timeoutMs = 300_000) {
  const ips = [0, 1, 2].map((k) => endpointIp(i, k));
  pod.network.addClusterAddresses(...ips);
  for (const ip of ips) await pod.cluster.serve(`svc-${i}-${ip}`, ip, 8080);
  const deadline = Date.now() + timeoutMs;
  let inARow = 0;
  while (inARow < 10) {
    if (Date.now() > deadline) throw new Error(`APISIX did not serve svc-${i} within ${timeoutMs} ms`);
    const res = await pod.app().http({ url: `http://${serviceVip(i)}/`, timeoutMs: 5000 });
    inARow = 'status' in res && res.status === 200 && JSON.parse(res.body).name.startsWith(`svc-${i}-`) ? inARow + 1 : 0;
    if (inARow === 0) await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * What one changed endpoint costs at `n` services: istiod pushes the assignment of one service with
 * a new endpoint (istiod's incremental EDS), and the app polls that service until the new endpoint
 * answers. CPU of APISIX's processes and of the agent from /proc, over the same polling without a
 * push as the control (the polling requests cost the same in both).
 */
async function endpointChanges(pod, n) {
  const i = n - 1;
  const name = `outbound|80||${serviceHost(i)}`;
  const roles = rolesIn(pod.network.pod);
  // polls the service until `until(answering endpoint)`; resolves to the number of requests sent
  const poll = async (until, timeoutMs = 60_000) => {
    const start = Date.now();
    for (let polls = 1; ; polls++) {
      const res = await pod.app().http({ url: `http://${serviceVip(i)}/`, timeoutMs: 5000 });
      if ('status' in res && res.status === 200 && until(JSON.parse(res.body).name, polls)) return polls;
      if (Date.now() - start > timeoutMs) {
        const tail = (text) => text.split('\n').slice(-15).join('\n');
        throw new Error(`svc-${i}: the changed endpoint did not serve within ${timeoutMs} ms (last answer: ${JSON.stringify(res).slice(0, 300)})\n` +
          `APISIX's log:\n${tail(pod.apisixLog())}\nthe agent's log:\n${tail(pod.kubelet.logs('apisix-mesh-agent'))}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  const spent = async (work) => {
    const before = cpuByRole(roles);
    const start = Date.now();
    const polls = await work();
    const ms = Date.now() - start;
    await new Promise((r) => setTimeout(r, 300)); // what follows the first answer (the other worker) counts too
    const after = cpuByRole(roles);
    return { ms, polls, proxy: ((after.proxy - before.proxy) * 1000) / CLK_TCK, agent: ((after.agent - before.agent) * 1000) / CLK_TCK };
  };
  const changes = [], control = [];
  for (let k = 0; k < ENDPOINT_CHANGES; k++) {
    // the k-th change replaces the third endpoint by a new one, which answers as svc-<i>-new-<k>
    const ip = endpointIp(i, 3 + k);
    pod.network.addClusterAddresses(ip);
    await pod.cluster.serve(`svc-${i}-new-${k}`, ip, 8080);
    const assignment = cla(name, i, 2);
    assignment.endpoints[0].lb_endpoints.push({ endpoint: { address: { socket_address: { address: ip, port_value: 8080 } } }, health_status: 'HEALTHY', load_balancing_weight: 1 });
    control.push(await spent(() => poll((_who, polls) => polls >= 20)));
    pod.istiod.set('endpoint', assignment);
    changes.push(await spent(() => {
      pod.istiod.push(['endpoint'], [name]);
      return poll((who) => who === `svc-${i}-new-${k}`);
    }));
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const perPoll = median(control.map((c) => c.proxy / c.polls));
  const polling = median(changes.map((c) => c.polls)) * perPoll + 0.3 * median(control.map((c) => c.proxy / ((c.ms + 300) / 1000)));
  console.log(
    `one changed endpoint at ${n} services (${ENDPOINT_CHANGES} changes, medians): push -> the new endpoint answers in ${f(median(changes.map((c) => c.ms)), 0)} ms ` +
      `(each: ${changes.map((c) => f(c.ms, 0)).join(', ')}); CPU per change: APISIX ${f(median(changes.map((c) => c.proxy)), 0)} ms, of which ~${f(polling, 0)} ms is the polling ` +
      `(measured without a push: ${f(perPoll, 1)} ms per request), agent ${f(median(changes.map((c) => c.agent)), 0)} ms; load ${load1()}`,
  );
}

/** `baseline` (BENCH_BASELINE_ROOT): the same series on that tree, after this tree's */
async function memorySeries(h, setups, baseline) {
  console.log(`\nmemory${baseline ? ` of BENCH_BASELINE_ROOT (${baseline.root})` : ''}: a fresh injected pod, the mesh grown by istiod pushes to ${MEMORY_SIZES.join(' / ')} services; each worker's router built by requests first`);
  const heapDir = LUA_HEAP ? benchLuaDir('apisix_mesh_bench_heap') : undefined;
  let memoryGcDir;
  console.log(`services | agent routes / upstreams | APISIX PSS (all processes) | APISIX RSS summed | agent RSS | APISIX + agent (PSS) | load${heapDir ? ' | live Lua heap per worker after a full collection' : ''}${MEMORY_LUA_GC ? ' | largest Lua heap per worker so far' : ''}`);
  const manifest = h.requirements.podManifest('bench', 'bench', { app: 'bench' }, [{ name: 'app', ports: [APP_PORT] }]);
  if (MEMORY_CONCURRENCY) manifest.metadata.annotations = { 'proxy.istio.io/config': `concurrency: ${MEMORY_CONCURRENCY}` };
  const pod = await h.harness.startPod({
    manifest,
    ...(MEMORY_AGENT_LITE ? { config: { ...h.harness.PLAINTEXT_ISTIOD_CONFIG, agentLiteMode: true } } : {}),
    xds: trafficMesh(h.xds, MEMORY_SIZES[0]),
    clusterAddresses: endpoints,
    ...(baseline ? { projectRoot: baseline.root } : {}),
    mutateInjected: (p) => {
      const injected = baseline ? baseline.inject(p) : p;
      if (MEMORY_LUA_GC) return withBenchHook(h, injected, (memoryGcDir ??= gcHookDir(MEMORY_LUA_GC)), 'apisix_mesh_bench_gc');
      return heapDir ? withBenchHook(h, injected, heapDir, 'apisix_mesh_bench_heap') : injected;
    },
  });
  setups.memory = { stop: () => pod.stop() }; // stopped by the bench's cleanup too
  const rows = [];
  try {
    await pod.kubelet.waitReady(120_000);
    if (!(await pod.waitSynced(120_000))) throw new Error('APISIX did not catch up with the agent');
    for (const [k, n] of MEMORY_SIZES.entries()) {
      if (k > 0) {
        pod.istiod.setAll(trafficMesh(h.xds, n));
        await pod.push(['cluster', 'endpoint', 'listener', 'route'], { timeoutMs: 300_000 });
      }
      if (n > 0) await waitServing(pod, n - 1);
      await new Promise((r) => setTimeout(r, 2000));
      const objects = await pod.agentObjects();
      if (process.env.BENCH_DEBUG) console.error(n, objects, pod.kubelet.logs('apisix-mesh-agent').slice(-1500));
      const roles = rolesIn(pod.network.pod);
      const apisix = memoryOf(roles.proxy);
      const agent = memoryOf(roles.agent);
      rows.push({ n, apisix, agent });
      // which APISIX process holds what: each worker and the privileged agent keep their own copy
      const each = roles.proxy.map((pid) => `${readOr(`/proc/${pid}/cmdline`, '').split('\0')[0].replace(/^nginx: | process.*$/g, '')} ${f(memoryOf([pid]).pssMiB, 0)}`);
      const heaps = heapDir ? ` | ${(await luaHeaps(heapDir, roles.proxy.filter((pid) => readOr(`/proc/${pid}/cmdline`, '').startsWith('nginx: worker')).length)).map((m) => `${f(m, 1)} MiB`).join(' / ')}` : '';
      const peaks = memoryGcDir ? ` | ${luaPeaks(memoryGcDir).map((m) => `${f(m, 1)} MiB`).join(' / ')}` : '';
      if (HOLD_S) await hold(`${n} services`, roles.proxy);
      console.log(`${String(n).padStart(8)} | ${objects.routes} / ${objects.upstreams} | ${f(apisix.pssMiB, 1)} MiB (${each.join(', ')}) | ${f(apisix.rssMiB, 1)} MiB | ${f(agent.rssMiB, 1)} MiB | ${f(apisix.pssMiB + agent.pssMiB, 1)} MiB | ${load1()}${heaps}${peaks}`);
    }
    const largest = MEMORY_SIZES[MEMORY_SIZES.length - 1];
    if (!baseline && largest > 0 && ENDPOINT_CHANGES > 0) await endpointChanges(pod, largest);
  } finally {
    await pod.stop();
    delete setups.memory;
  }
  const at = rows.find((r) => r.n === 1000);
  if (at) console.log(`  at 1,000 services: APISIX + agent ${f(at.apisix.pssMiB + at.agent.pssMiB, 1)} MiB PSS (aim < ${ISTIO.mb} MB; Istio 1.24 Envoy: ${ISTIO.mb} MB)`);
}

async function main() {
  const loadHarness = compileHarness('apisix-mesh-bench-dataplane');
  const h = {
    harness: await loadHarness('test/support/pod/pod-harness.js'),
    requirements: await loadHarness('test/support/pod/requirements.js'),
    network: await loadHarness('test/support/pod/network.js'),
    xds: await loadHarness('test/support/istio-xds.js'),
    annotations: await loadHarness('webhook/injection/annotations.js'),
    ...(MTLS ? { ca: await loadHarness('test/support/fake-istio-ca.js'), pki: await loadHarness('test/support/test-pki.js'), forge: (await import('node-forge')).default } : {}),
  };
  const missing = h.requirements.missingForPod();
  if (missing) {
    console.log(`skipped: ${missing}`);
    return;
  }
  const { script, remove } = stageLoadScript('apisix-mesh-bench-load-');
  const setups = {};
  const cleanup = async () => {
    for (const s of Object.values(setups)) await s.stop().catch(() => undefined);
    remove();
  };
  const watchdog = setTimeout(() => {
    console.error(`the bench did not end within ${DEADLINE_MS / 60_000} minutes: stopping`);
    cleanup().finally(() => process.exit(1));
  }, DEADLINE_MS);
  // `on`, not `once`: a second signal while cleaning up must not kill this process half-way
  let stopping = false;
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      if (stopping) return;
      stopping = true;
      console.error(`${sig}: stopping the pods and namespaces`);
      cleanup().finally(() => process.exit(1));
    });
  }
  try {
    console.log(
      `${cpus().length} cores, load average ${load1()}, node ${process.version}; 1 KiB POST -> 1 KiB answer, keep-alive, ` +
        `${CONNECTIONS} connections, ${WARMUP_MS} ms warm-up + ${DURATION_MS} ms measured per run, ${ROUNDS} alternating rounds; sidecar mesh: ${SERVICES} services` +
        (ROUTES > 1 ? `; outbound only, round-robin over ${ROUTES} services' routes` : ''),
    );
    if (wanted('direct')) setups.direct = await startDirect(h, script);
    if (wanted('nginx')) setups.nginx = await startMeshPod(h, script, { bare: true, services: 0 });
    setups.sidecar = await startMeshPod(h, script, { bare: false, services: SERVICES });
    if (JWT) setups.jwt = await startMeshPod(h, script, { bare: false, services: SERVICES, jwt: jwtMaterial() });
    if (RBAC) setups.rbac = await startMeshPod(h, script, { bare: false, services: SERVICES, rbac: true });
    if (MTLS) setups.mtls = await startMeshPod(h, script, { bare: false, services: SERVICES, mtls: await mtlsMaterial(h) });
    if (RETRY_BASELINE) setups['no-retry'] = await startMeshPod(h, script, { bare: false, services: SERVICES, noRetry: true });
    if (DIAGNOSE || VARIANTS.includes('log')) setups.log = await startMeshPod(h, script, { bare: false, services: SERVICES, withAccessLog: true });
    if (VARIANTS.includes('same')) setups.same = await startMeshPod(h, script, { bare: false, services: SERVICES });
    if (VARIANTS.includes('one-worker')) setups['one-worker'] = await startMeshPod(h, script, { bare: false, services: SERVICES, concurrency: 1 });
    const phases = VARIANTS.includes('phases') ? benchLuaDir('apisix_mesh_bench_phases') : undefined;
    if (phases) setups.phases = await startMeshPod(h, script, { bare: false, services: SERVICES, phases });
    if (VARIANTS.includes('gc')) {
      for (const setting of LUA_GC) {
        const gc = gcHookDir(setting);
        setups[`gc-${setting}`] = { ...(await startMeshPod(h, script, { bare: false, services: SERVICES, gc })), gcDir: gc };
      }
    }
    if (BASELINE_ROOT) setups.before = await startMeshPod(h, script, { bare: false, services: SERVICES, baseline: await baselineOf(h, BASELINE_ROOT) });
    if (OTHER_ROOT) setups.other = await startMeshPod(h, script, { bare: false, services: SERVICES, baseline: await baselineOf(h, OTHER_ROOT) });
    // the policy's cost before and after a change to how APISIX runs it, in the same rounds
    if (BASELINE_ROOT && RBAC) setups['before-rbac'] = await startMeshPod(h, script, { bare: false, services: SERVICES, rbac: true, baseline: await baselineOf(h, BASELINE_ROOT) });
    const results = [];
    const tcpResults = [];
    // APISIX's PSS after each round of each setup: its largest is what a memory limit must hold
    // (LuaJIT keeps the pages of its largest heap; a single reading depends on when a cycle ended)
    const largestPss = {};
    for (let round = 1; round <= ROUNDS; round++) {
      for (const name of Object.keys(setups)) {
        if (HTTP) await measureSetup(name, setups[name], script, round, results);
        if (setups[name].tcp) await measureTcp(name, setups[name], round, script, tcpResults);
        if (name !== 'nginx' && setups[name].roles) largestPss[name] = Math.max(largestPss[name] ?? 0, memoryOf(setups[name].roles().proxy).pssMiB);
      }
    }
    if (DIAGNOSE) await profileApisix(setups.sidecar, script);
    if (phases) {
      await new Promise((r) => setTimeout(r, 1500));
      printPhases(phases);
    }
    for (const name of Object.keys(setups).filter((n) => n !== 'nginx' && setups[n].roles)) {
      const apisix = memoryOf(setups[name].roles().proxy);
      const agent = memoryOf(setups[name].roles().agent);
      const peaks = setups[name].gcDir ? `; largest Lua heap per worker ${luaPeaks(setups[name].gcDir).map((m) => `${f(m, 1)} MiB`).join(' / ')}` : '';
      console.log(`${name} pod after the traffic (${SERVICES} services): APISIX ${f(apisix.pssMiB, 1)} MiB PSS (largest after a round: ${f(largestPss[name] ?? 0, 1)}) / ${f(apisix.rssMiB, 1)} MiB RSS summed, agent ${f(agent.rssMiB, 1)} MiB RSS${peaks}`);
    }
    if (HOLD_S && (HTTP || TCP)) await hold('the traffic setups', Object.keys(setups).filter((n) => setups[n].roles).flatMap((n) => setups[n].roles().proxy));
    for (const name of ['sidecar', 'jwt', 'mtls'].filter((n) => setups[n])) {
      const errors = setups[name].pod.apisixErrors();
      if (errors.length) console.log(`${name}: APISIX logged ${errors.length} error lines, first: ${errors[0].slice(0, 300)}`);
    }
    if (results.length) summarise(results);
    summariseTcp(tcpResults);
    for (const name of Object.keys(setups)) {
      await setups[name].stop();
      delete setups[name];
    }
    if (MEMORY_SIZES.length) await memorySeries(h, setups);
    if (MEMORY_SIZES.length && BASELINE_ROOT) await memorySeries(h, setups, await baselineOf(h, BASELINE_ROOT));
    console.log(`\nload average at the end: ${load1()}`);
    if (results.some((r) => r.fixed.errors + r.sat.errors > 0) || tcpResults.some((r) => r.errors > 0)) process.exitCode = 1;
  } finally {
    clearTimeout(watchdog);
    await cleanup();
  }
}

await main();
process.exit(process.exitCode ?? 0);
