// shared_host_routers.lua under the runtime's LuaJIT, with the APISIX internals it hooks stood in
// for: APISIX's radixtree_host_uri router asks apisix.utils.router for one radixtree per host name
// while it rebuilds (in match(), when the routes' or services' version changed). Hosts with the same
// list of route objects must get one radixtree; anything else, and anything outside a rebuild, a
// radixtree of its own; and if APISIX does not look as expected, an [error] and APISIX left alone.
// On a real APISIX: test/dataplane/host-routers.test.ts (routing by every name of every service).
import { expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingResty, runResty } from '../support/resty-lua.js';

const SCRIPT = String.raw`
local cjson = require("cjson.safe")
cjson.encode_empty_table_as_object(false)
local input = cjson.decode(assert(io.open(arg[1])):read("*a"))
local out = { errors = {} }

local made = 0
local utils_router = { new = function(routes) made = made + 1; return { n = made, routes = routes } end }
local host_uri = input.no_match and {} or {}
local services_version = 1
package.loaded["apisix.utils.router"] = utils_router
package.loaded["apisix.http.router.radixtree_host_uri"] = host_uri
package.loaded["apisix.http.service"] = { services = function() return {}, services_version end }
package.loaded["apisix.core"] = {
  config = { local_conf = function() return { apisix = { router = { http = input.router } } } end },
  log = { error = function(...) table.insert(out.errors, table.concat({ ... })) end },
}

-- routes as APISIX's router holds them (one table per route), and a rebuild as radixtree_host_uri
-- does it: per host, a new list of the route tables that name it, in the routes' order
local routes = {}
for i = 1, 4 do routes[i] = { id = i } end
local by_host = {
  ["a.svc"] = { 1, 2 }, ["a"] = { 1, 2 }, ["10.0.0.1"] = { 1, 2 },   -- one service's names
  ["b.svc"] = { 3 }, ["b"] = { 3 },                                    -- another's
  ["c"] = { 2, 1 },                                                    -- the same routes, another order
  ["d"] = { 1 },                                                       -- a prefix of a's list
}
local HOSTS = { "a.svc", "a", "10.0.0.1", "b.svc", "b", "c", "d" }
local built
local function rebuild()
  built = {}
  for _, host in ipairs(HOSTS) do
    local list = {}
    for _, i in ipairs(by_host[host]) do list[#list + 1] = routes[i] end
    built[host] = utils_router.new(list).n
  end
end
host_uri.user_routes = { conf_version = 1 }
if not input.no_match then
  host_uri.match = function(api_ctx)
    if api_ctx.rebuild then rebuild() end
    return true
  end
end

require("apisix_mesh.shared_host_routers").install()

if input.no_match then
  out.replaced = utils_router.new ~= nil and made == 0 and (utils_router.new({}).n == 1)
  print(cjson.encode(out))
  return
end
-- the first request builds
host_uri.match({ rebuild = true })
out.first = built
-- outside a rebuild nothing is shared
out.outside = { utils_router.new({ routes[1], routes[2] }).n, utils_router.new({ routes[1], routes[2] }).n }
-- the same version again: APISIX would not rebuild; a new routes version rebuilds without reusing the last build's
host_uri.match({ rebuild = false })
host_uri.user_routes = { conf_version = 2 }
host_uri.match({ rebuild = true })
out.second = built
-- a services version change rebuilds too
services_version = 2
host_uri.match({ rebuild = true })
out.third = built
print(cjson.encode(out))
`;

interface Out {
  errors: string[];
  first?: Record<string, number>;
  second?: Record<string, number>;
  third?: Record<string, number>;
  outside?: number[];
  replaced?: boolean;
}
const run = (input: Record<string, unknown>) => runResty<Out>(SCRIPT, input, { modules: true })[0]!;

describeWhenAvailable('shared_host_routers.lua under the runtime\'s LuaJIT', missingResty(), () => {
  it('one radixtree per list of routes while APISIX rebuilds: a service\'s names share it; another order, another list: their own', () => {
    const { first, errors } = run({ router: 'radixtree_host_uri' });
    expect(errors).toEqual([]);
    expect(first!['a']).toBe(first!['a.svc']);
    expect(first!['10.0.0.1']).toBe(first!['a.svc']);
    expect(first!['b']).toBe(first!['b.svc']);
    const distinct = new Set([first!['a.svc'], first!['b.svc'], first!['c'], first!['d']]);
    expect(distinct.size).toBe(4);
    // 7 hosts, 4 radixtrees made
    expect(Math.max(...Object.values(first!))).toBe(4);
  });

  it('nothing is shared outside a rebuild, and a rebuild never reuses the last one\'s radixtrees', () => {
    const { first, second, third, outside } = run({ router: 'radixtree_host_uri' });
    expect(outside![0]).not.toBe(outside![1]);
    const lastFirst = Math.max(...Object.values(first!));
    for (const n of Object.values(second!)) expect(n).toBeGreaterThan(lastFirst + 2);
    expect(second!['a']).toBe(second!['a.svc']);
    // the services' version changed: rebuilt, shared again
    expect(third!['b']).toBe(third!['b.svc']);
    expect(Math.min(...Object.values(third!))).toBeGreaterThan(Math.max(...Object.values(second!)));
  });

  it('another router configured: left alone; APISIX\'s router not as expected: one [error], nothing replaced', () => {
    const other = run({ router: 'radixtree_uri' });
    expect(other.errors).toEqual([]);
    expect(other.first!['a']).not.toBe(other.first!['a.svc']);
    const broken = run({ router: 'radixtree_host_uri', no_match: true });
    expect(broken.errors).toHaveLength(1);
    expect(broken.errors[0]).toMatch(/router is not as expected/);
    expect(broken.replaced).toBe(true);
  });
});
