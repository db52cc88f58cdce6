import { APISIX_HOME } from './apisix-config.js';

/**
 * How APISIX leaves a terminating pod. nginx takes the container runtime's SIGTERM as a fast
 * shutdown: requests in flight are cut and the capture ports close at once, while with ordinary
 * (non-native) sidecars the app is being told to stop at the same moment and may still be finishing
 * requests that need the mesh. Istio's sidecar drains instead (terminationDrainDuration, 5 s). So
 * APISIX's preStop hook, which the kubelet runs before it sends SIGTERM:
 *  - ordinary sidecars: keeps serving for the drain time (the app stops meanwhile), then
 *  - asks nginx for a graceful quit (SIGQUIT: listeners close, requests in flight finish, idle
 *    keep-alive connections close) and waits for it to end, so that the kubelet's SIGTERM finds
 *    nothing left to cut. The grace period's SIGKILL bounds it.
 * Native sidecars are stopped only after every app container has exited: no drain time.
 * The agent outlives APISIX on its own (agent/shutdown.ts), so the drain runs with its configuration.
 */
export const TERMINATION_DRAIN_SECONDS = 5;

/** nginx's pid file under APISIX's prefix (APISIX's nginx.conf template: `pid logs/nginx.pid`). */
const NGINX_PID_FILE = `${APISIX_HOME}/logs/nginx.pid`;

export function apisixPreStopCommand(native: boolean): string[] {
  const drain = native ? '' : `sleep ${TERMINATION_DRAIN_SECONDS}; `;
  return [
    '/bin/sh',
    '-c',
    `${drain}pid=$(cat ${NGINX_PID_FILE}) || exit 0; kill -QUIT "$pid" || exit 0; while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done`,
  ];
}
