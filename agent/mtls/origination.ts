import type { ClusterLoadAssignment } from '../xds/envoy-types.js';
import type { ApisixNode, ApisixUpstream, TranslationNote } from '../translate/apisix-types.js';
import type { ClusterTranslation } from '../translate/cluster.js';
import { stableId } from '../translate/ids.js';
import { endpointMatchMetadata, endpointPolicy, type SanMatcher, type TransportPolicy, type UpstreamTlsPolicy } from './upstream-tls.js';
import { aliasKey, assignAliases } from './relay-aliases.js';

/**
 * TLS origination through the sidecar's relay (docs/mtls.md): an upstream with at least one
 * endpoint that Envoy would reach over TLS has every node replaced by that endpoint's loopback alias
 * on the relay's port; the relay (APISIX's stream subsystem, tls_origin.lua) finds the endpoint by
 * the alias and originates mutual TLS with the workload certificate, checks the server's chain and
 * SAN, or pumps plaintext for endpoints Envoy would reach in plaintext (auto-mTLS to a pod without a
 * sidecar), or closes the connection when the endpoint's TLS cannot be enforced.
 */

/** The relay's port for connections from APISIX's HTTP side (HTTP ALPN) ... */
export const TLS_RELAY_PORT = 15083;
/** ... and for TCP proxies of the L4 front (the cluster's own ALPN, as Envoy's TCP proxy offers it). */
export const TLS_RELAY_TCP_PORT = 15084;

/** Envoy's Istio ALPN override for HTTP upstreams (istio's `alpn` filter): by the protocol spoken. */
const HTTP11_ALPN = ['istio-http/1.1', 'istio', 'http/1.1'];
const H2_ALPN = ['istio-h2', 'istio', 'h2'];

export interface RelayEndpoint {
  /** the loopback alias APISIX connects to */
  alias: string;
  host: string;
  port: number;
  mode: 'mtls' | 'plain' | 'refuse';
  reason?: string;
}

/** What the relay reads under `/apisix/mesh_tls/<id>` (validated there by tls_config.lua). */
export interface RelayCluster {
  id: string;
  cluster: string;
  endpoints: RelayEndpoint[];
  /** the TLS settings of the endpoints in mode `mtls` */
  sni: string;
  san: SanMatcher[];
  alpn: string[];
  alpn_tcp: string[];
  /** the cluster's connect timeout, for the relay's connection to the endpoint */
  connect_timeout_ms: number;
}

/** What a cluster translation carries for this module (cluster.ts fills it). */
export interface ClusterTls {
  policy: UpstreamTlsPolicy;
  /** STATIC / STRICT_DNS clusters: the endpoints' match metadata by `host:port` */
  inlineMetadata?: Map<string, Record<string, string>>;
}

export interface OriginationInput {
  clusters: ReadonlyMap<string, ClusterTranslation>;
  /** the upstreams by cluster name; relayed ones are replaced (in both maps) */
  upstreamByCluster: Map<string, ApisixUpstream>;
  upstreams: Map<string, ApisixUpstream>;
  endpoints: ReadonlyMap<string, ClusterLoadAssignment>;
}

export function nodeKey(host: string, port: number): string {
  return `${host}:${port}`;
}

/** The `envoy.transport_socket_match` metadata of every endpoint of an assignment, by `host:port`. */
export function assignmentMetadata(cla: ClusterLoadAssignment | undefined): Map<string, Record<string, string>> {
  const out = new Map<string, Record<string, string>>();
  for (const locality of cla?.endpoints ?? []) {
    for (const e of locality.lb_endpoints ?? []) {
      const socket = e.endpoint?.address?.socket_address;
      if (!socket?.address || socket.port_value === undefined) continue;
      const host = socket.address.includes(':') && !socket.address.startsWith('[') ? `[${socket.address}]` : socket.address;
      const metadata = endpointMatchMetadata(e);
      if (metadata) out.set(nodeKey(host, socket.port_value), metadata);
    }
  }
  return out;
}

interface Planned {
  name: string;
  upstream: ApisixUpstream;
  tls: MeshTlsOf;
  endpoints: Array<{ node: ApisixNode; policy: TransportPolicy }>;
}
type MeshTlsOf = Extract<TransportPolicy, { kind: 'istio-mutual' }> | undefined;

/**
 * Rewrites the upstreams of clusters whose endpoints need TLS and returns the relay's entries.
 * Objects keep their identity while their content does not change (the applier re-encodes only
 * what changed).
 */
export class TlsOrigination {
  private readonly metadataCache = new WeakMap<ClusterLoadAssignment, Map<string, Record<string, string>>>();
  private previous = new Map<string, { json: string; entry: RelayCluster; base: ApisixUpstream; upstream: ApisixUpstream }>();

  apply(input: OriginationInput, notes: TranslationNote[]): Map<string, RelayCluster> {
    const planned: Planned[] = [];
    for (const [name, t] of input.clusters) {
      const upstream = input.upstreamByCluster.get(name);
      if (!t.tls || !upstream) continue;
      const metadata = t.tls.inlineMetadata ?? this.metadata(input.endpoints.get(t.edsServiceName ?? name));
      const endpoints = upstream.nodes.map((node) => ({ node, policy: endpointPolicy(t.tls!.policy, metadata.get(nodeKey(node.host, node.port))) }));
      if (endpoints.every((e) => e.policy.kind === 'plaintext')) continue;
      const meshTls = endpoints.map((e) => e.policy).find((p): p is NonNullable<MeshTlsOf> => p.kind === 'istio-mutual');
      const refusal = endpoints.map((e) => e.policy).find((p): p is { kind: 'refused'; reason: string } => p.kind === 'refused');
      if (refusal) {
        notes.push({ kind: 'cluster', name, reason: 'tls-origination-refused', detail: `${refusal.reason}: connections to its TLS endpoints are refused`, skipped: true });
      }
      planned.push({ name, upstream, tls: meshTls, endpoints });
    }

    const aliases = assignAliases(planned.flatMap((p) => p.endpoints.map((e) => aliasKey(p.name, e.node.host, e.node.port))));
    const out = new Map<string, RelayCluster>();
    const next = new Map<string, { json: string; entry: RelayCluster; base: ApisixUpstream; upstream: ApisixUpstream }>();
    for (const p of planned) {
      const fresh = relayCluster(p, aliases);
      const json = JSON.stringify(fresh);
      const cached = this.previous.get(p.name);
      let entry = fresh;
      let upstream: ApisixUpstream;
      if (cached && cached.json === json && cached.base === p.upstream) {
        entry = cached.entry;
        upstream = cached.upstream;
      } else {
        if (cached && cached.json === json) entry = cached.entry;
        upstream = relayedUpstream(p.upstream, entry);
      }
      next.set(p.name, { json, entry, base: p.upstream, upstream });
      out.set(entry.id, entry);
      input.upstreamByCluster.set(p.name, upstream);
      input.upstreams.set(upstream.id, upstream);
    }
    this.previous = next;
    return out;
  }

  private metadata(cla: ClusterLoadAssignment | undefined): Map<string, Record<string, string>> {
    if (!cla) return new Map();
    let m = this.metadataCache.get(cla);
    if (!m) this.metadataCache.set(cla, (m = assignmentMetadata(cla)));
    return m;
  }
}

function relayCluster(p: Planned, aliases: ReadonlyMap<string, string>): RelayCluster {
  const endpoints = p.endpoints.map(({ node, policy }): RelayEndpoint => {
    const base = { alias: aliases.get(aliasKey(p.name, node.host, node.port))!, host: node.host, port: node.port };
    if (policy.kind === 'plaintext') return { ...base, mode: 'plain' };
    if (policy.kind === 'refused') return { ...base, mode: 'refuse', reason: policy.reason };
    // one cluster has one TLS context per match; two different istio-mutual contexts within one
    // cluster would need per-endpoint settings, which istiod never generates: refuse the others
    if (p.tls && JSON.stringify(policy) !== JSON.stringify(p.tls)) return { ...base, mode: 'refuse', reason: 'a second TLS context in one cluster' };
    return { ...base, mode: 'mtls' };
  });
  const tls = p.tls;
  return {
    id: stableId('mesh_tls', p.name),
    cluster: p.name.slice(0, 512),
    endpoints,
    sni: tls?.sni ?? '',
    san: tls?.san ?? [],
    alpn: p.upstream.scheme === 'grpc' ? H2_ALPN : HTTP11_ALPN,
    alpn_tcp: tls?.alpn ?? [],
    connect_timeout_ms: Math.max(1, Math.min(3_600_000, Math.round((p.upstream.timeout?.connect ?? 5) * 1000))),
  };
}

function relayedUpstream(base: ApisixUpstream, entry: RelayCluster): ApisixUpstream {
  const nodes = base.nodes.map((node, i): ApisixNode => {
    const relayed: ApisixNode = { host: entry.endpoints[i]!.alias, port: TLS_RELAY_PORT, weight: node.weight };
    if (node.priority !== undefined) relayed.priority = node.priority;
    return relayed;
  });
  return { ...base, nodes };
}
