// Issue: "APISIX must start cleanly in the pod". Run as a kubelet runs it, the injected pod must come
// up without any container restart and become Ready without the kubelet's 10 s back-off — with
// ordinary containers (the agent's postStart hook holds APISIX) and with native sidecars (the
// agent's startup probe does).
import type { V1Pod } from '@kubernetes/client-node';
import { afterEach, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { PLAINTEXT_ISTIOD_CONFIG, startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { loadCanonical } from '../support/xds-fixtures.js';

const xds = () => loadCanonical('synthetic-canary-xds-responses.json');
const manifest = podManifest('frontend', 'shop', { app: 'frontend', version: 'v1' });

function names(pod: V1Pod): string[] {
  return [...(pod.spec!.initContainers ?? []), ...pod.spec!.containers].map((c) => c.name);
}

describeWhenAvailable('the injected pod starts cleanly (real APISIX, real kernel)', missingForPod(), () => {
  let pod: RunningPod | undefined;
  afterEach(async () => {
    await pod?.stop();
    pod = undefined;
  });

  it('ordinary sidecars: APISIX starts after the agent\'s etcd API answers and the agent has its configuration; no restart, Ready at once', async () => {
    pod = await startPod({ manifest, xds: xds() });
    await pod.kubelet.waitReady(30_000);
    // no restart at all: the pod never waited on the kubelet's back-off
    for (const name of names(pod.injected)) expect(pod.kubelet.restarts(name), name).toBe(0);
    const events = pod.kubelet.events;
    const hook = events.findIndex((e) => e.startsWith('container apisix-mesh-agent postStart hook exited 0'));
    const apisix = events.findIndex((e) => e.startsWith('container apisix-mesh-apisix started'));
    expect(hook, events.join('\n')).toBeGreaterThanOrEqual(0);
    expect(apisix).toBeGreaterThan(hook);
    // and only once the agent had its first configuration: APISIX's workers read it whole instead of
    // as one watch response (agent/wait-command.ts)
    expect(events[hook]).toMatch(/the etcd API on 127\.0\.0\.1:15379 answered after \d+ ms\napisix-mesh wait: the agent on 127\.0\.0\.1:15020 had its first configuration after \d+ ms more/);
    expect(pod.apisixLog()).not.toContain('all etcd nodes are unavailable');
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });

  it("holdApplicationUntilProxyStarts (the pod's ProxyConfig): the app starts only once APISIX answers ready; without it, right after APISIX starts", async () => {
    const held = { ...manifest, metadata: { ...manifest.metadata, annotations: { 'proxy.istio.io/config': 'holdApplicationUntilProxyStarts: true' } } };
    pod = await startPod({ manifest: held, xds: xds() });
    await pod.kubelet.waitReady(30_000);
    let events = pod.kubelet.events;
    const ready = events.findIndex((e) => /^container apisix-mesh-apisix postStart hook exited 0: APISIX ready after \d+ s: the app starts$/.test(e));
    const apisix = events.findIndex((e) => e.startsWith('container apisix-mesh-apisix started'));
    const app = events.findIndex((e) => e.startsWith('container app '));
    expect(ready, events.join('\n')).toBeGreaterThan(apisix);
    expect(app, events.join('\n')).toBeGreaterThan(ready);
    for (const name of names(pod.injected)) expect(pod.kubelet.restarts(name), name).toBe(0);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
    await pod.stop();

    // control: the same pod without the hold has no such hook; the app follows APISIX's start at once
    pod = await startPod({ manifest, xds: xds() });
    await pod.kubelet.waitReady(30_000);
    events = pod.kubelet.events;
    expect(events.some((e) => e.startsWith('container apisix-mesh-apisix postStart'))).toBe(false);
    expect(events.findIndex((e) => e.startsWith('container app '))).toBe(events.findIndex((e) => e.startsWith('container apisix-mesh-apisix started')) + 1);
  });

  it('native sidecars: the startup probes order agent, APISIX and the app; no restart', async () => {
    pod = await startPod({ manifest, xds: xds(), config: { ...PLAINTEXT_ISTIOD_CONFIG, nativeSidecars: true } });
    await pod.kubelet.waitReady(30_000);
    expect(pod.injected.spec!.initContainers!.filter((c) => c.restartPolicy === 'Always').map((c) => c.name)).toEqual(['apisix-mesh-agent', 'apisix-mesh-apisix']);
    for (const name of names(pod.injected)) expect(pod.kubelet.restarts(name), name).toBe(0);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });

  it('control: without an answering etcd API, APISIX exits at start and the kubelet restarts it', async () => {
    // What the hook prevents, made deterministic: no hook, and the agent serving elsewhere.
    const injectedElsewhere = (p: V1Pod): V1Pod => {
      const agent = p.spec!.containers.find((c) => c.name === 'apisix-mesh-agent')!;
      agent.lifecycle = undefined;
      agent.args = agent.args!.map((a) => (a.startsWith('--etcd-listen=') ? '--etcd-listen=127.0.0.1:25379' : a));
      return p;
    };
    pod = await startPod({ manifest, xds: xds(), mutateInjected: injectedElsewhere });
    const deadline = Date.now() + 8_000;
    while (pod.kubelet.restarts('apisix-mesh-apisix') === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(pod.kubelet.restarts('apisix-mesh-apisix')).toBeGreaterThanOrEqual(1);
    expect(pod.apisixLog()).toContain('all etcd nodes are unavailable');
    expect(await pod.kubelet.isReady()).toBe(false);
  });
});
