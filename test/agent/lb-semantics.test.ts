// Issue 14 (behave like Istio): load balancing as Envoy does it. The translation of consistent-hash
// policies (hash-cookie.ts, route-configuration.ts), and the sidecar's Lua that makes the hash key
// (hash_key.lua, xxhash64.lua) under the runtime's LuaJIT. On the real APISIX: test/dataplane/lb-semantics.test.ts.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fromCanonical } from '../../agent/xds/codec.js';
import { TYPE_URL } from '../../agent/xds/protos.js';
import type { Cluster, RouteConfiguration } from '../../agent/xds/envoy-types.js';
import { translateCluster } from '../../agent/translate/cluster.js';
import { validateApisix } from '../../agent/schema/validate.js';
import { translateRouteConfiguration } from '../../agent/translate/route-configuration.js';
import { LUA_SOURCE_DIR } from '../../agent/l4/lua-modules.js';
import { findApisixRuntime } from '../support/pod/apisix-runtime.js';
import { missingResty } from '../support/rbac-lua.js';
import { describeWhenAvailable } from '../support/requirements.js';

const scope = { direction: 'outbound' as const, port: 80 };

function translateHashPolicy(hashPolicy: object[]) {
  const rc = fromCanonical<RouteConfiguration>(TYPE_URL.route, {
    name: '80',
    virtual_hosts: [{ name: 'a', domains: ['a'], routes: [{ name: 'r', match: { prefix: '/' }, route: { cluster: 'outbound|80||a', hash_policy: hashPolicy } }] }],
  });
  const t = translateRouteConfiguration(rc, scope);
  const r = t.routes[0]!;
  const cookie = (r.route.plugins?.['apisix-mesh-access'] as { hash_cookie?: unknown } | undefined)?.hash_cookie;
  return { settings: r.upstreamSettings, cookie, route: r.route, notes: t.notes };
}

describe('consistent hashing: the translation of hash policies', () => {
  it('a cookie policy with a ttl hashes on the cookie and makes it when absent (name, path, ttl in seconds, attributes)', () => {
    const { settings, cookie, route, notes } = translateHashPolicy([{ cookie: { name: 'user', ttl: '3.9s', path: '/shop', attributes: [{ name: 'SameSite', value: 'Lax' }, { name: 'Secure' }] } }]);
    expect(settings.hash).toEqual({ hash_on: 'cookie', key: 'user' });
    expect(cookie).toEqual({ name: 'user', path: '/shop', ttl: 3, attributes: [['SameSite', 'Lax'], ['Secure', '']] });
    // the route with it passes the plugin's schema as the agent checks it
    expect(validateApisix('route.strict', route)).toBeNull();
    expect(notes).toEqual([]);
  });

  it('a ttl of zero makes a session cookie; without a ttl no cookie is made', () => {
    expect(translateHashPolicy([{ cookie: { name: 'user', ttl: '0s' } }]).cookie).toEqual({ name: 'user', path: '', ttl: 0, attributes: [] });
    expect(translateHashPolicy([{ cookie: { name: 'user' } }]).cookie).toBeUndefined();
  });

  it('a cookie name, path or attribute that would break the Set-Cookie header: the cookie is read, never made, and a note says so', () => {
    for (const cookie of [{ name: 'a b', ttl: '1s' }, { name: 'ok', ttl: '1s', path: '/x;Domain=evil' }, { name: 'ok', ttl: '1s', path: '/\r\nX: y' }, { name: 'ok', ttl: '1s', attributes: [{ name: 'a=b' }] }]) {
      const { settings, cookie: made, notes } = translateHashPolicy([{ cookie }]);
      expect(made).toBeUndefined();
      expect(notes.map((n) => n.reason)).toEqual(['hash-cookie-not-generated']);
      if (cookie.name === 'ok') expect(settings.hash).toEqual({ hash_on: 'cookie', key: 'ok' });
      expect(notes[0]!.detail!.length).toBeLessThan(200);
    }
  });
});

// The Lua runs with APISIX's request context reduced to what hash_key.lua reads: the upstream
// (type, hash_on, key), the variables (a table: what APISIX's ctx.var caches), the client address.
const SCRIPT = String.raw`
package.path = arg[1] .. "?.lua;" .. package.path
local cjson = require("cjson.safe")
local ffi = require("ffi")
local xxhash64 = require("apisix_mesh.xxhash64")
local hash_key = require("apisix_mesh.hash_key")
local input = cjson.decode(assert(io.open(arg[2])):read("*a"))
local function emit(v) print(cjson.encode(v)) end
-- the reference: the xxHash library itself
ffi.cdef("unsigned long long XXH64(const void* input, size_t length, unsigned long long seed);")
local lib = ffi.load("libxxhash.so.0")
local mismatches = {}
for _, s in ipairs(input.strings) do
  local mine, ref = xxhash64.hex(s), bit.tohex(lib.XXH64(s, #s, 0), 16)
  if mine ~= ref then mismatches[#mismatches + 1] = s .. " " .. mine .. " " .. ref end
end
emit({ mismatches = table.concat(mismatches, "\n"), foo = tostring(xxhash64.hash("foo")), empty = tostring(xxhash64.hash("")) })
for _, c in ipairs(input.cases) do
  ngx.var = { remote_addr = c.ip, remote_port = c.port, request_id = c.request_id }
  local api_ctx = { upstream_conf = c.upstream, var = c.vars }
  if c.cookie then hash_key.generate_cookie(api_ctx, c.cookie) end
  hash_key.before_pick(api_ctx)
  local name = (({ cookie = "cookie_", header = "http_", vars = "" })[c.upstream.hash_on] or "") .. (c.upstream.key or "")
  emit({ key = api_ctx.var[name] or cjson.null, set_cookie = api_ctx.apisix_mesh_set_cookie or cjson.null, expected = lib and bit.tohex(lib.XXH64(c.address or "", #(c.address or ""), 0), 16) })
end
`;

function runLua(input: object): Array<Record<string, unknown>> {
  const runtime = findApisixRuntime();
  if (typeof runtime === 'string') throw new Error(runtime);
  const dir = mkdtempSync(join(tmpdir(), 'lb-lua-'));
  try {
    writeFileSync(join(dir, 'script.lua'), SCRIPT);
    writeFileSync(join(dir, 'input.json'), JSON.stringify(input));
    const res = spawnSync(join(runtime.openrestyBin, 'resty'), [join(dir, 'script.lua'), LUA_SOURCE_DIR, join(dir, 'input.json')], { encoding: 'utf8', timeout: 60_000 });
    if (res.status !== 0 || res.stderr.trim()) throw new Error(`resty failed: ${res.stderr.slice(0, 2000)}`);
    return res.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describeWhenAvailable('consistent hashing: the hash key in the sidecar\'s Lua (hash_key.lua, xxhash64.lua)', missingResty(), () => {
  const cookieUpstream = { type: 'chash', hash_on: 'cookie', key: 'user' };
  const policy = { name: 'user', path: '/shop', ttl: 30, attributes: [['SameSite', 'Lax'], ['Secure', '']] };

  it('xxHash64 is the xxHash library\'s (every length 0..100, and Envoy\'s own test values)', () => {
    const strings = Array.from({ length: 101 }, (_, n) => Array.from({ length: n }, (_, i) => String.fromCharCode(33 + ((i * 7 + n) % 90))).join(''));
    const [first] = runLua({ strings, cases: [] });
    expect(first!.mismatches).toBe('');
    // Envoy's test/common/common/hash_test.cc
    expect(first!.foo).toBe('3728699739546630719ULL');
    expect(first!.empty).toBe('17241709254077376921ULL');
  });

  it('no cookie and a policy with a ttl: the key is the hex xxHash64 of the client address, and the response sets the cookie as Envoy does', () => {
    const out = runLua({
      strings: [],
      cases: [
        { upstream: cookieUpstream, vars: {}, cookie: policy, ip: '10.1.2.3', port: '40123', request_id: 'r1', address: '10.1.2.3:40123' },
        { upstream: cookieUpstream, vars: {}, cookie: { ...policy, ttl: 0, path: '', attributes: [] }, ip: 'fd00::7', port: '5', request_id: 'r2', address: '[fd00::7]:5' },
      ],
    });
    expect(out[1]!.key).toBe(out[1]!.expected);
    expect(out[1]!.key).toMatch(/^[0-9a-f]{16}$/);
    expect(out[1]!.set_cookie).toBe(`user="${String(out[1]!.expected)}"; Max-Age=30; Path=/shop; SameSite=Lax; Secure; HttpOnly`);
    expect(out[2]!.key).toBe(out[2]!.expected);
    expect(out[2]!.set_cookie).toBe(`user="${String(out[2]!.expected)}"; HttpOnly`);
  });

  it('a cookie the client sends back is read without its quotes (the form Envoy sets), so it hashes as the value made', () => {
    const out = runLua({ strings: [], cases: [{ upstream: cookieUpstream, vars: { cookie_user: '"0123456789abcdef"' }, cookie: policy, ip: '10.1.2.3', port: '1', request_id: 'r' }] });
    expect(out[1]).toMatchObject({ key: '0123456789abcdef', set_cookie: null });
  });

  it('without a usable key (no ttl, absent header, absent query parameter): a random key per request, never the client address', () => {
    const out = runLua({
      strings: [],
      cases: [
        { upstream: cookieUpstream, vars: {}, ip: '10.1.2.3', port: '1', request_id: 'random-1' },
        { upstream: { type: 'chash', hash_on: 'header', key: 'x-user' }, vars: {}, ip: '10.1.2.3', port: '1', request_id: 'random-2' },
        { upstream: { type: 'chash', hash_on: 'vars', key: 'arg_u' }, vars: { arg_u: '' }, ip: '10.1.2.3', port: '1', request_id: 'random-3' },
        { upstream: { type: 'chash', hash_on: 'header', key: 'x-user' }, vars: { 'http_x-user': 'alice' }, ip: '10.1.2.3', port: '1', request_id: 'random-4' },
        { upstream: { type: 'roundrobin' }, vars: {}, ip: '10.1.2.3', port: '1', request_id: 'random-5' },
      ],
    });
    expect(out.slice(1).map((o) => o.key)).toEqual(['random-1', 'random-2', 'random-3', 'alice', null]);
    expect(out.slice(1).map((o) => o.set_cookie)).toEqual([null, null, null, null, null]);
  });
});

describe('outlier detection: the translation of a cluster\'s policy', () => {
  const cluster = (od: object, extra: object = {}) =>
    translateCluster(fromCanonical<Cluster>(TYPE_URL.cluster, { name: 'outbound|80||a', type: 'EDS', outlier_detection: od, ...extra }));

  it('Istio\'s circuit-breaking example (consecutive5xxErrors 1, interval 1s, baseEjectionTime 3m, maxEjectionPercent 100): the sidecar\'s policy, no APISIX health check', () => {
    const t = cluster({ consecutive_5xx: 1, interval: '1s', base_ejection_time: '180s', max_ejection_percent: 100, enforcing_consecutive_5xx: 100, enforcing_success_rate: 0 }, { common_lb_config: { healthy_panic_threshold: {} } });
    expect(t.upstream?.checks).toBeUndefined();
    expect(t.upstream?.labels).toEqual({ 'apisix-mesh-outlier': 'c5=1,e5=100,cg=5,eg=0,base=180,max=300,int=1,pct=100,one=0,panic=0' });
    expect(t.notes).toEqual([]);
    expect(validateApisix('upstream', { ...t.upstream, nodes: [{ host: '10.0.0.1', port: 80, weight: 1 }] })).toBeNull();
  });

  it('consecutive gateway errors are counted as well as 5xx, each with its enforcing percentage; Envoy\'s defaults otherwise', () => {
    const t = cluster({ consecutive_5xx: 7, consecutive_gateway_failure: 2, enforcing_consecutive_gateway_failure: 100, enforcing_success_rate: 0, max_ejection_time: '20s', base_ejection_time: '30s' });
    // max_ejection_time is never below base_ejection_time; no healthy_panic_threshold: Envoy's 50 %
    expect(t.upstream?.labels?.['apisix-mesh-outlier']).toBe('c5=7,e5=100,cg=2,eg=100,base=30,max=30,int=10,pct=10,one=0,panic=50');
  });

  it('nothing enforced (both counters off): no policy', () => {
    const t = cluster({ enforcing_consecutive_5xx: 0, enforcing_success_rate: 0 });
    expect(t.upstream?.labels).toBeUndefined();
  });

  it('what the sidecar does not enforce is said: success rate (Envoy enforces it by default), failure percentage, local-origin errors apart, jitter', () => {
    const t = cluster({ consecutive_5xx: 5, enforcing_failure_percentage: 100, split_external_local_origin_errors: true, max_ejection_time_jitter: '1s' });
    expect(t.notes.map((n) => n.reason).sort()).toEqual(['outlier-failure-percentage', 'outlier-jitter', 'outlier-local-origin', 'outlier-success-rate']);
    expect(t.notes.every((n) => !n.skipped)).toBe(true);
  });
});

// outlier.lua with the real shared dictionary; time is given (ngx.now() is the request's in APISIX)
const OUTLIER_SCRIPT = String.raw`
package.path = arg[1] .. "?.lua;" .. package.path
local cjson = require("cjson.safe")
local outlier = require("apisix_mesh.outlier")
local input = cjson.decode(assert(io.open(arg[2])):read("*a"))
for _, c in ipairs(input) do
  ngx.shared["apisix_mesh_outlier"]:flush_all()
  local up = { id = c.id, nodes = {}, labels = { ["apisix-mesh-outlier"] = c.label } }
  for i, host in ipairs(c.hosts) do up.nodes[i] = { host = host, port = 80, weight = 1 } end
  local p = outlier.policy(up)
  local out = {}
  for _, step in ipairs(c.steps) do
    if step.status then
      outlier.record(up, p, up.nodes, step.addr, step.status, step.t)
    else
      local names = {}
      for i, n in ipairs(outlier.available(up, p, step.t)) do names[i] = n.host end
      out[#out + 1] = table.concat(names, " ")
    end
  end
  print(cjson.encode(out))
end
`;

interface OutlierCase {
  id: string;
  label: string;
  hosts: string[];
  /** an answer from a host at time t, or (no status) which hosts are available at time t */
  steps: Array<{ t: number; addr?: string; status?: number }>;
}

function runOutlier(cases: OutlierCase[]): string[][] {
  const runtime = findApisixRuntime();
  if (typeof runtime === 'string') throw new Error(runtime);
  const dir = mkdtempSync(join(tmpdir(), 'outlier-lua-'));
  try {
    writeFileSync(join(dir, 'script.lua'), OUTLIER_SCRIPT);
    writeFileSync(join(dir, 'input.json'), JSON.stringify(cases));
    const res = spawnSync(join(runtime.openrestyBin, 'resty'), ['--shdict', 'apisix_mesh_outlier 1m', '--errlog-level', 'error', join(dir, 'script.lua'), LUA_SOURCE_DIR, join(dir, 'input.json')], { encoding: 'utf8', timeout: 60_000 });
    if (res.status !== 0 || res.stderr.trim()) throw new Error(`resty failed: ${res.stderr.slice(0, 2000)}`);
    return res.stdout.trim().split('\n').map((l) => JSON.parse(l) as string[]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const label = (p: Partial<Record<'c5' | 'e5' | 'cg' | 'eg' | 'base' | 'max' | 'int' | 'pct' | 'one' | 'panic', number>>) =>
  Object.entries({ c5: 2, e5: 100, cg: 5, eg: 0, base: 30, max: 300, int: 1, pct: 100, one: 0, panic: 0, ...p }).map(([k, v]) => `${k}=${v}`).join(',');
const fail = (t: number, addr: string, status = 503) => ({ t, addr: `${addr}:80`, status });
const ok = (t: number, addr: string) => ({ t, addr: `${addr}:80`, status: 200 });
const look = (t: number) => ({ t });

describeWhenAvailable('outlier detection in the sidecar\'s Lua (outlier.lua)', missingResty(), () => {
  it('an ejected host stays out for base_ejection_time × the times it was ejected (not one interval), then comes back', () => {
    const [out] = runOutlier([{
      id: 'u', label: label({ c5: 2, base: 30, int: 10 }), hosts: ['a', 'b'],
      steps: [fail(0, 'a'), look(0.5), fail(1, 'a'), look(1.5), look(3), look(30.9), look(31.1),
        // ejected again within an interval of coming back: twice as long
        fail(32, 'a'), fail(32, 'a'), look(91.9), look(92.1)],
    }]);
    expect(out).toEqual(['a b', 'b', 'b', 'b', 'a b', 'b', 'a b']);
  });

  it('the multiplier is capped by max_ejection_time, and goes down by one per interval spent back in the pool', () => {
    const [out] = runOutlier([{
      id: 'u', label: label({ c5: 1, base: 10, max: 25, int: 5 }), hosts: ['a', 'b'],
      steps: [fail(0, 'a'), look(9.9), look(10.1), fail(10.1, 'a'), look(30), look(30.2), fail(30.2, 'a'), look(55.1), look(55.3),
        // back at 55.2; 20 s later (4 intervals) the multiplier (3) is down to 0: the next ejection is 10 s
        fail(75.2, 'a'), look(85.1), look(85.3)],
    }]);
    expect(out).toEqual(['b', 'a b', 'b', 'a b', 'b', 'a b', 'b', 'a b']);
  });

  it('a success in between resets the count; other hosts\' failures do not add up', () => {
    const [out] = runOutlier([{ id: 'u', label: label({ c5: 2 }), hosts: ['a', 'b'], steps: [fail(0, 'a'), ok(0, 'a'), fail(0, 'a'), fail(0, 'b'), look(1)] }]);
    expect(out).toEqual(['a b']);
  });

  it('max_ejection_percent: no more hosts ejected at once than the share allows (none at all when one host is over it), unless always_eject_one_host', () => {
    const steps = [fail(0, 'a'), fail(0, 'a'), fail(0, 'b'), fail(0, 'b'), fail(0, 'c'), fail(0, 'c'), look(1)];
    const out = runOutlier([
      { id: 'u', label: label({ pct: 50 }), hosts: ['a', 'b', 'c', 'd'], steps },
      { id: 'v', label: label({ pct: 10 }), hosts: ['a', 'b', 'c', 'd'], steps },
      { id: 'w', label: label({ pct: 10, one: 1 }), hosts: ['a', 'b', 'c', 'd'], steps },
    ]);
    expect(out).toEqual([['c d'], ['a b c d'], ['b c d']]);
  });

  it('consecutive gateway failures (502, 503, 504) eject on their own count, a 500 in between resets it but counts as 5xx', () => {
    const gateway = label({ c5: 5, cg: 2, eg: 100 });
    const out = runOutlier([
      { id: 'u', label: gateway, hosts: ['a', 'b'], steps: [fail(0, 'a', 502), fail(0, 'a', 504), look(1)] },
      { id: 'v', label: gateway, hosts: ['a', 'b'], steps: [fail(0, 'a', 502), fail(0, 'a', 500), fail(0, 'a', 503), look(1)] },
      // the 5xx count saw 5 answers in a row
      { id: 'w', label: gateway, hosts: ['a', 'b'], steps: [fail(0, 'a', 502), fail(0, 'a', 500), fail(0, 'a', 503), fail(0, 'a', 500), fail(0, 'a', 501), look(1)] },
      // gateway counter not enforced (Istio without consecutiveGatewayErrors): two 502 are not enough
      { id: 'x', label: label({ c5: 5, cg: 2, eg: 0 }), hosts: ['a', 'b'], steps: [fail(0, 'a', 502), fail(0, 'a', 502), look(1)] },
    ]);
    expect(out).toEqual([['b'], ['a b'], ['b'], ['a b']]);
  });

  it('every host ejected: none available (503), unless under the panic threshold, where Envoy balances over all hosts', () => {
    const steps = [fail(0, 'a'), fail(0, 'a'), look(1)];
    const out = runOutlier([
      { id: 'u', label: label({ panic: 0 }), hosts: ['a'], steps },
      { id: 'v', label: label({ panic: 50 }), hosts: ['a'], steps },
      { id: 'w', label: label({ panic: 50 }), hosts: ['a', 'b'], steps },
      { id: 'x', label: label({ panic: 51 }), hosts: ['a', 'b'], steps },
    ]);
    expect(out).toEqual([[''], ['a'], ['b'], ['a b']]);
  });
});

describeWhenAvailable('outlier detection reads each try of a request (outlier.lua)', missingResty(), () => {
  // nginx's lists: ", " between tries, " : " between upstream requests (the retry locations restart
  // one: retry_balancer.lua), an empty entry where a balancer ended a try without a peer
  const tries = (addr: string, status: string) => {
    const runtime = findApisixRuntime();
    if (typeof runtime === 'string') throw new Error(runtime);
    const script = `package.path = arg[1] .. "?.lua;" .. package.path
local t = require("apisix_mesh.outlier").tries(arg[2], arg[3])
local out = {}
for _, try in ipairs(t) do out[#out + 1] = try.addr .. "=" .. try.status end
print(table.concat(out, " "))`;
    const dir = mkdtempSync(join(tmpdir(), 'outlier-tries-'));
    try {
      writeFileSync(join(dir, 'script.lua'), script);
      const res = spawnSync(join(runtime.openrestyBin, 'resty'), ['--errlog-level', 'error', join(dir, 'script.lua'), LUA_SOURCE_DIR, addr, status], { encoding: 'utf8', timeout: 60_000 });
      if (res.status !== 0 || res.stderr.trim()) throw new Error(`resty failed: ${res.stderr.slice(0, 2000)}`);
      return res.stdout.trim();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it('tries of one upstream request, and of a restarted one: each address with its own status', () => {
    expect(tries('10.0.0.1:80, 10.0.0.2:80', '503, 200')).toBe('10.0.0.1:80=503 10.0.0.2:80=200');
    // a restart: the failed try, then the new upstream request's empty first entry, then its tries
    expect(tries('10.0.0.1:80 : , 10.0.0.2:80', '502 : -, 200')).toBe('10.0.0.1:80=502 10.0.0.2:80=200');
    expect(tries('10.0.0.1:80 : ', '502 : ')).toBe('10.0.0.1:80=502');
    expect(tries('', '')).toBe('');
  });
});
