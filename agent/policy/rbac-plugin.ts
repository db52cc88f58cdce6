import type { ApisixRoute } from '../translate/apisix-types.js';
import type { CompiledRbacFilter } from './rbac.js';
import { jwtLuaData, type CompiledJwtFilter, type RemoteJwksLookup } from './jwt.js';

/**
 * The sidecar's HTTP policy plugin: agent/l4/lua/apisix/plugins/apisix-mesh-policy.lua, shipped
 * with the Lua modules (`--lua-dir`) and enabled in the sidecar's config.yaml. Every route of a
 * scope under policy carries the scope's filters as data — the JWT filters (jwt.ts), then the RBAC
 * trees (rbac.ts) — which the plugin checks against its schema and turns into a check once per
 * configuration version. It runs in the rewrite phase at priority 11500, before anything that can
 * answer a request (fault-injection 11000, redirect), as Envoy runs jwt_authn and RBAC before the
 * fault filter and the router.
 */
export const RBAC_PLUGIN = 'apisix-mesh-policy';
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

/** The scope's filters as the plugin configuration every route of it gets (plain JSON data). */
export function httpPolicyPluginConf(policy: HttpPolicy, remote: RemoteJwksLookup = NO_REMOTE_JWKS): Record<string, unknown> {
  const rbac = policy.rbac.map(rbacFilterData);
  if (!policy.jwt.length) return { rbac };
  return { jwt: policy.jwt.map((f) => jsonData(jwtLuaData(f, remote))), rbac };
}

/** One RBAC filter as the plugin (and the L4 front, l4_rbac.lua) reads it. */
export function rbacFilterData(f: CompiledRbacFilter): Record<string, unknown> {
  return jsonData({ name: f.name, action: f.action, policies: f.policies }) as Record<string, unknown>;
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
 * The value without null or undefined object fields: JSON's null reaches Lua as a truthy
 * `cjson.null`, where the Lua reads an absent field as nil (a JWT filter without requirements).
 */
export function jsonData(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(jsonData);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      if (v !== null && v !== undefined) out[k] = jsonData(v);
    }
    return out;
  }
  return value;
}
