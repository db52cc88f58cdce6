import type { ApisixRoute } from '../translate/apisix-types.js';
import type { CompiledRbacFilter } from './rbac.js';
import { RBAC_EVALUATOR_LUA } from './rbac-evaluator.js';

/**
 * Where the RBAC evaluator runs in APISIX. Envoy runs the RBAC filters before the fault filter and
 * the router, so nothing that can answer a request may run before them: APISIX's fault-injection
 * (priority 11000) and redirect answer in the rewrite phase. The evaluator therefore runs in the
 * rewrite phase at priority 11500 (`_meta.priority`), after only plugins that never answer
 * (real-ip, request-id, …). It uses `serverless-post-function`, not the `-pre-` one the
 * original-destination function already holds in the access phase: a serverless plugin has one
 * phase, and a pass-through route may need both.
 */
export const RBAC_PLUGIN = 'serverless-post-function';
export const RBAC_PRIORITY = 11500;

/** The scope's RBAC filters, in Envoy's order, as the plugin configuration every route of it gets. */
export function rbacPluginConf(filters: readonly CompiledRbacFilter[]): Record<string, unknown> {
  return { phase: 'rewrite', functions: [rbacLua(filters)], _meta: { priority: RBAC_PRIORITY } };
}

/** The route with the RBAC plugin (the filters' Lua is built once per filter list). */
export function withRbac(route: ApisixRoute, filters: readonly CompiledRbacFilter[]): ApisixRoute {
  let conf = confCache.get(filters);
  if (!conf) confCache.set(filters, (conf = rbacPluginConf(filters)));
  return { ...route, plugins: { ...(route.plugins ?? {}), [RBAC_PLUGIN]: conf } };
}

const confCache = new WeakMap<readonly CompiledRbacFilter[], Record<string, unknown>>();

/** One chunk returning the function, as the serverless plugin requires: the policy data, then the evaluator. */
export function rbacLua(filters: readonly CompiledRbacFilter[]): string {
  const data = filters.map((f) => ({ name: f.name, action: f.action, policies: f.policies }));
  return `local FILTERS = ${luaLiteral(data)}\n${RBAC_EVALUATOR_LUA}`;
}

/**
 * A JSON-like value → a Lua constructor. Nothing from xDS reaches the code as code: strings are
 * written byte by byte (printable ASCII as is, everything else, quotes and backslashes as `\ddd`),
 * numbers must be finite, keys are written as strings too (`["and"]=`, never a bare word).
 */
export function luaLiteral(value: unknown): string {
  if (value === null || value === undefined) return 'nil';
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new RangeError('not a finite number');
    return String(value);
  }
  if (typeof value === 'string') return luaString(value);
  if (Array.isArray(value)) return `{${value.map(luaLiteral).join(',')}}`;
  if (typeof value === 'object') {
    const fields = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `[${luaString(k)}]=${luaLiteral(v)}`);
    return `{${fields.join(',')}}`;
  }
  throw new TypeError(`no Lua form for ${typeof value}`);
}

function luaString(text: string): string {
  let out = '"';
  for (const byte of Buffer.from(text, 'utf8')) {
    out += byte >= 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x5c ? String.fromCharCode(byte) : `\\${String(byte).padStart(3, '0')}`;
  }
  return `${out}"`;
}
