import type { ApisixRoute } from '../translate/apisix-types.js';
import type { CompiledRbacFilter } from './rbac.js';
import { RBAC_EVALUATOR_LUA } from './rbac-evaluator.js';
import { jwtLuaData, type CompiledJwtFilter, type RemoteJwksLookup } from './jwt.js';
import { JWT_EVALUATOR_LUA } from './jwt-evaluator.js';

/**
 * Where the RBAC evaluator runs in APISIX. Envoy runs the RBAC filters before the fault filter and
 * the router, so nothing that can answer a request may run before them: APISIX's fault-injection
 * (priority 11000) and redirect answer in the rewrite phase. The evaluator therefore runs in the
 * rewrite phase at priority 11500 (`_meta.priority`), after only plugins that never answer
 * (real-ip, request-id, …). It uses `serverless-post-function`, not the `-pre-` one the
 * original-destination function already holds in the access phase: a serverless plugin has one
 * phase, and a pass-through route may need both.
 * The same function first runs the scope's JWT filters (jwt_authn, Istio's RequestAuthentication),
 * which Envoy runs before RBAC and whose verified claims RBAC reads: one function, one set of
 * request facts, and the JWT answer (401) comes before RBAC's (403), as in Envoy.
 */
export const RBAC_PLUGIN = 'serverless-post-function';
export const RBAC_PRIORITY = 11500;

/**
 * A scope's HTTP policy filters, each kind in the chain's order: JWT authentication, then RBAC
 * (filter-inventory.ts refuses a chain that orders them otherwise).
 */
export interface HttpPolicy {
  jwt: readonly CompiledJwtFilter[];
  rbac: readonly CompiledRbacFilter[];
}

const NO_REMOTE_JWKS: RemoteJwksLookup = new Map();

/** The scope's filters as the plugin configuration every route of it gets. */
export function httpPolicyPluginConf(policy: HttpPolicy, remote: RemoteJwksLookup = NO_REMOTE_JWKS): Record<string, unknown> {
  return { phase: 'rewrite', functions: [httpPolicyLua(policy, remote)], _meta: { priority: RBAC_PRIORITY } };
}

/** The scope's RBAC filters alone, as the plugin configuration. */
export function rbacPluginConf(filters: readonly CompiledRbacFilter[]): Record<string, unknown> {
  return httpPolicyPluginConf({ jwt: [], rbac: filters });
}

/**
 * The scope's plugin configuration, built once per policy, and again when the remote keys it uses
 * change (a policy with only inline keys does not depend on them): same inputs, same object.
 */
export function cachedPolicyConf(policy: HttpPolicy, remote: RemoteJwksLookup = NO_REMOTE_JWKS): Record<string, unknown> {
  const usesRemote = policy.jwt.some((f) => f.providers.some((p) => 'remote' in p.jwks));
  const cached = confCache.get(policy);
  if (cached && (!usesRemote || cached.remote === remote)) return cached.conf;
  const conf = httpPolicyPluginConf(policy, remote);
  confCache.set(policy, { remote, conf });
  return conf;
}

const confCache = new WeakMap<HttpPolicy, { remote: RemoteJwksLookup; conf: Record<string, unknown> }>();

/** The route with the policy plugin's configuration. */
export function withPolicyPlugin(route: ApisixRoute, conf: Record<string, unknown>): ApisixRoute {
  return { ...route, plugins: { ...(route.plugins ?? {}), [RBAC_PLUGIN]: conf } };
}

/**
 * One chunk returning the function, as the serverless plugin requires: the RBAC data, the JWT
 * check built from its data (AUTHN, nil without JWT filters), then the RBAC evaluator.
 */
export function httpPolicyLua(policy: HttpPolicy, remote: RemoteJwksLookup = NO_REMOTE_JWKS): string {
  const rbac = policy.rbac.map((f) => ({ name: f.name, action: f.action, policies: f.policies }));
  const authn = policy.jwt.length
    ? `(function(JWT_FILTERS)\n${JWT_EVALUATOR_LUA}\nend)(${luaLiteral(policy.jwt.map((f) => jwtLuaData(f, remote)))})`
    : 'nil';
  return `local FILTERS = ${luaLiteral(rbac)}\nlocal AUTHN = ${authn}\n${RBAC_EVALUATOR_LUA}`;
}

/** The RBAC filters alone as the function's chunk. */
export function rbacLua(filters: readonly CompiledRbacFilter[]): string {
  return httpPolicyLua({ jwt: [], rbac: filters });
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
