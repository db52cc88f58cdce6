/** The label and annotation names the injection reads or writes, in one place. */

/** Picks the mode of a pod: `sidecar`, `gateway` or `none`. */
export const MODE_ANNOTATION = 'apisix-mesh.io/mode';
/** What sidecar mode injected (JSON); makes re-injection give the same pod. */
export const STATUS_ANNOTATION = 'apisix-mesh.io/status';
/** APISIX's config.yaml, mounted into the APISIX container through a downwardAPI volume. */
export const APISIX_CONFIG_ANNOTATION = 'apisix-mesh.io/apisix-config';
export const GATEWAY_INBOUND_PORTS_ANNOTATION = 'apisix-mesh.io/gateway-inbound-ports';
export const GATEWAY_EXCLUDE_OUTBOUND_PORTS_ANNOTATION = 'apisix-mesh.io/gateway-exclude-outbound-ports';
export const GATEWAY_EXCLUDE_OUTBOUND_IP_RANGES_ANNOTATION = 'apisix-mesh.io/gateway-exclude-outbound-ip-ranges';

/** Istio's opt-out/opt-in, as label (wins) or annotation. */
export const ISTIO_INJECT = 'sidecar.istio.io/inject';
/**
 * Istio's label for workloads that accept mTLS: Envoy clients with auto-mTLS use mTLS to the
 * endpoints that carry it (`istio`), plaintext to the others. Set as Istio's injector sets it.
 */
export const ISTIO_TLS_MODE_LABEL = 'security.istio.io/tlsMode';
/** Set by Istio's injector on pods it injected. */
export const ISTIO_STATUS_ANNOTATION = 'sidecar.istio.io/status';
/** Istio's per-pod ProxyConfig (YAML or JSON); the sidecar reads its `concurrency` and `holdApplicationUntilProxyStarts` (proxy-config.ts). */
export const PROXY_CONFIG_ANNOTATION = 'proxy.istio.io/config';
export const ISTIO_NATIVE_SIDECAR_ANNOTATION = 'sidecar.istio.io/nativeSidecar';
export const ISTIO_INTERCEPTION_MODE_ANNOTATION = 'sidecar.istio.io/interceptionMode';
/** Istio's opt-out of app probe rewriting (`"false"`; parsed as Go's ParseBool). */
export const REWRITE_APP_PROBES_ANNOTATION = 'sidecar.istio.io/rewriteAppHTTPProbers';
export const DEFAULT_CONTAINER_ANNOTATION = 'kubectl.kubernetes.io/default-container';
export const DEFAULT_LOGS_CONTAINER_ANNOTATION = 'kubectl.kubernetes.io/default-logs-container';

/** Istio's metrics merge: `"false"` keeps the pod's own `prometheus.io/*` annotations as they are. */
export const PROMETHEUS_MERGE_ANNOTATION = 'prometheus.istio.io/merge-metrics';
/** The agent's environment variable holding the app's moved scrape settings (pilot-agent's name). */
export const PROMETHEUS_SCRAPE_ENV = 'ISTIO_PROMETHEUS_ANNOTATIONS';
/** Istio's canonical service labels (Kiali and Istio's dashboards group workloads by them). */
export const CANONICAL_NAME_LABEL = 'service.istio.io/canonical-name';
export const CANONICAL_REVISION_LABEL = 'service.istio.io/canonical-revision';

/** Istio's traffic annotations (same meaning in sidecar mode as for Envoy). */
export const TRAFFIC = {
  includeInboundPorts: 'traffic.sidecar.istio.io/includeInboundPorts',
  excludeInboundPorts: 'traffic.sidecar.istio.io/excludeInboundPorts',
  includeOutboundIPRanges: 'traffic.sidecar.istio.io/includeOutboundIPRanges',
  excludeOutboundIPRanges: 'traffic.sidecar.istio.io/excludeOutboundIPRanges',
  includeOutboundPorts: 'traffic.sidecar.istio.io/includeOutboundPorts',
  excludeOutboundPorts: 'traffic.sidecar.istio.io/excludeOutboundPorts',
  excludeInterfaces: 'traffic.sidecar.istio.io/excludeInterfaces',
} as const;

/** The label of the official APISIX chart's pods: such pods default to gateway mode. */
export const APP_NAME_LABEL = 'app.kubernetes.io/name';
export const APISIX_APP_NAME = 'apisix';
