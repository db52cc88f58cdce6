import { copyFileSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where the build puts the Lua modules (package.json's build copies agent/l4/lua into dist). */
export const LUA_SOURCE_DIR = fileURLToPath(new URL('./lua/', import.meta.url));

/**
 * Writes the sidecar's Lua modules (agent/l4/lua/: the L4 front and the HTTP hand-off under
 * `apisix_mesh/`, the policy plugin under `apisix/plugins/`, where APISIX looks a plugin up by
 * name) into `dir`, the volume APISIX's container reads them from (`extra_lua_path`). The agent
 * starts before APISIX, so APISIX never sees a partial set: files are written under a temporary name
 * and renamed into place. Returns the module files written.
 */
export function installLuaModules(dir: string, source = LUA_SOURCE_DIR): string[] {
  const written: string[] = [];
  const walk = (relative: string, depth: number): void => {
    for (const entry of readdirSync(join(source, relative), { withFileTypes: true })) {
      const path = relative ? `${relative}/${entry.name}` : entry.name;
      if (entry.isDirectory() && depth < 3) walk(path, depth + 1);
      // only modules in a package: the top level of extra_lua_path stays free
      if (!entry.isFile() || !entry.name.endsWith('.lua') || depth === 0) continue;
      placeAtomically(join(dir, relative), entry.name, (tmp) => copyFileSync(join(source, path), tmp));
      written.push(path);
    }
  };
  walk('', 0);
  if (!written.length) throw new Error(`no Lua modules found in ${source}`);
  return written;
}

/** A file put in place under a temporary name then renamed: APISIX never reads half of it. */
function placeAtomically(targetDir: string, name: string, write: (tmp: string) => void): void {
  mkdirSync(targetDir, { recursive: true });
  const tmp = join(targetDir, `.${name}.tmp`);
  rmSync(tmp, { force: true });
  write(tmp);
  renameSync(tmp, join(targetDir, name));
}

/** A module the agent generates (data for the sidecar's Lua), e.g. `apisix_mesh/local_workload.lua`. */
export function writeLuaModule(dir: string, relativePath: string, text: string): void {
  const slash = relativePath.lastIndexOf('/');
  placeAtomically(join(dir, relativePath.slice(0, slash)), relativePath.slice(slash + 1), (tmp) => writeFileSync(tmp, text));
}
