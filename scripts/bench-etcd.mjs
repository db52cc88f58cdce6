#!/usr/bin/env node
// `npm run bench -- etcd`: the emulator (`apisix-mesh etcd`, its own process) against a real etcd
// (Debian etcd-server, started here on random loopback ports with a temporary data dir), same
// machine, same client, same data, one after the other:
//   1. readdir of a 1,000-key prefix with ~1 KiB values (APISIX's startup/reload read), req/s
//   2. single-key range, req/s
//   3. latency from a write to the watch event, with 1 and with 100 watchers on /apisix/
// The client is a keep-alive Node HTTP client with 16 connections (wrk is not installed here);
// it only counts bytes, so its cost is the same for both servers.
//   4. hostile local clients (scripts/etcd-hostile-clients.mjs): never-reading watchers during
//      large puts, watch bodies that never end, whitespace variants of one large readdir, and the
//      agent under never-reading watchers during xDS pushes; peak RSS and /health latency.
// BENCH_ETCD_PARTS=throughput,hostile picks parts; BENCH_ETCD_BASELINE_DIST=<dir> adds an older
// build's dist/ (e.g. a checkout of the previous commit) as a column of the hostile table.
import { spawn } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as hostile from './etcd-hostile-clients.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const DURATION_MS = Number(process.env.BENCH_DURATION_MS ?? 5000);
const CONNECTIONS = 16;
const b64 = (s) => Buffer.from(s).toString('base64');

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => res(p));
    });
  });
}

async function waitHealthy(url, proc) {
  for (let i = 0; i < 200; i++) {
    try {
      const r = await fetch(`${url}/version`);
      if (r.ok) return;
    } catch {}
    if (proc.exitCode !== null) throw new Error(`${url} exited early`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not come up`);
}

async function startEtcd() {
  const dir = mkdtempSync(join(tmpdir(), 'bench-etcd-'));
  const [c, p] = [await freePort(), await freePort()];
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD_')));
  const proc = spawn('etcd', ['--name', 'bench', '--data-dir', dir,
    '--listen-client-urls', `http://127.0.0.1:${c}`, '--advertise-client-urls', `http://127.0.0.1:${c}`,
    '--listen-peer-urls', `http://127.0.0.1:${p}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${p}`,
    '--initial-cluster', `bench=http://127.0.0.1:${p}`, '--log-level', 'error'], { env, stdio: 'ignore' });
  const url = `http://127.0.0.1:${c}`;
  await waitHealthy(url, proc);
  return { name: 'etcd 3.4 (real)', url, pid: proc.pid, stop: async () => { proc.kill('SIGTERM'); await new Promise((r) => proc.once('exit', r)); rmSync(dir, { recursive: true, force: true }); } };
}

async function startEmulator(dist = join(root, 'dist')) {
  const port = await freePort();
  const proc = spawn(process.execPath, [join(dist, 'cli/main.js'), 'etcd', '--listen', `127.0.0.1:${port}`, '--log-level', 'error'], { stdio: 'ignore' });
  const url = `http://127.0.0.1:${port}`;
  await waitHealthy(url, proc);
  return { name: 'apisix-mesh etcd', url, pid: proc.pid, stop: async () => { proc.kill('SIGTERM'); await new Promise((r) => proc.once('exit', r)); } };
}

const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });

function post(url, path, body) {
  const data = typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(url + path, { method: 'POST', agent, headers: { 'Content-Length': Buffer.byteLength(data) } }, (res) => {
      let bytes = 0;
      const chunks = [];
      res.on('data', (c) => { bytes += c.length; if (bytes < 4096) chunks.push(c); });
      res.on('end', () => resolve({ status: res.statusCode, bytes, head: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(data);
  });
}

/** The exact body the bench scripts in test/fixtures/etcd-gateway/bench load: 1000 × ~1 KiB. */
async function load(url, n = 1000, size = 1024) {
  for (let i = 1; i <= n; i++) {
    const v = { id: String(i), uri: `/r${i}`, upstream: { type: 'roundrobin', nodes: { '127.0.0.1:1980': 1 } }, create_time: 1700000000, update_time: 1700000000, desc: '' };
    v.desc = 'x'.repeat(Math.max(0, size - JSON.stringify(v).length));
    const r = await post(url, '/v3/kv/put', { key: b64(`/apisix/routes/${i}`), value: b64(JSON.stringify(v)) });
    if (r.status !== 200) throw new Error(`load failed: ${r.status}`);
  }
}

const readdirBody = JSON.stringify({ key: b64('/apisix/routes'), range_end: b64('/apisix/routet'), limit: 0, revision: 0, sort_order: 0, sort_target: 0, serializable: false, keys_only: false, count_only: false, min_mod_revision: 0, max_mod_revision: 0, min_create_revision: 0, max_create_revision: 0 });
const singleBody = JSON.stringify({ key: b64('/apisix/routes/1') });

async function throughput(url, body, expectBytes) {
  // warm-up, then a fixed duration with CONNECTIONS requests in flight
  const until = (t) => async () => { while (Date.now() < t) { const r = await post(url, '/v3/kv/range', body); if (r.status !== 200 || r.bytes < expectBytes) throw new Error(`bad answer ${r.status} ${r.bytes}`); } };
  await Promise.all(Array.from({ length: CONNECTIONS }, until(Date.now() + 1000)));
  const lat = [];
  let count = 0;
  const end = Date.now() + DURATION_MS;
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: CONNECTIONS }, async () => {
    while (Date.now() < end) {
      const t0 = process.hrtime.bigint();
      const r = await post(url, '/v3/kv/range', body);
      if (r.status !== 200 || r.bytes < expectBytes) throw new Error(`bad answer ${r.status} ${r.bytes}`);
      lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
      count++;
    }
  }));
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  lat.sort((a, b) => a - b);
  return { rps: count / secs, p50: lat[Math.floor(lat.length * 0.5)], p99: lat[Math.floor(lat.length * 0.99)] };
}

function openWatch(url, onEvent) {
  const data = JSON.stringify({ create_request: { key: b64('/apisix/'), range_end: b64('/apisix0') } });
  let created;
  const ready = new Promise((r) => (created = r));
  const req = http.request(url + '/v3/watch', { method: 'POST', agent: false, headers: { 'Content-Length': data.length } }, (res) => {
    let buf = '';
    res.setEncoding('utf8');
    res.on('data', (c) => {
      buf += c;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const m = JSON.parse(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (m.result?.created) created();
        else if (m.result?.events) onEvent(Number(m.result.header.revision));
      }
    });
  });
  req.on('error', () => {});
  req.end(data);
  return { ready, close: () => req.destroy() };
}

async function watchLatency(url, watchers, writes = 200) {
  // Events may arrive before the put's answer: record arrival times per revision, match after.
  const arrivals = new Map(); // revision → [hrtime ns]
  const waiters = new Map(); // revision → resolve
  const ws = Array.from({ length: watchers }, () => openWatch(url, (rev) => {
    const list = arrivals.get(rev) ?? [];
    list.push(process.hrtime.bigint());
    arrivals.set(rev, list);
    if (list.length === watchers) waiters.get(rev)?.();
  }));
  await Promise.all(ws.map((w) => w.ready));
  const allDone = [];
  const perWatcher = [];
  for (let i = 0; i < writes; i++) {
    const t0 = process.hrtime.bigint();
    const r = await post(url, '/v3/kv/put', { key: b64('/apisix/routes/bench'), value: b64(`{"i":${i}}`) });
    const rev = Number(JSON.parse(r.head).header.revision);
    if ((arrivals.get(rev)?.length ?? 0) < watchers) {
      await Promise.race([new Promise((res) => waiters.set(rev, res)), new Promise((res) => setTimeout(res, 5000))]);
    }
    const times = arrivals.get(rev) ?? [];
    arrivals.delete(rev);
    waiters.delete(rev);
    if (times.length < watchers) { allDone.push(NaN); continue; }
    const ms = times.map((t) => Number(t - t0) / 1e6);
    perWatcher.push(...ms);
    allDone.push(Math.max(...ms));
  }
  for (const w of ws) w.close();
  const sorted = (a) => a.filter((x) => !Number.isNaN(x)).sort((x, y) => x - y);
  const all = sorted(allDone);
  const one = sorted(perWatcher);
  return { p50All: all[Math.floor(all.length * 0.5)], p99All: all[Math.floor(all.length * 0.99)], p50One: one[Math.floor(one.length * 0.5)], lost: allDone.length - all.length };
}

const fmt = (n, d = 1) => (n === undefined || Number.isNaN(n) ? 'n/a' : n.toFixed(d));

async function measure(server) {
  console.log(`\n--- ${server.name} (${server.url})`);
  await load(server.url);
  const readdir = await throughput(server.url, readdirBody, 1_400_000);
  console.log(`readdir 1000 x 1 KiB: ${fmt(readdir.rps)} req/s, p50 ${fmt(readdir.p50)} ms, p99 ${fmt(readdir.p99)} ms`);
  const single = await throughput(server.url, singleBody, 200);
  console.log(`single-key range:     ${fmt(single.rps)} req/s, p50 ${fmt(single.p50, 2)} ms, p99 ${fmt(single.p99, 2)} ms`);
  const w1 = await watchLatency(server.url, 1);
  console.log(`write->event, 1 watcher:    p50 ${fmt(w1.p50All, 2)} ms, p99 ${fmt(w1.p99All, 2)} ms${w1.lost ? `, ${w1.lost} lost` : ''}`);
  const w100 = await watchLatency(server.url, 100);
  console.log(`write->event, 100 watchers: all delivered p50 ${fmt(w100.p50All, 2)} ms, p99 ${fmt(w100.p99All, 2)} ms; per watcher p50 ${fmt(w100.p50One, 2)} ms${w100.lost ? `, ${w100.lost} lost` : ''}`);
  return { readdir, single, w1, w100 };
}

const parts = (process.env.BENCH_ETCD_PARTS ?? 'throughput,hostile').split(',');
if (parts.includes('throughput')) await throughputTable();
if (parts.includes('hostile')) await hostileTable();
agent.destroy();

async function throughputTable() {
  const etcd = await startEtcd();
  let real;
  try { real = await measure(etcd); } finally { await etcd.stop(); }
  const emuServer = await startEmulator();
  let emu;
  try { emu = await measure(emuServer); } finally { await emuServer.stop(); }

  const ratio = (a, b) => (b ? `${(a / b).toFixed(1)}x` : 'n/a');
  console.log('\n| measure | etcd 3.4 | emulator | emulator vs etcd |');
  console.log('| --- | ---: | ---: | ---: |');
  console.log(`| readdir 1000 x 1 KiB (req/s, ${CONNECTIONS} conns) | ${fmt(real.readdir.rps)} | ${fmt(emu.readdir.rps)} | ${ratio(emu.readdir.rps, real.readdir.rps)} faster |`);
  console.log(`| readdir p99 (ms) | ${fmt(real.readdir.p99)} | ${fmt(emu.readdir.p99)} | ${ratio(real.readdir.p99, emu.readdir.p99)} lower |`);
  console.log(`| single-key range (req/s) | ${fmt(real.single.rps)} | ${fmt(emu.single.rps)} | ${ratio(emu.single.rps, real.single.rps)} faster |`);
  console.log(`| write->event, 1 watcher, p50 (ms) | ${fmt(real.w1.p50All, 2)} | ${fmt(emu.w1.p50All, 2)} | ${ratio(real.w1.p50All, emu.w1.p50All)} lower |`);
  console.log(`| write->event, 100 watchers, all delivered p50 (ms) | ${fmt(real.w100.p50All, 2)} | ${fmt(emu.w100.p50All, 2)} | ${ratio(real.w100.p50All, emu.w100.p50All)} lower |`);
  console.log(`| write->event, 100 watchers, all delivered p99 (ms) | ${fmt(real.w100.p99All, 2)} | ${fmt(emu.w100.p99All, 2)} | ${ratio(real.w100.p99All, emu.w100.p99All)} lower |`);
}

/** Runs `scenario` on a fresh server from `start`, stopping it afterwards. */
async function fresh(start, scenario) {
  const server = await start();
  try {
    return await scenario(server);
  } finally {
    await server.stop();
  }
}

async function hostileTable() {
  const servers = [['etcd 3.4', startEtcd], ['emulator', () => startEmulator()]];
  const baselineDist = process.env.BENCH_ETCD_BASELINE_DIST;
  if (baselineDist) servers.push(['emulator, baseline build', () => startEmulator(join(baselineDist, 'dist'))]);
  const rows = [];
  const mib = (n) => (n === undefined || Number.isNaN(n) ? 'n/a' : `${n.toFixed(0)} MiB`);
  const row = (name, cells) => rows.push(`| ${name} | ${cells.join(' | ')} |`);
  const results = {};
  for (const [label, start] of servers) {
    console.log(`\n--- hostile clients: ${label}`);
    const r = (results[label] = {});
    r.puts0 = await fresh(start, (s) => hostile.deafWatchers(s, { watchers: 0 }));
    console.log('1,250 puts x 100 KB, no watchers:', JSON.stringify(r.puts0));
    r.puts20 = await fresh(start, (s) => hostile.deafWatchers(s, { watchers: 20 }));
    console.log('1,250 puts x 100 KB, 20 never-reading watchers:', JSON.stringify(r.puts20));
    r.health0 = await fresh(start, (s) => hostile.endlessBodies(s, { connections: 0, seconds: 10 }));
    console.log('/health, no tricklers:', JSON.stringify(r.health0));
    r.health4 = await fresh(start, (s) => hostile.endlessBodies(s, { connections: 4, seconds: 30 }));
    console.log('/health, 4 endless watch bodies, 30 s:', JSON.stringify(r.health4));
    r.rangeSame = await fresh(start, (s) => hostile.rangeVariants(s, { variants: 40, same: true }));
    console.log('40 x the same readdir (44 MiB answer):', JSON.stringify(r.rangeSame));
    r.rangeWs = await fresh(start, (s) => hostile.rangeVariants(s, { variants: 40, same: false }));
    console.log('40 whitespace variants of it:', JSON.stringify(r.rangeWs));
  }
  const labels = Object.keys(results);
  console.log(`\n| scenario (peak RSS unless said) | ${labels.join(' | ')} |`);
  console.log(`| --- | ${labels.map(() => '---:').join(' | ')} |`);
  row('1,250 puts x 100 KB: idle before', labels.map((l) => mib(results[l].puts0.idle)));
  row('... no watchers (baseline)', labels.map((l) => mib(results[l].puts0.peak)));
  row('... 20 never-reading watchers', labels.map((l) => mib(results[l].puts20.peak)));
  row('... RSS 5 s after they left', labels.map((l) => mib(results[l].puts20.after)));
  row('/health p50, no tricklers (baseline)', labels.map((l) => `${fmt(results[l].health0.p50, 2)} ms`));
  row('/health p50 / p99, 4 endless watch bodies, 30 s', labels.map((l) => `${fmt(results[l].health4.p50, 2)} / ${fmt(results[l].health4.p99, 1)} ms`));
  row('... peak RSS', labels.map((l) => mib(results[l].health4.peak)));
  row('readdir 44 MiB: idle before', labels.map((l) => mib(results[l].rangeSame.idle)));
  row('... 40 x the same (baseline)', labels.map((l) => mib(results[l].rangeSame.peak)));
  row('... 40 whitespace variants', labels.map((l) => mib(results[l].rangeWs.peak)));
  for (const r of rows) console.log(r);

  if (process.env.BENCH_ETCD_AGENT !== '0') {
    const meshModule = await import('./synthetic-mesh.mjs');
    const codec = { ...(await import('../dist/agent/xds/codec.js')), ...(await import('../dist/agent/xds/protos.js')) };
    const dists = [['agent', join(root, 'dist')]];
    if (baselineDist) dists.push(['agent, baseline build', join(baselineDist, 'dist')]);
    const agentRows = [];
    for (const [label, dist] of dists) {
      const calm = await hostile.agentUnderDeafWatchers({ dist, deaf: 0, freePort }, meshModule, codec);
      console.log(`${label}, 2,000 services, 20 pushes, no deaf watchers:`, JSON.stringify(calm));
      const deaf = await hostile.agentUnderDeafWatchers({ dist, deaf: 50, freePort }, meshModule, codec);
      console.log(`${label}, 2,000 services, 20 pushes, 50 never-reading watchers:`, JSON.stringify(deaf));
      agentRows.push(`| ${label} | ${mib(calm.idle)} | ${mib(calm.peak)} | ${mib(deaf.peak)} | ${mib(deaf.after)} |`);
    }
    console.log('\n| 2,000 services, 20 pushes of every endpoint | idle | peak, 1 reading watcher (baseline) | peak, + 50 never-reading watchers | RSS 5 s after they left |');
    console.log('| --- | ---: | ---: | ---: | ---: |');
    for (const r of agentRows) console.log(r);
  }
}
