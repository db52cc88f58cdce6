import type { ApisixNode, ApisixRoute, ApisixUpstream, TranslationNote } from './apisix-types.js';
import type { ClusterTranslation } from './cluster.js';
import { originalDestinationRoute } from './original-destination.js';
import type { CapturePorts, RouteUpstreamSettings } from './route-configuration.js';
import { routeObject, type KeptRoute } from './kept-routes.js';

/**
 * The last step of the translation: the objects APISIX stores, from the per-resource translations.
 * An upstream is its cluster's translation + its nodes + the settings Envoy keeps on the routes to
 * it; a route is its translated route adjusted to the cluster it sends to (connect timeout, circuit
 * breaker, or the original destination).
 */

/** The upstream of a cluster with an upstream (`t.upstream`), given its nodes and route settings. */
export function assembleUpstream(t: ClusterTranslation, nodes: ApisixNode[], settings: RouteUpstreamSettings | undefined): { upstream: ApisixUpstream; notes: TranslationNote[] } {
  const upstream: ApisixUpstream = { ...t.upstream!, nodes };
  if (settings?.retries !== undefined) upstream.retries = settings.retries;
  if (settings?.retryTimeout !== undefined) upstream.retry_timeout = settings.retryTimeout;
  const notes: TranslationNote[] = [];
  if (t.consistentHash && settings?.hash) {
    upstream.type = 'chash';
    upstream.hash_on = settings.hash.hash_on;
    upstream.key = settings.hash.key;
  } else if (t.consistentHash) {
    notes.push({ kind: 'cluster', name: t.clusterName, reason: 'hash-key-missing', detail: 'consistent hashing without a route hash policy: round robin (Envoy picks a random host)', skipped: false });
  }
  return { upstream, notes };
}

export function sameSettings(a: RouteUpstreamSettings, b: RouteUpstreamSettings): boolean {
  return a.retries === b.retries && a.retryTimeout === b.retryTimeout && a.hash?.hash_on === b.hash?.hash_on && a.hash?.key === b.hash?.key;
}

/** What of its main cluster a route's final form depends on. */
export interface RouteTarget {
  /** the cluster is an original destination: the route forwards to where the app dialled */
  passthrough?: ClusterTranslation['originalDestination'];
  /** the main upstream's connect timeout */
  connect?: number;
  limits?: ClusterTranslation['limits'];
}

/** The route APISIX gets, for what its main cluster is now. A new object every time (nothing keeps it). */
export function finalRoute(r: KeptRoute, target: RouteTarget, ports: CapturePorts): ApisixRoute {
  const base = routeObject(r);
  return target.passthrough ? adjusted(originalDestinationRoute(base, { ports, ...target.passthrough }), undefined, target.limits) : adjusted(base, target.connect, target.limits);
}

function adjusted(base: ApisixRoute, connect: number | undefined, limits: ClusterTranslation['limits']): ApisixRoute {
  let route = base;
  if (route.timeout && connect !== undefined) {
    route = { ...route, timeout: { ...route.timeout, connect: Math.min(route.timeout.connect, connect) } };
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
