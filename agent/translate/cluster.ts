import type { Cluster } from '../xds/envoy-types.js';
import { unpackAny, type PackedAny } from '../xds/codec.js';
import type { ApisixNode, ApisixUpstream, TranslationNote } from './apisix-types.js';
import { upstreamId } from './ids.js';
import { durationSeconds, wrapped } from './values.js';
import { OUTLIER_LABEL, outlierLabel, outlierPolicy } from './outlier-detection.js';
import { translateClusterLoadAssignment } from './endpoints.js';
import { upstreamTlsPolicy } from '../mtls/upstream-tls.js';
import type { ClusterTls } from '../mtls/origination.js';
import { firstIstioService, serviceLabels, type IstioService } from './cluster-service.js';

/** Istio's cluster name `direction|port|subset|host` (pilot/pkg/model/service.go BuildSubsetKey). */
export interface IstioClusterName {
  direction: string;
  port: number;
  subset: string;
  host: string;
}

export function parseClusterName(name: string): IstioClusterName | undefined {
  const parts = name.split('|');
  if (parts.length !== 4) return undefined;
  const port = Number(parts[1]);
  if (!Number.isInteger(port)) return undefined;
  return { direction: parts[0]!, port, subset: parts[2]!, host: parts[3]! };
}

/** Envoy's circuit breakers for the default priority, when istiod set them below "unlimited". */
export interface ConnectionLimits {
  maxConnections?: number;
  maxPendingRequests?: number;
  maxRequests?: number;
}

export interface ClusterTranslation {
  clusterName: string;
  /** the upstream without its nodes; nodes come from `inlineNodes` or the cluster's CLA */
  upstream?: Omit<ApisixUpstream, 'nodes'>;
  /** nodes of STATIC / STRICT_DNS clusters and of inbound original-destination clusters */
  inlineNodes?: ApisixNode[];
  /** EDS clusters: the name to subscribe to */
  edsServiceName?: string;
  /** RING_HASH / MAGLEV: the routes' hash policy picks the key */
  consistentHash: boolean;
  limits?: ConnectionLimits;
  /**
   * original-destination clusters (Istio's PassthroughCluster, InboundPassthroughCluster*, and the
   * inbound `inbound|<port>||` of the app's ports): no upstream, routes forward to where the client
   * dialled; `grpc`: over HTTP/2 (an inbound gRPC port)
   */
  /** `service`: istiod's first service of an inbound cluster, for Istio's metrics (cluster-service.ts) */
  originalDestination?: { connectTimeout: number; scheme?: 'grpc'; service?: IstioService };
  /** endpoints Envoy reaches over TLS: originated by the relay (agent/mtls/origination.ts) */
  tls?: ClusterTls;
  notes: TranslationNote[];
}

/** APISIX's own defaults for send/read (nginx proxy_*_timeout): Envoy has no per-cluster equivalent. */
const DEFAULT_IO_TIMEOUT = 60;
const UNLIMITED = 4294967295;

export function translateCluster(cluster: Cluster): ClusterTranslation {
  const name = cluster.name ?? '';
  const notes: TranslationNote[] = [];
  const note = (reason: string, detail: string, skipped = false) =>
    notes.push({ kind: 'cluster', name, reason, detail, skipped });
  const result: ClusterTranslation = { clusterName: name, consistentHash: false, notes };
  if (!name) {
    note('unnamed', 'a cluster without a name cannot be referenced', true);
    return result;
  }
  const discovery = cluster.type ?? (cluster.cluster_type ? 'CUSTOM' : 'STATIC');
  let inlineNodes: ApisixNode[] | undefined;
  if (discovery === 'ORIGINAL_DST') {
    // Inbound too, as with Envoy: the app is reached at the address the client dialled, of either
    // family in a dual-stack pod (an app bound to one address alone is reached too), from 127.0.0.6
    // or ::6, which the capture rules let through (the sidecar's hook and the L4 front bind them).
    const inbound = parseClusterName(name)?.direction === 'inbound';
    const service = inbound ? firstIstioService(cluster.metadata) : undefined;
    result.originalDestination = {
      connectTimeout: connectTimeout(cluster),
      ...(inbound && usesHttp2(cluster) ? { scheme: 'grpc' as const } : {}),
      ...(service ? { service } : {}),
    };
    // an inbound cluster's circuit breaker (Sidecar ingress connectionPool) stays on its routes
    const limits = connectionLimits(cluster);
    if (limits) result.limits = limits;
    return result;
  } else if (discovery === 'EDS') {
    result.edsServiceName = cluster.eds_cluster_config?.service_name || name;
  } else if (discovery === 'STATIC' || discovery === 'STRICT_DNS' || discovery === 'LOGICAL_DNS') {
    inlineNodes = cluster.load_assignment ? translateClusterLoadAssignment(cluster.load_assignment).nodes : [];
  } else {
    note('unsupported-discovery-type', `cluster discovery type ${String(discovery)}`, true);
    return result;
  }

  const upstream: Omit<ApisixUpstream, 'nodes'> = { id: upstreamId(name), name: name.slice(0, 256), type: 'roundrobin' };
  // the service an inbound cluster serves, for Istio's metrics (cluster-service.ts)
  const labels = name.startsWith('inbound|') ? serviceLabels(firstIstioService(cluster.metadata)) : undefined;
  if (labels) upstream.labels = labels;
  switch (cluster.lb_policy ?? 'ROUND_ROBIN') {
    case 'ROUND_ROBIN':
    case 'CLUSTER_PROVIDED':
      break;
    case 'LEAST_REQUEST':
      upstream.type = 'least_conn';
      break;
    case 'RING_HASH':
    case 'MAGLEV':
      result.consistentHash = true;
      break;
    case 'RANDOM':
      note('lb-random-as-roundrobin', 'RANDOM is balanced round robin (same expected spread)');
      break;
    default:
      note('unsupported-lb-policy', `lb_policy ${String(cluster.lb_policy)}: round robin used`);
  }
  upstream.timeout = { connect: connectTimeout(cluster), send: DEFAULT_IO_TIMEOUT, read: DEFAULT_IO_TIMEOUT };
  upstream.scheme = 'http';
  upstream.pass_host = 'pass';

  const outlier = outlierPolicy(cluster, note);
  if (outlier) upstream.labels = { [OUTLIER_LABEL]: outlierLabel(outlier) };
  const limits = connectionLimits(cluster);
  if (limits) result.limits = limits;
  if (usesHttp2(cluster)) {
    // nginx's HTTP proxy speaks HTTP/1.1 only; its gRPC proxy speaks HTTP/2 (APISIX's `grpc` scheme)
    upstream.scheme = 'grpc';
    note('http2-upstream', 'istiod asks for HTTP/2 to this service (gRPC or http2 port): proxied with nginx\'s gRPC proxy, so gRPC works; other HTTP/2 requests go out marked as gRPC (content-type application/grpc)');
  }
  const tlsPolicy = upstreamTlsPolicy(cluster);
  if (tlsPolicy) {
    result.tls = { policy: tlsPolicy };
    const socketMatch = inlineNodes && cluster.load_assignment ? translateClusterLoadAssignment(cluster.load_assignment).socketMatch : undefined;
    if (socketMatch) result.tls.inlineSocketMatch = socketMatch;
  }
  result.upstream = upstream;
  if (inlineNodes) result.inlineNodes = inlineNodes;
  return result;
}

function connectTimeout(cluster: Cluster): number {
  const connect = durationSeconds(cluster.connect_timeout) ?? 5; // Envoy's default connect timeout is 5s
  return connect > 0 ? connect : 5;
}

const HTTP_OPTIONS = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';

interface HttpProtocolOptions {
  explicit_http_config?: { http2_protocol_options?: unknown };
}

function usesHttp2(cluster: Cluster): boolean {
  if (cluster.http2_protocol_options) return true;
  const typed = (cluster.typed_extension_protocol_options as Record<string, PackedAny> | undefined)?.[HTTP_OPTIONS];
  return !!unpackAny<HttpProtocolOptions>(typed)?.explicit_http_config?.http2_protocol_options;
}

function connectionLimits(cluster: Cluster): ConnectionLimits | undefined {
  const thresholds = cluster.circuit_breakers?.thresholds ?? [];
  const t = thresholds.find((x) => (x.priority ?? 'DEFAULT') === 'DEFAULT');
  if (!t) return undefined;
  const limited = (v: number | undefined) => (v !== undefined && v < UNLIMITED ? v : undefined);
  const out: ConnectionLimits = {};
  const c = limited(wrapped(t.max_connections));
  const p = limited(wrapped(t.max_pending_requests));
  const r = limited(wrapped(t.max_requests));
  if (c !== undefined) out.maxConnections = c;
  if (p !== undefined) out.maxPendingRequests = p;
  if (r !== undefined) out.maxRequests = r;
  return Object.keys(out).length ? out : undefined;
}
