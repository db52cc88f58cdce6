// Hostile local clients against an etcd API (the real etcd, the emulator, the agent): what they
// cost the server in memory and in latency for everybody else. Used by bench-etcd.mjs; each
// scenario gets a fresh server process, so its peak RSS (VmHWM) is the scenario's own.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';

const b64 = (s) => Buffer.from(s).toString('base64');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const MiB = 1024 * 1024;

/** VmRSS and VmHWM (peak) of a process, in MiB. */
export function memory(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

function request(url, path, body, agent) {
  return new Promise((resolve, reject) => {
    const req = http.request(url + path, { method: 'POST', agent, headers: { 'Content-Length': Buffer.byteLength(body) } }, (res) => {
      let bytes = 0;
      res.on('data', (c) => (bytes += c.length));
      res.on('end', () => resolve({ status: res.statusCode, bytes }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A watch that sends its request and never reads a byte of the answer. */
function deafWatcher(url, key, id) {
  const { hostname, port } = new URL(url);
  const body = JSON.stringify({ create_request: { key: b64(key), range_end: b64(key.slice(0, -1) + String.fromCharCode(key.charCodeAt(key.length - 1) + 1)), ...(id ? { watch_id: id } : {}) } });
  const s = net.connect(Number(port), hostname, () => {
    s.write(`POST /v3/watch HTTP/1.1\r\nHost: ${hostname}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    s.pause();
  });
  s.on('error', () => {});
  return s;
}

/**
 * 1. `watchers` watches on /w/ that never read, then `puts` values of `valueBytes` under /w/ (ten
 *    keys, one revision each), then the watchers leave. Without watchers: the store's own cost.
 */
export async function deafWatchers(server, { watchers, puts = 1250, valueBytes = 100 * 1024 }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const sockets = Array.from({ length: watchers }, () => deafWatcher(server.url, '/w/'));
  await sleep(500);
  const idle = memory(server.pid).rss;
  const value = b64('v'.repeat(valueBytes));
  let next = 0;
  let failed = 0;
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (next < puts) {
      const i = next++;
      const r = await request(server.url, '/v3/kv/put', `{"key":"${b64(`/w/${i % 10}`)}","value":"${value}"}`, agent);
      if (r.status !== 200) failed++;
    }
  }));
  await sleep(1000);
  const during = memory(server.pid);
  for (const s of sockets) s.destroy();
  await sleep(5000);
  const after = memory(server.pid).rss;
  agent.destroy();
  return { idle, peak: during.peak, after, failed };
}

/**
 * 2. `connections` clients each stream a watch request whose one JSON string never ends, 64 KiB
 *    every 20 ms (3.2 MB/s each; a real etcd buffers it all, so not faster), reconnecting when cut
 *    off, for `seconds`; meanwhile /health is asked every 50 ms. Without tricklers: the baseline.
 */
export async function endlessBodies(server, { connections, seconds = 20 }) {
  const { hostname, port } = new URL(server.url);
  let running = true;
  const piece = `10000\r\n${'A'.repeat(64 * 1024)}\r\n`;
  const trickle = () => {
    if (!running) return;
    let timer;
    const s = net.connect(Number(port), hostname, () => {
      s.write(`POST /v3/watch HTTP/1.1\r\nHost: ${hostname}\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n`);
      const head = '{"create_request":{"key":"';
      s.write(`${head.length.toString(16)}\r\n${head}\r\n`);
      timer = setInterval(() => {
        if (!running) s.destroy();
        else if (s.writableLength < 1024 * 1024) s.write(piece);
      }, 20);
    });
    s.on('data', () => {});
    s.on('error', () => {});
    s.on('close', () => {
      clearInterval(timer);
      setTimeout(trickle, 10);
    });
  };
  for (let i = 0; i < connections; i++) trickle();
  const lat = [];
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const until = Date.now() + seconds * 1000;
  while (Date.now() < until) {
    const t0 = process.hrtime.bigint();
    await new Promise((resolve) => {
      const req = http.get(server.url + '/health', { agent, timeout: 60_000 }, (res) => {
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', resolve);
      req.on('timeout', () => req.destroy());
    });
    lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
    await sleep(50);
  }
  running = false;
  agent.destroy();
  lat.sort((a, b) => a - b);
  return { p50: lat[Math.floor(lat.length / 2)], p99: lat[Math.floor(lat.length * 0.99)], asked: lat.length, peak: memory(server.pid).peak };
}

/**
 * 3. A readdir of `keys` values of `valueBytes` (one large answer), asked `variants` times with
 *    different whitespace, or `variants` times the same (the baseline).
 */
export async function rangeVariants(server, { variants, same, keys = 1000, valueBytes = 34 * 1024 }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const value = b64('x'.repeat(valueBytes));
  for (let i = 0; i < keys; i++) await request(server.url, '/v3/kv/put', `{"key":"${b64(`/big/${i}`)}","value":"${value}"}`, agent);
  await sleep(500);
  const idle = memory(server.pid).rss;
  const body = { key: b64('/big/'), range_end: b64('/big0') };
  let bytes = 0;
  for (let i = 0; i < variants; i++) {
    const r = await request(server.url, '/v3/kv/range', same ? JSON.stringify(body) : JSON.stringify(body, null, i + 1), agent);
    bytes = r.bytes;
  }
  await sleep(500);
  const m = memory(server.pid);
  agent.destroy();
  return { idle, peak: m.peak, after: m.rss, answerMiB: bytes / MiB };
}

/**
 * 4. The agent (its own process, `apisix-mesh agent`) on a synthetic mesh of `services`, with `deaf`
 *    never-reading watchers on /apisix/ and one watcher that reads, during `pushes` xDS pushes that
 *    change every service's endpoints (one revision each, ~1 MB watch message).
 */
export async function agentUnderDeafWatchers({ dist, services = 2000, deaf, pushes = 20, freePort }, meshModule, codec) {
  const { mesh, encodeAll, adsServer, cla } = meshModule;
  const m = mesh(services);
  const ads = await adsServer(encodeAll(m));
  const etcdPort = await freePort();
  const env = { ...process.env, POD_NAME: 'bench', POD_NAMESPACE: 'default', INSTANCE_IP: '10.0.0.1' };
  const proc = spawn(process.execPath, [`${dist}/cli/main.js`, 'agent', '--xds-address', `127.0.0.1:${ads.port}`, '--etcd-listen', `127.0.0.1:${etcdPort}`,
    '--status-port', '0', '--status-host', '127.0.0.1', '--coalesce', '1ms', '--log-level', 'error'], { env, stdio: 'ignore' });
  const url = `http://127.0.0.1:${etcdPort}`;
  try {
    let revision = 0;
    for (let i = 0; i < 300 && revision < 2; i++) {
      try {
        const r = await fetch(`${url}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: b64('/apisix/routes/'), range_end: b64('/apisix/routes0'), count_only: true }) });
        const j = await r.json();
        if (Number(j.count ?? 0) >= services) revision = Number(j.header.revision);
      } catch { /* not up yet */ }
      await sleep(100);
    }
    if (revision < 2) throw new Error('the agent did not serve the mesh');
    // The reading watcher: the well-behaved APISIX worker.
    let seen = 0;
    const reader = http.request(url + '/v3/watch', { method: 'POST' }, (res) => res.on('data', (c) => { for (const l of c.toString().split('\n')) if (l.includes('"events"')) seen++; }));
    reader.end(JSON.stringify({ create_request: { key: b64('/apisix/'), range_end: b64('/apisix0') } }));
    const sockets = Array.from({ length: deaf }, () => deafWatcher(url, '/apisix/'));
    await sleep(1000);
    const idle = memory(proc.pid).rss;
    for (let p = 1; p <= pushes; p++) {
      const endpoints = m.endpoint.map((e, i) => codec.encodeCanonical(codec.TYPE_URL.endpoint, cla(e.cluster_name, i, 3, p * 3)));
      ads.push(codec.TYPE_URL.endpoint, endpoints);
      const want = p;
      for (let i = 0; i < 200 && seen < want; i++) await sleep(25);
    }
    await sleep(1000);
    const during = memory(proc.pid);
    for (const s of sockets) s.destroy();
    reader.destroy();
    await sleep(5000);
    const after = memory(proc.pid).rss;
    return { idle, peak: during.peak, after, eventsSeen: seen };
  } finally {
    proc.kill('SIGINT'); // at once: SIGTERM would wait for etcd clients to leave (the agent's drain)
    await new Promise((r) => proc.once('exit', r));
    ads.stop();
  }
}
