import { copyFileSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where the build puts the Lua modules (package.json's build copies agent/l4/lua into dist). */
export const LUA_SOURCE_DIR = fileURLToPath(new URL('./lua/', import.meta.url));

/**
 * Writes the sidecar's Lua modules (the L4 front, the HTTP hand-off; agent/l4/lua/) into `dir`, the
 * volume APISIX's container reads them from (`extra_lua_path`). The agent starts before APISIX, so
 * APISIX never sees a partial set: files are written under a temporary name and renamed into place.
 * Returns the module files written.
 */
export function installLuaModules(dir: string, source = LUA_SOURCE_DIR): string[] {
  const written: string[] = [];
  for (const pkg of readdirSync(source, { withFileTypes: true })) {
    if (!pkg.isDirectory()) continue;
    const target = join(dir, pkg.name);
    mkdirSync(target, { recursive: true });
    for (const file of readdirSync(join(source, pkg.name))) {
      if (!file.endsWith('.lua')) continue;
      const tmp = join(target, `.${file}.tmp`);
      rmSync(tmp, { force: true });
      copyFileSync(join(source, pkg.name, file), tmp);
      renameSync(tmp, join(target, file));
      written.push(`${pkg.name}/${file}`);
    }
  }
  if (!written.length) throw new Error(`no Lua modules found in ${source}`);
  return written;
}
