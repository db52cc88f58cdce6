// privileged_agent.lua and served_revisions.lua under the runtime's LuaJIT, with the few APISIX
// internals they hook stood in for: what they do when APISIX matches (the privileged agent's
// objects created unwatched, the export's revisions the lowest among the workers) and their fail-safe
// when it does not (an [error] once, APISIX's behaviour left as it was). On a real APISIX:
// test/dataplane/privileged-agent.test.ts.
import { expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingResty, runResty } from '../support/resty-lua.js';

const SCRIPT = String.raw`
local cjson = require("cjson.safe")
local input = cjson.decode(assert(io.open(arg[1])):read("*a"))
local out = { created = {}, logs = {}, export = {} }

local process_type, worker_id = "worker", 0
package.loaded["ngx.process"] = { type = function() return process_type end }
ngx.worker.id = function() return worker_id end
ngx.worker.count = function() return 2 end

local function logger(level)
  return function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[#parts + 1] = tostring(select(i, ...)) end
    table.insert(out.logs, level .. " " .. table.concat(parts))
  end
end
local created = {}
-- APISIX's core.config_etcd, as far as the modules use it
local config = { type = "etcd" }
function config.new(key, opts)
  local automatic = opts and opts.automatic or false
  table.insert(out.created, { process = process_type, key = key, automatic = automatic })
  local obj = { key = key and "/apisix" .. key, automatic = automatic, conf_version = 0 }
  if key then created[key] = obj end
  return obj
end
function config.fetch_created_obj(key) return created[key] end
-- what APISIX's sync_data does as far as the modules see it: the next values, a new version
local function sync_data(self)
  self.values = self.next_values
  self.conf_version = self.conf_version + 1
  return true
end
local injected = sync_data
if not input.no_inject then
  config.test_sync_data = sync_data
  function config.inject_sync_data(f) injected = f end
end
package.loaded["apisix.core.config_etcd"] = config
package.loaded["apisix.core"] = {
  config = config,
  log = { error = logger("error"), warn = logger("warn"), info = logger("info") },
  table = { clone = function(t) local c = {} for k, v in pairs(t) do c[k] = v end return c end },
}
local gauge = { set = function(self, value, labels) out.export[labels[1]] = value end }
package.loaded["apisix.plugins.prometheus.exporter"] = {
  get_prometheus = function() return input.no_gauge and { registry = {} } or { registry = { etcd_modify_indexes = gauge } } end,
}

-- init_by_lua, HTTP subsystem (hook.lua)
local served = require("apisix_mesh.served_revisions")
local privileged_agent = require("apisix_mesh.privileged_agent")
privileged_agent.install(true, served.install())

-- two workers read /routes and /upstreams
for id, dirs in pairs(input.workers) do
  process_type, worker_id = "worker", tonumber(id)
  served.init_worker()
  for dir, values in pairs(dirs) do
    local obj = config.new("/" .. dir, { automatic = true })
    obj.next_values = values
    injected(obj)
  end
end

-- the privileged agent (a process of its own: the workers' objects are not in its VM): its
-- objects, then a scrape (the exporter's calls, APISIX's own figures 0)
process_type, worker_id = "privileged agent", nil
created = {}
-- something past core.config.new (a later APISIX) watching /upstreams there after all
if input.watched_anyway then created["/upstreams"] = { automatic = true } end
config.new("/plugins", { automatic = true, single_item = true })
config.new("/routes", { automatic = true })
config.new()
privileged_agent.check("HTTP")
for _, label in ipairs({ "routes", "upstreams", "services", "max_modify_index" }) do gauge:set(0, { label }) end
gauge:set(123, { "x_etcd_index" })
print(cjson.encode(out))
`;

interface Out {
  created: Array<{ process: string; key?: string; automatic: boolean }>;
  logs: string[];
  export: Record<string, number>;
}

// modifiedIndex per object; `false`: an entry APISIX marks deleted; orig_modifiedIndex wins, as in APISIX's exporter
const WORKERS = {
  '0': { routes: [{ modifiedIndex: 5 }, { modifiedIndex: 9, orig_modifiedIndex: 7 }, false], upstreams: [{ modifiedIndex: 8 }] },
  '1': { routes: [{ modifiedIndex: 4 }], upstreams: [{ modifiedIndex: 8 }] },
};

const run = (extra: Record<string, unknown> = {}) => runResty<Out>(SCRIPT, { workers: WORKERS, ...extra }, { modules: true, shdicts: ['apisix_mesh_served_revisions 1m'] })[0]!;
const inPrivileged = (out: Out) => out.created.filter((c) => c.process === 'privileged agent' && c.key);

describeWhenAvailable('privileged_agent.lua and served_revisions.lua under the runtime\'s LuaJIT', missingResty(), () => {
  it('the workers\' objects are watched as before; the privileged agent\'s are created unwatched', () => {
    const out = run();
    expect(out.created.filter((c) => c.process === 'worker').every((c) => c.automatic)).toBe(true);
    expect(inPrivileged(out)).toEqual([
      { process: 'privileged agent', key: '/plugins', automatic: false },
      { process: 'privileged agent', key: '/routes', automatic: false },
    ]);
    expect(out.logs.filter((l) => l.startsWith('error'))).toEqual([]);
    expect(out.logs).toContainEqual(expect.stringMatching(/^warn apisix-mesh: the privileged agent's HTTP subsystem holds none/));
  });

  it('the export shows the lowest figure among the workers, per directory and overall; its other labels as APISIX set them', () => {
    // routes: worker 0 serves up to 7, worker 1 up to 4; upstreams 8 in both; overall 8 and 8
    expect(run().export).toEqual({ routes: 4, upstreams: 8, services: 0, max_modify_index: 8, x_etcd_index: 123 });
  });

  it('a worker that has not read a directory yet counts 0: the export waits for it', () => {
    expect(run({ workers: { '0': WORKERS['0'] } }).export).toMatchObject({ routes: 0, upstreams: 0, max_modify_index: 0 });
  });

  it('a directory the privileged agent watches after all (created past core.config.new): an [error] after its start', () => {
    expect(run({ watched_anyway: true }).logs.filter((l) => l.startsWith('error'))).toEqual([expect.stringMatching(/privileged agent watches \/upstreams although the sidecar creates it unwatched there: APISIX changed/)]);
  });

  it('APISIX\'s exporter without the gauge: one [error], the privileged agent keeps its copies and APISIX\'s figures', () => {
    const out = run({ no_gauge: true });
    expect(inPrivileged(out).map((c) => c.automatic)).toEqual([true, true]);
    expect(out.logs.filter((l) => l.startsWith('error'))).toEqual([expect.stringMatching(/keeps APISIX's configuration after all: APISIX's exporter has no etcd_modify_indexes gauge/)]);
    expect(out.export).toEqual({ routes: 0, upstreams: 0, services: 0, max_modify_index: 0, x_etcd_index: 123 });
  });

  it('APISIX without the sync function the workers record through: one [error], the privileged agent keeps its copies', () => {
    const out = run({ no_inject: true });
    expect(inPrivileged(out).map((c) => c.automatic)).toEqual([true, true]);
    expect(out.logs.filter((l) => l.startsWith('error'))).toEqual([expect.stringMatching(/the workers do not record their revisions: APISIX's config_etcd has no test_sync_data/)]);
  });
});
