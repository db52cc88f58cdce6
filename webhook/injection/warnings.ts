import type { V1Pod } from '@kubernetes/client-node';
import { NAMES } from './sidecar-parts.js';
import { proxyConfigWarnings } from './proxy-config.js';

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
  const sidecar = ordinary || (spec?.initContainers ?? []).some((c) => c.name === NAMES.agent);
  const annotations = injected.metadata?.annotations ?? {};
  const warnings = sidecar ? [...ignoredIstioAnnotations(annotations), ...proxyConfigWarnings(annotations)] : [];
  if (finishing && ordinary) {
    warnings.push(
      `restartPolicy ${spec!.restartPolicy} (a Job's pod?): the mesh sidecars are ordinary containers that never exit, so the pod never completes; ` +
        'use native sidecars (annotation sidecar.istio.io/nativeSidecar: "true", Kubernetes >= 1.29) or apisix-mesh.io/mode: none',
    );
  }
  return warnings;
}

/**
 * Istio annotations that tune Envoy or pilot-agent and mean nothing to the APISIX sidecar. A user who
 * set one expects an effect; they hear that there is none (the pod is still injected: none of these
 * weakens the mesh's security).
 */
const IGNORED_ISTIO_ANNOTATIONS: ReadonlyArray<[string, string]> = [
  ['status.sidecar.istio.io/port', "the agent's status port comes from the configuration file"],
  ['sidecar.istio.io/proxyImage', "APISIX's image comes from the configuration file"],
  ['sidecar.istio.io/bootstrapOverride', 'there is no Envoy bootstrap'],
  ['sidecar.istio.io/userVolume', 'not mounted into APISIX (DestinationRule certificate files must be in its image or configuration)'],
  ['sidecar.istio.io/userVolumeMount', 'not mounted into APISIX (DestinationRule certificate files must be in its image or configuration)'],
  ['sidecar.istio.io/logLevel', 'Envoy log levels do not apply to APISIX'],
  ['sidecar.istio.io/componentLogLevel', 'Envoy log levels do not apply to APISIX'],
  ['sidecar.istio.io/statsInclusionPrefixes', "Envoy's stats filters do not apply (APISIX exports Istio's standard metrics)"],
  ['traffic.sidecar.istio.io/kubevirtInterfaces', 'not supported by the capture rules'],
];

function ignoredIstioAnnotations(annotations: Record<string, string>): string[] {
  return IGNORED_ISTIO_ANNOTATIONS.filter(([name]) => annotations[name] !== undefined).map(
    ([name, why]) => `annotation ${name} is not honoured by the APISIX sidecar: ${why}`,
  );
}
