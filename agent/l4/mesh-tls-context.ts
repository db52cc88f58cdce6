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

/** What a chain's transport socket asks of the front. */
export type ChainTransport =
  /** plaintext bytes (no transport socket, or raw_buffer) */
  | { kind: 'raw' }
  /** Istio's mTLS: the workload certificate, a client certificate chained to the mesh roots */
  | { kind: 'istio-mtls' }
  /** any other TLS termination: what it is, for the note */
  | { kind: 'other-tls'; what: string };

function flag(v: boolean | { value?: boolean } | undefined): boolean {
  return typeof v === 'boolean' ? v : v?.value === true;
}

/**
 * The chain's transport socket. Istio's inbound mTLS chains (PeerAuthentication STRICT and
 * PERMISSIVE) carry a DownstreamTlsContext that presents SDS `default`, validates with SDS `ROOTCA`
 * and requires a client certificate: the sidecar does exactly that with the identity from Istio's CA
 * (agent/l4/lua/apisix_mesh/mesh_tls.lua). Anything else (certificates from files, no client
 * certificate, other secrets) is another TLS termination, which the front does not do.
 * `default_validation_context.match_subject_alt_names` (istiod: the trust domain's prefix) is not
 * evaluated: peers are those whose chain verifies to the mesh roots.
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
  return istio ? { kind: 'istio-mtls' } : { kind: 'other-tls', what: `${what} other than Istio's mTLS` };
}
