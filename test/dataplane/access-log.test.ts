// Issue 15 (what the sidecar costs): APISIX writes no line per request unless the injection
// configuration's accessLogFile names a file, as Istio's meshConfig.accessLogFile (empty by
// default: an Envoy sidecar logs no requests). Errors are logged either way. On the real APISIX of
// the pod harness: the same request through a pod injected with the default and through one with
// `accessLogFile: /dev/stdout`, and the APISIX container's output read.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { PLAINTEXT_ISTIOD_CONFIG, startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { send } from '../support/echo-requests.js';
import { fqdn, oneServiceMesh } from '../support/istio-xds.js';

const NS = 'shop';
const REVIEWS = { vip: '10.96.41.1', endpoint: '10.244.41.1', port: 9080, host: fqdn('reviews', NS) };

function mesh() {
  return oneServiceMesh(REVIEWS, [{ ip: REVIEWS.endpoint, port: REVIEWS.port }]);
}

/** a request path no other line of APISIX's output contains */
const MARK = '/reviews/access-log-mark-7f3a';

describeWhenAvailable('APISIX\'s access log as Istio\'s accessLogFile (real APISIX, real kernel)', missingForPod(), () => {
  const pods: Record<'quiet' | 'logging', RunningPod | undefined> = { quiet: undefined, logging: undefined };

  beforeAll(async () => {
    const start = async (name: string, accessLogFile: string) => {
      const pod = await startPod({
        manifest: podManifest(name, NS, { app: name }, [{ name: 'app', ports: [8080] }]),
        config: { ...PLAINTEXT_ISTIOD_CONFIG, accessLogFile },
        xds: mesh(),
        clusterAddresses: [REVIEWS.vip, REVIEWS.endpoint],
      });
      await pod.kubelet.waitReady(60_000);
      expect(await pod.waitSynced()).toBe(true);
      await pod.cluster.serve('reviews', REVIEWS.endpoint, REVIEWS.port);
      return pod;
    };
    pods.quiet = await start('quiet', '');
    pods.logging = await start('logging', '/dev/stdout');
  }, 180_000);
  afterAll(async () => {
    await pods.quiet?.stop();
    await pods.logging?.stop();
  });

  const through = async (pod: RunningPod) => {
    expect((await send(pod.app(), { url: `http://${REVIEWS.vip}${MARK}` })).status).toBe(200);
    // nginx flushes a buffered access log every 3 s (APISIX's `flush=3`)
    await new Promise((r) => setTimeout(r, 5_000));
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
    return pod.apisixLog();
  };

  it('by default (empty accessLogFile) writes no line per request', async () => {
    const log = await through(pods.quiet!);
    expect(log).not.toContain(MARK);
  }, 60_000);

  it('with accessLogFile /dev/stdout writes one line per request, with its status and upstream', async () => {
    const log = await through(pods.logging!);
    const lines = log.split('\n').filter((l) => l.includes(MARK));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`"GET ${MARK} HTTP/1.1" 200 .* ${REVIEWS.endpoint.replaceAll('.', '\\.')}:${REVIEWS.port} 200 `));
  }, 60_000);
});
