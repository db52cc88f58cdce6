import type { FilterChain, Listener } from '../xds/envoy-types.js';
import { unpackAny, type PackedAny } from '../xds/codec.js';
import { HCM_TYPE, TCP_PROXY_TYPE } from '../xds/protos.js';
import { inventoryFilters, type NamedFilter, type SkipList } from '../policy/filter-inventory.js';
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

/** The capture listener itself (`virtual`), a port on any address, or one address and port. */
export type L4Bind = { virtual: true } | { port: number } | { address: string; port: number };

export interface L4ChainMatch {
  port?: number;
  prefixes?: Array<{ address: string; length: number }>;
  server_names?: string[];
  transport?: 'tls' | 'raw_buffer';
  alpn?: string[];
}

export type L4ChainTarget =
  | { kind: 'http' }
  | { kind: 'tcp'; clusters: Array<{ name: string; weight: number }> }
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
const VIRTUAL_INBOUND = 'virtualInbound';

/** The listener's L4 view; undefined for listeners the capture never reaches (no IP socket). */
export function l4Listener(listener: Listener, skip?: SkipList): L4ListenerDraft | undefined {
  const listenerName = listener.name ?? '';
  const socket = listener.address?.socket_address;
  if (!socket || !socket.port_value) return undefined;
  const inbound = listenerName === VIRTUAL_INBOUND || listener.traffic_direction === 'INBOUND';
  const direction = inbound ? 'inbound' : 'outbound';
  const address = socket.address && socket.address !== '0.0.0.0' && socket.address !== '::' ? socket.address : undefined;
  const bind: L4Bind =
    listenerName === VIRTUAL_OUTBOUND || listenerName === VIRTUAL_INBOUND
      ? { virtual: true }
      : address
        ? { address, port: socket.port_value }
        : { port: socket.port_value };
  const notes: TranslationNote[] = [];
  const chains = (listener.filter_chains ?? []).map((chain, i) => l4Chain(chain, `${listenerName}#${i}`, skip, notes, listenerName));
  const out: L4ListenerDraft = { listenerName, direction, bind, chains, notes };
  if (listener.default_filter_chain) out.default = l4Chain(listener.default_filter_chain, `${listenerName}#default`, skip, notes, listenerName);
  return out;
}

function l4Chain(chain: FilterChain, fallbackName: string, skip: SkipList | undefined, notes: TranslationNote[], listenerName: string): L4ChainDraft {
  const name = chain.name || fallbackName;
  const match = chainMatch(chain);
  const unsupported = unsupportedMatch(chain);
  if (unsupported) {
    notes.push({ kind: 'listener', name: listenerName, reason: 'unsupported-chain-match', detail: `${name}: ${unsupported}: its connections are refused`, skipped: true });
    return { name, match, target: { kind: 'refuse', reason: unsupported } };
  }
  const tls = tlsTermination(chain);
  if (tls) {
    notes.push({ kind: 'listener', name: listenerName, reason: 'tls-termination-unsupported', detail: `${name}: terminates TLS (${tls}), which the front does not: its connections are refused`, skipped: true });
    return { name, match, target: { kind: 'refuse', reason: `terminates TLS (${tls})` } };
  }
  const filters = (chain.filters ?? []) as NamedFilter[];
  const inventory = inventoryFilters(filters, skip);
  if (inventory.unenforced.length) {
    // An HTTP chain goes to the HTTP listener, where its scope's refusal route answers 403 as Envoy's
    // RBAC would (agent/translate/listener.ts reports it); a TCP chain's refusal is a close.
    const http = filters.some((f) => (f.typed_config as PackedAny | undefined)?.type_url === HCM_TYPE);
    if (http) return { name, match, target: { kind: 'http' } };
    return { name, match, target: { kind: 'refuse', reason: `filters not enforced: ${inventory.unenforced.join(', ')}` } };
  }
  for (const filter of filters) {
    const typed = filter.typed_config as PackedAny | undefined;
    if (typed?.type_url === HCM_TYPE) return { name, match, target: { kind: 'http' } };
    if (typed?.type_url === TCP_PROXY_TYPE) {
      const tcp = unpackAny<TcpProxyConfig>(typed);
      const clusters = tcp?.cluster
        ? [{ name: tcp.cluster, weight: 1 }]
        : (tcp?.weighted_clusters?.clusters ?? []).map((c) => ({ name: c.name ?? '', weight: weightOf(c.weight) }));
      if (!clusters.length || clusters.some((c) => !c.name)) return { name, match, target: { kind: 'refuse', reason: 'tcp_proxy without a cluster' } };
      return { name, match, target: { kind: 'tcp', clusters }, ...(inventory.networkRbac.length ? { rbac: inventory.networkRbac } : {}) };
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

const RAW_BUFFER_TYPE = 'type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer';

/**
 * The chain's transport socket when it terminates TLS (istiod's mTLS chains: a DownstreamTlsContext
 * that checks the peer's certificate). The front passes bytes as they come: such a chain would hand
 * the app an unverified peer's bytes (a TCP proxy) where istiod asked for mTLS.
 */
function tlsTermination(chain: FilterChain): string | undefined {
  const socket = chain.transport_socket;
  if (!socket) return undefined;
  const type = (socket.typed_config as PackedAny | null | undefined)?.type_url;
  if (type === RAW_BUFFER_TYPE || (!type && (!socket.name || socket.name === 'envoy.transport_sockets.raw_buffer'))) return undefined;
  return (type ?? socket.name ?? '').replace(/^type\.googleapis\.com\//, '').slice(0, 120);
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
