// Issue 14 ("a preStop drain for APISIX"): when a pod is deleted, the kubelet tells every container
// to stop at once (ordinary sidecars). nginx takes SIGTERM as a fast shutdown, so without a drain the
// app's requests in flight through the sidecar are cut and its last requests find the capture ports
// closed. Run as the kubelet deletes a pod (preStop hooks, SIGTERM, the grace period's SIGKILL), the
// sidecar must finish what is in flight, keep serving while the app stops, leave on its own before
// the SIGTERM, and the agent must outlive APISIX (no failed watches in APISIX's log).
import { afterEach, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod } from '../support/pod/requirements.js';
import { PLAINTEXT_ISTIOD_CONFIG, type RunningPod } from '../support/pod/pod-harness.js';
import { CANARY_HOST, CANARY_SERVICE_VIP, startCanaryPod } from '../support/pod/canary-pod.js';
import { describeLines } from '../support/pod/apisix-log.js';

const ENDPOINTS = { canary: '10.244.5.21', 'stable-1': '10.244.5.11', 'stable-2': '10.244.5.12', 'stable-3-draining': '10.244.5.13' };
const APISIX = 'apisix-mesh-apisix';
const AGENT = 'apisix-mesh-agent';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describeWhenAvailable('pod deletion: APISIX drains, the agent outlives it (real APISIX, real kernel)', missingForPod(), () => {
  let pod: RunningPod | undefined;
  afterEach(async () => {
    await pod?.stop();
    pod = undefined;
  });

  const call = (path: string) => pod!.app().http({ url: `http://${CANARY_SERVICE_VIP}:8080${path}`, headers: { host: CANARY_HOST }, timeoutMs: 15_000 });
  const eventIndex = (events: string[], prefix: string) => events.findIndex((e) => e.startsWith(prefix));

  it('ordinary sidecars: a request in flight finishes, new ones are served during the drain, APISIX quits before its SIGTERM', async () => {
    pod = await startCanaryPod({ app: 'frontend', version: 'v1' }, ENDPOINTS);
    const inFlight = call('/slow?delay=3000');
    await sleep(300);
    // the app is told to stop too, and takes 3.5 s to finish its work (the request above)
    const terminated = pod.kubelet.terminate({ appShutdownMs: 3500 });
    await sleep(1500);
    const duringDrain = await call('/late');
    expect('status' in duringDrain ? duringDrain.status : duringDrain.error).toBe(200);
    const slow = await inFlight;
    expect('status' in slow ? slow.status : slow.error).toBe(200);
    await terminated;
    const events = pod.kubelet.events;
    const log = events.join('\n');
    expect(eventIndex(events, `container ${APISIX} preStop hook exited 0`), log).toBeGreaterThanOrEqual(0);
    // nginx's graceful quit ended APISIX inside its hook: the SIGTERM after it found nothing to stop
    expect(eventIndex(events, `container ${APISIX} exited 0`), log).toBeLessThan(eventIndex(events, `container ${APISIX} sent SIGTERM`));
    // the agent got its SIGTERM with the app, and stayed through the drain (past the app's exit)
    // until APISIX had let go of its etcd API
    expect(eventIndex(events, `container ${AGENT} sent SIGTERM`), log).toBeLessThan(eventIndex(events, 'container app exited'));
    expect(eventIndex(events, `container ${AGENT} exited 0`), log).toBeGreaterThan(eventIndex(events, 'container app exited'));
    expect(pod.kubelet.logs(AGENT)).toContain('APISIX has closed its etcd connections, shutting down');
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  }, 60_000);

  it('native sidecars: stopped after the app has exited, APISIX first, then the agent; no drain time', async () => {
    pod = await startCanaryPod({ app: 'frontend', version: 'v1' }, ENDPOINTS, { ...PLAINTEXT_ISTIOD_CONFIG, nativeSidecars: true });
    const inFlight = call('/slow?delay=2000');
    await sleep(300);
    const terminated = pod.kubelet.terminate({ appShutdownMs: 2500 });
    const slow = await inFlight;
    expect('status' in slow ? slow.status : slow.error).toBe(200);
    await terminated;
    const events = pod.kubelet.events;
    const log = events.join('\n');
    const appExited = events.findIndex((e) => e.endsWith('exited (test program)'));
    expect(appExited, log).toBeGreaterThanOrEqual(0);
    expect(eventIndex(events, `container ${APISIX} preStop hook exited 0`), log).toBeGreaterThan(appExited);
    expect(eventIndex(events, `container ${APISIX} exited 0`), log).toBeLessThan(eventIndex(events, `container ${AGENT} sent SIGTERM`));
    expect(eventIndex(events, `container ${AGENT} exited 0`), log).toBeGreaterThan(eventIndex(events, `container ${AGENT} sent SIGTERM`));
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  }, 60_000);
});
