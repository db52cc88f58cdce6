import type { Cluster, ClusterLoadAssignment, Listener, RouteConfiguration } from '../xds/envoy-types.js';
import type { ApisixRoute, ApisixUpstream, TranslationNote } from './apisix-types.js';
import { translateCluster, type ClusterContext, type ClusterTranslation } from './cluster.js';
import { translateClusterLoadAssignment, type EndpointsTranslation } from './endpoints.js';
import { originalDestinationRoute } from './original-destination.js';
import { translateListener, scopeKey, type ListenerTranslation, type RouteScope, type ScopePolicy } from './listener.js';
import { cachedPolicyConf, withPolicyPlugin } from '../policy/rbac-plugin.js';
import { remoteJwksSources, type RemoteJwksLookup, type RemoteJwksSource } from '../policy/jwt.js';
import { refusalRoute } from '../policy/refusal.js';
import type { SkipList } from '../policy/filter-inventory.js';
import { L4Translator } from '../l4/translator.js';
import type { L4Listener } from '../l4/assemble.js';
import { TlsOrigination, type RelayCluster } from '../mtls/origination.js';
import {
  translateRouteConfiguration, tcpPassthroughRoute, DEFAULT_CAPTURE_PORTS,
  type CapturePorts, type RouteConfigTranslation, type TranslatedRoute,
} from './route-configuration.js';

/** The xDS state the agent holds: one map per type, keyed by resource name. */
export interface XdsResources {
  clusters: ReadonlyMap<string, Cluster>;
  endpoints: ReadonlyMap<string, ClusterLoadAssignment>;
  listeners: ReadonlyMap<string, Listener>;
  routeConfigs: ReadonlyMap<string, RouteConfiguration>;
}

/** What APISIX gets: upstreams and routes by id, plus what was left out and why. */
export interface ApisixConfig {
  upstreams: Map<string, ApisixUpstream>;
  routes: Map<string, ApisixRoute>;
  /** every listener as the L4 front dispatches its connections (agent/l4/) */
  l4: Map<string, L4Listener>;
  /** the TLS relay's clusters (agent/mtls/origination.ts), by id */
  tlsRelay?: Map<string, RelayCluster>;
  notes: TranslationNote[];
  /** the JWKS the routes' JWT filters name by URI: the agent fetches them (agent/policy/jwks-fetcher.ts) */
  remoteJwks?: RemoteJwksSource[];
}

export interface TranslateOptions extends ClusterContext {
  ports?: CapturePorts;
  /** filters the operator lets the agent skip although it does not enforce them (insecure) */
  skipFilters?: SkipList;
}

/**
 * Translates whole xDS states, remembering each resource's translation by object identity: the xDS
 * client keeps a resource's decoded object as long as its bytes do not change, so a push that
 * changes one endpoint re-translates one ClusterLoadAssignment and re-assembles, instead of
 * re-translating every cluster and route. `translate` is a pure function of its input; the caches
 * only make it cheaper (a test checks cached and fresh results are equal).
 */
export class MeshTranslator {
  private readonly clusterCache = new WeakMap<Cluster, ClusterTranslation>();
  private readonly endpointCache = new WeakMap<ClusterLoadAssignment, EndpointsTranslation>();
  private readonly listenerCache = new WeakMap<Listener, ListenerTranslation>();
  private readonly routeCache = new WeakMap<RouteConfiguration, Map<string, RouteConfigTranslation>>();
  private readonly tcpPassthroughCache = new WeakMap<ListenerTranslation, Map<string, TranslatedRoute>>();
  /** routes with their scope's policy plugin, kept while its configuration is the same object */
  private readonly policyCache = new WeakMap<TranslatedRoute, { conf: Record<string, unknown>; route: TranslatedRoute }>();
  /** final objects, kept while their inputs are the same objects: unchanged output keeps its identity */
  private readonly upstreamCache = new WeakMap<ClusterTranslation, { nodes: unknown; settings: TranslatedRoute['upstreamSettings'] | undefined; upstream: ApisixUpstream }>();
  private readonly finalRouteCache = new WeakMap<TranslatedRoute, { main: ApisixUpstream | undefined; limits: ClusterTranslation['limits']; passthrough?: ClusterTranslation['originalDestination']; route: ApisixRoute }>();
  private readonly ports: CapturePorts;
  private readonly l4: L4Translator;
  private readonly tlsOrigination = new TlsOrigination();

  constructor(private readonly options: TranslateOptions = {}) {
    this.ports = options.ports ?? DEFAULT_CAPTURE_PORTS;
    this.l4 = new L4Translator(options.skipFilters);
  }

  /** `remoteJwks`: the keys fetched so far for JWT providers with remote JWKS (none: their tokens fail) */
  translate(xds: XdsResources, remoteJwks: RemoteJwksLookup = new Map()): ApisixConfig {
    const notes: TranslationNote[] = [];
    const clusters = new Map<string, ClusterTranslation>();
    for (const [name, cluster] of xds.clusters) {
      const t = memo(this.clusterCache, cluster, () => translateCluster(cluster, this.options));
      clusters.set(name, t);
      notes.push(...t.notes);
    }

    // Routes, from every listener's RDS names and inline route configurations; a scope any listener
    // refuses (a filter the agent does not enforce) gets the refusal and none of its routes.
    const routes: TranslatedRoute[] = [];
    const scoped: Array<{ rc: RouteConfiguration; scope: RouteScope; policy?: ScopePolicy | undefined }> = [];
    const listeners = [...xds.listeners.values()].map((listener) => memo(this.listenerCache, listener, () => translateListener(listener, this.options.skipFilters)));
    const refused = new Set<string>();
    for (const lt of listeners) {
      for (const r of lt.refused) {
        const key = scopeKey(r.scope);
        if (!refused.has(key)) routes.push(refusalRoute(r, lt.listenerName, this.ports));
        refused.add(key);
      }
    }
    for (const lt of listeners) {
      notes.push(...lt.notes);
      for (const { routeConfigName, scope, policy } of lt.rds) {
        if (refused.has(scopeKey(scope))) continue;
        const rc = xds.routeConfigs.get(routeConfigName);
        if (rc) scoped.push({ rc, scope, policy });
        else notes.push({ kind: 'listener', name: lt.listenerName, reason: 'route-config-pending', detail: `route configuration ${routeConfigName} not received yet`, skipped: true });
      }
      for (const { routeConfig, scope, policy } of lt.inline) if (!refused.has(scopeKey(scope))) scoped.push({ rc: routeConfig, scope, policy });
      routes.push(...this.tcpPassthroughRoutes(lt, clusters, refused));
    }
    const jwtFilters = new Set<ScopePolicy['jwt'][number]>();
    for (const { rc, scope, policy } of scoped) {
      let byScope = this.routeCache.get(rc);
      if (!byScope) this.routeCache.set(rc, (byScope = new Map()));
      const key = scopeKey(scope);
      let t = byScope.get(key);
      if (!t) byScope.set(key, (t = translateRouteConfiguration(rc, scope, this.ports)));
      if (policy) for (const f of policy.jwt) jwtFilters.add(f);
      routes.push(...(policy ? t.routes.map((r) => this.policyRoute(r, policy, remoteJwks)) : t.routes));
      notes.push(...t.notes);
    }

    // Settings Envoy keeps per route but APISIX per upstream: the first route (in priority order)
    // that names a cluster decides; a disagreeing later route is reported.
    const derived = new Map<string, TranslatedRoute['upstreamSettings']>();
    for (const r of routes) {
      for (const name of r.clusters) {
        if (clusters.get(name)?.originalDestination) continue; // no stored upstream to carry them
        const previous = derived.get(name);
        if (!previous) derived.set(name, r.upstreamSettings);
        else if (!sameSettings(previous, r.upstreamSettings)) {
          notes.push({ kind: 'cluster', name, reason: 'conflicting-route-settings', detail: `routes disagree on retries or hash key; route ${r.route.name} is not honoured for them`, skipped: false });
        }
      }
    }

    const upstreams = new Map<string, ApisixUpstream>();
    const upstreamByCluster = new Map<string, ApisixUpstream>();
    for (const [name, t] of clusters) {
      if (!t.upstream) continue;
      let nodes = t.inlineNodes;
      if (!nodes) {
        const cla = xds.endpoints.get(t.edsServiceName ?? name);
        if (!cla) {
          // Envoy keeps an EDS cluster warming until its assignment arrives; so does the agent.
          notes.push({ kind: 'cluster', name, reason: 'endpoints-pending', detail: 'no ClusterLoadAssignment received yet', skipped: true });
          continue;
        }
        const et = memo(this.endpointCache, cla, () => translateClusterLoadAssignment(cla));
        notes.push(...et.notes);
        nodes = et.nodes;
      }
      const settings = derived.get(name);
      // settings objects belong to cached route translations: same object = same settings
      const cached = this.upstreamCache.get(t);
      let upstream: ApisixUpstream;
      if (cached && cached.nodes === nodes && (cached.settings === settings || (!!cached.settings && !!settings && sameSettings(cached.settings, settings)))) {
        upstream = cached.upstream;
      } else {
        upstream = { ...t.upstream, nodes };
        if (settings?.retries !== undefined) upstream.retries = settings.retries;
        if (settings?.retryTimeout !== undefined) upstream.retry_timeout = settings.retryTimeout;
        if (t.consistentHash && settings?.hash) {
          upstream.type = 'chash';
          upstream.hash_on = settings.hash.hash_on;
          upstream.key = settings.hash.key;
        }
        this.upstreamCache.set(t, { nodes, settings, upstream });
      }
      if (t.consistentHash && !settings?.hash) {
        notes.push({ kind: 'cluster', name, reason: 'hash-key-missing', detail: 'consistent hashing without a route hash policy: round robin (Envoy picks a random host)', skipped: false });
      }
      upstreams.set(upstream.id, upstream);
      upstreamByCluster.set(name, upstream);
    }

    const tlsRelay = this.tlsOrigination.apply({ clusters, upstreamByCluster, upstreams, endpoints: xds.endpoints }, notes);

    const apisixRoutes = new Map<string, ApisixRoute>();
    for (const r of routes) {
      const passthrough = r.clusters.length === 1 ? clusters.get(r.clusters[0]!)?.originalDestination : undefined;
      if (passthrough) {
        const cached = this.finalRouteCache.get(r);
        let route = cached?.passthrough === passthrough ? cached.route : undefined;
        if (!route) {
          route = originalDestinationRoute(r.route, { ports: this.ports, ...passthrough });
          this.finalRouteCache.set(r, { main: undefined, limits: undefined, passthrough, route });
        }
        apisixRoutes.set(route.id, route);
        continue;
      }
      const missing = r.clusters.filter((c) => !upstreamByCluster.has(c));
      if (missing.length) {
        const why = missing.map((c) => (clusters.has(c) ? `${c} (not translatable or waiting for endpoints)` : `${c} (unknown cluster)`)).join(', ');
        // a weighted split between an original destination and a service has no APISIX form
        const reason = missing.some((c) => clusters.get(c)?.originalDestination) ? 'passthrough-split' : 'cluster-unavailable';
        notes.push({ kind: 'route', name: r.route.name, reason, detail: why, skipped: true });
        continue;
      }
      const main = r.clusters[0] !== undefined ? upstreamByCluster.get(r.clusters[0]) : undefined;
      const limits = r.clusters[0] !== undefined ? clusters.get(r.clusters[0])?.limits : undefined;
      const cachedRoute = this.finalRouteCache.get(r);
      let route: ApisixRoute;
      if (cachedRoute && !cachedRoute.passthrough && cachedRoute.limits === limits && (cachedRoute.main === main || cachedRoute.main?.timeout?.connect === main?.timeout?.connect)) {
        route = cachedRoute.route;
      } else {
        route = finalRoute(r.route, main, limits);
        this.finalRouteCache.set(r, { main, limits, route });
      }
      apisixRoutes.set(route.id, route);
    }
    const l4 = this.l4.translate(xds.listeners, clusters, upstreamByCluster, notes);
    return { upstreams, routes: apisixRoutes, l4, tlsRelay, notes, remoteJwks: remoteJwksSources([...jwtFilters]) };
  }

  /** The route under its scope's JWT and RBAC filters (Envoy runs them before routing, on every route). */
  private policyRoute(r: TranslatedRoute, policy: ScopePolicy, remoteJwks: RemoteJwksLookup): TranslatedRoute {
    const conf = cachedPolicyConf(policy, remoteJwks);
    const cached = this.policyCache.get(r);
    if (cached?.conf === conf) return cached.route;
    const route = { ...r, route: withPolicyPlugin(r.route, conf) };
    this.policyCache.set(r, { conf, route });
    return route;
  }

  /** HTTP catch-alls for the listener's TCP pass-through chains on scopes it serves no routes on. */
  private tcpPassthroughRoutes(lt: ListenerTranslation, clusters: ReadonlyMap<string, ClusterTranslation>, refused: ReadonlySet<string>): TranslatedRoute[] {
    if (lt.tcpProxies.length === 0) return [];
    let byKey = this.tcpPassthroughCache.get(lt);
    if (!byKey) this.tcpPassthroughCache.set(lt, (byKey = new Map()));
    const served = new Set([...lt.rds, ...lt.inline].map((x) => scopeKey(x.scope)));
    const out: TranslatedRoute[] = [];
    for (const { scope, cluster } of lt.tcpProxies) {
      if (served.has(scopeKey(scope)) || refused.has(scopeKey(scope)) || !clusters.get(cluster)?.originalDestination) continue;
      const key = `${scopeKey(scope)}\0${cluster}`;
      let route = byKey.get(key);
      if (!route) byKey.set(key, (route = tcpPassthroughRoute(scope, cluster, lt.listenerName, this.ports)));
      out.push(route);
    }
    return out;
  }
}

function finalRoute(base: ApisixRoute, main: ApisixUpstream | undefined, limits: ClusterTranslation['limits']): ApisixRoute {
  let route = base;
  if (route.timeout && main?.timeout) {
    route = { ...route, timeout: { ...route.timeout, connect: Math.min(route.timeout.connect, main.timeout.connect) } };
  }
  if (limits) {
    // Envoy's circuit breaker for the cluster: at most N requests in flight, the rest queued up
    // to max_pending, then 503. limit-conn on the route does the same per route.
    // HTTP/1.1 needs one connection per request in flight, so the smaller limit is the one that bites.
    const defined = [limits.maxRequests, limits.maxConnections].filter((n): n is number => n !== undefined);
    const conn = defined.length ? Math.min(...defined) : undefined;
    if (conn !== undefined && conn > 0) {
      route = {
        ...route,
        plugins: {
          ...(route.plugins ?? {}),
          'limit-conn': { conn, burst: limits.maxPendingRequests ?? 0, default_conn_delay: 0.1, key_type: 'var', key: 'server_addr', rejected_code: 503 },
        },
      };
    }
  }
  return route;
}

function memo<K extends object, V>(cache: WeakMap<K, V>, key: K, make: () => V): V {
  let value = cache.get(key);
  if (value === undefined) cache.set(key, (value = make()));
  return value;
}

function sameSettings(a: TranslatedRoute['upstreamSettings'], b: TranslatedRoute['upstreamSettings']): boolean {
  return a.retries === b.retries && a.retryTimeout === b.retryTimeout && a.hash?.hash_on === b.hash?.hash_on && a.hash?.key === b.hash?.key;
}

/** One-shot translation without caches (the baseline the cached path is compared with). */
export function translateMesh(xds: XdsResources, options: TranslateOptions = {}, remoteJwks?: RemoteJwksLookup): ApisixConfig {
  return new MeshTranslator(options).translate(xds, remoteJwks);
}
