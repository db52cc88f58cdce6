import type { V1PodSpec } from '@kubernetes/client-node';
import type { InjectionStatus } from './status.js';

/**
 * Fields the API server fills in when it decodes a pod (container, probe, port and volume defaults).
 * Only these may be present in the pod and absent from a fresh part for the two to count as the same.
 */
const API_SERVER_DEFAULTS = new Set([
  'terminationMessagePath',
  'terminationMessagePolicy',
  'imagePullPolicy',
  'protocol',
  'scheme',
  'timeoutSeconds',
  'periodSeconds',
  'successThreshold',
  'failureThreshold',
  'defaultMode',
  'apiVersion',
]);

/**
 * `existing` is `fresh` plus API-server defaults: every field of `fresh` is in `existing` with the
 * same value (recursively; lists element by element), and `existing` has no other field than those
 * in `API_SERVER_DEFAULTS`.
 */
export function isDefaultedFrom(fresh: unknown, existing: unknown): boolean {
  if (fresh === existing) return true;
  if (Array.isArray(fresh)) {
    return Array.isArray(existing) && fresh.length === existing.length && fresh.every((f, i) => isDefaultedFrom(f, existing[i]));
  }
  if (fresh === null || typeof fresh !== 'object' || existing === null || typeof existing !== 'object' || Array.isArray(existing)) {
    return false;
  }
  const f = fresh as Record<string, unknown>;
  const e = existing as Record<string, unknown>;
  for (const [k, v] of Object.entries(f)) {
    if (v !== undefined && !(Object.hasOwn(e, k) && isDefaultedFrom(v, e[k]))) return false;
  }
  for (const [k, v] of Object.entries(e)) {
    const inFresh = Object.hasOwn(f, k) && f[k] !== undefined;
    if (v !== undefined && !inFresh && !API_SERVER_DEFAULTS.has(k)) return false;
  }
  return true;
}

/**
 * On re-injection (the API server re-invokes the webhook after a later webhook changed the pod), the
 * sidecar parts in the pod carry the defaults the API server filled in. A part that differs from the
 * fresh one only by such defaults, in the same list, is kept as it is, so the re-invocation needs no
 * patch; a part that was changed in any other way is replaced by the fresh one.
 */
export function keepDefaulted(spec: V1PodSpec, previous: InjectionStatus) {
  const byName = <T extends { name: string }>(list: readonly T[] | undefined, names: readonly string[]) => {
    const wanted = new Set(names); // the status annotation may list any number of names
    return new Map((list ?? []).filter((x) => wanted.has(x.name)).map((x) => [x.name, x] as const));
  };
  const pick = <T extends { name: string }>(existing: Map<string, T>) => (fresh: T): T => {
    const old = existing.get(fresh.name);
    return old !== undefined && isDefaultedFrom(fresh, old) ? old : fresh;
  };
  return {
    initContainer: pick(byName(spec.initContainers, previous.initContainers)),
    container: pick(byName(spec.containers, previous.containers)),
    volume: pick(byName(spec.volumes, previous.volumes)),
  };
}

