// A test program that lives inside a network namespace (the pod's app, or the cluster side) and does
// what the test asks, one JSON object per line on stdin, one answer per line on stdout:
//   {id, op: 'http', url, path?, method?, headers?, body?, timeoutMs?, localAddress?}
//       → {id, status, headers, body} | {id, error}
//   {id, op: 'serve', name, host, port}   an HTTP echo server: answers {name, method, url, headers,
//       peer, body} as JSON; `name` tells the test which server answered. Query parameters
//       `delay=<ms>` and `status=<code>` make it answer late or with that status; `status.<name>=<code>`
//       only the server of that name (one host of a service failing).
//       An Upgrade request (e.g. WebSocket) is answered 101, then every chunk is echoed back
//       prefixed with `<name>:` (the bytes are not WebSocket frames: a proxy does not look).
//   {id, op: 'upgrade', url, headers?, message}  an Upgrade request; → {id, status, echoed} once
//       `message` came back through the upgraded connection, or {id, status, body} when refused
//   {id, op: 'served', name}              → {id, count, requests: [{method, url, headers, peer}]}
//   `serve` with `peerMetadata: {id, value}` answers as Istio's sidecar in front of the server would:
//       x-envoy-peer-metadata(-id) with these values, each when the request carried that header.
//   `serve` with `tls: {key, cert}` (PEM) serves HTTPS instead; each request also records the
//       server name (SNI) the client sent (`servername`). `http` to an https: URL takes `ca` (PEM,
//       the only trusted root) and `servername` (the SNI to send). With `tls.ca` the server requires
//       a client certificate chained to it and records its SAN (`clientSan`), the ALPN list the
//       client offered (`alpnOffered`) and the protocol chosen (`alpn`); `served` then also counts
//       TCP connections (`connections`), handshakes that failed included.
//   {id, op: 'tcpServe', name, host, port, banner?, tls?, countAtEnd?}  a TCP echo server; with `banner` it speaks first;
//     with `countAtEnd` it answers only once the client half-closes ("<n> bytes", then closes)
//       (sends the banner on accept), then echoes. `served` counts connections; requests: [{peer}]
//       With `tls: {key, cert, ca}` it requires a client certificate chained to `ca` and records its
//       SAN (`clientSan`), the SNI, and the ALPN list the client offered (`alpnOffered`).
//   {id, op: 'tcp', host, port, exchanges: [{send?, end?, want}], timeoutMs?, localAddress?}  one connection: for
//       each exchange, writes `send` (base64) if given (then half-closes with `end`), then waits for
//       `want` more bytes → {id, received:
//       [base64 per exchange], closed} (closed: the peer ended or reset the connection); the
//       connection is closed by the client after the last exchange. With `tls: {ca, cert?, key?,
//       servername?, alpn?}` the connection is TLS (the server's chain verified against `ca`, any
//       server name): the exchanges start once the handshake is done, and the answer carries the
//       server certificate's SAN (`peerSan`)
//   {id, op: 'close', name}  the server `name` stops listening (its open connections are ended):
//       the app going down
//   {id, op: 'relay', host, port, unixPath}  accepts TCP on host:port and splices each connection to
//       the Unix socket (how namespaced programs reach a server of the test process)
// Plain JavaScript with no dependencies, so any uid can run it from a world-readable copy.
import { createServer, request } from 'node:http';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import { connect, createServer as createTcpServer } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { createInterface } from 'node:readline';

const servers = new Map();

/** A certificate's public key in short (`ec prime256v1`, `rsa 2048`): which key type a peer presented. */
function keyOf(x509) {
  const key = x509?.publicKey;
  if (!key) return undefined;
  const details = key.asymmetricKeyDetails ?? {};
  return `${key.asymmetricKeyType} ${details.namedCurve ?? details.modulusLength}`;
}

function reply(msg) {
  process.stdout.write(`${JSON.stringify(msg)}\n`);
}

// `path`: the request target as sent, unparsed (a URL would resolve `/a/../b` before sending)
// https: `cert`/`key` (PEM) a client certificate, `alpn` the protocols offered, `anyServerName` skips
// the host name check (mesh certificates carry a SPIFFE URI SAN only; the chain is still verified
// against `ca`); the answer carries the server certificate's SAN (`peerSan`) and key (`peerKey`)
function doHttp({ id, url, path, method = 'GET', headers = {}, body, timeoutMs = 8000, localAddress, ca, servername, cert, key, alpn, anyServerName }) {
  const tls = url.startsWith('https:')
    ? { ...(ca ? { ca } : {}), ...(servername ? { servername } : {}), ...(cert ? { cert, key } : {}), ...(alpn ? { ALPNProtocols: alpn } : {}), ...(anyServerName ? { checkServerIdentity: () => undefined } : {}) }
    : {};
  const send = url.startsWith('https:') ? httpsRequest : request;
  const req = send(url, { method, headers, timeout: timeoutMs, agent: false, ...tls, ...(path ? { path } : {}), ...(localAddress ? { localAddress } : {}) }, (res) => {
    const chunks = [];
    const peerSan = typeof res.socket.getPeerCertificate === 'function' ? res.socket.getPeerCertificate().subjectaltname : undefined;
    const peerKey = typeof res.socket.getPeerX509Certificate === 'function' ? keyOf(res.socket.getPeerX509Certificate()) : undefined;
    res.on('data', (c) => chunks.push(c));
    res.on('end', () => reply({ id, status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), ...(peerSan !== undefined ? { peerSan } : {}), ...(peerKey !== undefined ? { peerKey } : {}) }));
    res.on('error', (err) => reply({ id, error: err.message }));
  });
  req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
  req.on('error', (err) => reply({ id, error: err.code ?? err.message }));
  req.end(body);
}

function serve({ id, name, host, port, tls, peerMetadata }) {
  const record = { count: 0, requests: [] };
  const handler = (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const seen = { method: req.method, url: req.url, headers: req.headers, peer: req.socket.remoteAddress, ...(tls ? { servername: req.socket.servername } : {}) };
      if (tls?.ca) Object.assign(seen, { clientSan: req.socket.getPeerCertificate()?.subjectaltname, clientKey: keyOf(req.socket.getPeerX509Certificate()), alpn: req.socket.alpnProtocol, alpnOffered: req.socket.apisixMeshOffered, resumed: req.socket.isSessionReused(), protocol: req.socket.getProtocol() });
      record.count += 1;
      if (record.requests.length < 1000) record.requests.push(seen);
      const query = new URL(req.url, 'http://x').searchParams;
      const answer = () => {
        res.statusCode = Number(query.get(`status.${name}`) ?? query.get('status') ?? 200);
        res.setHeader('content-type', 'application/json');
        res.setHeader('x-served-by', name);
        // as an Istio sidecar in front of the server answers: each of its metadata headers when the request carried that one
        if (peerMetadata && req.headers['x-envoy-peer-metadata-id'] !== undefined) res.setHeader('x-envoy-peer-metadata-id', peerMetadata.id);
        if (peerMetadata && req.headers['x-envoy-peer-metadata'] !== undefined) res.setHeader('x-envoy-peer-metadata', peerMetadata.value);
        res.end(JSON.stringify({ name, ...seen, body: Buffer.concat(chunks).toString('utf8') }));
      };
      const delay = Number(query.get('delay') ?? 0);
      if (delay > 0) setTimeout(answer, delay);
      else answer();
    });
  };
  const mutual = tls?.ca
    ? {
        ca: tls.ca,
        requestCert: true,
        rejectUnauthorized: true,
        // records what the client offered (Node gives the callback no socket: the last offer wins,
        // which is enough for tests that send one request at a time)
        ALPNCallback: ({ protocols }) => {
          record.lastOffered = protocols;
          return protocols.includes('http/1.1') ? 'http/1.1' : undefined;
        },
      }
    : {};
  const server = tls ? createHttpsServer({ key: tls.key, cert: tls.cert, ...mutual }, handler) : createServer(handler);
  if (tls) {
    record.connections = 0;
    server.on('connection', () => {
      record.connections += 1;
    });
    server.on('secureConnection', (socket) => {
      socket.apisixMeshOffered = record.lastOffered;
    });
  }
  server.on('upgrade', (req, socket) => {
    record.count += 1;
    if (record.requests.length < 1000) record.requests.push({ method: req.method, url: req.url, headers: req.headers, peer: req.socket.remoteAddress });
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${req.headers.upgrade}\r\nConnection: Upgrade\r\n\r\n`);
    socket.on('data', (chunk) => socket.write(`${name}:${chunk}`));
    socket.on('error', () => socket.destroy());
  });
  server.on('error', (err) => reply({ id, error: `${name} on ${host}:${port}: ${err.message}` }));
  server.listen(port, host, () => {
    servers.set(name, { server, record });
    reply({ id, ok: true });
  });
}

function relay({ id, host, port, unixPath, name }) {
  const server = createTcpServer((socket) => {
    const upstream = connect(unixPath);
    socket.pipe(upstream).pipe(socket);
    const end = () => {
      socket.destroy();
      upstream.destroy();
    };
    socket.on('error', end);
    upstream.on('error', end);
    socket.on('close', end);
    upstream.on('close', end);
  });
  server.on('error', (err) => reply({ id, error: `relay on ${host}:${port}: ${err.message}` }));
  server.listen(port, host, () => {
    servers.set(name ?? `relay-${port}`, { server, record: { count: 0, requests: [] } });
    reply({ id, ok: true });
  });
}

function tcpServe({ id, name, host, port, banner, tls, countAtEnd }) {
  const record = { count: 0, requests: [] };
  let offered;
  const onConnection = (socket) => {
    record.count += 1;
    const seen = { peer: socket.remoteAddress };
    if (tls) Object.assign(seen, { clientSan: socket.getPeerCertificate()?.subjectaltname, clientKey: keyOf(socket.getPeerX509Certificate()), servername: socket.servername, alpnOffered: offered });
    if (record.requests.length < 1000) record.requests.push(seen);
    if (banner) socket.write(banner);
    if (countAtEnd) {
      let bytes = 0;
      socket.on('data', (chunk) => (bytes += chunk.length));
      socket.on('end', () => socket.end(`${bytes} bytes`));
    } else socket.on('data', (chunk) => socket.write(chunk));
    socket.on('error', () => socket.destroy());
  };
  const halfOpen = countAtEnd ? { allowHalfOpen: true } : {};
  const server = tls
    ? createTlsServer({ key: tls.key, cert: tls.cert, ...(tls.ca ? { ca: tls.ca, requestCert: true, rejectUnauthorized: true } : {}), ...halfOpen, ALPNCallback: ({ protocols }) => ((offered = protocols), protocols[0]) }, onConnection)
    : createTcpServer(halfOpen, onConnection);
  server.on('error', (err) => reply({ id, error: `${name} on ${host}:${port}: ${err.message}` }));
  server.listen(port, host, () => {
    servers.set(name, { server, record });
    reply({ id, ok: true });
  });
}

function doTcp({ id, host, port, exchanges = [], timeoutMs = 8000, localAddress, tls }) {
  const options = { host, port, ...(localAddress ? { localAddress } : {}) };
  const socket = tls
    ? tlsConnect({
        ...options,
        ca: tls.ca,
        ...(tls.cert ? { cert: tls.cert, key: tls.key } : {}),
        ...(tls.servername ? { servername: tls.servername } : {}),
        ...(tls.alpn ? { ALPNProtocols: tls.alpn } : {}),
        checkServerIdentity: () => undefined,
      })
    : connect(options);
  let peerSan;
  const received = exchanges.map(() => []);
  let step = 0;
  let have = 0;
  let closed = false;
  let done = false;
  const finish = (error) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    socket.destroy();
    const out = { id, received: received.map((c) => Buffer.concat(c).toString('base64')), closed, ...(peerSan !== undefined ? { peerSan } : {}) };
    reply(error ? { ...out, error } : out);
  };
  const timer = setTimeout(() => finish(`timed out after ${timeoutMs} ms in exchange ${step}`), timeoutMs);
  const write = ({ send, end }) => {
    if (send) socket.write(Buffer.from(send, 'base64'));
    if (end) socket.end();
  };
  const advance = () => {
    while (step < exchanges.length && have >= exchanges[step].want) {
      step += 1;
      have = 0;
      if (step < exchanges.length) write(exchanges[step]);
    }
    if (step >= exchanges.length) finish();
  };
  socket.on(tls ? 'secureConnect' : 'connect', () => {
    if (tls) peerSan = socket.getPeerCertificate()?.subjectaltname ?? '';
    if (exchanges[0]) write(exchanges[0]);
    advance();
  });
  socket.on('data', (chunk) => {
    received[Math.min(step, received.length - 1)]?.push(chunk);
    have += chunk.length;
    advance();
  });
  socket.on('end', () => {
    closed = true;
    finish();
  });
  socket.on('error', (err) => {
    closed = true;
    finish(err.code ?? err.message);
  });
}

function doUpgrade({ id, url, headers = {}, message, timeoutMs = 8000 }) {
  const req = request(url, { headers: { connection: 'Upgrade', upgrade: 'websocket', ...headers }, timeout: timeoutMs, agent: false });
  req.on('upgrade', (res, socket, head) => {
    let echoed = head.toString('utf8');
    const done = () => {
      socket.destroy();
      reply({ id, status: res.statusCode, echoed });
    };
    socket.on('data', (chunk) => {
      echoed += chunk.toString('utf8');
      if (echoed.endsWith(message)) done();
    });
    socket.on('error', (err) => reply({ id, error: err.message }));
    socket.write(message);
  });
  req.on('response', (res) => {
    const chunks = [];
    res.on('data', (c) => chunks.push(c));
    res.on('end', () => reply({ id, status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
  });
  req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
  req.on('error', (err) => reply({ id, error: err.code ?? err.message }));
  req.end();
}

const ops = {
  http: doHttp,
  upgrade: doUpgrade,
  serve,
  tcpServe,
  tcp: doTcp,
  relay,
  close({ id, name }) {
    const s = servers.get(name);
    if (!s) return reply({ id, error: `no server ${name}` });
    servers.delete(name);
    s.server.close();
    s.server.closeAllConnections?.();
    reply({ id, ok: true });
  },
  served({ id, name }) {
    const s = servers.get(name);
    reply({ id, count: s?.record.count ?? 0, requests: s?.record.requests ?? [], ...(s?.record.connections !== undefined ? { connections: s.record.connections } : {}) });
  },
};

createInterface({ input: process.stdin }).on('line', (line) => {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    return reply({ error: `not JSON: ${line.slice(0, 80)}` });
  }
  const op = ops[msg.op];
  if (!op) return reply({ id: msg.id, error: `unknown op ${msg.op}` });
  try {
    op(msg);
  } catch (err) {
    reply({ id: msg.id, error: err.message });
  }
});
process.stdin.on('end', () => process.exit(0));
reply({ ready: true });
