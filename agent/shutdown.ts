/**
 * How the agent stops on SIGTERM. APISIX holds its configuration in memory but keeps watching the
 * agent's etcd API while it drains (its preStop hook: webhook/injection/apisix-drain.ts); an agent
 * that left at once would fill APISIX's error log with failed watches for the whole drain, and a
 * worker that restarts in that time would come up without configuration. So the agent keeps serving
 * until APISIX has let go of the etcd API (its processes exited), at most `timeoutMs`; the kubelet's
 * SIGKILL at the end of the grace period bounds it anyway.
 */
export interface ShutdownWaitOptions {
  /** client connections open on the etcd API now */
  clients: () => Promise<number>;
  timeoutMs: number;
  pollMs?: number;
}

export async function waitForEtcdClientsToLeave(options: ShutdownWaitOptions): Promise<'left' | 'timeout'> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    if ((await options.clients()) === 0) return 'left';
    if (Date.now() >= deadline) return 'timeout';
    await new Promise((resolve) => setTimeout(resolve, Math.min(options.pollMs ?? 100, Math.max(1, deadline - Date.now()))));
  }
}
