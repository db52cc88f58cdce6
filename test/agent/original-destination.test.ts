// Routes to Istio's PassthroughCluster / InboundPassthroughCluster carry a serverless-pre-function
// that points the request's upstream at its original destination. APISIX cannot run here, so the
// Lua function runs under LuaJIT (the Lua APISIX runs on) with the few APISIX calls it makes
// standing in: first the check APISIX's serverless plugin applies before accepting the route
// (loadstring, call, must return a function), then the function against original destinations.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { validateApisix } from '../../agent/schema/validate.js';
import { ORIGINAL_DESTINATION_PLUGIN, originalDestinationLua, originalDestinationRoute } from '../../agent/translate/original-destination.js';
import { DEFAULT_CAPTURE_PORTS } from '../../agent/translate/route-configuration.js';
import { describeWhenAvailable, missingCommand } from '../support/requirements.js';

const lua = originalDestinationLua({ ports: DEFAULT_CAPTURE_PORTS, connectTimeout: 0.25 });

/** Loads the function as the serverless plugin does, runs it once, prints what it did. */
const HARNESS = String.raw`
local src = assert(io.open(arg[1])):read("*a")
local dst = arg[2] ~= "" and arg[2] or nil
local exited, set
ngx = { var = {} }
package.loaded["apisix.core"] = {
  log = { warn = function() end },
  response = { exit = function(code) exited = code; return code end },
}
package.loaded["apisix.upstream"] = {
  set = function(ctx, key, version, conf) set = { key = key, version = version, conf = conf } end,
}
local chunk, err = loadstring(src)
if not chunk then print("loadstring failed: " .. err) os.exit(1) end
local ok, fn = pcall(chunk)
if not ok or type(fn) ~= "function" then print("not a function: " .. tostring(fn)) os.exit(1) end
local route = { value = { id = "r1" } }
fn({}, { conf_version = 7, matched_route = route, var = { connection_original_dst = dst } })
if exited then print("exit " .. exited) return end
local c = set.conf
local n = c.nodes[1]
print(table.concat({ "set", set.key, set.version, c.type, c.scheme, c.pass_host, n.host, n.port, n.weight,
  c.timeout.connect, c.timeout.send, c.timeout.read, tostring(c.parent == route), #c.nodes }, " "))
`;

describeWhenAvailable('the original-destination function under LuaJIT', missingCommand('luajit', 'install luajit'), () => {
  const dir = mkdtempSync(join(tmpdir(), 'orig-dst-'));
  writeFileSync(join(dir, 'harness.lua'), HARNESS);
  writeFileSync(join(dir, 'function.lua'), lua);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const run = (dst: string) => {
    const res = spawnSync('luajit', [join(dir, 'harness.lua'), join(dir, 'function.lua'), dst], { encoding: 'utf8' });
    expect(res.stderr).toBe('');
    return res.stdout.trim();
  };

  it('sets one node at the IPv4 destination, keeping the Host header, for this request only', () => {
    expect(run('10.96.3.7:8080')).toBe('set passthrough#10.96.3.7:8080 7 roundrobin http pass 10.96.3.7 8080 1 0.25 300 300 true 1');
  });

  it('takes IPv6 destinations with or without brackets', () => {
    expect(run('[fd00:77::1]:80')).toBe('set passthrough#[fd00:77::1]:80 7 roundrobin http pass fd00:77::1 80 1 0.25 300 300 true 1');
    expect(run('fd00:77::1:80')).toMatch(/^set \S+ 7 roundrobin http pass fd00:77::1 80 /);
  });

  it('answers 502 without an original destination, and for the capture ports (a loop into APISIX)', () => {
    expect(run('')).toBe('exit 502');
    expect(run('not-an-address')).toBe('exit 502');
    expect(run('10.96.3.7:15001')).toBe('exit 502');
    expect(run('10.96.3.7:15006')).toBe('exit 502');
  });
});

describe('the original-destination route', () => {
  const base = { id: 'r1', name: 'allow_any', uri: '/*', priority: 1, status: 1 as const, upstream_id: 'u1', vars: [['apisix_mesh_direction', '==', 'outbound'] as const] };

  it('drops the stored upstream and passes APISIX route schema with the plugin', () => {
    const route = originalDestinationRoute(base, { ports: DEFAULT_CAPTURE_PORTS, connectTimeout: 10 });
    expect(route.upstream_id).toBeUndefined();
    expect(route.plugins?.[ORIGINAL_DESTINATION_PLUGIN]).toEqual({ phase: 'access', functions: [originalDestinationLua({ ports: DEFAULT_CAPTURE_PORTS, connectTimeout: 10 })] });
    expect(validateApisix('route.strict', route)).toBeNull();
    const empty = { ...route, plugins: { [ORIGINAL_DESTINATION_PLUGIN]: { phase: 'access', functions: [] } } };
    expect(validateApisix('route.strict', empty)).not.toBeNull();
  });

  it('follows configured capture ports and refuses a timeout that is not a positive number', () => {
    expect(originalDestinationLua({ ports: { outbound: 16001, inbound: 16006 }, connectTimeout: 1 })).toContain('port == 16001 or port == 16006');
    expect(() => originalDestinationLua({ ports: DEFAULT_CAPTURE_PORTS, connectTimeout: Number.NaN })).toThrow(RangeError);
  });
});
