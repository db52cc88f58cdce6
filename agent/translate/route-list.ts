import type { RouteConfiguration } from '../xds/envoy-types.js';
import type { TranslationNote } from './apisix-types.js';
import { scopeKey, type ListenerTranslation, type RouteScope, type ScopePolicy } from './listener.js';
import { cachedPolicyConf, withPolicyPlugin } from '../policy/rbac-plugin.js';
import type { CompiledJwtFilter, RemoteJwksLookup } from '../policy/jwt.js';
import { refusalRoute } from '../policy/refusal.js';
import { translateRouteConfiguration } from './route-configuration.js';
import { keepRoute, keepRouteConfig, routeObject, type KeptRoute, type KeptRouteConfig } from './kept-routes.js';

export interface RouteListSources {
  listeners: Iterable<ListenerTranslation>;
  /** an RDS configuration translated for a scope; undefined while it has not been received */
  routeConfig(name: string, scope: RouteScope): KeptRouteConfig | undefined;
  /** the keys fetched so far for JWT providers with remote JWKS */
  remoteJwks: RemoteJwksLookup;
}

export interface RouteList {
  /** every translated route, in the order that decides per-route upstream settings */
  routes: KeptRoute[];
  /** the listeners' notes and their route configurations' */
  notes: TranslationNote[];
  /** the JWT filters the routes enforce (their remote JWKS are fetched by the agent) */
  jwtFilters: CompiledJwtFilter[];
}

/**
 * The translated routes of all listeners: from their RDS names and inline route configurations; a
 * scope any listener refuses (a filter the agent does not enforce) gets the refusal and none of its
 * routes. Inline configurations and RBAC variants are remembered by the
 * identity of what they come from, so an unchanged route keeps its identity from one build to the
 * next (and the translator need not rebuild it).
 */
export class RouteListBuilder {
  private readonly inlineCache = new WeakMap<RouteConfiguration, Map<string, KeptRouteConfig>>();
  /** routes with their scope's policy plugin, kept while its configuration is the same object */
  private readonly policyCache = new WeakMap<KeptRoute, { conf: Record<string, unknown>; route: KeptRoute }>();

  build(sources: RouteListSources): RouteList {
    const routes: KeptRoute[] = [];
    const notes: TranslationNote[] = [];
    const scoped: Array<{ t: KeptRouteConfig; policy?: ScopePolicy | undefined }> = [];
    // by name: the order decides which route's upstream settings win for a cluster, and must not
    // depend on the order resources arrived in (a listener removed and pushed again)
    const listeners = [...sources.listeners].sort((a, b) => (a.listenerName < b.listenerName ? -1 : a.listenerName > b.listenerName ? 1 : 0));
    const refused = new Set<string>();
    for (const lt of listeners) {
      for (const r of lt.refused) {
        const key = scopeKey(r.scope);
        if (!refused.has(key)) routes.push(keepRoute(refusalRoute(r, lt.listenerName)));
        refused.add(key);
      }
    }
    for (const lt of listeners) {
      notes.push(...lt.notes);
      for (const { routeConfigName, scope, policy } of lt.rds) {
        if (refused.has(scopeKey(scope))) continue;
        const t = sources.routeConfig(routeConfigName, scope);
        if (t) scoped.push({ t, policy });
        else notes.push({ kind: 'listener', name: lt.listenerName, reason: 'route-config-pending', detail: `route configuration ${routeConfigName} not received yet`, skipped: true });
      }
      for (const { routeConfig, scope, policy } of lt.inline) {
        if (!refused.has(scopeKey(scope))) scoped.push({ t: this.inline(routeConfig, scope), policy });
      }
    }
    const jwtFilters = new Set<CompiledJwtFilter>();
    for (const { t, policy } of scoped) {
      if (policy) for (const f of policy.jwt) jwtFilters.add(f);
      routes.push(...(policy ? t.routes.map((r) => this.policyRoute(r, policy, sources.remoteJwks)) : t.routes));
      notes.push(...t.notes);
    }
    return { routes, notes, jwtFilters: [...jwtFilters] };
  }

  private inline(rc: RouteConfiguration, scope: RouteScope): KeptRouteConfig {
    let byScope = this.inlineCache.get(rc);
    if (!byScope) this.inlineCache.set(rc, (byScope = new Map()));
    const key = scopeKey(scope);
    let t = byScope.get(key);
    if (!t) byScope.set(key, (t = keepRouteConfig(translateRouteConfiguration(rc, scope))));
    return t;
  }

  /** The route under its scope's JWT and RBAC filters (Envoy runs them before routing, on every route). */
  private policyRoute(r: KeptRoute, policy: ScopePolicy, remoteJwks: RemoteJwksLookup): KeptRoute {
    const conf = cachedPolicyConf(policy, remoteJwks);
    const cached = this.policyCache.get(r);
    if (cached?.conf === conf) return cached.route;
    const route = keepRoute({ route: withPolicyPlugin(routeObject(r), conf), clusters: [...r.clusters], upstreamSettings: r.upstreamSettings });
    this.policyCache.set(r, { conf, route });
    return route;
  }
}
