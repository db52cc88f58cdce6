import type { InjectionConfig } from '../config/injection-config.js';
import { readProxyConfig } from './proxy-config.js';

/**
 * Istio's `holdApplicationUntilProxyStarts`: the app's containers start only once the proxy is ready,
 * so that the app's first connections (captured from the start) do not find the proxy still
 * starting. Istio gives its proxy container a postStart hook (`pilot-agent wait`) that polls Envoy's
 * readiness; the kubelet starts the next container only when the hook returns, and kills the proxy
 * (which then restarts) when it fails. Here the same hook on the APISIX container polls APISIX's
 * readiness (`/status/ready`: every worker has its configuration and the L4 listeners). APISIX's
 * image has no HTTP client (its Dockerfile removes curl and wget) but runs bash, whose `/dev/tcp`
 * is enough for one GET on loopback.
 *
 * Native sidecars need none: APISIX's startup probe already holds the app's containers.
 */

/** How long the hook waits for APISIX (pilot-agent wait's default timeout). */
export const HOLD_TIMEOUT_SECONDS = 60;

/** Whether the pod's app waits for APISIX: the pod's ProxyConfig, else the configuration's default. */
export function holdsApplication(annotations: Record<string, string>, config: Pick<InjectionConfig, 'holdApplicationUntilProxyStarts'>): boolean {
  return readProxyConfig(annotations).holdApplicationUntilProxyStarts ?? config.holdApplicationUntilProxyStarts;
}

/** APISIX's postStart hook: returns once APISIX answers ready on `statusPort`, fails after the timeout. */
export function apisixHoldCommand(statusPort: number, timeoutSeconds: number = HOLD_TIMEOUT_SECONDS): string[] {
  return [
    '/bin/bash',
    '-c',
    `deadline=$((SECONDS + ${timeoutSeconds}))
while :; do
  line=
  { printf 'GET /status/ready HTTP/1.0\\r\\n\\r\\n' >&3; IFS= read -r -t 2 line <&3; } 2>/dev/null 3<>/dev/tcp/127.0.0.1/${statusPort}
  case "$line" in 'HTTP/1.'?' 200'*) echo "APISIX ready after $SECONDS s: the app starts"; exit 0 ;; esac
  if [ "$SECONDS" -ge "$deadline" ]; then echo "APISIX not ready after ${timeoutSeconds} s (last answer: \${line:-none}): the app is held"; exit 1; fi
  sleep 0.5
done`,
  ];
}
