// Every xDS fixture (real istiod config dumps and the synthetic responses) served by the fake istiod,
// translated by the agent and loaded by the real APISIX: APISIX must accept every object — it logs
// an object it rejects ("failed to check item data") and keeps serving the rest, so its error log
// is the assertion.
import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { apisixErrorLines, describeLines } from '../support/pod/apisix-log.js';
import { loadCanonical, XDS_FIXTURES } from '../support/xds-fixtures.js';

const fixtures = readdirSync(XDS_FIXTURES).filter((f) => /\.(json|yaml)$/.test(f));

describeWhenAvailable('every xDS fixture loads into the real APISIX without an error line', missingForPod(), () => {
  let pod: RunningPod;
  beforeAll(async () => {
    pod = await startPod({ manifest: podManifest('productpage', 'default', { app: 'productpage', version: 'v1' }), xds: loadCanonical('synthetic-canary-xds-responses.json') });
    await pod.kubelet.waitReady(20_000);
  }, 60_000);
  afterAll(async () => {
    await pod?.stop();
  });

  it('has fixtures to load', () => {
    expect(fixtures.length).toBeGreaterThanOrEqual(8);
  });

  it.each(fixtures)('%s', async (file) => {
    const logBefore = pod.apisixLog().length;
    const resources = loadCanonical(file);
    pod.istiod.setAll(resources);
    await pod.push(['cluster', 'endpoint', 'listener', 'route'], { timeoutMs: 20_000 });
    // the workers sync independently of the one that answered the scrape: give them a moment
    await new Promise((r) => setTimeout(r, 300));
    const { routes, upstreams } = await pod.agentObjects();
    const errors = apisixErrorLines(pod.apisixLog().slice(logBefore));
    expect(errors, `${file} (${routes} routes, ${upstreams} upstreams):\n${describeLines(errors)}`).toEqual([]);
    if (resources.cluster.length > 0 && resources.listener.length > 0) expect(routes).toBeGreaterThan(0);
  });
});
