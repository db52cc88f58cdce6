import { loadCanonical } from '../xds-fixtures.js';
import type { InjectionConfig } from '../../../webhook/config/injection-config.js';
import { startPod, type RunningPod } from './pod-harness.js';
import { podManifest } from './requirements.js';

/**
 * The seed canary's world (test/fixtures/xds/synthetic-canary-xds-responses.json): the checkout
 * service's ClusterIP, its host name, and its endpoints as echo servers in the cluster namespace
 * (named after what they are, so a test sees who answered).
 */
export const CANARY_SERVICE_VIP = '10.96.44.7';
export const CANARY_HOST = 'checkout.shop.svc.cluster.local';
export const CANARY_STABLE = 'outbound|8080|stable|checkout.shop.svc.cluster.local';
export const CANARY_CANARY = 'outbound|8080|canary|checkout.shop.svc.cluster.local';

/** A pod of the shop namespace served the canary fixture, with `endpoints` (name → address) serving on 8080; Ready. */
export async function startCanaryPod(labels: Record<string, string>, endpoints: Record<string, string>, config?: InjectionConfig): Promise<RunningPod> {
  const pod = await startPod({
    manifest: podManifest('frontend', 'shop', labels),
    ...(config ? { config } : {}),
    xds: loadCanonical('synthetic-canary-xds-responses.json'),
    clusterAddresses: [CANARY_SERVICE_VIP, ...Object.values(endpoints)],
  });
  try {
    for (const [name, ip] of Object.entries(endpoints)) await pod.cluster.serve(name, ip, 8080);
    await pod.kubelet.waitReady(20_000);
  } catch (err) {
    await pod.stop();
    throw err;
  }
  return pod;
}
