import type { ApisixNode, ApisixUpstream, TranslationNote } from '../translate/apisix-types.js';
import type { ClusterTranslation } from '../translate/cluster.js';
import { stableId, upstreamId } from '../translate/ids.js';
import { endpointPolicy, type SanMatcher, type TransportPolicy, type UpstreamTlsPolicy } from './upstream-tls.js';
import { simpleTlsFields, type SimpleTlsFields } from './simple-tls.js';
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
  /** mtls: Istio mutual TLS; tls: DestinationRule SIMPLE (simple-tls.ts) */
  mode: 'mtls' | 'tls' | 'plain' | 'refuse';
  reason?: string;
}

/** What the relay reads under `/apisix/mesh_tls/<id>` (validated there by tls_config.lua). */
export interface RelayCluster extends SimpleTlsFields {
  id: string;
  cluster: string;
  endpoints: RelayEndpoint[];
  /** the TLS settings of the endpoints in mode `mtls` or `tls` */
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
  inlineSocketMatch?: Record<string, Record<string, string>>;
}

export function nodeKey(host: string, port: number): string {
  return `${host}:${port}`;
}

/** A cluster whose upstream goes through the relay: what decides its entry, besides the aliases. */
interface Plan {
  /** the upstream's scheme and connect timeout (ALPN list, relay connect timeout) */
  scheme: ApisixUpstream['scheme'];
  connect: number;
  tls: MeshTlsOf;
  endpoints: Array<{ host: string; port: number; policy: TransportPolicy }>;
  /** the aliases it was last emitted with (JSON), to see when a reassignment moves one */
  aliases: string;
}
type MeshTlsOf = Extract<TransportPolicy, { kind: 'istio-mutual' | 'simple' }> | undefined;

/**
 * The relay's side of the assembly (agent/translate/snapshot.ts). `plan` is called for every
 * upstream the assembly (re)builds; `emit` then replaces the relayed ones by their relay form and
 * gives the relay's entries that changed. Aliases are assigned over the set of all relayed
 * (cluster, endpoint) keys (relay-aliases.ts), so an upstream whose alias moved because another
 * cluster's endpoints changed is emitted again too: the result is a function of the xDS state.
 */
export class TlsOrigination {
  private readonly plans = new Map<string, Plan>();
  private aliases = new Map<string, string>();
  private keysChanged = false;
  /** planned (or forgotten) since the last emit */
  private readonly touched = new Set<string>();

  /** The cluster's upstream as just assembled (null: none), with its endpoints' match metadata; returns its notes. */
  plan(name: string, t: ClusterTranslation | undefined, upstream: ApisixUpstream | null, socketMatch?: Record<string, Record<string, string>>): TranslationNote[] {
    this.touched.add(name);
    const before = this.plans.get(name);
    const forget = (): TranslationNote[] => {
      if (before) {
        this.plans.delete(name);
        this.keysChanged = true;
      }
      return [];
    };
    if (!t?.tls || !upstream) return forget();
    const policy = t.tls.policy;
    const endpoints = upstream.nodes.map((n) => ({ host: n.host, port: n.port, policy: endpointPolicy(policy, socketMatch?.[nodeKey(n.host, n.port)]) }));
    if (endpoints.every((e) => e.policy.kind === 'plaintext')) return forget();
    const tls = endpoints.map((e) => e.policy).find((p): p is NonNullable<MeshTlsOf> => p.kind === 'istio-mutual' || p.kind === 'simple');
    const keys = (eps: Plan['endpoints']) => eps.map((e) => aliasKey(name, e.host, e.port)).join('\n');
    if (!before || keys(before.endpoints) !== keys(endpoints)) this.keysChanged = true;
    this.plans.set(name, { scheme: upstream.scheme, connect: upstream.timeout?.connect ?? 5, tls, endpoints, aliases: before?.aliases ?? '' });
    const refused = endpoints.map((e) => e.policy).find((p): p is { kind: 'refused'; reason: string } => p.kind === 'refused');
    const simple = tls?.kind === 'simple' ? simpleTlsFields(name, tls) : undefined;
    const refusal = refused?.reason ?? (simple && 'refusal' in simple ? simple.refusal : undefined);
    if (refusal) return [{ kind: 'cluster', name, reason: 'tls-origination-refused', detail: `${refusal}: connections to its TLS endpoints are refused`, skipped: true }];
    if (tls?.kind === 'simple' && tls.roots.kind === 'none') {
      return [{ kind: 'cluster', name, reason: 'tls-origination-unverified', detail: 'DestinationRule SIMPLE with insecureSkipVerify (or no CA): TLS without a check of the server, as Envoy does', skipped: false }];
    }
    return [];
  }

  /**
   * Replaces the relayed upstreams in `upstreams` (those just assembled; `rebuild` gives the others
   * whose aliases moved) and returns the relay entries that changed (null: gone).
   */
  emit(upstreams: Map<string, ApisixUpstream | null>, rebuild: (cluster: string) => ApisixUpstream | null): Map<string, RelayCluster | null> {
    const out = new Map<string, RelayCluster | null>();
    const names = new Set(this.touched);
    if (this.keysChanged) {
      this.aliases = assignAliases([...this.plans].flatMap(([name, p]) => p.endpoints.map((e) => aliasKey(name, e.host, e.port))));
      for (const [name, p] of this.plans) if (this.aliasList(name, p) !== p.aliases) names.add(name);
      this.keysChanged = false;
    }
    for (const name of names) {
      const p = this.plans.get(name);
      const id = stableId('mesh_tls', name);
      if (!p) {
        out.set(id, null);
        continue;
      }
      const base = this.touched.has(name) ? upstreams.get(upstreamId(name)) : rebuild(name);
      if (!base) continue;
      p.aliases = this.aliasList(name, p);
      const entry = relayCluster(name, id, p, this.aliases);
      out.set(id, entry);
      upstreams.set(base.id, relayedUpstream(base, entry));
    }
    this.touched.clear();
    return out;
  }

  private aliasList(name: string, p: Plan): string {
    return p.endpoints.map((e) => this.aliases.get(aliasKey(name, e.host, e.port))).join(',');
  }
}

function relayCluster(name: string, id: string, p: Plan, aliases: ReadonlyMap<string, string>): RelayCluster {
  const simple = p.tls?.kind === 'simple' ? simpleTlsFields(name, p.tls) : undefined;
  const endpoints = p.endpoints.map(({ host, port, policy }): RelayEndpoint => {
    const base = { alias: aliases.get(aliasKey(name, host, port))!, host, port };
    if (policy.kind === 'plaintext') return { ...base, mode: 'plain' };
    if (policy.kind === 'refused') return { ...base, mode: 'refuse', reason: policy.reason };
    // one cluster has one TLS context per match; two different TLS contexts within one cluster
    // would need per-endpoint settings, which istiod never generates: refuse the others
    if (p.tls && JSON.stringify(policy) !== JSON.stringify(p.tls)) return { ...base, mode: 'refuse', reason: 'a second TLS context in one cluster' };
    if (simple && 'refusal' in simple) return { ...base, mode: 'refuse', reason: simple.refusal };
    return { ...base, mode: policy.kind === 'simple' ? 'tls' : 'mtls' };
  });
  const tls = p.tls;
  return {
    id,
    cluster: name.slice(0, 512),
    endpoints,
    sni: tls?.sni ?? '',
    san: tls?.san ?? [],
    // Istio's ALPN override is for its mutual TLS; SIMPLE offers the cluster's own list (h2 for HTTP/2)
    alpn: tls?.kind === 'simple' ? tls.alpn : p.scheme === 'grpc' ? H2_ALPN : HTTP11_ALPN,
    alpn_tcp: tls?.alpn ?? [],
    connect_timeout_ms: Math.max(1, Math.min(3_600_000, Math.round(p.connect * 1000))),
    ...(simple && !('refusal' in simple) ? simple : {}),
  };
}

function relayedUpstream(base: ApisixUpstream, entry: RelayCluster): ApisixUpstream {
  const nodes = base.nodes.map((node, i): ApisixNode => {
    const relayed: ApisixNode = { host: entry.endpoints[i]!.alias, port: TLS_RELAY_PORT, weight: node.weight };
    if (node.priority !== undefined) relayed.priority = node.priority;
    // istiod's workload of the endpoint behind the alias, for Istio's metrics
    if (node.metadata) relayed.metadata = node.metadata;
    return relayed;
  });
  return { ...base, nodes };
}
