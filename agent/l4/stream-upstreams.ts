import type { ApisixNode, ApisixUpstream } from '../translate/apisix-types.js';
import type { IstioService } from '../translate/cluster-service.js';

/**
 * What APISIX's stream workers read under `/apisix/mesh_tcp_upstreams/<upstream id>` (validated
 * there by l4_upstreams.lua): the endpoints of one cluster a TCP chain names, as its upstream has
 * them (relay aliases for the clusters whose endpoints need TLS), and its connect timeout. The
 * stream workers do not load APISIX's /upstreams at all (stream_without_upstreams.lua): every
 * worker would hold every upstream a second time for the few clusters TCP proxies use.
 */
export interface L4Upstream {
  id: string;
  /** what the L4 front picks from: weighted at random, as it always has (no priorities) */
  nodes: Array<Pick<ApisixNode, 'host' | 'port' | 'weight'> & { workload?: string }>;
  /** seconds */
  connect?: number;
  /** the cluster's name, for Istio's TCP metrics (`outbound|port|subset|host` names the service) */
  name?: string;
  /** an inbound cluster's service (istiod's metadata, cluster-service.ts), for Istio's TCP metrics */
  service?: IstioService;
}

export function l4Upstream(u: ApisixUpstream): L4Upstream {
  // `workload`: istiod's endpoint metadata (endpoint-workload.ts), the TCP metrics' destination workload
  const out: L4Upstream = { id: u.id, nodes: u.nodes.map((n) => ({ host: n.host, port: n.port, weight: n.weight, ...(n.metadata ? { workload: n.metadata.istio_workload } : {}) })) };
  if (u.timeout?.connect !== undefined) out.connect = u.timeout.connect;
  if (u.name) out.name = u.name;
  const host = u.labels?.['istio-service'];
  if (host) {
    const name = u.labels?.['istio-service-name'];
    const namespace = u.labels?.['istio-service-namespace'];
    out.service = { host, ...(name ? { name } : {}), ...(namespace ? { namespace } : {}) };
  }
  return out;
}

/**
 * The stream side's copy of the upstreams, kept in step by the assembly (agent/translate/snapshot.ts):
 * after each round, the upstreams that round assembled are emitted again for the clusters a TCP
 * chain names, and withdrawn for those no chain names any more. Only the names emitted are kept.
 */
export class L4Upstreams {
  private readonly emitted = new Set<string>();

  /**
   * `assembled`: cluster name → its upstream as this round made it (null: none; undefined: this
   * round did not make it after all); `named`: whether a TCP chain names the cluster.
   * Returns the objects that changed by upstream id (null: gone).
   */
  emit(assembled: Iterable<[cluster: string, id: string, upstream: ApisixUpstream | null | undefined]>, named: (cluster: string) => boolean): Map<string, L4Upstream | null> {
    const out = new Map<string, L4Upstream | null>();
    for (const [cluster, id, upstream] of assembled) {
      if (upstream === undefined) continue;
      if (upstream && named(cluster)) {
        out.set(id, l4Upstream(upstream));
        this.emitted.add(cluster);
      } else if (this.emitted.delete(cluster)) {
        out.set(id, null);
      }
    }
    return out;
  }

  /** After a failed round: everything is emitted again. */
  reset(): void {
    this.emitted.clear();
  }
}
