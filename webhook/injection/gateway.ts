import type { V1Pod } from '@kubernetes/client-node';
import { CaptureConfigError, MAX_LIST_LENGTH, parseCidrList, parsePortList } from '../../iptables-init/capture-config.js';
import type { InjectionConfig } from '../config/injection-config.js';
import {
  GATEWAY_EXCLUDE_OUTBOUND_IP_RANGES_ANNOTATION,
  GATEWAY_EXCLUDE_OUTBOUND_PORTS_ANNOTATION,
  GATEWAY_INBOUND_PORTS_ANNOTATION,
  ISTIO_INJECT,
  TRAFFIC,
} from './annotations.js';
import { declaredTcpPorts, PodRejection } from './capture.js';

/**
 * `existing` ∪ `added` as a comma list: existing items first in their order (text kept as written),
 * then the new ones in theirs. Never drops or rewrites what the pod already says.
 */
export function mergeList(existing: string | undefined, added: readonly string[]): string {
  const items = (existing ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const present = new Set(items); // a lookup per added item in the list itself would be quadratic
  for (const a of added) {
    if (!present.has(a)) {
      items.push(a);
      present.add(a);
    }
  }
  return items.join(',');
}

/**
 * `mergeList`, refused when the result is longer than a list may be: Istio's init container gets it
 * as one argument, which Linux limits to 128 KiB, so the pod could not start.
 */
function mergedAnnotation(name: string, existing: string | undefined, added: readonly string[]): string {
  const merged = mergeList(existing, added);
  if (merged.length > MAX_LIST_LENGTH) {
    throw new PodRejection(
      `annotation ${name}: with the gateway's own entries it would be ${merged.length} characters long, more than the ${MAX_LIST_LENGTH} a list may have`,
    );
  }
  return merged;
}

/** The APISIX containers of a gateway pod (the chart's is named `apisix`), not its other sidecars. */
function gatewayContainers(pod: V1Pod) {
  return (pod.spec?.containers ?? []).filter((c) => c.name === 'apisix' || /(^|\/)apisix(:|@|$)/.test(c.image ?? ''));
}

/**
 * The gateway pod with Istio's traffic annotations extended so that the Envoy Istio injects leaves
 * the gateway's listeners (inbound: the configured ports, 80 and 443 by default, and the ports the
 * APISIX containers declare) and its telemetry export (outbound) alone, and with the label that
 * makes Istio's injector fire. No containers are added. Throws `PodRejection` when one of the
 * `apisix-mesh.io/gateway-*` annotations or an existing Istio traffic annotation is invalid.
 */
export function injectGateway(pod: V1Pod, config: InjectionConfig): V1Pod {
  const metadata = pod.metadata ?? {};
  const a = metadata.annotations ?? {};
  try {
    const ports = (name: string, fallback: readonly number[]): string[] =>
      (a[name] === undefined ? fallback : parsePortList(a[name], name)).map(String);
    // Istio's rules see a connection after kube-proxy's DNAT: a Service's 80/443 arrive on the
    // container's own ports (the chart's 9080/9443), so those are what Envoy must leave alone
    const inbound =
      a[GATEWAY_INBOUND_PORTS_ANNOTATION] === undefined
        ? mergeList(config.gateway.inboundPorts.join(','), declaredTcpPorts(gatewayContainers(pod)).map(String)).split(',')
        : ports(GATEWAY_INBOUND_PORTS_ANNOTATION, config.gateway.inboundPorts);
    const outbound = ports(GATEWAY_EXCLUDE_OUTBOUND_PORTS_ANNOTATION, config.gateway.excludeOutboundPorts);
    const rangesText = a[GATEWAY_EXCLUDE_OUTBOUND_IP_RANGES_ANNOTATION];
    const ranges = rangesText === undefined ? config.gateway.excludeOutboundIpRanges : parseCidrList(rangesText, GATEWAY_EXCLUDE_OUTBOUND_IP_RANGES_ANNOTATION);
    // The existing values are Istio's to interpret, but a bad one would only fail later inside
    // istio-init; refuse it now, naming the annotation.
    if (a[TRAFFIC.excludeInboundPorts] !== undefined) parsePortList(a[TRAFFIC.excludeInboundPorts], TRAFFIC.excludeInboundPorts);
    if (a[TRAFFIC.excludeOutboundPorts] !== undefined) parsePortList(a[TRAFFIC.excludeOutboundPorts], TRAFFIC.excludeOutboundPorts);
    if (a[TRAFFIC.excludeOutboundIPRanges] !== undefined) parseCidrList(a[TRAFFIC.excludeOutboundIPRanges], TRAFFIC.excludeOutboundIPRanges);

    const annotations: Record<string, string> = {
      ...a,
      [TRAFFIC.excludeInboundPorts]: mergedAnnotation(TRAFFIC.excludeInboundPorts, a[TRAFFIC.excludeInboundPorts], inbound),
      [TRAFFIC.excludeOutboundPorts]: mergedAnnotation(TRAFFIC.excludeOutboundPorts, a[TRAFFIC.excludeOutboundPorts], outbound),
    };
    if (ranges.length > 0 || a[TRAFFIC.excludeOutboundIPRanges] !== undefined) {
      annotations[TRAFFIC.excludeOutboundIPRanges] = mergedAnnotation(TRAFFIC.excludeOutboundIPRanges, a[TRAFFIC.excludeOutboundIPRanges], ranges);
    }
    return {
      ...pod,
      metadata: { ...metadata, labels: { ...metadata.labels, [ISTIO_INJECT]: 'true' }, annotations },
    };
  } catch (err) {
    if (err instanceof CaptureConfigError) throw new PodRejection(`annotation ${err.message}`);
    throw err;
  }
}
