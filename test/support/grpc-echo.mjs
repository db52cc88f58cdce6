// A gRPC echo server and client for the data-plane tests, run inside a test namespace with
// `ip netns exec` (test/dataplane/grpc.test.ts).
//   node grpc-echo.mjs server <name> <host> <port>        → prints "listening", then serves
//   node grpc-echo.mjs unary <target> <authority> <text>   → prints the reply as JSON
//   node grpc-echo.mjs stream <target> <authority> <text> <n> → prints the n streamed replies as JSON
// Replies carry the server's name, the text and the peer the server saw.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const PROTO = `syntax = "proto3";
package meshtest;
message Msg { string text = 1; string name = 2; string peer = 3; }
service Echo {
  rpc Say(Msg) returns (Msg);
  rpc Stream(Msg) returns (stream Msg);
}
`;
const dir = mkdtempSync(join(tmpdir(), 'grpc-echo-'));
writeFileSync(join(dir, 'echo.proto'), PROTO);
const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(join(dir, 'echo.proto'))).meshtest;

const [mode, ...args] = process.argv.slice(2);
if (mode === 'server') {
  const [name, host, port] = args;
  const server = new grpc.Server();
  server.addService(pkg.Echo.service, {
    Say: (call, cb) => cb(null, { text: call.request.text, name, peer: call.getPeer() }),
    Stream: (call) => {
      for (let i = 0; i < 3; i++) call.write({ text: `${call.request.text}#${i}`, name, peer: call.getPeer() });
      call.end();
    },
  });
  server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) {
      console.error(err.message);
      process.exit(1);
    }
    console.log('listening');
  });
} else {
  const [target, authority, text] = args;
  const client = new pkg.Echo(target, grpc.credentials.createInsecure(), { 'grpc.default_authority': authority });
  const deadline = new Date(Date.now() + 10_000);
  const done = (out) => {
    console.log(JSON.stringify(out));
    process.exit(0);
  };
  if (mode === 'unary') {
    client.Say({ text }, { deadline }, (err, reply) => done(err ? { error: err.code, details: err.details } : reply));
  } else {
    const replies = [];
    const call = client.Stream({ text }, { deadline });
    call.on('data', (m) => replies.push(m));
    call.on('error', (err) => done({ error: err.code, details: err.details, replies }));
    call.on('end', () => done({ replies }));
  }
}
