import type { ClusterTranslation } from '../translate/cluster.js';
import type { TranslationNote } from '../translate/apisix-types.js';
import { stableId } from '../translate/ids.js';
import type { L4ChainDraft, L4ChainMatch, L4ListenerDraft, L4Bind } from './listener-chains.js';
import { rbacFilterData } from '../policy/rbac-plugin.js';
import type { PeerSanMatch } from './mesh-tls-context.js';
import type { IstioService } from '../translate/cluster-service.js';

/** What APISIX's stream workers read under `/apisix/mesh_l4/` (validated there by l4_config.lua). */
export interface L4Listener {
  id: string;
  name: string;
  direction: 'outbound' | 'inbound';
  bind: L4Bind;
  chains: L4Chain[];
  default?: L4Chain;
}

export interface L4Chain {
  name: string;
  match: L4ChainMatch;
  action: L4Action;
  /** Envoy's network RBAC filters of the chain (rbac.ts trees), judged in preread (l4_rbac.lua) */
  rbac?: Array<Record<string, unknown>>;
}

export type L4Action =
  /** `tls`: to APISIX's mTLS listener (Istio's mTLS chains), else its HTTP listener */
  | { kind: 'http'; tls?: true; peer_sans?: PeerSanMatch[] }
  /**
   * `tls` (both): the chain terminates Istio's mTLS first: the front hands the raw TLS to its stream
   * TLS listener, which checks the peer (`peer_sans`, the chain's network RBAC with its principal)
   * and then connects where the action says (agent/l4/lua/apisix_mesh/tcp_mtls.lua).
   * `service` (passthrough): an inbound cluster's service (istiod's metadata), for Istio's TCP metrics (l4_metrics.lua)
   */
  | ({ kind: 'passthrough'; connect_timeout: number; service?: IstioService } & MeshTls)
  | ({ kind: 'cluster'; clusters: Array<{ upstream_id: string; weight: number }> } & MeshTls)
  | { kind: 'refuse'; reason: string };

/** Istio's mTLS terminated in front of a TCP proxy: the chain's SAN matchers (none: any peer of the roots). */
export interface MeshTls {
  tls?: true;
  peer_sans?: PeerSanMatch[];
}

/**
 * Resolves a listener's chains against the translated clusters and the upstreams APISIX gets: a TCP
 * proxy to an original-destination cluster passes through, to a cluster with an upstream connects to
 * its endpoints, and to anything else (unknown, not translatable, no endpoints yet, a split that
 * mixes pass-through with clusters) is refused: never forwarded somewhere it was not meant to go.
 */
export function assembleL4Listener(
  draft: L4ListenerDraft,
  clusters: ReadonlyMap<string, ClusterTranslation>,
  upstreamIdOf: UpstreamIdLookup,
  notes: TranslationNote[],
): L4Listener {
  const chain = (c: L4ChainDraft): L4Chain => {
    const action = resolve(c, draft.listenerName, clusters, upstreamIdOf, notes);
    // a refused chain needs no policy: it forwards nothing
    return { name: c.name, match: c.match, action, ...(c.rbac && action.kind !== 'refuse' ? { rbac: c.rbac.map(rbacFilterData) } : {}) };
  };
  const out: L4Listener = {
    id: stableId('l4', draft.listenerName),
    name: draft.listenerName.slice(0, 512),
    direction: draft.direction,
    bind: draft.bind,
    chains: draft.chains.map(chain),
  };
  if (draft.default) out.default = chain(draft.default);
  return out;
}

/** The id of the upstream APISIX gets for a cluster; undefined when it has none (not translatable, no endpoints yet). */
export type UpstreamIdLookup = (cluster: string) => string | undefined;

const BLACK_HOLE = 'BlackHoleCluster';

function resolve(
  c: L4ChainDraft,
  listenerName: string,
  clusters: ReadonlyMap<string, ClusterTranslation>,
  upstreamIdOf: UpstreamIdLookup,
  notes: TranslationNote[],
): L4Action {
  const target = c.target;
  if (target.kind !== 'tcp') return target;
  const mtls: MeshTls = target.tls ? { tls: true, ...(target.peer_sans ? { peer_sans: target.peer_sans } : {}) } : {};
  // Istio's REGISTRY_ONLY catch-all and the capture port's own chain: refused by design, no note
  if (target.clusters.length === 1 && target.clusters[0]!.name === BLACK_HOLE) return { kind: 'refuse', reason: BLACK_HOLE };
  const refuse = (reason: string): L4Action => {
    notes.push({ kind: 'listener', name: listenerName, reason: 'tcp-proxy-refused', detail: `${c.name}: ${reason}: its connections are refused`, skipped: true });
    return { kind: 'refuse', reason };
  };
  const passthrough = target.clusters.map((x) => clusters.get(x.name)?.originalDestination);
  if (passthrough.every((p) => p)) {
    if (target.clusters.length === 1) {
      const { connectTimeout, service } = passthrough[0]!;
      return { kind: 'passthrough', connect_timeout: connectTimeout, ...(service ? { service } : {}), ...mtls };
    }
    return refuse('a weighted split between original destinations');
  }
  if (passthrough.some((p) => p)) return refuse('a weighted split mixing the original destination and clusters');
  const out: Array<{ upstream_id: string; weight: number }> = [];
  for (const { name, weight } of target.clusters) {
    const upstreamId = upstreamIdOf(name);
    if (!upstreamId) return refuse(clusters.has(name) ? `cluster ${name} is not translatable or has no endpoints yet` : `unknown cluster ${name}`);
    out.push({ upstream_id: upstreamId, weight });
  }
  return { kind: 'cluster', clusters: out, ...mtls };
}
