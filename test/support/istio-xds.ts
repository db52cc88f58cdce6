import { emptyResources, type CanonicalResources } from '../../agent/xds/config-dump.js';

/**
 * Istio-shaped xDS resources in proto3 canonical JSON, built by hand for tests that need many small
 * services: the shapes follow what istiod 1.2x sends a sidecar (see test/fixtures/xds/synthetic-*.json
 * and the captured dumps there) — EDS clusters named `outbound|port|subset|host`, one
 * `0.0.0.0_<port>` listener per HTTP port with RDS `<port>` and the PassthroughCluster as default
 * chain, route configurations with one virtual host per service (domains: the FQDN, its short forms
 * and the VIP) plus `allow_any`, `virtualOutbound`, and `virtualInbound` with one HTTP chain per
 * app port to an ORIGINAL_DST `inbound|port||` cluster. Only the fields the shapes need; every
 * field name is the proto's (the codec reads them by reflection, so a misspelt one would vanish).
 */
type Json = Record<string, unknown>;

const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const TCP_PROXY = 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy';
const ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';
const FAULT = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault';
const PREVIOUS_HOSTS = 'type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate';
const UNLIMITED = 4294967295;
const ADS = { ads: {}, initial_fetch_timeout: '0s', resource_api_version: 'V3' };

export interface Endpoint {
  ip: string;
  port: number;
  weight?: number;
  /** the endpoint's pod has a sidecar: istiod labels it `tlsMode: istio` (auto-mTLS picks TLS for it) */
  tlsModeIstio?: boolean;
  /** istiod's telemetry metadata of the endpoint (`istio.workload`: `name;namespace;canonical-name;revision;cluster`) */
  workload?: string;
}

export function fqdn(name: string, namespace: string): string {
  return `${name}.${namespace}.svc.cluster.local`;
}

export function outboundCluster(port: number, host: string, subset = ''): string {
  return `outbound|${port}|${subset}|${host}`;
}

export interface ClusterOptions {
  /** DestinationRule loadBalancer.consistentHash → RING_HASH */
  ringHash?: boolean;
  /** DestinationRule connectionPool (tcp.maxConnections, http.http1MaxPendingRequests, http2MaxRequests) */
  connectionPool?: { maxConnections?: number; maxPendingRequests?: number; maxRequests?: number };
  connectTimeout?: string;
  /** DestinationRule outlierDetection (consecutive5xxErrors, interval, baseEjectionTime) */
  outlierDetection?: { consecutive5xx: number; interval: string; baseEjectionTime: string };
}

/** Istio's SDS reference (the sidecar's own SDS server, named by `name`: `default` or `ROOTCA`). */
/** istiod's SDSAdsConfig (security/model/authentication.go): credentialName's secrets come over the ADS stream. */
function adsSecret(name: string): Json {
  return { name, sds_config: { ads: {}, resource_api_version: 'V3' } };
}

function sdsSecret(name: string): Json {
  return { name, sds_config: { api_config_source: { api_type: 'GRPC', grpc_services: [{ envoy_grpc: { cluster_name: 'sds-grpc' } }], set_node_on_first_message_only: true, transport_api_version: 'V3' }, initial_fetch_timeout: '0s', resource_api_version: 'V3' } };
}

/**
 * The transport socket istiod gives ISTIO_MUTUAL clusters (Istio 1.18+): the workload certificate
 * (`default`), the mesh root (`ROOTCA`), the server's expected SPIFFE IDs, the cluster's SNI.
 */
export function istioMutualTransportSocket(sni: string, spiffeIds: string[]): Json {
  return {
    name: 'envoy.transport_sockets.tls',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
      common_tls_context: {
        tls_params: { tls_minimum_protocol_version: 'TLSv1_2', tls_maximum_protocol_version: 'TLSv1_3' },
        alpn_protocols: ['istio-peer-exchange', 'istio'],
        tls_certificate_sds_secret_configs: [sdsSecret('default')],
        combined_validation_context: {
          default_validation_context: { match_subject_alt_names: spiffeIds.map((exact) => ({ exact })) },
          validation_context_sds_secret_config: sdsSecret('ROOTCA'),
        },
      },
      sni,
    },
  };
}

/** DestinationRule `tls` fields for SIMPLE / MUTUAL (file paths) / credentialName. */
export interface ClientTls {
  mode: 'SIMPLE' | 'MUTUAL';
  sni?: string;
  subjectAltNames?: string[];
  caCertificates?: string;
  insecureSkipVerify?: boolean;
  clientCertificate?: string;
  privateKey?: string;
  credentialName?: string;
  /** a CRL file (with file CAs only: istiod puts it in the default validation context as a filename) */
  caCrl?: string;
}

/**
 * A cluster with a DestinationRule SIMPLE / MUTUAL as istiod builds it (cluster_tls.go,
 * constructUpstreamTLS): CA as the SDS secret `file-root:<caCertificates or "system">` (none with
 * insecureSkipVerify), client certificate `file-cert:<cert>~<key>` (MUTUAL) or the credentialName,
 * SANs as exact matchers, and auto_sni / auto_san_validation in the cluster's HttpProtocolOptions
 * when the rule names no sni (and no SANs).
 */
export function withClientTls(cluster: Json, tls: ClientTls): Json {
  const common: Json = { tls_params: { tls_minimum_protocol_version: 'TLSv1_2', tls_maximum_protocol_version: 'TLSv1_3' } };
  if (tls.credentialName) {
    // security/model/authentication.go ApplyCustomSDSToClientCommonTLSContext: istiod's own SDS over ADS
    const name = tls.credentialName.includes('://') ? tls.credentialName : `kubernetes://${tls.credentialName}`;
    if (tls.mode === 'MUTUAL') common['tls_certificate_sds_secret_configs'] = [adsSecret(name)];
    if (!tls.insecureSkipVerify) {
      common['combined_validation_context'] = { default_validation_context: { match_subject_alt_names: (tls.subjectAltNames ?? []).map((exact) => ({ exact })) }, validation_context_sds_secret_config: adsSecret(`${name}-cacert`) };
    }
  } else {
    if (tls.mode === 'MUTUAL') common['tls_certificate_sds_secret_configs'] = [sdsSecret(`file-cert:${tls.clientCertificate}~${tls.privateKey}`)];
    if (tls.insecureSkipVerify) common['validation_context'] = {};
    else {
      common['combined_validation_context'] = {
        default_validation_context: { match_subject_alt_names: (tls.subjectAltNames ?? []).map((exact) => ({ exact })), ...(tls.caCrl ? { crl: { filename: tls.caCrl } } : {}) },
        validation_context_sds_secret_config: sdsSecret(`file-root:${tls.caCertificates ?? 'system'}`),
      };
    }
  }
  const out: Json = {
    ...cluster,
    transport_socket: { name: 'envoy.transport_sockets.tls', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext', common_tls_context: common, ...(tls.sni ? { sni: tls.sni } : {}) } },
  };
  const autoSni = !tls.sni;
  const autoSan = autoSni && !tls.subjectAltNames?.length && !tls.insecureSkipVerify;
  if (autoSni || autoSan) {
    const key = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
    const options = (cluster['typed_extension_protocol_options'] as Record<string, Json> | undefined) ?? {};
    const http: Json = options[key] ?? { '@type': `type.googleapis.com/${key}`, explicit_http_config: { http_protocol_options: {} } };
    out['typed_extension_protocol_options'] = { ...options, [key]: { ...http, upstream_http_protocol_options: { auto_sni: autoSni, ...(autoSan ? { auto_san_validation: true } : {}) } } };
  }
  return out;
}

/** The cluster fields istiod sets for TLS: DestinationRule ISTIO_MUTUAL, or auto-mTLS's per-endpoint match. */
export function withIstioMutual(cluster: Json, spiffeIds: string[], mode: 'ISTIO_MUTUAL' | 'auto'): Json {
  const [, port, subset, host] = String(cluster['name']).split('|');
  const socket = istioMutualTransportSocket(`outbound_.${port}_.${subset}_.${host}`, spiffeIds);
  if (mode === 'ISTIO_MUTUAL') return { ...cluster, transport_socket: socket };
  return {
    ...cluster,
    transport_socket_matches: [
      { name: 'tlsMode-istio', match: { tlsMode: 'istio' }, transport_socket: socket },
      { name: 'tlsMode-disabled', match: {}, transport_socket: { name: 'envoy.transport_sockets.raw_buffer', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer' } } },
    ],
  };
}

/** An outbound EDS cluster as istiod builds it for a service (port) or a DestinationRule subset. */
export function edsCluster(name: string, options: ClusterOptions = {}): Json {
  const pool = options.connectionPool ?? {};
  const cluster: Json = {
    name,
    type: 'EDS',
    eds_cluster_config: { eds_config: ADS, service_name: name },
    connect_timeout: options.connectTimeout ?? '10s',
    circuit_breakers: {
      thresholds: [
        {
          max_connections: pool.maxConnections ?? UNLIMITED,
          max_pending_requests: pool.maxPendingRequests ?? UNLIMITED,
          max_requests: pool.maxRequests ?? UNLIMITED,
          max_retries: UNLIMITED,
          track_remaining: true,
        },
      ],
    },
    common_lb_config: { locality_weighted_lb_config: {} },
  };
  const od = options.outlierDetection;
  if (od) {
    cluster['outlier_detection'] = {
      consecutive_5xx: od.consecutive5xx,
      interval: od.interval,
      base_ejection_time: od.baseEjectionTime,
      max_ejection_percent: 100,
      enforcing_consecutive_5xx: 100,
      enforcing_success_rate: 0,
    };
  }
  if (options.ringHash) {
    cluster['lb_policy'] = 'RING_HASH';
    cluster['ring_hash_lb_config'] = { minimum_ring_size: '1024' };
  } else {
    cluster['lb_policy'] = 'LEAST_REQUEST';
  }
  return cluster;
}

/** A ServiceEntry host with `resolution: DNS`: Envoy resolves the host name itself (STRICT_DNS). */
export function strictDnsCluster(name: string, host: string, port: number): Json {
  return {
    name,
    type: 'STRICT_DNS',
    connect_timeout: '10s',
    lb_policy: 'LEAST_REQUEST',
    load_assignment: loadAssignment(name, [{ ip: host, port }]),
    dns_refresh_rate: '60s',
    respect_dns_ttl: true,
    dns_lookup_family: 'V4_ONLY',
    common_lb_config: { locality_weighted_lb_config: {} },
  };
}

export function loadAssignment(clusterName: string, endpoints: Endpoint[]): Json {
  return {
    cluster_name: clusterName,
    endpoints: [
      {
        locality: {},
        lb_endpoints: endpoints.map((e) => ({
          endpoint: { address: { socket_address: { address: e.ip, port_value: e.port } } },
          health_status: 'HEALTHY',
          load_balancing_weight: e.weight ?? 1,
          ...(e.tlsModeIstio || e.workload
            ? { metadata: { filter_metadata: { ...(e.tlsModeIstio ? { 'envoy.transport_socket_match': { tlsMode: 'istio' } } : {}), ...(e.workload ? { istio: { workload: e.workload } } : {}) } } }
            : {}),
        })),
        load_balancing_weight: endpoints.reduce((n, e) => n + (e.weight ?? 1), 0),
      },
    ],
  };
}

function originalDstCluster(name: string, extra: Json = {}): Json {
  return {
    name,
    type: 'ORIGINAL_DST',
    connect_timeout: '10s',
    lb_policy: 'CLUSTER_PROVIDED',
    circuit_breakers: { thresholds: [{ max_connections: UNLIMITED, max_pending_requests: UNLIMITED, max_requests: UNLIMITED, max_retries: UNLIMITED }] },
    ...extra,
  };
}

export function passthroughCluster(): Json {
  return originalDstCluster('PassthroughCluster', { protocol_selection: 'USE_DOWNSTREAM_PROTOCOL' });
}

export function blackHoleCluster(): Json {
  return { name: 'BlackHoleCluster', type: 'STATIC', connect_timeout: '10s' };
}

const BIND_127_0_0_6 = { upstream_bind_config: { source_address: { address: '127.0.0.6', port_value: 0 } } };

export function inboundPassthroughCluster(): Json {
  return originalDstCluster('InboundPassthroughClusterIpv4', { ...BIND_127_0_0_6, protocol_selection: 'USE_DOWNSTREAM_PROTOCOL' });
}

/** The IPv6 pass-through of a dual-stack pod: from `::6` (Istio's InboundPassthroughBindIpv6). */
export function inboundPassthroughClusterIpv6(): Json {
  return originalDstCluster('InboundPassthroughClusterIpv6', { upstream_bind_config: { source_address: { address: '::6', port_value: 0 } }, protocol_selection: 'USE_DOWNSTREAM_PROTOCOL' });
}

/**
 * Istio ≥ 1.23's one inbound pass-through (cluster_builder.go buildInboundPassthroughCluster): from
 * `::6` in an IPv6-only pod (127.0.0.6 with `::6` as extra source address in a dual-stack one).
 */
export function inboundPassthroughClusterIpv6Only(): Json {
  return originalDstCluster('InboundPassthroughCluster', { upstream_bind_config: { source_address: { address: '::6', port_value: 0 } }, protocol_selection: 'USE_DOWNSTREAM_PROTOCOL' });
}

/** The cluster of an app port (Istio ≥ 1.18: original destination, from 127.0.0.6, or `::6` in an IPv6-only pod). */
export function inboundCluster(port: number, source: '127.0.0.6' | '::6' = '127.0.0.6'): Json {
  return originalDstCluster(`inbound|${port}||`, { upstream_bind_config: { source_address: { address: source, port_value: 0 } } });
}

export function hcm(statPrefix: string, routing: Json): Json {
  return {
    name: 'envoy.filters.network.http_connection_manager',
    typed_config: {
      '@type': HCM,
      stat_prefix: statPrefix,
      ...routing,
      http_filters: [
        { name: 'envoy.filters.http.fault', typed_config: { '@type': FAULT } },
        { name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } },
      ],
      use_remote_address: false,
    },
  };
}

/** Where a TCP proxy sends a connection: one cluster, or a weighted split (a VirtualService `tcp` route with weights). */
export type TcpTarget = string | Array<{ name: string; weight: number }>;

export type OutboundTrafficPolicy = 'ALLOW_ANY' | 'REGISTRY_ONLY';

/** The cluster of connections no chain claims: the original destination, or refused (meshConfig.outboundTrafficPolicy). */
function catchAllCluster(mode: OutboundTrafficPolicy): string {
  return mode === 'ALLOW_ANY' ? 'PassthroughCluster' : 'BlackHoleCluster';
}

/** Istio's TCP metrics filter, in front of every TCP proxy istiod writes (safe to skip: telemetry). */
const ISTIO_STATS = { name: 'istio.stats', typed_config: { '@type': 'type.googleapis.com/stats.PluginConfig' } };

export function tcpProxyFilter(target: TcpTarget, statPrefix = typeof target === 'string' ? target : target[0]!.name): Json {
  const specifier = typeof target === 'string' ? { cluster: target } : { weighted_clusters: { clusters: target.map((c) => ({ name: c.name, weight: c.weight })) } };
  return { name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': TCP_PROXY, stat_prefix: statPrefix, ...specifier } };
}

function tcpProxy(cluster: string): Json {
  return tcpProxyFilter(cluster);
}

/** A network RBAC filter as istiod writes it for an AuthorizationPolicy on a TCP port (the agent does not enforce it). */
export function rbacNetworkFilter(action: 'ALLOW' | 'DENY', policies: Record<string, { permissions: Json[]; principals: Json[] }>): Json {
  return { name: 'envoy.filters.network.rbac', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC', rules: { action, policies }, stat_prefix: 'tcp.', shadow_rules_stat_prefix: 'istio_dry_run_' } };
}

/**
 * `<vip>_<port>`: a TCP service port (one listener per service address), every connection to the
 * cluster or the weighted split of a VirtualService `tcp` route.
 */
export function outboundTcpListener(vip: string, port: number, target: TcpTarget, additionalVips: string[] = []): Json {
  const statPrefix = typeof target === 'string' ? target : `${vip}_${port}`;
  return {
    name: `${vip}_${port}`,
    address: { socket_address: { address: vip, port_value: port } },
    // a dual-stack service: its other family's VIP (istiod's additional_addresses)
    ...(additionalVips.length ? { additional_addresses: additionalVips.map((a) => ({ address: { socket_address: { address: a, port_value: port } } })) } : {}),
    filter_chains: [{ filters: [ISTIO_STATS, tcpProxyFilter(target, statPrefix)] }],
    traffic_direction: 'OUTBOUND',
    bind_to_port: false,
  };
}

/**
 * `<vip>_<port>` for a service port of no declared protocol (sniffed): istiod binds it to the
 * service address (with a dual-stack service's other address in `additional_addresses`), an HTTP
 * chain routed by RDS `<host>:<port>` and a TCP chain to the cluster for the rest.
 */
export function outboundSniffedListener(vip: string, port: number, host: string, cluster: string, additionalVips: string[] = []): Json {
  const tcp = outboundTcpListener(vip, port, cluster, additionalVips);
  const http = {
    filter_chain_match: { transport_protocol: 'raw_buffer', application_protocols: ['http/1.1', 'h2c'] },
    filters: [hcm(`outbound_${vip}_${port}`, { rds: { config_source: ADS, route_config_name: `${host}:${port}` } })],
  };
  return { ...tcp, filter_chains: [...(tcp.filter_chains as Json[]), http] };
}

/**
 * `0.0.0.0_<port>` for TLS ServiceEntries without addresses (hosts only): one chain per host set,
 * matched by SNI (`server_names`), to that host's `outbound|port||host` cluster; other connections
 * take the default chain (the mesh's outbound traffic policy).
 */
export function outboundTlsListener(port: number, hosts: Array<{ serverNames: string[]; cluster: string }>, mode: OutboundTrafficPolicy = 'ALLOW_ANY'): Json {
  return {
    name: `0.0.0.0_${port}`,
    address: { socket_address: { address: '0.0.0.0', port_value: port } },
    filter_chains: hosts.map(({ serverNames, cluster }) => ({ filter_chain_match: { server_names: serverNames }, filters: [ISTIO_STATS, tcpProxyFilter(cluster)] })),
    default_filter_chain: { filters: [ISTIO_STATS, tcpProxyFilter(catchAllCluster(mode))], name: 'PassthroughFilterChain' },
    listener_filters: [{ name: 'envoy.filters.listener.tls_inspector', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector' } }],
    traffic_direction: 'OUTBOUND',
    bind_to_port: false,
  };
}

/**
 * `0.0.0.0_<port>`: HTTP to any address on that port, routed by RDS `<port>`; other bytes pass
 * through. `wildcard` `::`: an IPv6-only pod's (`::_<port>`, istiod's wildcard for its IP mode);
 * `dual`: a dual-stack pod's, `0.0.0.0_<port>` with `[::]:<port>` in `additional_addresses`.
 */
export function outboundHttpListener(port: number, mode: OutboundTrafficPolicy = 'ALLOW_ANY', wildcard: Wildcard | 'dual' = '0.0.0.0'): Json {
  const primary = wildcard === 'dual' ? '0.0.0.0' : wildcard;
  return {
    name: `${primary}_${port}`,
    address: { socket_address: { address: primary, port_value: port } },
    ...(wildcard === 'dual' ? { additional_addresses: dualStackWildcard(port) } : {}),
    filter_chains: [
      {
        filter_chain_match: { transport_protocol: 'raw_buffer', application_protocols: ['http/1.1', 'h2c'] },
        filters: [hcm(`outbound_${primary}_${port}`, { rds: { config_source: ADS, route_config_name: String(port) } })],
      },
    ],
    default_filter_chain: { filters: [tcpProxy(catchAllCluster(mode))], name: 'PassthroughFilterChain' },
    traffic_direction: 'OUTBOUND',
    bind_to_port: false,
  };
}

/**
 * istiod's wildcard address for a proxy's IP mode (listener_address.go wildCards): `0.0.0.0` for
 * IPv4 and dual-stack pods (the latter with `::` as additional address), `::` for IPv6-only ones.
 */
export type Wildcard = '0.0.0.0' | '::';

/**
 * The additional address istiod gives a dual-stack proxy's wildcard listeners: the per-port ones
 * always (pilot/pkg/networking/core/listener.go buildListenerFromEntry: `AdditionalAddresses` from
 * the binding's `Extra()`, the wildcards of model.Dual), the capture listeners with ISTIO_DUAL_STACK
 * (listener_builder.go buildVirtualOutboundListener, listener_inbound.go buildInboundListener);
 * istio/istio 86c9f01fd735fb01d8192f5bcaf0d424afb7f14c.
 */
export function dualStackWildcard(port: number): Json[] {
  return [{ address: { socket_address: { address: '::', port_value: port } } }];
}

/** The outbound capture listener: connections no listener serves pass through (ALLOW_ANY) or are refused (REGISTRY_ONLY). */
export function virtualOutbound(mode: OutboundTrafficPolicy = 'ALLOW_ANY', wildcard: Wildcard = '0.0.0.0'): Json {
  return {
    name: 'virtualOutbound',
    address: { socket_address: { address: wildcard, port_value: 15001 } },
    filter_chains: [
      { filter_chain_match: { destination_port: 15001 }, filters: [tcpProxy('BlackHoleCluster')], name: 'virtualOutbound-blackhole' },
      { filters: [tcpProxy(catchAllCluster(mode))], name: 'virtualOutbound-catchall-tcp' },
    ],
    use_original_dst: true,
    traffic_direction: 'OUTBOUND',
  };
}

function inlineRouteConfig(name: string, vhostName: string, cluster: string, operation: string): Json {
  return {
    name,
    virtual_hosts: [
      {
        name: vhostName,
        domains: ['*'],
        routes: [{ match: { prefix: '/' }, route: { cluster, timeout: '0s', max_stream_duration: { max_stream_duration: '0s', grpc_timeout_header_max: '0s' } }, decorator: { operation }, name: 'default' }],
      },
    ],
    validate_clusters: false,
  };
}

/**
 * A port of the pod's services: HTTP (routes) unless `tcp`; `filters` go before the terminal filter
 * (e.g. a network RBAC); `strict`: PeerAuthentication STRICT, mTLS only (no plaintext chain).
 */
export interface InboundPort {
  port: number;
  service: string;
  protocol?: 'http' | 'tcp';
  filters?: Json[];
  /** same as `mtls: 'STRICT'` */
  strict?: boolean;
  /** PeerAuthentication: STRICT (the mTLS chain only), PERMISSIVE (mTLS and plaintext chains); default plaintext only */
  mtls?: 'STRICT' | 'PERMISSIVE';
}

const SDS = { api_config_source: { api_type: 'GRPC', grpc_services: [{ envoy_grpc: { cluster_name: 'sds-grpc' } }], set_node_on_first_message_only: true, transport_api_version: 'V3' }, initial_fetch_timeout: '0s', resource_api_version: 'V3' };

/** Istio's inbound mTLS: the workload certificate and the mesh root from SDS, a client certificate required. */
export function istioMtlsTransportSocket(): Json {
  return {
    name: 'envoy.transport_sockets.tls',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
      common_tls_context: {
        tls_params: { tls_minimum_protocol_version: 'TLSv1_2', tls_maximum_protocol_version: 'TLSv1_3' },
        alpn_protocols: ['istio-peer-exchange', 'h2', 'http/1.1'],
        tls_certificate_sds_secret_configs: [{ name: 'default', sds_config: SDS }],
        combined_validation_context: {
          default_validation_context: { match_subject_alt_names: [{ prefix: 'spiffe://cluster.local/' }] },
          validation_context_sds_secret_config: { name: 'ROOTCA', sds_config: SDS },
        },
      },
      require_client_certificate: true,
    },
  };
}

/**
 * The inbound capture listener: one chain per app port (HTTP: an inline route configuration; TCP: a
 * TCP proxy), both to the ORIGINAL_DST `inbound|port||` cluster, then the inbound pass-through;
 * `ipv6`: a dual-stack pod's, whose IPv6 connections pass through from `::6` (Istio 1.18 – 1.22:
 * one pass-through cluster per family, chosen by a `::/0` or `0.0.0.0/0` prefix match).
 * `ipv6Only`: an IPv6-only pod's as Istio ≥ 1.23 writes it — bound to `::`, chains named after
 * that wildcard, and one pass-through (InboundPassthroughCluster) matched by no address at all.
 */
export function virtualInbound(appPorts: InboundPort[], options: { ipv6?: boolean; ipv6Only?: boolean } = {}): Json {
  const wildcard: Wildcard = options.ipv6Only ? '::' : '0.0.0.0';
  const terminal = (port: number, service: string, protocol: 'http' | 'tcp'): Json[] =>
    protocol === 'tcp'
      ? [ISTIO_STATS, tcpProxyFilter(`inbound|${port}||`)]
      : [hcm(`inbound_${wildcard}_${port}`, { route_config: inlineRouteConfig(`inbound|${port}||`, `inbound|http|${port}`, `inbound|${port}||`, `${service}:${port}/*`) })];
  const portChains = appPorts.flatMap(({ port, service, protocol = 'http', filters = [], strict = false, mtls = strict ? 'STRICT' : undefined }) => {
    // istiod's ALPN match of mTLS chains: Envoy clients offer istio-http/* for HTTP, istio(-peer-exchange) for TCP
    const alpn = protocol === 'http' ? ['istio-http/1.0', 'istio-http/1.1', 'istio-h2'] : ['istio-peer-exchange', 'istio'];
    const tls = { filter_chain_match: { destination_port: port, transport_protocol: 'tls', application_protocols: alpn }, filters: [...filters, ...terminal(port, service, protocol)], transport_socket: istioMtlsTransportSocket(), name: `${wildcard}_${port}` };
    const plain = { filter_chain_match: { destination_port: port, transport_protocol: 'raw_buffer' }, filters: [...filters, ...terminal(port, service, protocol)], name: `${wildcard}_${port}` };
    return mtls === 'STRICT' ? [tls] : mtls === 'PERMISSIVE' ? [tls, plain] : [plain];
  });
  const passthrough = (family: 'Ipv4' | 'Ipv6' | '', prefix: string | undefined, suffix: string): Json[] => {
    const cluster = `InboundPassthroughCluster${family}`;
    const any = prefix === undefined ? {} : { prefix_ranges: [{ address_prefix: prefix, prefix_len: 0 }] };
    return [
      {
        filter_chain_match: { ...any, transport_protocol: 'raw_buffer', application_protocols: ['http/1.1', 'h2c'] },
        filters: [hcm(cluster, { route_config: inlineRouteConfig(cluster, 'inbound|http|0', cluster, ':0/*') })],
        name: `virtualInbound-catchall-http${suffix}`,
      },
      { filter_chain_match: { ...any, transport_protocol: 'raw_buffer' }, filters: [tcpProxy(cluster)], name: `virtualInbound${suffix}` },
    ];
  };
  return {
    name: 'virtualInbound',
    address: { socket_address: { address: wildcard, port_value: 15006 } },
    filter_chains: [
      { filter_chain_match: { destination_port: 15006 }, filters: [tcpProxy('BlackHoleCluster')], name: 'virtualInbound-blackhole' },
      ...(options.ipv6Only ? passthrough('', undefined, '') : passthrough('Ipv4', '0.0.0.0', '')),
      ...(options.ipv6 ? passthrough('Ipv6', '::', '-ipv6') : []),
      ...portChains,
    ],
    listener_filters_timeout: '0s',
    traffic_direction: 'INBOUND',
    continue_on_listener_filters_timeout: true,
  };
}

/** A service's virtual host: the names a client in `clientNamespace` may use for it, and its VIP. */
export function serviceVirtualHost(host: string, port: number, vip: string, routes: Json[]): Json {
  const [name, namespace] = host.split('.');
  return {
    name: `${host}:${port}`,
    domains: [host, `${host}.`, `${name}.${namespace}`, `${name}.${namespace}.svc`, name, vip],
    routes,
    include_request_attempt_count: true,
  };
}

export function allowAnyVirtualHost(): Json {
  return {
    name: 'allow_any',
    domains: ['*'],
    routes: [{ name: 'allow_any', match: { prefix: '/' }, route: { cluster: 'PassthroughCluster', timeout: '0s', max_grpc_timeout: '0s' } }],
    include_request_attempt_count: true,
  };
}

export function routeConfiguration(port: number, virtualHosts: Json[]): Json {
  return { name: String(port), virtual_hosts: virtualHosts, validate_clusters: false, max_direct_response_body_size_bytes: 1048576, ignore_port_in_host_matching: true };
}

/** Istio's retry policy when a VirtualService says nothing: 2 attempts, connection-level failures and 503. */
export function istioDefaultRetries(attempts = 2): Json {
  return {
    retry_on: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes',
    num_retries: attempts,
    retry_host_predicate: [{ name: 'envoy.retry_host_predicates.previous_hosts', typed_config: { '@type': PREVIOUS_HOSTS } }],
    host_selection_retry_max_attempts: '5',
    retriable_status_codes: [503],
  };
}

/**
 * One VirtualService HTTP route: `match`, then `action` (the RouteAction; Istio's default retries
 * and timeout 0s unless given), or `extra` holding redirect/direct_response instead of a route.
 */
export function httpRoute(name: string, match: Json, action: Json | undefined, extra: Json = {}): Json {
  const out: Json = { name, match: { case_sensitive: true, ...match } };
  // an `undefined` in `action` removes a default (e.g. `retry_policy: undefined`: `retries: {attempts: 0}`)
  if (action) out['route'] = Object.fromEntries(Object.entries({ timeout: '0s', retry_policy: istioDefaultRetries(), max_grpc_timeout: '0s', ...action }).filter(([, v]) => v !== undefined));
  return { ...out, ...extra, decorator: { operation: `${name}/*` } };
}

/** A VirtualService percentage as istiod writes it (a FractionalPercent per million). */
export function percent(value: number): Json {
  return { numerator: Math.round(value * 10000), denominator: 'MILLION' };
}

/** `typed_per_filter_config` for a VirtualService `fault`. */
export function faultFilterConfig(fault: { delay?: { fixed: string; percent?: number }; abort?: { status: number; percent?: number } | { grpcStatus: number; percent?: number } }): Json {
  const config: Json = { '@type': FAULT };
  if (fault.delay) config['delay'] = { fixed_delay: fault.delay.fixed, percentage: percent(fault.delay.percent ?? 100) };
  if (fault.abort) {
    const code = 'status' in fault.abort ? { http_status: fault.abort.status } : { grpc_status: fault.abort.grpcStatus };
    config['abort'] = { ...code, percentage: percent(fault.abort.percent ?? 100) };
  }
  return { 'envoy.filters.http.fault': config };
}

/**
 * The smallest mesh a sidecar test needs: one service on port 80 (an EDS cluster with `endpoints`,
 * LEAST_REQUEST as istiod's default, its virtual host and Istio's default route), allow_any, the
 * pass-through and black-hole clusters and the outbound and inbound listeners.
 */
export function oneServiceMesh(service: { host: string; vip: string }, endpoints: Endpoint[]): CanonicalResources {
  const cluster = outboundCluster(80, service.host);
  const m = new MeshResources();
  m.cluster(edsCluster(cluster), endpoints);
  m.route(routeConfiguration(80, [serviceVirtualHost(service.host, 80, service.vip, [httpRoute('default', { prefix: '/' }, { cluster })]), allowAnyVirtualHost()]));
  m.cluster(passthroughCluster()).cluster(blackHoleCluster()).cluster(inboundPassthroughCluster());
  m.listener(outboundHttpListener(80)).listener(virtualOutbound()).listener(virtualInbound([]));
  return m.resources;
}

/** Collects resources into the form the fake istiod serves. */
export class MeshResources {
  readonly resources: CanonicalResources = emptyResources();

  cluster(cluster: Json, endpoints?: Endpoint[]): this {
    this.resources.cluster.push(cluster);
    if (endpoints) this.resources.endpoint.push(loadAssignment(String(cluster['name']), endpoints));
    return this;
  }

  listener(listener: Json): this {
    this.resources.listener.push(listener);
    return this;
  }

  route(routeConfig: Json): this {
    this.resources.route.push(routeConfig);
    return this;
  }
}

const RBAC = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';

/** An HTTP RBAC filter as istiod writes it for the AuthorizationPolicies of one action. */
export function rbacHttpFilter(action: 'ALLOW' | 'DENY' | 'LOG', policies: Record<string, { permissions: Json[]; principals: Json[] }>): Json {
  const name = 'envoy.filters.http.rbac';
  return { name, typed_config: { '@type': RBAC, rules: { action, policies }, shadow_rules_stat_prefix: 'istio_dry_run_' } };
}

/** The listener with `filters` put before the router of the HTTP chains `which` selects. */
export function withHttpFilters(listener: Json, filters: Json[], which: (chain: Json) => boolean): Json {
  const copy = structuredClone(listener);
  for (const chain of (copy['filter_chains'] ?? []) as Json[]) {
    if (!which(chain)) continue;
    for (const f of chain['filters'] as Json[]) {
      const typed = f['typed_config'] as Json;
      const http = typed['http_filters'] as Json[] | undefined;
      if (http) http.splice(http.length - 1, 0, ...structuredClone(filters));
    }
  }
  return copy;
}

const JWT_AUTHN = 'type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication';

/** One RequestAuthentication `jwtRules` entry (the fields istiod reads). */
export interface JwtRule {
  issuer: string;
  /** inline JWKS (istiod inlines a fetched jwksUri too, by default) */
  jwks?: string;
  /** with PILOT_JWT_ENABLE_REMOTE_JWKS: Envoy (here: the agent) fetches it */
  jwksUri?: string;
  audiences?: string[];
  fromHeaders?: Array<{ name: string; prefix?: string }>;
  fromParams?: string[];
  forwardOriginalToken?: boolean;
  outputPayloadToHeader?: string;
  outputClaimToHeaders?: Array<{ header: string; claim: string }>;
}

/**
 * The jwt_authn filter istiod writes for a workload's RequestAuthentications
 * (pilot/pkg/security/authn/policy_applier.go): rules sorted by issuer, providers `origins-<i>`,
 * the payload in metadata `payload` with `scope`/`permission` split, one rule for every path
 * requiring {provider OR allow_missing} — for several providers, any provider OR the AND of those.
 */
export function jwtAuthnFilter(rules: JwtRule[]): Json {
  const sorted = [...rules].sort((a, b) => (a.issuer < b.issuer ? -1 : a.issuer > b.issuer ? 1 : 0));
  const providers: Record<string, Json> = {};
  const inner: Json[] = [];
  const outer: Json[] = [];
  sorted.forEach((r, i) => {
    const name = `origins-${i}`;
    providers[name] = {
      issuer: r.issuer,
      ...(r.audiences ? { audiences: r.audiences } : {}),
      ...(r.forwardOriginalToken ? { forward: true } : {}),
      ...(r.outputPayloadToHeader ? { forward_payload_header: r.outputPayloadToHeader } : {}),
      payload_in_metadata: 'payload',
      normalize_payload_in_metadata: { space_delimited_claims: ['permission', 'scope'] },
      ...(r.outputClaimToHeaders ? { claim_to_headers: r.outputClaimToHeaders.map((c) => ({ header_name: c.header, claim_name: c.claim })) } : {}),
      ...(r.fromHeaders ? { from_headers: r.fromHeaders.map((h) => ({ name: h.name, ...(h.prefix ? { value_prefix: h.prefix } : {}) })) } : {}),
      ...(r.fromParams ? { from_params: r.fromParams } : {}),
      ...(r.jwksUri
        ? { remote_jwks: { http_uri: { uri: r.jwksUri, cluster: 'outbound|443||jwks.example.com', timeout: '5s' }, cache_duration: '300s' } }
        : { local_jwks: { inline_string: r.jwks ?? '' } }),
    };
    inner.push({ requires_any: { requirements: [{ provider_name: name }, { allow_missing: {} }] } });
    outer.push({ provider_name: name });
  });
  const requires = inner.length === 1 ? inner[0]! : { requires_any: { requirements: [...outer, { requires_all: { requirements: inner } }] } };
  return {
    name: 'envoy.filters.http.jwt_authn',
    typed_config: { '@type': JWT_AUTHN, providers, rules: [{ match: { prefix: '/' }, requires }], bypass_cors_preflight: true },
  };
}

/** A metadata principal on jwt_authn's payload (authz/model/util.go). */
function jwtClaimPrincipal(claims: string[], value: Json): Json {
  return { metadata: { filter: 'envoy.filters.http.jwt_authn', path: ['payload', ...claims].map((key) => ({ key })), value } };
}

/** Istio's string matcher for a policy value: `*` any, `*x` suffix, `x*` prefix, else exact. */
function policyString(v: string): Json {
  if (v === '*') return { safe_regex: { regex: '.+' } };
  if (v.startsWith('*')) return { suffix: v.slice(1) };
  if (v.endsWith('*')) return { prefix: v.slice(0, -1) };
  return { exact: v };
}

/** `source.requestPrincipals` values as istiod writes them: iss AND sub, split at the last `/`, `*` as any/prefix/suffix. */
export function requestPrincipals(values: string[]): Json {
  const any = { safe_regex: { regex: '.+' } };
  const ids = values.map((value) => {
    const at = value.lastIndexOf('/');
    const found = at >= 0;
    const [iss, sub] = found ? [value.slice(0, at), value.slice(at + 1)] : [value, ''];
    let matchIss: Json;
    let matchSub: Json;
    if (value === '*') [matchIss, matchSub] = [any, any];
    else if (value.startsWith('*')) [matchIss, matchSub] = found ? [iss === '*' ? any : { suffix: iss.slice(1) }, { exact: sub }] : [any, { suffix: value.slice(1) }];
    else if (value.endsWith('*')) [matchIss, matchSub] = found ? [{ exact: iss }, sub === '*' ? any : { prefix: sub.slice(0, -1) }] : [{ prefix: value.slice(0, -1) }, any];
    else [matchIss, matchSub] = [{ exact: iss }, { exact: sub }];
    return { and_ids: { ids: [jwtClaimPrincipal(['iss'], { string_match: matchIss }), jwtClaimPrincipal(['sub'], { string_match: matchSub })] } };
  });
  return ids.length === 1 ? ids[0]! : { or_ids: { ids } };
}

/** `when: request.auth.claims[...]` as istiod writes it: the claim as a list containing, or equal to, a value. */
export function requestClaim(claims: string[], values: string[]): Json {
  const one = values.length === 1 ? { string_match: policyString(values[0]!) } : { or_match: { value_matchers: values.map((v) => ({ string_match: policyString(v) })) } };
  return jwtClaimPrincipal(claims, { or_match: { value_matchers: [{ list_match: { one_of: one } }, one] } });
}

/**
 * A dual-stack pod's own side of istiod's configuration: the pass-through and black-hole clusters,
 * both inbound pass-throughs, the inbound clusters of an HTTP port (service `web`) and a TCP port
 * (service `pg`) its services declare in namespace `ns`, virtualOutbound (ALLOW_ANY) and
 * virtualInbound with its IPv6 chains.
 */
export function addDualStackPodSide(m: MeshResources, ns: string, ports: { web: number; pg: number }): MeshResources {
  m.cluster(passthroughCluster()).cluster(blackHoleCluster()).cluster(inboundPassthroughCluster()).cluster(inboundPassthroughClusterIpv6());
  m.cluster(inboundCluster(ports.web)).cluster(inboundCluster(ports.pg));
  m.listener(virtualOutbound('ALLOW_ANY'));
  m.listener(
    virtualInbound(
      [
        { port: ports.web, service: fqdn('web', ns) },
        { port: ports.pg, service: fqdn('pg', ns), protocol: 'tcp' },
      ],
      { ipv6: true },
    ),
  );
  return m;
}

/**
 * An IPv6-only pod's own side of istiod's configuration, as Istio ≥ 1.23 writes it for a proxy
 * whose addresses are all IPv6 (listener_address.go, model.IPv6 mode): the pass-through and
 * black-hole clusters, the one inbound pass-through and the inbound clusters of an HTTP port
 * (service `web`) and a TCP port (service `pg`), all from `::6`; virtualOutbound (ALLOW_ANY) and
 * virtualInbound bound to `::`.
 */
export function addIpv6OnlyPodSide(m: MeshResources, ns: string, ports: { web: number; pg: number }): MeshResources {
  m.cluster(passthroughCluster()).cluster(blackHoleCluster()).cluster(inboundPassthroughClusterIpv6Only());
  m.cluster(inboundCluster(ports.web, '::6')).cluster(inboundCluster(ports.pg, '::6'));
  m.listener(virtualOutbound('ALLOW_ANY', '::'));
  m.listener(
    virtualInbound(
      [
        { port: ports.web, service: fqdn('web', ns) },
        { port: ports.pg, service: fqdn('pg', ns), protocol: 'tcp' },
      ],
      { ipv6Only: true },
    ),
  );
  return m;
}

/**
 * The Secrets istiod's SDS sends for credentialName (pilot/pkg/xds/sds.go): `kubernetes://<name>`
 * as a tls_certificate with the inline chain and key (toEnvoyTLSSecret), `…-cacert` as a
 * validation_context with the inline trusted_ca and, when the Kubernetes secret has `ca.crl`, the
 * inline crl (toEnvoyCaSecret). Canonical JSON: bytes in base64.
 */
export function sdsCertificateSecret(name: string, certChainPem: string, keyPem: string): Json {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return { name, tls_certificate: { certificate_chain: { inline_bytes: b64(certChainPem) }, private_key: { inline_bytes: b64(keyPem) } } };
}

export function sdsCaSecret(name: string, caPem: string, crlPem?: string): Json {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return { name, validation_context: { trusted_ca: { inline_bytes: b64(caPem) }, ...(crlPem ? { crl: { inline_bytes: b64(crlPem) } } : {}) } };
}
