// The injection's `agentLiteMode`: the agent's node without V8's optimizing compiler (less memory,
// slower full pushes: BENCHMARKS.md, "V8's lite mode"). On the pod harness with the real APISIX:
// the agent runs with the flags, says nothing about them, and the pod is ready and routes.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod } from '../support/pod/requirements.js';
import { PLAINTEXT_ISTIOD_CONFIG, type RunningPod } from '../support/pod/pod-harness.js';
import { startOneServicePod } from '../support/pod/one-service-pod.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import { fqdn } from '../support/istio-xds.js';

const NS = 'shop';
const REVIEWS = { vip: '10.96.43.1', endpoint: '10.244.43.1', port: 9080, host: fqdn('reviews', NS) };

describeWhenAvailable('the agent in V8\'s lite mode (agentLiteMode; real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  beforeAll(async () => {
    pod = await startOneServicePod({ pod: 'lite', namespace: NS, service: REVIEWS, name: 'reviews', config: { ...PLAINTEXT_ISTIOD_CONFIG, agentLiteMode: true } });
  }, 120_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('the agent runs with --lite-mode, V8 warns of nothing, and the pod routes', async () => {
    const started = pod.kubelet.events.find((e) => e.startsWith('container apisix-mesh-agent started'));
    const pid = /pid (\d+)/.exec(started ?? '')?.[1];
    expect(pid, pod.kubelet.events.join('\n')).toBeDefined();
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(argv).toContain('--lite-mode');
    expect(pod.kubelet.logs('apisix-mesh-agent')).not.toMatch(/Warning|disabling flag/);
    const res = await send(pod.app(), { url: `http://${REVIEWS.vip}/` });
    expect(res.status).toBe(200);
    expect(res.echo!.name).toBe('reviews');
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  }, 60_000);
});
