// Opens the TCP connections given as JSON in argv[2] ([{tag, host, port, localAddress?}]), one
// after the other, and prints a JSON array: for each, the listener's one-line JSON answer or the
// error. Run under `setpriv` so that the connections belong to a chosen uid/gid.
import net from 'node:net';

function attempt({ tag, host, port, localAddress }) {
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
