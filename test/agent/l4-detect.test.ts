// The L4 front's TLS inspection (agent/l4/lua/apisix_mesh/detect.lua) under the runtime's LuaJIT:
// the server name and ALPN of real ClientHellos (Node's TLS client), and no Lua error on hostile
// ones (mutated and cut records): a runtime error there aborts the connection with an [error] and a
// stack trace in APISIX's log, per connection a client sends.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { connect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { LUA_SOURCE_DIR } from '../../agent/l4/lua-modules.js';
import { findApisixRuntime } from '../support/pod/apisix-runtime.js';
import { missingResty } from '../support/rbac-lua.js';
import { describeWhenAvailable } from '../support/requirements.js';

const SCRIPT = String.raw`
package.path = arg[1] .. "?.lua;" .. package.path
local cjson = require("cjson.safe")
cjson.encode_empty_table_as_object(false)
local detect = require("apisix_mesh.detect")
local input = cjson.decode(assert(io.open(arg[2])):read("*a"))
local function unhex(h) return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end)) end
local out = { parsed = {}, errors = {}, cases = 0 }
for i, hex in ipairs(input.hellos) do
  local ok, res = pcall(detect.parse_client_hello, unhex(hex))
  out.parsed[i] = ok and res and { sni = res.sni or cjson.null, alpn = res.alpn or {} } or { error = tostring(res) }
end
math.randomseed(input.seed)
for _, hex in ipairs(input.hellos) do
  local record = { unhex(hex):byte(1, -1) }
  for _ = 1, input.mutations do
    local b = { unpack(record) }
    for _ = 1, math.random(1, 4) do b[math.random(1, #b)] = math.random(0, 255) end
    local s = string.char(unpack(b))
    if math.random() < 0.3 then s = s:sub(1, math.random(1, #s)) end
    out.cases = out.cases + 1
    local ok, err = pcall(detect.parse_client_hello, s)
    if not ok and #out.errors < 5 then out.errors[#out.errors + 1] = tostring(err) end
  end
end
print(cjson.encode(out))
`;

/** The first TLS record Node's client sends with these options (its ClientHello). */
async function realClientHello(options: { servername?: string; ALPNProtocols?: string[] }): Promise<Buffer> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  try {
    const first = new Promise<Buffer>((resolve) => {
      server.once('connection', (socket) => {
        let got = Buffer.alloc(0);
        socket.on('data', (chunk: Buffer) => {
          got = Buffer.concat([got, chunk]);
          if (got.length >= 5 && got.length >= 5 + got.readUInt16BE(3)) {
            resolve(got.subarray(0, 5 + got.readUInt16BE(3)));
            socket.destroy();
          }
        });
      });
    });
    const client = connect({ host: '127.0.0.1', port, ...options, rejectUnauthorized: false });
    client.on('error', () => undefined); // the server hangs up after the hello
    const hello = await first;
    client.destroy();
    return hello;
  } finally {
    server.close();
  }
}

interface LuaOut {
  parsed: Array<{ sni: string | null; alpn: string[] } | { error: string }>;
  errors: string[];
  cases: number;
}

function runDetect(hellos: Buffer[], mutations: number): LuaOut {
  const runtime = findApisixRuntime();
  if (typeof runtime === 'string') throw new Error(runtime);
  const input = join(dir, 'input.json');
  writeFileSync(join(dir, 'detect.lua'), SCRIPT);
  writeFileSync(input, JSON.stringify({ hellos: hellos.map((h) => h.toString('hex')), seed: 7, mutations }));
  const res = spawnSync(join(runtime.openrestyBin, 'resty'), [join(dir, 'detect.lua'), LUA_SOURCE_DIR, input], { encoding: 'utf8', timeout: 120_000 });
  if (res.status !== 0) throw new Error(`resty failed: ${res.stderr.slice(0, 2000)}`);
  return JSON.parse(res.stdout) as LuaOut;
}

const dir = mkdtempSync(join(tmpdir(), 'l4-detect-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describeWhenAvailable('the L4 front\'s ClientHello inspection under OpenResty', missingResty(), () => {
  it('reads the server name (lower-cased) and the ALPN list of real ClientHellos', async () => {
    const hellos = await Promise.all([
      realClientHello({ servername: 'API.Example.com', ALPNProtocols: ['h2', 'http/1.1'] }),
      realClientHello({ servername: 'db.example.org' }),
      realClientHello({ ALPNProtocols: ['istio-peer-exchange', 'istio'] }),
    ]);
    expect(runDetect(hellos, 0).parsed).toEqual([
      { sni: 'api.example.com', alpn: ['h2', 'http/1.1'] },
      { sni: 'db.example.org', alpn: [] },
      { sni: null, alpn: ['istio-peer-exchange', 'istio'] },
    ]);
  });

  it('never raises on mutated or cut ClientHellos (lengths that point past their extension, records cut short)', async () => {
    const hellos = [await realClientHello({ servername: 'api.example.com', ALPNProtocols: ['h2', 'http/1.1'] })];
    const out = runDetect(hellos, 100_000);
    expect(out.cases).toBe(100_000);
    expect(out.errors).toEqual([]);
  });
});
