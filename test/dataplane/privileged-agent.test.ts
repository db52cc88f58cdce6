// Issue 15 (what the sidecar costs, memory): APISIX's privileged agent serves the Prometheus export
// and the status API, never a request, and holds none of the configuration
// (agent/l4/lua/apisix_mesh/privileged_agent.lua). The export's revision figures, which every
// data-plane test reads to know APISIX caught up, are then the workers': they say what the workers
// serve (served_revisions.lua).
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod } from '../support/pod/requirements.js';
import type { RunningPod } from '../support/pod/pod-harness.js';
import { startCanaryPod } from '../support/pod/canary-pod.js';
import { apisixProcesses } from '../support/pod/apisix-processes.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { allowAnyVirtualHost, edsCluster, httpRoute, loadAssignment, outboundHttpListener, routeConfiguration, serviceVirtualHost } from '../support/istio-xds.js';

const ENDPOINTS = { canary: '10.244.5.21', 'stable-1': '10.244.5.11', 'stable-2': '10.244.5.12' };
/** enough services that a copy of their routes and upstreams shows in a process's memory (~30 MiB) */
const SERVICES = 1000;
const PORT = 9080;

const hostOf = (i: number) => `svc-${i}.grow.svc.cluster.local`;
const clusterOf = (i: number) => `outbound|${PORT}||${hostOf(i)}`;
const endpointOf = (i: number, moved = 0) => ({ ip: `10.250.${(i >> 8) & 255}.${(i & 255) + moved}`, port: PORT });

/** a process's proportional set size, MiB */
function pssMiB(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  if (!m) throw new Error(`no Pss for ${pid}`);
  return Number(m[1]) / 1024;
}

describeWhenAvailable('APISIX\'s privileged agent holds no configuration (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  beforeAll(async () => {
    pod = await startCanaryPod({ app: 'frontend' }, ENDPOINTS);
    if (!(await pod.waitSynced(20_000))) throw new Error('APISIX did not catch up with the agent');
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it(`the mesh grown by ${SERVICES} services: each worker's memory grows with it, the privileged agent's does not; the export still shows the revision`, async () => {
    const before = apisixProcesses(pod);
    expect(before.privileged).toHaveLength(1);
    expect(before.workers.length).toBeGreaterThanOrEqual(1);
    const at = (pids: number[]) => pids.map(pssMiB);
    const [workersBefore, privilegedBefore] = [at(before.workers), at(before.privileged)];

    const vhosts = [];
    for (let i = 0; i < SERVICES; i++) {
      pod.istiod.set('cluster', edsCluster(clusterOf(i)));
      pod.istiod.set('endpoint', loadAssignment(clusterOf(i), [endpointOf(i)]));
      vhosts.push(serviceVirtualHost(hostOf(i), PORT, `10.97.${(i >> 8) & 255}.${i & 255}`, [httpRoute('default', { prefix: '/' }, { cluster: clusterOf(i) })]));
    }
    pod.istiod.set('route', routeConfiguration(PORT, [...vhosts, allowAnyVirtualHost()]));
    pod.istiod.set('listener', outboundHttpListener(PORT));
    await pod.push(['cluster', 'endpoint', 'listener', 'route'], { timeoutMs: 120_000 });
    // the new listener's routes come once the agent asked for its route configuration
    const deadline = Date.now() + 60_000;
    while ((await pod.agentObjects()).routes <= SERVICES && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect((await pod.agentObjects()).routes).toBeGreaterThan(SERVICES);
    // the export's max_modify_index is the newest route or upstream the agent serves
    expect(await pod.waitSynced(60_000)).toBe(true);
    // the workers' timers read in turns: let every directory settle
    await new Promise((r) => setTimeout(r, 2000));

    const after = apisixProcesses(pod);
    expect(after).toEqual(before); // no process restarted
    const workersGrew = at(after.workers).map((v, k) => v - workersBefore[k]!);
    const privilegedGrew = at(after.privileged)[0]! - privilegedBefore[0]!;
    console.log(`${SERVICES} services more: workers' PSS grew by ${workersGrew.map((v) => v.toFixed(1)).join(' / ')} MiB, the privileged agent's by ${privilegedGrew.toFixed(1)} MiB`);
    // a copy of the routes and upstreams: each worker holds one (measured ~25-30 MiB)
    for (const grew of workersGrew) expect(grew).toBeGreaterThan(10);
    // none in the privileged agent (before: as much as a worker; what remains is allocator noise)
    expect(privilegedGrew).toBeLessThan(Math.min(...workersGrew) / 4);
    // each subsystem of it says so after its start (APISIX matched what privileged_agent.lua hooks)
    for (const subsystem of ['HTTP', 'stream']) expect(pod.apisixLog()).toContain(`the privileged agent's ${subsystem} subsystem holds none of the configuration`);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  }, 180_000);

  it('the export\'s revision is what every worker serves: it waits for a stopped worker', async () => {
    const { workers } = apisixProcesses(pod);
    expect(workers.length).toBeGreaterThanOrEqual(2);
    const revision = await pod.agentRevision();
    process.kill(workers[1]!, 'SIGSTOP');
    try {
      pod.istiod.set('endpoint', loadAssignment(clusterOf(7), [endpointOf(7, 1)]));
      pod.istiod.push(['endpoint']);
      const deadline = Date.now() + 10_000;
      while ((await pod.agentRevision()) === revision && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(await pod.agentRevision()).toBeGreaterThan(revision);
      // the other worker applies the change at once; the stopped one cannot
      expect(await pod.waitSynced(2000)).toBe(false);
    } finally {
      process.kill(workers[1]!, 'SIGCONT');
    }
    expect(await pod.waitSynced(10_000)).toBe(true);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  }, 60_000);
});
