import { isIPv6 } from 'node:net';

/**
 * Where the agent's probes go and come from. Like the kubelet, they go to the pod's own IP; like
 * pilot-agent, they leave from 127.0.0.6 (`::6`), the source the capture rules never redirect
 * (iptables-init/rules.ts, `-o lo -s 127.0.0.6 -j RETURN`). The agent's uid alone is not enough:
 * the proxy's connections to its own pod IP are sent to the inbound listener (the rule for a
 * service that resolved to the pod itself), where APISIX would answer in the app's place.
 */
export interface ProbeTarget {
  /** the pod's IP (INSTANCE_IP) */
  host: string;
  /** the source address to bind, or undefined for the kernel's choice (tests) */
  localAddress?: string;
}

export function probeTargetFor(podIp: string): ProbeTarget {
  return { host: podIp, localAddress: isIPv6(podIp) ? '::6' : '127.0.0.6' };
}

/** The kubelet's default when a probe names no timeout; the agent waits at most MAX_TIMEOUT_SECONDS. */
const DEFAULT_TIMEOUT_SECONDS = 1;
export const MAX_TIMEOUT_SECONDS = 60;

export function probeTimeoutMs(timeoutSeconds: number | undefined): number {
  const s = timeoutSeconds === undefined || timeoutSeconds < 1 ? DEFAULT_TIMEOUT_SECONDS : Math.min(timeoutSeconds, MAX_TIMEOUT_SECONDS);
  return s * 1000;
}

/** How a probe went: `status` is what the status port answers the kubelet, `detail` a short reason. */
export interface ProbeOutcome {
  status: number;
  detail: string;
}

const MAX_DETAIL = 160;

export function failed(detail: string): ProbeOutcome {
  return { status: 500, detail: detail.length > MAX_DETAIL ? `${detail.slice(0, MAX_DETAIL)}…` : detail };
}

/** `host:port` for messages and URLs (IPv6 in brackets). */
export function hostPort(host: string, port: number): string {
  return isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}
