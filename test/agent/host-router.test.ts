// host_router.lua against APISIX's own radixtree_host_uri router, both under the runtime's LuaJIT
// with the real resty.radixtree: the same routes, every request of a cross product of host names
// (exact, wildcard, unknown), paths, methods and a header, must match the same route with the same
// matched host and path in both — before and after rebuilds — while the sidecar's router makes one
// URI radixtree per list of routes instead of one per name plus a radixtree of names. Only APISIX's
// core, event and service modules are stood in for (their log, table pool and versions).
// On a real APISIX: test/dataplane/host-routers.test.ts.
import { expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingResty, runResty } from '../support/resty-lua.js';

const SCRIPT = String.raw`
local cjson = require("cjson.safe")
cjson.encode_empty_table_as_object(false)
local input = cjson.decode(assert(io.open(arg[1])):read("*a"))
local out = { errors = {}, events = 0, made = { apisix = 0, mesh = 0 }, differences = {}, compared = 0, matched = 0 }

local services, services_version = {}, 1
package.loaded["apisix.core"] = {
  config = { local_conf = function() return { apisix = { router = { http = input.router } } } end },
  log = {
    error = function(...) table.insert(out.errors, table.concat({ ... })) end,
    info = function() end, warn = function() end, debug = function() end,
  },
  table = {
    insert = table.insert,
    try_read_attr = function(t, ...)
      for _, k in ipairs({ ... }) do
        if type(t) ~= "table" then return nil end
        t = t[k]
      end
      return t
    end,
  },
  tablepool = { fetch = function() return {} end, release = function() end },
}
package.loaded["apisix.core.event"] = { CONST = { BUILD_ROUTER = "build-router" }, push = function() out.events = out.events + 1 end }
package.loaded["apisix.http.service"] = {
  services = function() return services, services_version end,
  get = function(id) return services[id] end,
}
if input.broken then
  package.loaded["apisix.http.service"].get = nil
end

-- every radixtree either router makes, counted for the one building
local utils_router = require("apisix.utils.router")
local building = "apisix"
local new = utils_router.new
utils_router.new = function(routes)
  out.made[building] = out.made[building] + 1
  return new(routes)
end

local router = require("apisix.http.router.radixtree_host_uri")
local apisix_match = router.match
require("apisix_mesh.host_router").install()
out.replaced = router.match ~= apisix_match
-- APISIX's router as it is: a second copy of its module, untouched
package.loaded["apisix.http.router.radixtree_host_uri"] = nil
local reference = require("apisix.http.router.radixtree_host_uri")
local function set_routes(values, version)
  router.user_routes = { values = values, conf_version = version }
  reference.user_routes = router.user_routes
end

local function items(routes)
  local list = {}
  for i, r in ipairs(routes) do list[i] = { key = "/apisix/routes/" .. r.id, value = r } end
  return list
end

local function matched(match, req)
  local api_ctx = { var = { host = req.host, uri = req.uri, request_method = req.method, remote_addr = "10.0.0.9", http_x = req.x } }
  local ok = match(api_ctx)
  if not ok then return "none" end
  local m = api_ctx.curr_req_matched or {}
  return tostring(api_ctx.matched_route.value.id) .. " host=" .. tostring(m._host) .. " path=" .. tostring(m._path)
    .. " left=" .. tostring(api_ctx.real_curr_req_matched_host) .. "/" .. tostring(api_ctx.real_curr_req_matched_path)
end

local function compare(phase)
  for _, req in ipairs(input.requests) do
    building = "apisix"
    local a = matched(reference.match, req)
    building = "mesh"
    local b = out.replaced and matched(router.match, req) or a
    out.compared = out.compared + 1
    if a ~= "none" then out.matched = out.matched + 1 end
    if a ~= b and #out.differences < 10 then
      table.insert(out.differences, { phase = phase, request = req, apisix = a, mesh = b })
    end
  end
end

set_routes(items(input.routes), 1)
compare("first build")
out.first = { made = { apisix = out.made.apisix, mesh = out.made.mesh }, events = out.events }
-- the same versions: neither rebuilds
compare("same versions")
out.unchanged = { made = { apisix = out.made.apisix, mesh = out.made.mesh }, events = out.events }
-- new routes: both rebuild
set_routes(items(input.changed_routes), 2)
compare("routes changed")
-- a service's names change: a services version, not a routes version
services = input.services
services_version = 2
compare("services changed")
print(cjson.encode(out))
`;

interface Out {
  errors: string[];
  events: number;
  made: { apisix: number; mesh: number };
  first: { made: { apisix: number; mesh: number }; events: number };
  unchanged: { made: { apisix: number; mesh: number }; events: number };
  differences: unknown[];
  compared: number;
  matched: number;
  replaced: boolean;
}

interface Route {
  id: string;
  uri?: string;
  uris?: string[];
  hosts?: string[];
  priority?: number;
  methods?: string[];
  vars?: unknown[];
  status?: number;
  service_id?: string;
}

/** a mesh service's names, as istiod's virtual host domains give them */
const namesOf = (s: string) => [`${s}.ns.svc.cluster.local`, `${s}.ns.svc.cluster.local.`, `${s}.ns`, `${s}.ns.svc`, s];

function routes(): Route[] {
  const out: Route[] = [];
  let priority = 1000;
  for (const s of ['a', 'b', 'c']) {
    if (s === 'a') out.push({ id: `${s}-admin`, uri: '/admin*', hosts: namesOf(s), priority: priority--, methods: ['GET'] });
    out.push({ id: `${s}-default`, uri: '/*', hosts: namesOf(s), priority: priority-- });
  }
  // a name of b given to another route list too (its own radixtree); a disabled route
  out.push({ id: 'b-header', uri: '/*', hosts: ['b.ns', 'shared.example'], priority: 2000, vars: [['http_x', '==', '1']] });
  out.push({ id: 'disabled', uri: '/*', hosts: ['off.example'], priority: 10, status: 0 });
  // an exact name with only a path: other paths fall through to the wildcards and the routes without names
  out.push({ id: 'exact-path', uri: '/only', hosts: ['x.wild.test'], priority: 5 });
  out.push({ id: 'wild', uri: '/*', hosts: ['*.wild.test'], priority: 4 });
  out.push({ id: 'deep-wild', uri: '/*', hosts: ['*.deep.wild.test'], priority: 4 });
  out.push({ id: 'wild-admin', uris: ['/admin', '/admin/*'], hosts: ['*.test'], priority: 3 });
  // the routes without a name: Istio's allow_any and one path
  out.push({ id: 'any-path', uri: '/only-any', priority: 2 });
  out.push({ id: 'any', uri: '/*', priority: 1, vars: [['http_x', '~=', 'block']] });
  // a route whose names come from an APISIX service (none until the services change)
  out.push({ id: 'by-service', uri: '/svc*', service_id: 'svc1', priority: 3000 });
  return out;
}

function requests(): { host: string; uri: string; method: string; x?: string }[] {
  const hosts = [
    ...['a', 'b', 'c', 'gone'].flatMap(namesOf),
    'shared.example', 'off.example', 'x.wild.test', 'y.wild.test', 'a.deep.wild.test', 'deep.wild.test',
    'wild.test', 'q.test', 'unknown.example', 'service.example', '10.96.0.1',
  ];
  const out = [];
  for (const host of hosts) {
    for (const uri of ['/', '/admin', '/admin/x', '/only', '/only-any', '/svc/1', '/z']) {
      for (const method of ['GET', 'POST']) {
        for (const x of [undefined, '1', 'block']) out.push({ host, uri, method, ...(x ? { x } : {}) });
      }
    }
  }
  return out;
}

const run = (input: Record<string, unknown>) => runResty<Out>(SCRIPT, input, { modules: true, apisix: true })[0]!;

describeWhenAvailable('host_router.lua against APISIX\'s radixtree_host_uri (runtime\'s LuaJIT, real resty.radixtree)', missingResty(), () => {
  const changed = routes().filter((r) => !r.id.startsWith('c-') && r.id !== 'wild');
  changed.push({ id: 'c-moved', uri: '/*', hosts: ['c.ns', 'moved.example'], priority: 900 });
  const input = {
    router: 'radixtree_host_uri',
    routes: routes(),
    changed_routes: changed,
    services: { svc1: { value: { id: 'svc1', hosts: ['service.example', '*.deep.wild.test'] } } },
    requests: requests(),
  };

  it('every request matches the same route, host and path as APISIX\'s router, through rebuilds', () => {
    const out = run(input);
    // both routers say it of the route whose APISIX service is missing, at each of the first two builds
    expect(out.errors).toEqual(Array(4).fill('failed to fetch service configuration by id: svc1'));
    expect(out.replaced).toBe(true);
    expect(out.differences).toEqual([]);
    expect(out.compared).toBe(4 * input.requests.length);
    // the comparison is not vacuous: most requests match something, some match nothing
    expect(out.matched).toBeGreaterThan(out.compared / 2);
    expect(out.matched).toBeLessThan(out.compared);
  });

  it('one radixtree per list of routes (APISIX: one per name, plus one of names); rebuilt only on a new version', () => {
    const out = run(input);
    // 3 services × 5 names, 5 other names (the disabled route's is not one), the routes without
    // names, the radixtree of names
    expect(out.first.made.apisix).toBe(3 * 5 + 5 + 2);
    // lists: a, b (its 4 names), b.ns (b-header + b-default), shared.example, x.wild.test, the two
    // wildcards, *.test, c; then the names without one, and the wildcards' radixtree of names
    expect(out.first.made.mesh).toBe(9 + 1 + 1);
    expect(out.first.events).toBe(2);
    expect(out.unchanged.made).toEqual(out.first.made);
    expect(out.unchanged.events).toBe(2);
    expect(out.events).toBe(6);
  });

  it('APISIX\'s router not as expected: one [error], APISIX\'s own left in place; another router configured: left alone', () => {
    const broken = run({ ...input, broken: true, requests: [] });
    expect(broken.replaced).toBe(false);
    expect(broken.errors).toHaveLength(1);
    expect(broken.errors[0]).toMatch(/router is not as expected/);
    const other = run({ ...input, router: 'radixtree_uri', requests: [] });
    expect(other.replaced).toBe(false);
    expect(other.errors).toEqual([]);
  });
});
