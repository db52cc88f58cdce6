import type { FilterChain } from '../xds/envoy-types.js';
import { unpackAny, type PackedAny } from '../xds/codec.js';

const RAW_BUFFER_TYPE = 'type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer';
const DOWNSTREAM_TLS_TYPE = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext';

/** Istio's SDS names: the workload certificate and the mesh roots (pilot-agent serves both). */
const WORKLOAD_SECRET = 'default';
const ROOT_SECRET = 'ROOTCA';

interface SdsSecretConfig {
  name?: string;
}

interface DownstreamTlsContext {
  require_client_certificate?: boolean | { value?: boolean };
  common_tls_context?: {
    tls_certificates?: unknown[];
    tls_certificate_sds_secret_configs?: SdsSecretConfig[];
    validation_context?: unknown;
    validation_context_sds_secret_config?: SdsSecretConfig;
    combined_validation_context?: {
      default_validation_context?: Record<string, unknown>;
      validation_context_sds_secret_config?: SdsSecretConfig;
    };
  };
}

/** One of `match_subject_alt_names`, as the sidecar's Lua checks it against the peer's URI SANs. */
export interface PeerSanMatch {
  k: 'exact' | 'prefix';
  v: string;
}

/** Envoy's StringMatcher as decoded (`match_pattern`: the oneof's name). */
interface SanMatcher {
  match_pattern?: string;
  exact?: string;
  prefix?: string;
  ignore_case?: boolean;
  [other: string]: unknown;
}

/**
 * A SAN value the hand-off record can carry (it is separated by spaces and `|` there): printable
 * ASCII, as SPIFFE ids are, at most 512 characters.
 */
const SAN_VALUE = /^[\x21-\x7b\x7d\x7e]{1,512}$/;
const MAX_SAN_MATCHERS = 16;

/**
 * istiod's `match_subject_alt_names` (the trust domain and its aliases as `prefix` matchers); only
 * exact and prefix matchers without `ignore_case` are checked by the sidecar: anything else makes
 * the chain's TLS unsupported (refused), never unchecked.
 */
function peerSanMatches(matchers: SanMatcher[] | undefined): PeerSanMatch[] | undefined {
  const out: PeerSanMatch[] = [];
  if ((matchers?.length ?? 0) > MAX_SAN_MATCHERS) return undefined;
  for (const m of matchers ?? []) {
    const kind = m.match_pattern;
    if (m.ignore_case || (kind !== 'exact' && kind !== 'prefix')) return undefined;
    const value = m[kind];
    if (typeof value !== 'string' || !SAN_VALUE.test(value)) return undefined;
    out.push({ k: kind, v: value });
  }
  return out;
}

/** What a chain's transport socket asks of the front. */
export type ChainTransport =
  /** plaintext bytes (no transport socket, or raw_buffer) */
  | { kind: 'raw' }
  /**
   * Istio's mTLS: the workload certificate, a client certificate chained to the mesh roots, one of
   * whose SANs matches one of `peerSans` (none: any)
   */
  | { kind: 'istio-mtls'; peerSans: PeerSanMatch[] }
  /** any other TLS termination: what it is, for the note */
  | { kind: 'other-tls'; what: string };

function flag(v: boolean | { value?: boolean } | undefined): boolean {
  return typeof v === 'boolean' ? v : v?.value === true;
}

/**
 * The chain's transport socket. Istio's inbound mTLS chains (PeerAuthentication STRICT and
 * PERMISSIVE) carry a DownstreamTlsContext that presents SDS `default`, validates with SDS `ROOTCA`
 * and requires a client certificate: the sidecar does exactly that with the identity from Istio's CA
 * (agent/l4/lua/apisix_mesh/mesh_tls.lua), and checks the peer's URI SANs against
 * `default_validation_context.match_subject_alt_names` (istiod: the trust domain's prefix) before a
 * request goes on. Anything else (certificates from files, no client certificate, other secrets, SAN
 * matchers other than exact and prefix) is another TLS termination, which the front does not do.
 */
export function chainTransport(chain: FilterChain): ChainTransport {
  const socket = chain.transport_socket;
  if (!socket) return { kind: 'raw' };
  const packed = socket.typed_config as PackedAny | null | undefined;
  const type = packed?.type_url;
  if (type === RAW_BUFFER_TYPE || (!type && (!socket.name || socket.name === 'envoy.transport_sockets.raw_buffer'))) return { kind: 'raw' };
  const what = (type ?? socket.name ?? '').replace(/^type\.googleapis\.com\//, '').slice(0, 120);
  if (type !== DOWNSTREAM_TLS_TYPE || !packed) return { kind: 'other-tls', what };
  const tls = unpackAny<DownstreamTlsContext>(packed);
  const common = tls?.common_tls_context;
  const secrets = common?.tls_certificate_sds_secret_configs ?? [];
  const rootSecret = common?.combined_validation_context?.validation_context_sds_secret_config ?? common?.validation_context_sds_secret_config;
  const istio =
    flag(tls?.require_client_certificate) &&
    !common?.tls_certificates?.length &&
    secrets.length === 1 &&
    secrets[0]!.name === WORKLOAD_SECRET &&
    !common?.validation_context &&
    rootSecret?.name === ROOT_SECRET;
  const peerSans = istio ? peerSanMatches(common?.combined_validation_context?.default_validation_context?.['match_subject_alt_names'] as SanMatcher[] | undefined) : undefined;
  if (!peerSans) return { kind: 'other-tls', what: `${what} other than Istio's mTLS` };
  return { kind: 'istio-mtls', peerSans };
}
