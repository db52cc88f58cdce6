import type { FilterChain, HttpConnectionManager, Listener, RouteConfiguration } from '../xds/envoy-types.js';
import { unpackAny, type PackedAny } from '../xds/codec.js';
import { HCM_TYPE } from '../xds/protos.js';
import { inventoryFilters, type NamedFilter, type SkipList } from '../policy/filter-inventory.js';
import type { CompiledRbacFilter } from '../policy/rbac.js';
import type { CompiledJwtFilter } from '../policy/jwt.js';
import type { TranslationNote } from './apisix-types.js';
import { canonicalIp } from '../l4/listener-chains.js';

/**
 * Where a route configuration's routes apply: which of APISIX's capture listeners (outbound or
 * inbound) and which original destination (a port on any address, or one address and port).
 */
export interface RouteScope {
  direction: 'outbound' | 'inbound';
  port: number;
  /** set when the listener is bound to one address (e.g. `10.96.0.10_9153`) */
  address?: string;
  /**
   * with `address`: the listener's other addresses (Envoy's `additional_addresses`, the other
   * family's address of a dual-stack service), whose traffic the same routes serve
   */
  also?: string[];
}

export interface ScopedRouteConfigName {
  routeConfigName: string;
  scope: RouteScope;
  /** the JWT and RBAC filters every route of the configuration enforces on this scope (absent: none) */
  policy?: ScopePolicy;
}

export interface ScopedInlineRouteConfig {
  routeConfig: RouteConfiguration;
  scope: RouteScope;
  policy?: ScopePolicy;
  /** the listener it came from; inline configs are named after it */
  listenerName: string;
}

export interface ListenerTranslation {
  listenerName: string;
  rds: ScopedRouteConfigName[];
  inline: ScopedInlineRouteConfig[];
  /** scopes whose chains carry filters the agent does not enforce: their traffic is refused */
  refused: RefusedScope[];
  notes: TranslationNote[];
}

/**
 * A scope's JWT and RBAC filters, each kind in order. APISIX cannot tell apart the chains of one
 * scope (TLS and plaintext of one port), so the filters of all of them are chained: a request
 * passes only what every chain would let through (identical filters once).
 */
export interface ScopePolicy {
  jwt: CompiledJwtFilter[];
  rbac: CompiledRbacFilter[];
}

export interface RefusedScope {
  scope: RouteScope;
  /** `name (type)` of each filter not enforced */
  filters: string[];
}

/** Istio's capture listeners: everything redirected to 15001 / 15006 is dispatched by destination. */
const VIRTUAL_OUTBOUND = 'virtualOutbound';
const VIRTUAL_INBOUND = 'virtualInbound';

export function translateListener(listener: Listener, skip?: SkipList): ListenerTranslation {
  const listenerName = listener.name ?? '';
  const out: ListenerTranslation = { listenerName, rds: [], inline: [], refused: [], notes: [] };
  const socket = listener.address?.socket_address;
  if (!socket || !socket.port_value) {
    out.notes.push({ kind: 'listener', name: listenerName, reason: 'no-socket-address', detail: 'listener without an IP socket address', skipped: true });
    return out;
  }
  const inbound = listenerName === VIRTUAL_INBOUND || listener.traffic_direction === 'INBOUND';
  const direction: RouteScope['direction'] = inbound ? 'inbound' : 'outbound';
  const specific = (a: string | undefined) => !!a && a !== '0.0.0.0' && a !== '::';
  // the kernel's text, which the front's hand-off record carries (l4/listener-chains.ts)
  const address = specific(socket.address) ? canonicalIp(socket.address!) : undefined;
  const also = address ? additionalAddresses(listener).filter((a) => specific(a) && canonicalIp(a) !== address).map(canonicalIp) : [];
  const chains: FilterChain[] = [...(listener.filter_chains ?? [])];
  if (listener.default_filter_chain) chains.push(listener.default_filter_chain);
  const seen = new Set<string>();
  const refused = new Map<string, RefusedScope>();
  const policies = new Map<string, { policy: ScopePolicy; seen: Set<string> }>();
  const networkRbac = new Map<string, RefusedScope>();
  const httpScopes = new Set<string>();
  for (const chain of chains) {
    const scope = chainScope(listenerName, direction, socket.port_value, address, also, chain);
    if (!scope) continue;
    // Fail closed: a chain with a filter the agent does not enforce refuses its scope's traffic;
    // chains sharing the scope (TLS and plaintext of one port) cannot be told apart by APISIX.
    const inventory = inventoryFilters((chain.filters ?? []) as NamedFilter[], skip);
    if ((chain.filters ?? []).some((f) => (f.typed_config as PackedAny | undefined)?.type_url === HCM_TYPE)) httpScopes.add(scopeKey(scope));
    // a refused chain's network RBAC is not judged by anyone: named with the rest
    const unenforced = inventory.unenforced.length ? [...inventory.unenforced, ...inventory.networkRbacFilters] : inventory.unenforced;
    if (unenforced.length) {
      const entry = refused.get(scopeKey(scope)) ?? { scope, filters: [] };
      for (const f of unenforced) if (!entry.filters.includes(f)) entry.filters.push(f);
      refused.set(scopeKey(scope), entry);
      continue;
    }
    // a TCP chain under a network RBAC is judged per connection by the L4 front only: the HTTP side
    // gets no route for it (its TCP pass-through catch-all would judge nothing), and an HTTP chain
    // sharing its scope is refused below, as for any filter the HTTP side does not enforce
    if (inventory.networkRbac.length) {
      const entry = networkRbac.get(scopeKey(scope)) ?? { scope, filters: [] };
      for (const f of inventory.networkRbacFilters) if (!entry.filters.includes(f)) entry.filters.push(f);
      networkRbac.set(scopeKey(scope), entry);
      continue;
    }
    if (inventory.rbac.length || inventory.jwt.length) {
      const entry = policies.get(scopeKey(scope)) ?? { policy: { jwt: [], rbac: [] }, seen: new Set<string>() };
      addOnce(entry.policy.jwt, inventory.jwt, 'jwt', entry.seen);
      addOnce(entry.policy.rbac, inventory.rbac, 'rbac', entry.seen);
      policies.set(scopeKey(scope), entry);
    }
    for (const filter of chain.filters ?? []) {
      const typed = filter.typed_config as PackedAny | undefined;
      if (typed?.type_url === HCM_TYPE) {
        const hcm = unpackAny<HttpConnectionManager>(typed);
        if (!hcm) continue;
        const rdsName = hcm.rds?.route_config_name;
        if (rdsName) {
          const key = `rds\0${rdsName}\0${scopeKey(scope)}`;
          if (!seen.has(key)) out.rds.push({ routeConfigName: rdsName, scope });
          seen.add(key);
        } else if (hcm.route_config) {
          const key = `inline\0${hcm.route_config.name ?? ''}\0${scopeKey(scope)}`;
          if (!seen.has(key)) out.inline.push({ routeConfig: hcm.route_config, scope, listenerName });
          seen.add(key);
        } else if (hcm.scoped_routes) {
          out.notes.push({ kind: 'listener', name: listenerName, reason: 'scoped-routes', detail: 'scoped route configurations are not translated', skipped: true });
        }
      }
    }
  }
  for (const x of [...out.rds, ...out.inline]) {
    const policy = policies.get(scopeKey(x.scope))?.policy;
    if (policy) x.policy = policy;
  }
  for (const [key, entry] of networkRbac) {
    if (!httpScopes.has(key)) continue;
    const into = refused.get(key) ?? { scope: entry.scope, filters: [] };
    for (const f of entry.filters) if (!into.filters.includes(f)) into.filters.push(f);
    refused.set(key, into);
  }
  const isRefused = (x: { scope: RouteScope }) => refused.has(scopeKey(x.scope));
  if (refused.size) {
    out.rds = out.rds.filter((x) => !isRefused(x));
    out.inline = out.inline.filter((x) => !isRefused(x));
    out.refused = [...refused.values()];
    for (const r of out.refused) {
      out.notes.push({ kind: 'listener', name: listenerName, reason: 'unenforced-filter', detail: `${scopeKey(r.scope)}: ${r.filters.join(', ')} not enforced by the agent: this traffic is refused (403)`, skipped: true });
    }
  }
  return out;
}

/** Appends the filters not appended yet (by content). */
function addOnce<T>(into: T[], filters: readonly T[], kind: string, seen: Set<string>): void {
  for (const f of filters) {
    const key = `${kind}\0${JSON.stringify(f)}`;
    if (!seen.has(key)) into.push(f);
    seen.add(key);
  }
}

/**
 * The destination a filter chain serves. On the capture listeners a chain names its port in
 * `filter_chain_match.destination_port`; chains without one are catch-alls (pass-through or
 * black hole), which carry no HTTP routes of their own.
 */
function chainScope(listenerName: string, direction: RouteScope['direction'], port: number, address: string | undefined, also: string[], chain: FilterChain): RouteScope | undefined {
  const match = chain.filter_chain_match;
  const destinationPort = match?.destination_port?.value;
  if (listenerName === VIRTUAL_INBOUND || listenerName === VIRTUAL_OUTBOUND) {
    if (!destinationPort) return { direction, port: 0 };
    return { direction, port: destinationPort };
  }
  if (!address) return { direction, port: destinationPort ?? port };
  return also.length ? { direction, port: destinationPort ?? port, address, also } : { direction, port: destinationPort ?? port, address };
}

function additionalAddresses(listener: Listener): string[] {
  return (listener.additional_addresses ?? []).flatMap((a) => (a.address?.socket_address?.address ? [a.address.socket_address.address] : []));
}

export function scopeKey(scope: RouteScope): string {
  // the additional addresses are part of the scope: a route configuration's translation is kept per key
  const also = scope.also?.length ? `+${scope.also.join('+')}` : '';
  return `${scope.direction}:${scope.address ?? '*'}${also}:${scope.port}`;
}
