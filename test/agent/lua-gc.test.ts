// lua_gc.lua under the runtime's LuaJIT (the collector it sets is the real one): APISIX's
// config.yaml `apisix_mesh.lua_gc` (the injection's `apisixLuaGc`) sets LuaJIT's pause and step
// multiplier; a value out of bounds leaves both at LuaJIT's defaults with an [error] line. On a real
// APISIX: test/dataplane/lua-gc.test.ts (the setting in the workers, and a bad value in config.yaml).
import { expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingResty, runResty } from '../support/resty-lua.js';

const SCRIPT = String.raw`
local cjson = require("cjson.safe")
cjson.encode_empty_table_as_object(false)
local input = cjson.decode(assert(io.open(arg[1])):read("*a"))
local errors = {}
package.loaded["apisix.core"] = {
  config = { local_conf = function() return input.conf end },
  log = { error = function(...) table.insert(errors, table.concat({ ... })) end },
}
-- LuaJIT's own values before the module runs, and after: each read by setting it back
local function current()
  local pause = collectgarbage("setpause", 200); collectgarbage("setpause", pause)
  local stepmul = collectgarbage("setstepmul", 200); collectgarbage("setstepmul", stepmul)
  return pause, stepmul
end
local pause_before, stepmul_before = current()
local pause, stepmul = require("apisix_mesh.lua_gc").apply()
local pause_after, stepmul_after = current()
print(cjson.encode({ before = { pause_before, stepmul_before }, returned = { pause, stepmul },
  after = { pause_after, stepmul_after }, errors = errors }))
`;

interface Result {
  before: [number, number];
  returned: [number, number];
  after: [number, number];
  errors: string[];
}

const run = (conf: unknown): Result => runResty<Result>(SCRIPT, { conf: conf ?? false }, { modules: true })[0]!;

describeWhenAvailable('LuaJIT collector settings (lua_gc.lua)', missingResty(), () => {
  it('sets the pause and the step multiplier config.yaml names, and reports them as in force', () => {
    const r = run({ apisix_mesh: { lua_gc: { pause: 150, stepmul: 400 } } });
    expect(r.before).toEqual([200, 200]); // LuaJIT's defaults: the module is what changed them
    expect(r.after).toEqual([150, 400]);
    expect(r.returned).toEqual([150, 400]);
    expect(r.errors).toEqual([]);
  });

  it('sets only what is named', () => {
    expect(run({ apisix_mesh: { lua_gc: { stepmul: 600 } } }).after).toEqual([200, 600]);
  });

  it('leaves LuaJIT alone without the setting (a config.yaml not written by the webhook)', () => {
    for (const conf of [undefined, {}, { apisix_mesh: {} }, { apisix_mesh: { lua_gc: 'fast' } }]) {
      const r = run(conf);
      expect(r.after).toEqual([200, 200]);
      expect(r.errors).toEqual([]);
    }
  });

  it.each([
    ['a pause below 100', { pause: 50, stepmul: 400 }, 'pause must be an integer in 100-1000, got 50'],
    ['a fraction', { pause: 200, stepmul: 400.5 }, 'stepmul must be an integer in 100-10000, got 400.5'],
    ['text', { pause: '150', stepmul: 400 }, 'pause must be an integer in 100-1000, got 150'],
    ['a huge step', { pause: 150, stepmul: 1e9 }, 'stepmul must be an integer in 100-10000, got 1000000000'],
  ])('refuses %s: both stay at LuaJIT\'s defaults, with an [error] line', (_name, lua_gc, message) => {
    const r = run({ apisix_mesh: { lua_gc } });
    expect(r.after).toEqual([200, 200]);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain(`apisix_mesh.lua_gc in config.yaml: ${message}`);
    expect(r.errors[0]).toContain("LuaJIT's collector keeps its defaults");
  });
});
