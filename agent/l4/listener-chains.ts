import type { FilterChain, Listener } from '../xds/envoy-types.js';
import { unpackAny, type PackedAny } from '../xds/codec.js';
import { HCM_TYPE, TCP_PROXY_TYPE } from '../xds/protos.js';
import { inventoryFilters, type NamedFilter, type SkipList } from '../policy/filter-inventory.js';
import { chainTransport, type ChainTransport, type PeerSanMatch } from './mesh-tls-context.js';
import type { TranslationNote } from '../translate/apisix-types.js';
import type { CompiledRbacFilter } from '../policy/rbac.js';

/**
 * One Envoy listener as the L4 front dispatches it (agent/l4/lua/apisix_mesh/chains.lua): where it
 * is bound, and its filter chains' matches with what each chain does. Cluster names are resolved
 * against the translated clusters later (assemble.ts), so that an endpoint change never
 * re-translates listeners.
 */
export interface L4ListenerDraft {
  listenerName: string;
  direction: 'outbound' | 'inbound';
  bind: L4Bind;
  chains: L4ChainDraft[];
  /** Envoy's default_filter_chain: used when no chain matches */
  default?: L4ChainDraft;
  notes: TranslationNote[];
}

/**
 * The capture listener itself (`virtual`), a port on the wildcard address of some families, or one
 * address and port; `also`: the listener's other addresses (istiod's dual-stack listeners carry the
 * service's IPv6 address in Envoy's `additional_addresses`), looked up like the first.
 *
 * `families`: Envoy hands a connection redirected to the capture listener to the listener bound to
 * its original destination, else to the one on the wildcard address of the destination's family on
 * its port (`0.0.0.0:<port>` for IPv4, `[::]:<port>` for IPv6, or a `::` with `ipv4_compat` for
 * both), else the capture listener keeps it (envoy source/common/listener_manager/
 * connection_handler_impl.cc, getBalancedHandlerByAddress, commit 0391c243). istiod binds the
 * per-port listeners of an IPv6-only proxy to `::` alone and a dual-stack proxy's to `0.0.0.0` with
 * `::` in `additional_addresses` (pilot/pkg/networking/core/listener.go buildListenerFromEntry,
 * listener_address.go wildCards; istio/istio 86c9f01f): a family the listener is not bound for goes
 * to the capture listener's own chains.
 */
export type L4Bind =
  | { virtual: true }
  | { port: number; families: IpFamily[] }
  | { address: string; port: number; also?: Array<{ address: string; port: number }> };
export type IpFamily = 'ipv4' | 'ipv6';

export interface L4ChainMatch {
  port?: number;
  prefixes?: Array<{ address: string; length: number }>;
  server_names?: string[];
  transport?: 'tls' | 'raw_buffer';
  alpn?: string[];
}

export type L4ChainTarget =
  /** `tls`: the chain terminates Istio's mTLS (APISIX's TLS listener does, mesh-tls-context.ts) */
  | { kind: 'http'; tls?: true; peer_sans?: PeerSanMatch[] }
  /** `tls`: the chain terminates Istio's mTLS before its TCP proxy (the front's stream TLS listener does) */
  | { kind: 'tcp'; clusters: Array<{ name: string; weight: number }>; tls?: true; peer_sans?: PeerSanMatch[] }
  | { kind: 'refuse'; reason: string };

export interface L4ChainDraft {
  name: string;
  match: L4ChainMatch;
  target: L4ChainTarget;
  /** the chain's network RBAC filters, in order: judged per connection before the target is used */
  rbac?: CompiledRbacFilter[];
}

interface TcpProxyConfig {
  cluster?: string;
  weighted_clusters?: { clusters?: Array<{ name?: string; weight?: number | { value?: number } }> };
}

const VIRTUAL_OUTBOUND = 'virtualOutbound';
const WILDCARDS = new Set(['', '0.0.0.0', '::']);

/** The families a wildcard address serves in Envoy: `::` IPv6 alone unless `ipv4_compat`. */
function wildcardFamilies(address: string, ipv4Compat: boolean): IpFamily[] {
  if (address !== '::') return ['ipv4'];
  return ipv4Compat ? ['ipv6', 'ipv4'] : ['ipv6'];
}

/**
 * An IP address in the text the front compares it with: the kernel's (inet_ntop, RFC 5952 for
 * IPv6: lower case, the longest run of zero groups compressed). IPv4 and anything unparsable stay.
 */
export function canonicalIp(address: string): string {
  if (!address.includes(':')) return address;
  try {
    return new URL(`http://[${address}]/`).hostname.slice(1, -1);
  } catch {
    return address;
  }
}
const VIRTUAL_INBOUND = 'virtualInbound';

/** The listener's L4 view; undefined for listeners the capture never reaches (no IP socket). */
export function l4Listener(listener: Listener, skip?: SkipList): L4ListenerDraft | undefined {
  const listenerName = listener.name ?? '';
  const socket = listener.address?.socket_address;
  if (!socket || !socket.port_value) return undefined;
  const inbound = listenerName === VIRTUAL_INBOUND || listener.traffic_direction === 'INBOUND';
  const direction = inbound ? 'inbound' : 'outbound';
  const bound = [socket, ...(listener.additional_addresses ?? []).map((a) => a.address?.socket_address)]
    .filter((a) => a?.port_value)
    .map((a) => ({ address: a!.address ?? '', port: a!.port_value!, ipv4Compat: a!.ipv4_compat === true }));
  const specific = bound.filter((a) => !WILDCARDS.has(a.address)).map((a) => ({ address: canonicalIp(a.address), port: a.port }));
  let bind: L4Bind;
  if (listenerName === VIRTUAL_OUTBOUND || listenerName === VIRTUAL_INBOUND) bind = { virtual: true };
  else if (!WILDCARDS.has(socket.address ?? '')) bind = { ...specific[0]!, ...(specific.length > 1 ? { also: specific.slice(1) } : {}) };
  else {
    // the wildcard addresses on the listener's port (istiod never gives an additional address another port)
    const families = new Set(bound.filter((a) => WILDCARDS.has(a.address) && a.port === socket.port_value).flatMap((a) => wildcardFamilies(a.address, a.ipv4Compat)));
    bind = { port: socket.port_value, families: [...families].sort() };
  }
  const notes: TranslationNote[] = [];
  const chains = (listener.filter_chains ?? []).map((chain, i) => l4Chain(chain, `${listenerName}#${i}`, skip, notes, listenerName, inbound));
  const out: L4ListenerDraft = { listenerName, direction, bind, chains, notes };
  if (listener.default_filter_chain) out.default = l4Chain(listener.default_filter_chain, `${listenerName}#default`, skip, notes, listenerName, inbound);
  return out;
}

function l4Chain(chain: FilterChain, fallbackName: string, skip: SkipList | undefined, notes: TranslationNote[], listenerName: string, inbound: boolean): L4ChainDraft {
  const name = chain.name || fallbackName;
  const match = chainMatch(chain);
  const unsupported = unsupportedMatch(chain);
  if (unsupported) {
    notes.push({ kind: 'listener', name: listenerName, reason: 'unsupported-chain-match', detail: `${name}: ${unsupported}: its connections are refused`, skipped: true });
    return { name, match, target: { kind: 'refuse', reason: unsupported } };
  }
  const filters = (chain.filters ?? []) as NamedFilter[];
  const transport = chainTransport(chain);
  const http = filters.some((f) => (f.typed_config as PackedAny | undefined)?.type_url === HCM_TYPE);
  const tls = unsupportedTls(transport, http, inbound);
  if (tls) {
    notes.push({ kind: 'listener', name: listenerName, reason: 'tls-termination-unsupported', detail: `${name}: terminates TLS (${tls}), which the front does not: its connections are refused`, skipped: true });
    return { name, match, target: { kind: 'refuse', reason: `terminates TLS (${tls})` } };
  }
  // what the chain's Istio mTLS asks of the side that terminates it (HTTP or TCP)
  const mtls = transport.kind === 'istio-mtls' ? { tls: true as const, ...(transport.peerSans.length ? { peer_sans: transport.peerSans } : {}) } : {};
  const httpTarget: L4ChainTarget = { kind: 'http', ...mtls };
  const inventory = inventoryFilters(filters, skip);
  if (inventory.unenforced.length) {
    // An HTTP chain goes to the HTTP listener, where its scope's refusal route answers 403 as Envoy's
    // RBAC would (agent/translate/listener.ts reports it); a TCP chain's refusal is a close.
    if (http) return { name, match, target: httpTarget };
    return { name, match, target: { kind: 'refuse', reason: `filters not enforced: ${inventory.unenforced.join(', ')}` } };
  }
  for (const filter of filters) {
    const typed = filter.typed_config as PackedAny | undefined;
    if (typed?.type_url === HCM_TYPE) return { name, match, target: httpTarget };
    if (typed?.type_url === TCP_PROXY_TYPE) {
      const tcp = unpackAny<TcpProxyConfig>(typed);
      const clusters = tcp?.cluster
        ? [{ name: tcp.cluster, weight: 1 }]
        : (tcp?.weighted_clusters?.clusters ?? []).map((c) => ({ name: c.name ?? '', weight: weightOf(c.weight) }));
      if (!clusters.length || clusters.some((c) => !c.name)) return { name, match, target: { kind: 'refuse', reason: 'tcp_proxy without a cluster' } };
      return { name, match, target: { kind: 'tcp', clusters, ...mtls }, ...(inventory.networkRbac.length ? { rbac: inventory.networkRbac } : {}) };
    }
  }
  notes.push({ kind: 'listener', name: listenerName, reason: 'no-terminal-filter', detail: `${name}: neither an HTTP connection manager nor a TCP proxy: its connections are refused`, skipped: true });
  return { name, match, target: { kind: 'refuse', reason: 'no terminal filter' } };
}

function weightOf(w: number | { value?: number } | undefined): number {
  const n = typeof w === 'number' ? w : (w?.value ?? 0);
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : 0;
}

function chainMatch(chain: FilterChain): L4ChainMatch {
  const m = chain.filter_chain_match;
  const out: L4ChainMatch = {};
  if (!m) return out;
  const port = m.destination_port?.value;
  if (port) out.port = port;
  const prefixes = (m.prefix_ranges ?? [])
    .filter((p) => p.address_prefix)
    .map((p) => ({ address: p.address_prefix!, length: p.prefix_len?.value ?? (p.address_prefix!.includes(':') ? 128 : 32) }));
  if (prefixes.length) out.prefixes = prefixes;
  if (m.server_names?.length) out.server_names = m.server_names.map((n) => n.toLowerCase());
  if (m.transport_protocol === 'tls' || m.transport_protocol === 'raw_buffer') out.transport = m.transport_protocol;
  if (m.application_protocols?.length) out.alpn = [...m.application_protocols];
  return out;
}

/**
 * What the front cannot terminate: TLS other than Istio's mTLS, and Istio's mTLS anywhere but on
 * inbound listeners (in front of HTTP, APISIX's TLS listener hands its requests to the routes; in
 * front of a TCP proxy, the front's stream TLS listener hands the plaintext bytes to the proxy's
 * cluster: agent/l4/lua/apisix_mesh/tcp_mtls.lua). istiod writes neither on outbound listeners.
 */
function unsupportedTls(transport: ChainTransport, http: boolean, inbound: boolean): string | undefined {
  if (transport.kind === 'other-tls') return transport.what;
  if (transport.kind === 'istio-mtls' && !inbound) return `Istio's mTLS for outbound ${http ? 'HTTP' : 'TCP'}`;
  return undefined;
}

/** Match criteria the front does not evaluate: a chain using them never matches by mistake. */
function unsupportedMatch(chain: FilterChain): string | undefined {
  const m = chain.filter_chain_match;
  if (!m) return undefined;
  if (m.source_prefix_ranges?.length || m.direct_source_prefix_ranges?.length) return 'source prefix ranges are not evaluated';
  if (m.source_ports?.length) return 'source ports are not evaluated';
  if (m.source_type && m.source_type !== 'ANY') return 'source type is not evaluated';
  if (m.transport_protocol && m.transport_protocol !== 'tls' && m.transport_protocol !== 'raw_buffer') return `transport protocol ${m.transport_protocol}`;
  return undefined;
}
