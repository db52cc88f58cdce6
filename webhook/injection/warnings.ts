import type { V1Pod } from '@kubernetes/client-node';
import { NAMES } from './sidecar-parts.js';

/**
 * What a user should hear about an injected pod that will not behave as they expect. A pod that is
 * meant to finish (restartPolicy Never or OnFailure: a Job's or CronJob's) never completes with
 * ordinary sidecar containers, which run until they are stopped: the Job hangs. Native sidecars
 * (init containers with `restartPolicy: Always`) are stopped by the kubelet once the app exits.
 */
export function injectionWarnings(injected: V1Pod): string[] {
  const spec = injected.spec;
  const finishing = spec?.restartPolicy === 'Never' || spec?.restartPolicy === 'OnFailure';
  const ordinary = (spec?.containers ?? []).some((c) => c.name === NAMES.agent || c.name === NAMES.apisix);
  if (!finishing || !ordinary) return [];
  return [
    `restartPolicy ${spec!.restartPolicy} (a Job's pod?): the mesh sidecars are ordinary containers that never exit, so the pod never completes; ` +
      'use native sidecars (annotation sidecar.istio.io/nativeSidecar: "true", Kubernetes >= 1.29) or apisix-mesh.io/mode: none',
  ];
}
