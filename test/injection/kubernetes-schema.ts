import { Pod } from 'kubernetes-models/v1';
import { Service, ConfigMap } from 'kubernetes-models/v1';
import { DaemonSet, Deployment, ReplicaSet, StatefulSet } from 'kubernetes-models/apps/v1';
import { CronJob, Job } from 'kubernetes-models/batch/v1';

/**
 * Validates Kubernetes objects against the Kubernetes OpenAPI schema, as shipped by
 * `kubernetes-models`: `new Model(data).validate()` throws with the failing paths.
 */
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  Pod,
  Service,
  ConfigMap,
  Deployment,
  StatefulSet,
  DaemonSet,
  ReplicaSet,
  Job,
  CronJob,
};

export function validateObject(obj: Record<string, unknown>): void {
  const kind = String(obj.kind);
  if (kind === 'List') {
    // kubernetes-models has no model for the generic v1 List; its items are what the API server sees.
    if (obj.apiVersion !== 'v1' || !Array.isArray(obj.items)) throw new Error('a List needs apiVersion v1 and items');
    for (const item of obj.items as Record<string, unknown>[]) validateObject(item);
    return;
  }
  const Model = MODELS[kind];
  if (!Model) throw new Error(`no schema model for kind ${kind}`);
  new Model(obj as never).validate();
}

/** A pod built from a template, validated as a Pod. */
export function validatePod(pod: unknown): void {
  new Pod({ apiVersion: 'v1', kind: 'Pod', ...(pod as object) } as never).validate();
}
