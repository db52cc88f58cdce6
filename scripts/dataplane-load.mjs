// The traffic of `npm run bench -- dataplane`, run inside a network namespace (the pod's, as the app
// uid, or the cluster's) by scripts/bench-dataplane.mjs. Plain JavaScript without dependencies, so
// any uid can run it from a world-readable copy. Four modes:
//
//   serve HOST PORT BYTES [JSON]  an HTTP/1.1 server that reads the request body and answers BYTES
//                           bytes; prints {"ready":true}; ends when stdin closes. JSON (optional):
//                           {close: true} answers `Connection: close` (a new connection per request);
//                           {tls: {dir}} serves HTTPS with DIR/cert.pem, key.pem and requires a client
//                           certificate chained to DIR/ca.pem (a mesh server).
//   serve HOST PORT BYTES   an HTTP/1.1 server that reads the request body and answers BYTES bytes;
//                           prints {"ready":true}; ends when stdin closes.
//   load JSON               {url, bodyBytes, connections, warmupMs, durationMs, rate, headers?, tls?, fresh?, hosts?}:
//                           POSTs of bodyBytes over at most `connections` keep-alive connections;
//                           `fresh`: a new connection per request; https: `tls` {ca, cert, key,
//                           servername, alpn} (a mesh client: any server name, the chain verified);
//                           `hosts`: the Host header of each request, taken from this list in turn.
//       rate > 0  open loop: requests are sent on a fixed schedule whether or not earlier ones have
//                 answered (waiting for a free connection counts), latency from the scheduled time,
//                 so a stall of the proxy is not hidden (no coordinated omission);
//       rate = 0  saturation: `connections` closed loops, each sends its next request when the last
//                 one answered; latency from the send.
//       Prints {"phase":"measure"} when the warm-up ends and {"phase":"end"} when the measured window
//       ends (the bench samples the proxy's CPU time at both), then the result:
//       {"result":{completed, errors, seconds, rps, p50, p90, p99, max}} (latencies in ms, of the
//       requests scheduled inside the window).
//   sink HOST PORT          a TCP server that reads and discards whatever arrives; prints {"ready":true}.
//   stream JSON             {host, port, warmupMs, durationMs}: one TCP connection written to as fast
//                           as it takes bytes (64 KiB writes, waiting for drain); the same phases, then
//                           {"result":{bytes, seconds, bytesPerSecond, errors}}: the bytes handed to the
//                           kernel inside the window (its send buffer, a few MiB, is the error bound).
//                           `tls` {ca, cert, key, servername, alpn}: the connection is TLS (a mesh
//                           client: any server name, the chain verified), written once it is set up.
//   connect JSON            {host, port, warmupMs, durationMs, concurrency, tls?, resume?}: `concurrency`
//                           loops, each opening a connection, writing 1 KiB, half-closing and waiting
//                           for the server's close (a sink closes on the client's end): the same phases,
//                           then {"result":{completed, errors, resumed, seconds, rps}}: connections per
//                           second. `resume`: each loop offers the TLS session of its last connection
//                           (as Envoy keeps one per cluster); `resumed` counts those the server took.
import { Agent, createServer, request } from 'node:http';
import { Agent as HttpsAgent, createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import { connect, createServer as createTcpServer } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';

const say = (msg) => process.stdout.write(`${JSON.stringify(msg)}\n`);

if (process.argv[2] === 'serve') serve(process.argv[3], Number(process.argv[4]), Number(process.argv[5]), JSON.parse(process.argv[6] ?? '{}'));
else if (process.argv[2] === 'load') await load(JSON.parse(process.argv[3]));
else if (process.argv[2] === 'sink') sink(process.argv[3], Number(process.argv[4]));
else if (process.argv[2] === 'stream') await stream(JSON.parse(process.argv[3]));
else if (process.argv[2] === 'connect') await connections(JSON.parse(process.argv[3]));
else {
  console.error('usage: dataplane-load.mjs serve HOST PORT BYTES | load JSON | sink HOST PORT | stream JSON | connect JSON');
  process.exit(2);
}

function serve(host, port, bytes, { close = false, tls } = {}) {
  const answer = Buffer.alloc(bytes, 'a');
  const handler = (req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': answer.length, ...(close ? { connection: 'close' } : {}) });
      res.end(answer);
    });
  };
  const file = (name) => readFileSync(join(tls?.dir ?? '.', name));
  const server = tls
    ? createHttpsServer({ keepAliveTimeout: 60_000, cert: file('cert.pem'), key: file('key.pem'), ca: file('ca.pem'), requestCert: true, rejectUnauthorized: true }, handler)
    : createServer({ keepAliveTimeout: 60_000 }, handler);
  server.on('error', (err) => {
    console.error(`serve ${host}:${port}: ${err.message}`);
    process.exit(1);
  });
  server.listen(port, host, () => say({ ready: true }));
  createInterface({ input: process.stdin }).on('close', () => process.exit(0));
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function load({ url, bodyBytes, connections, warmupMs, durationMs, rate, headers = {}, tls, fresh = false, hosts = [] }) {
  const target = new URL(url);
  const https = target.protocol === 'https:';
  const pool = { keepAlive: !fresh, maxSockets: connections, maxFreeSockets: connections };
  const agent = https
    ? new HttpsAgent({ ...pool, ca: tls?.ca, cert: tls?.cert, key: tls?.key, servername: tls?.servername, ALPNProtocols: tls?.alpn, checkServerIdentity: () => undefined })
    : new Agent(pool);
  const send_ = https ? httpsRequest : request;
  const body = Buffer.alloc(bodyBytes, 'b');
  const options = {
    host: target.hostname,
    port: Number(target.port || (https ? 443 : 80)),
    path: target.pathname,
    method: 'POST',
    agent,
    headers: { ...headers, 'content-type': 'application/octet-stream', 'content-length': body.length },
  };
  const start = performance.now();
  const windowStart = start + warmupMs;
  const windowEnd = windowStart + durationMs;
  const latencies = [];
  let errors = 0;
  let outstanding = 0;
  let sent = 0;
  const optionsOf = () => (hosts.length ? { ...options, headers: { ...options.headers, host: hosts[sent++ % hosts.length] } } : options);

  /** One request; `from` is when it counts from; resolves when it is over (answered or failed). */
  const send = (from) =>
    new Promise((resolve) => {
      outstanding++;
      const counted = from >= windowStart && from < windowEnd;
      const done = (ok) => {
        outstanding--;
        if (counted) {
          if (ok) latencies.push(performance.now() - from);
          else errors++;
        }
        resolve();
      };
      const req = send_(optionsOf(), (res) => {
        res.resume();
        res.on('end', () => done(res.statusCode === 200));
        res.on('error', () => done(false));
      });
      req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
      req.on('error', () => done(false));
      req.end(body);
    });

  setTimeout(() => say({ phase: 'measure' }), Math.max(0, windowStart - performance.now()));
  setTimeout(() => say({ phase: 'end' }), Math.max(0, windowEnd - performance.now()));
  if (rate > 0) {
    const interval = 1000 / rate;
    let next = start;
    await new Promise((resolve) => {
      const tick = () => {
        const now = performance.now();
        // a timer fires late by up to a millisecond or so: send what is due (and what is due within
        // half a millisecond), each counted from its own scheduled time
        while (next <= now + 0.5 && next < windowEnd) {
          void send(Math.min(next, now));
          next += interval;
        }
        if (next >= windowEnd) resolve();
        else setTimeout(tick, Math.max(0, Math.min(1, next - performance.now())));
      };
      tick();
    });
  } else {
    const loop = async () => {
      while (performance.now() < windowEnd) await send(performance.now());
    };
    await Promise.all(Array.from({ length: connections }, loop));
  }
  const drainUntil = performance.now() + 10_000;
  while (outstanding > 0 && performance.now() < drainUntil) await new Promise((r) => setTimeout(r, 5));
  latencies.sort((a, b) => a - b);
  const seconds = durationMs / 1000;
  say({
    result: {
      completed: latencies.length,
      errors: errors + outstanding,
      seconds,
      rps: latencies.length / seconds,
      p50: percentile(latencies, 50),
      p90: percentile(latencies, 90),
      p99: percentile(latencies, 99),
      max: latencies.at(-1) ?? NaN,
    },
  });
  agent.destroy();
  // stdout is a pipe (asynchronous in Node): exit once the result is written, not before
  process.stdout.write('', () => process.exit(0));
}

function sink(host, port) {
  const server = createTcpServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.resume();
  });
  server.on('error', (err) => {
    console.error(`sink ${host}:${port}: ${err.message}`);
    process.exit(1);
  });
  server.listen(port, host, () => say({ ready: true }));
  createInterface({ input: process.stdin }).on('close', () => process.exit(0));
}

/** A TCP connection, or a TLS one as a mesh client (`tls`: any server name, the chain verified); its ready event. */
function open(host, port, tls, session) {
  if (!tls) return { socket: connect({ host, port }), ready: 'connect' };
  const socket = tlsConnect({ host, port, ca: tls.ca, cert: tls.cert, key: tls.key, servername: tls.servername, ALPNProtocols: tls.alpn, checkServerIdentity: () => undefined, ...(session ? { session } : {}) });
  return { socket, ready: 'secureConnect' };
}

async function stream({ host, port, warmupMs, durationMs, tls }) {
  const chunk = Buffer.alloc(64 * 1024, 's');
  const { socket, ready } = open(host, port, tls);
  let errors = 0;
  let writing = true;
  let connected = false;
  const pump = () => {
    while (writing && socket.write(chunk));
  };
  socket.on(ready, () => {
    connected = true;
    pump();
  });
  socket.on('drain', pump);
  socket.on('error', () => {
    errors++;
    writing = false;
  });
  await new Promise((r) => setTimeout(r, warmupMs));
  const before = socket.bytesWritten - socket.writableLength;
  say({ phase: 'measure' });
  await new Promise((r) => setTimeout(r, durationMs));
  const after = socket.bytesWritten - socket.writableLength;
  say({ phase: 'end' });
  writing = false;
  socket.destroy();
  const seconds = durationMs / 1000;
  say({ result: { bytes: after - before, seconds, bytesPerSecond: (after - before) / seconds, errors: errors + (connected ? 0 : 1) } });
  process.stdout.write('', () => process.exit(0));
}

async function connections({ host, port, warmupMs, durationMs, concurrency = 1, tls, resume = false }) {
  const payload = Buffer.alloc(1024, 'c');
  const start = performance.now();
  const windowStart = start + warmupMs;
  const windowEnd = windowStart + durationMs;
  let completed = 0;
  let errors = 0;
  let resumed = 0;
  const once = (loop) =>
    new Promise((resolve) => {
      const from = performance.now();
      const counted = from >= windowStart && from < windowEnd;
      const { socket, ready } = open(host, port, tls, resume ? loop.session : undefined);
      if (resume) socket.on('session', (session) => (loop.session = session));
      let settled = false;
      const done = (ok) => {
        if (settled) return;
        settled = true;
        socket.destroy();
        if (counted) ok ? completed++ : errors++;
        resolve();
      };
      socket.setTimeout(10_000, () => done(false));
      let up = false;
      socket.on(ready, () => {
        up = true;
        if (counted && tls && socket.isSessionReused()) resumed++;
        socket.end(payload);
      });
      socket.on('error', () => done(false));
      // a connection the server closed before it was set up is an error, not a connection served
      socket.on('close', () => done(up));
      socket.resume();
    });
  setTimeout(() => say({ phase: 'measure' }), Math.max(0, windowStart - performance.now()));
  // the result only after the window's end was announced (the loops may finish a moment before)
  const ended = new Promise((resolve) => setTimeout(() => resolve(say({ phase: 'end' })), Math.max(0, windowEnd - performance.now())));
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      const loop = {};
      while (performance.now() < windowEnd) await once(loop);
    }),
  );
  await ended;
  const seconds = durationMs / 1000;
  say({ result: { completed, errors, resumed, seconds, rps: completed / seconds } });
  process.stdout.write('', () => process.exit(0));
}
