// The hand-off record's per-connection memo on the HTTP side (handoff.lua, lookup_for_connection),
// under the runtime's LuaJIT with a real shared dictionary: a keep-alive connection's requests read
// the dictionary once, and a memoized record is never served to another connection or address.
// The record on a real connection: test/dataplane/l4.test.ts.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { LUA_SOURCE_DIR } from '../../agent/l4/lua-modules.js';
import { findApisixRuntime } from '../support/pod/apisix-runtime.js';
import { missingResty } from '../support/rbac-lua.js';
import { describeWhenAvailable } from '../support/requirements.js';

// Each step: `reserve` (the stream side's record for a new connection), `release`, or `lookup` (one
// request on connection `conn` from source address `address`), printing what the request sees.
const SCRIPT = String.raw`
package.path = arg[1] .. "?.lua;" .. arg[2] .. "/deps/share/lua/5.1/?.lua;" .. package.path
local cjson = require("cjson.safe")
local handoff = require("apisix_mesh.handoff")
local addresses = {}
for _, step in ipairs(cjson.decode(assert(io.open(arg[3])):read("*a"))) do
  if step.reserve then
    addresses[step.reserve] = assert(handoff.reserve("outbound", step.client, 40000, step.dst))
  elseif step.release then
    handoff.release(addresses[step.release])
  elseif step.rewrite then
    -- the same address handed to a new connection (reserve's addresses wrap round after ~8 million)
    ngx.shared.nacos:set("apisix-mesh:" .. addresses[step.rewrite], "inbound|" .. step.client .. "|40000|" .. step.dst)
  else
    local h = handoff.lookup_for_connection(step.conn, addresses[step.address] or step.address)
    print(cjson.encode(h and { direction = h.direction, client = h.client_ip, dst = h.dst } or { none = true }))
  end
end
`;

type Step = { reserve: string; client: string; dst: string } | { release: string } | { rewrite: string; client: string; dst: string } | { conn: string; address: string };

function run(steps: Step[]): Array<Record<string, unknown>> {
  const runtime = findApisixRuntime();
  if (typeof runtime === 'string') throw new Error(runtime);
  const dir = mkdtempSync(join(tmpdir(), 'handoff-lua-'));
  try {
    writeFileSync(join(dir, 'script.lua'), SCRIPT);
    writeFileSync(join(dir, 'steps.json'), JSON.stringify(steps));
    const res = spawnSync(join(runtime.openrestyBin, 'resty'), ['--shdict', 'nacos 1m', join(dir, 'script.lua'), LUA_SOURCE_DIR, runtime.apisixHome, join(dir, 'steps.json')], { encoding: 'utf8', timeout: 60_000 });
    if (res.status !== 0 || res.stderr.trim()) throw new Error(`resty failed: ${res.stderr.slice(0, 2000)}`);
    return res.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describeWhenAvailable('the hand-off record, memoized per connection (handoff.lua)', missingResty(), () => {
  it('a connection reads its record once; another connection, another address or a reused address never gets it', () => {
    const out = run([
      { reserve: 'a', client: '10.0.0.1', dst: '10.96.0.1:80' },
      { conn: '7', address: 'a' },
      // the record is gone from the dictionary: connection 7's next request is answered from the memo
      { release: 'a' },
      { conn: '7', address: 'a' },
      // ... and no other connection from that address gets it
      { conn: '8', address: 'a' },
      // the address handed to a new connection (9): its own record, and connection 7's memo stays its own
      { rewrite: 'a', client: '10.0.0.2', dst: '10.0.0.5:8080' },
      { conn: '9', address: 'a' },
      { conn: '7', address: 'a' },
      // connection 7 from another address (nginx would not reuse a live number; the memo checks anyway)
      { reserve: 'b', client: '10.0.0.3', dst: '10.96.0.3:80' },
      { conn: '7', address: 'b' },
      // a miss is not memoized: the record that appears later is read
      { conn: '10', address: '127.128.9.9' },
      { reserve: 'c', client: '10.0.0.4', dst: '10.96.0.4:80' },
      { conn: '10', address: 'c' },
    ]);
    expect(out).toEqual([
      { direction: 'outbound', client: '10.0.0.1', dst: '10.96.0.1:80' },
      { direction: 'outbound', client: '10.0.0.1', dst: '10.96.0.1:80' },
      { none: true },
      { direction: 'inbound', client: '10.0.0.2', dst: '10.0.0.5:8080' },
      { direction: 'outbound', client: '10.0.0.1', dst: '10.96.0.1:80' },
      { direction: 'outbound', client: '10.0.0.3', dst: '10.96.0.3:80' },
      { none: true },
      { direction: 'outbound', client: '10.0.0.4', dst: '10.96.0.4:80' },
    ]);
  });
});
