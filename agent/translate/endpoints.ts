import type { ClusterLoadAssignment } from '../xds/envoy-types.js';
import type { ApisixNode, TranslationNote } from './apisix-types.js';
import { wrapped } from './values.js';
import { endpointMatchMetadata } from '../mtls/upstream-tls.js';
import { endpointWorkload } from './endpoint-workload.js';

export interface EndpointsTranslation {
  clusterName: string;
  nodes: ApisixNode[];
  notes: TranslationNote[];
  /** the endpoints' `envoy.transport_socket_match` metadata by `host:port` (auto-mTLS's tlsMode), when any has it */
  socketMatch?: Record<string, Record<string, string>>;
}

/**
 * ClusterLoadAssignment → APISIX nodes. Envoy gives a host (locality weight / sum of locality
 * weights) × (host weight / sum of host weights in its locality) of the traffic of its priority
 * level; APISIX's weighted round robin takes integer weights, so each node gets that share scaled
 * to integers (reduced by their gcd, so equal hosts get weight 1). Envoy priority 0 is the best;
 * APISIX prefers the highest `priority`, so the priority is negated. Unhealthy and draining hosts
 * are left out; an assignment without hosts gives an upstream without nodes, never stale ones.
 */
export function translateClusterLoadAssignment(cla: ClusterLoadAssignment): EndpointsTranslation {
  const clusterName = cla.cluster_name ?? '';
  const notes: TranslationNote[] = [];
  const hosts: Array<{ node: ApisixNode; numerator: number; denominator: number }> = [];
  let socketMatch: Record<string, Record<string, string>> | undefined;
  const localities = (cla.endpoints ?? []).map((locality) => {
    const usable = (locality.lb_endpoints ?? []).filter((e) => {
      const health = e.health_status ?? 'UNKNOWN';
      return health !== 'UNHEALTHY' && health !== 'DRAINING' && health !== 'TIMEOUT';
    });
    return { locality, usable };
  });
  const localityWeighted = localities.some(({ locality }) => wrapped(locality.load_balancing_weight) !== undefined);
  const levelTotals = new Map<number, number>();
  for (const { locality, usable } of localities) {
    if (usable.length === 0) continue;
    const p = locality.priority ?? 0;
    levelTotals.set(p, (levelTotals.get(p) ?? 0) + (wrapped(locality.load_balancing_weight) ?? 1));
  }
  for (const { locality, usable } of localities) {
    const priority = locality.priority ?? 0;
    const localityWeight = wrapped(locality.load_balancing_weight) ?? 1;
    if (usable.length === 0 || localityWeight === 0) continue;
    const inLocality = usable.reduce((sum, e) => sum + (wrapped(e.load_balancing_weight) ?? 1), 0);
    for (const lbEndpoint of usable) {
      const socket = lbEndpoint.endpoint?.address?.socket_address;
      if (!socket?.address || socket.port_value === undefined || (socket.protocol ?? 'TCP') !== 'TCP') {
        notes.push({ kind: 'endpoint', name: clusterName, reason: 'unsupported-address', detail: 'only TCP socket addresses with a numeric port become nodes', skipped: true });
        continue;
      }
      const endpointWeight = wrapped(lbEndpoint.load_balancing_weight) ?? 1;
      const numerator = localityWeighted ? localityWeight * endpointWeight : endpointWeight;
      const denominator = localityWeighted ? levelTotals.get(priority)! * inLocality : 1;
      const node: ApisixNode = { host: bracketIpv6(socket.address), port: socket.port_value, weight: 0 };
      const workload = endpointWorkload(lbEndpoint);
      const match = endpointMatchMetadata(lbEndpoint);
      if (match && Object.keys(match).length) (socketMatch ??= {})[`${node.host}:${node.port}`] = match;
      if (priority !== 0) node.priority = -priority;
      if (workload) node.metadata = { istio_workload: workload };
      hosts.push({ node, numerator, denominator });
    }
  }
  // exact integer shares: scale every fraction by the lcm of the denominators (falling back to a
  // 1/10000 resolution if that grows large), then reduce by the gcd so equal hosts weigh 1
  const common = hosts.reduce((l, h) => lcm(l, h.denominator), 1);
  const scaled = common <= 1e6
    ? hosts.map((h) => (h.numerator * common) / h.denominator)
    : hosts.map((h) => (h.numerator > 0 ? Math.max(1, Math.round((h.numerator / h.denominator) * 10000)) : 0));
  const divisor = scaled.reduce((g, w) => (w > 0 ? gcd(g, w) : g), 0) || 1;
  const nodes = hosts.map(({ node }, i) => ({ ...node, weight: scaled[i]! / divisor }));
  return socketMatch ? { clusterName, nodes, notes, socketMatch } : { clusterName, nodes, notes };
}

function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

function bracketIpv6(address: string): string {
  return address.includes(':') && !address.startsWith('[') ? `[${address}]` : address;
}
