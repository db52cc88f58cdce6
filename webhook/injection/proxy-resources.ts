import type { V1ResourceRequirements } from '@kubernetes/client-node';
import { shortQuote } from '../../cli/short-quote.js';
import { quantityValue } from '../config/quantity.js';
import { PodRejection } from './capture.js';

/**
 * Istio's per-pod sizing of its proxy container, read the way Istio's sidecar template reads it:
 * when any of the four is set, the proxy's resources are exactly what they say (requests from
 * `proxyCPU`/`proxyMemory`, limits from the `…Limit` pair) and the mesh-wide defaults are dropped;
 * when none is set, the defaults stand. Here the proxy is the APISIX container; the agent keeps its
 * own resources (in Istio, pilot-agent shares the proxy's container, so there is no separate knob).
 */
export const PROXY_RESOURCE_ANNOTATIONS = {
  cpu: 'sidecar.istio.io/proxyCPU',
  memory: 'sidecar.istio.io/proxyMemory',
  cpuLimit: 'sidecar.istio.io/proxyCPULimit',
  memoryLimit: 'sidecar.istio.io/proxyMemoryLimit',
} as const;

/**
 * The quantity's value; `source` names where the text came from in the refusal of one that is not
 * a quantity.
 */
export function quantityOf(source: string, text: string): number {
  const value = quantityValue(text);
  if (value === null) {
    throw new PodRejection(`${source}: ${shortQuote(text)} is not a Kubernetes quantity (e.g. 500m or 0.5 for CPU, 256Mi or 1Gi for memory)`);
  }
  return value;
}

/**
 * The APISIX container's resources for a pod with these annotations (`defaults` when it sets none of
 * the four). Throws `PodRejection` for a value that is not a quantity, or a request above its limit
 * (the API server would refuse the pod with a less helpful message).
 */
export function proxyResourcesFor(annotations: Record<string, string>, defaults: V1ResourceRequirements): V1ResourceRequirements {
  const a = PROXY_RESOURCE_ANNOTATIONS;
  const given = (name: string): string | undefined => annotations[name];
  if ([a.cpu, a.memory, a.cpuLimit, a.memoryLimit].every((name) => given(name) === undefined)) return defaults;
  const pick = (cpu: string, memory: string): Record<string, string> | undefined => {
    const out: Record<string, string> = {};
    for (const [resource, name] of [['cpu', cpu], ['memory', memory]] as const) {
      const value = given(name);
      if (value === undefined) continue;
      quantityOf(`annotation ${name}`, value);
      out[resource] = value;
    }
    return Object.keys(out).length ? out : undefined;
  };
  const requests = pick(a.cpu, a.memory);
  const limits = pick(a.cpuLimit, a.memoryLimit);
  for (const [resource, request, limit] of [['cpu', a.cpu, a.cpuLimit], ['memory', a.memory, a.memoryLimit]] as const) {
    const r = requests?.[resource];
    const l = limits?.[resource];
    if (r !== undefined && l !== undefined && quantityOf(`annotation ${request}`, r) > quantityOf(`annotation ${limit}`, l)) {
      throw new PodRejection(`annotation ${request}: ${shortQuote(r)} is more than ${limit} ${shortQuote(l)} (a request cannot exceed its limit)`);
    }
  }
  return { ...(requests ? { requests } : {}), ...(limits ? { limits } : {}) };
}
