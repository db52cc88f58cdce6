import type { InjectionConfig } from '../../../webhook/config/injection-config.js';
import { oneServiceMesh } from '../istio-xds.js';
import { startPod, type RunningPod } from './pod-harness.js';
import { podManifest } from './requirements.js';

/** A service of the cluster: its ClusterIP, host name, and one endpoint serving on `port`. */
export interface OneService {
  vip: string;
  endpoint: string;
  port: number;
  host: string;
}

/**
 * A pod (app container on 8080) that calls one service, istiod serving just that service
 * (`oneServiceMesh`); its endpoint answers as an echo server named `name`. Ready and caught up.
 */
export async function startOneServicePod(
  options: { pod: string; namespace: string; service: OneService; name: string; annotations?: Record<string, string>; config?: InjectionConfig },
): Promise<RunningPod> {
  const manifest = podManifest(options.pod, options.namespace, { app: options.pod }, [{ name: 'app', ports: [8080] }]);
  const { service } = options;
  const pod = await startPod({
    manifest: options.annotations ? { ...manifest, metadata: { ...manifest.metadata, annotations: options.annotations } } : manifest,
    ...(options.config ? { config: options.config } : {}),
    xds: oneServiceMesh(service, [{ ip: service.endpoint, port: service.port }]),
    clusterAddresses: [service.vip, service.endpoint],
  });
  try {
    await pod.kubelet.waitReady(60_000);
    if (!(await pod.waitSynced())) throw new Error('APISIX did not catch up with the agent');
    await pod.cluster.serve(options.name, service.endpoint, service.port);
  } catch (err) {
    await pod.stop();
    throw err;
  }
  return pod;
}
