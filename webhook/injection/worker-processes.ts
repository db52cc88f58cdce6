import type { V1ResourceRequirements } from '@kubernetes/client-node';
import { MAX_WORKER_PROCESSES, type InjectionConfig } from '../config/injection-config.js';
import { readProxyConfig } from './proxy-config.js';
import { quantityOf } from './proxy-resources.js';

/**
 * How many nginx workers the pod's APISIX runs: what Istio's `concurrency` (Envoy's worker threads)
 * means for this sidecar, decided in Istio's order (pilot-agent's ConstructProxyConfig):
 *
 * 1. `concurrency` in the pod's `proxy.istio.io/config` annotation (a ProxyConfig, YAML or JSON);
 * 2. the mesh-wide setting, here the configuration's `apisixWorkerProcesses` when it is a number
 *    (Istio's `meshConfig.defaultConfig.concurrency`);
 * 3. the APISIX container's CPU limit rounded up to whole CPUs (Istio's `ISTIO_CPU_LIMIT`, the
 *    proxy's `limits.cpu` through the downward API with divisor 1), from `proxyCPULimit` or the
 *    configuration's `resources.apisix`;
 * 4. without a CPU limit, 2. Envoy would take one thread per CPU of the node; an APISIX worker holds
 *    its own copy of the mesh's configuration (12–19 MiB per 1,000 services at rest), so a worker per CPU of
 *    a large node would multiply the pod's memory by the node's size.
 *
 * `concurrency: 0` is Istio's "one per CPU of the node": nginx's `worker_processes auto`, honoured as
 * asked, with a warning (proxy-config.ts), as pilot-agent warns.
 */
export type WorkerProcesses = number | 'auto';

/** Without a CPU limit: what Istio's charts give a sidecar by default (`limits.cpu: 2000m`). */
export const WORKERS_WITHOUT_CPU_LIMIT = 2;

export function workerProcessesFor(
  annotations: Record<string, string>,
  config: Pick<InjectionConfig, 'apisixWorkerProcesses'>,
  apisixResources: V1ResourceRequirements,
): WorkerProcesses {
  const concurrency = readProxyConfig(annotations).concurrency;
  if (concurrency !== undefined) return concurrency === 0 ? 'auto' : concurrency;
  if (config.apisixWorkerProcesses !== 'cpu-limit') return config.apisixWorkerProcesses;
  const cpuLimit = apisixResources.limits?.cpu;
  if (cpuLimit === undefined) return WORKERS_WITHOUT_CPU_LIMIT;
  const cores = quantityOf('limits.cpu of the APISIX container', String(cpuLimit));
  // the downward API rounds a CPU quantity up to the divisor (1): 500m → 1, 2500m → 3
  return Math.min(MAX_WORKER_PROCESSES, Math.max(1, Math.ceil(cores - 1e-9)));
}

