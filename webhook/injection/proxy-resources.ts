import type { V1ResourceRequirements } from '@kubernetes/client-node';
import { shortQuote } from '../../cli/short-quote.js';
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

/** A Kubernetes quantity is short; anything longer is a mistake, refused before it is parsed. */
const MAX_QUANTITY_LENGTH = 64;
/**
 * Kubernetes' quantity grammar (apimachinery resource.Quantity) without a sign: resources cannot be
 * negative. One pass, no nested repetition: linear in the (bounded) input.
 */
const QUANTITY = /^(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d{1,3})?$/;
const SUFFIX_SCALE: Record<string, number> = {
  '': 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

/** The quantity's value (approximate beyond 2^53, which only matters for comparing absurd sizes). */
function quantityValue(annotation: string, text: string): number {
  const match = text.length <= MAX_QUANTITY_LENGTH ? QUANTITY.exec(text) : null;
  if (!match) {
    throw new PodRejection(`annotation ${annotation}: ${shortQuote(text)} is not a Kubernetes quantity (e.g. 500m or 0.5 for CPU, 256Mi or 1Gi for memory)`);
  }
  const suffix = match[2] ?? '';
  const scale = /^[eE]/.test(suffix) ? 10 ** Number(suffix.slice(1)) : SUFFIX_SCALE[suffix]!;
  return Number(match[1]) * scale;
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
      quantityValue(name, value);
      out[resource] = value;
    }
    return Object.keys(out).length ? out : undefined;
  };
  const requests = pick(a.cpu, a.memory);
  const limits = pick(a.cpuLimit, a.memoryLimit);
  for (const [resource, request, limit] of [['cpu', a.cpu, a.cpuLimit], ['memory', a.memory, a.memoryLimit]] as const) {
    const r = requests?.[resource];
    const l = limits?.[resource];
    if (r !== undefined && l !== undefined && quantityValue(request, r) > quantityValue(limit, l)) {
      throw new PodRejection(`annotation ${request}: ${shortQuote(r)} is more than ${limit} ${shortQuote(l)} (a request cannot exceed its limit)`);
    }
  }
  return { ...(requests ? { requests } : {}), ...(limits ? { limits } : {}) };
}
