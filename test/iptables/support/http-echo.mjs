// A stand-in app for the sidecar tests: an HTTP server on 0.0.0.0:PORT (argv[3]) that answers
// every request with one JSON object saying who answered (ROLE, argv[2]), on which port, the
// path asked for and the peer address the connection came from. Prints READY once listening.
import http from 'node:http';

const [role, port] = [process.argv[2], Number(process.argv[3])];
const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ role, port, path: req.url, peer: req.socket.remoteAddress }));
});
server.listen(port, '0.0.0.0', () => console.log('READY'));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
