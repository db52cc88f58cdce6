// Opens the TCP connections (or sends the UDP datagrams, `udp: true`) given as JSON in argv[2]
// ([{tag, host, port, localAddress?, udp?}]), one after the other, and prints a JSON array: for
// each, the listener's one-line JSON answer or the error. Run under `setpriv` so that the connections belong to a chosen uid/gid.
import dgram from 'node:dgram';
import net from 'node:net';

function datagram({ tag, host, port }) {
  return new Promise((resolve) => {
    const socket = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    const done = (result) => {
      clearTimeout(timer);
      socket.close();
      resolve({ tag, ...result });
    };
    const timer = setTimeout(() => done({ error: 'timeout' }), 2000);
    socket.on('message', (msg) => done({ answer: JSON.parse(msg.toString()) }));
    socket.on('error', (err) => done({ error: err.code ?? err.message }));
    socket.send(`${tag}\n`, port, host);
  });
}

function attempt({ tag, host, port, localAddress, udp }) {
  if (udp) return datagram({ tag, host, port });
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, ...(localAddress ? { localAddress } : {}) });
    let data = '';
    const done = (result) => {
      socket.destroy();
      resolve({ tag, ...result });
    };
    socket.setTimeout(3000, () => done({ error: 'timeout' }));
    socket.on('connect', () => socket.write(`${tag}\n`));
    socket.on('data', (d) => (data += d));
    socket.on('end', () => {
      try {
        done({ answer: JSON.parse(data) });
      } catch {
        done({ error: `unparsable answer ${JSON.stringify(data)}` });
      }
    });
    socket.on('error', (err) => done({ error: err.code ?? err.message }));
  });
}

const results = [];
for (const c of JSON.parse(process.argv[2])) results.push(await attempt(c));
process.stdout.write(JSON.stringify(results));
