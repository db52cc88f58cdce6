import type { V1Pod } from '@kubernetes/client-node';
import type { AdmissionRequest } from '../../webhook/injection/admission-types.js';

const TEMPLATE_PATHS: Record<string, string[]> = {
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

/** Every pod in an object, as the pod the API server would admit (`{apiVersion, kind, metadata, spec}`). */
export function podTemplates(obj: Record<string, unknown>): { pod: V1Pod; namespace: string }[] {
  const namespace = ((obj.metadata as Record<string, unknown> | undefined)?.namespace as string | undefined) ?? '';
  if (obj.kind === 'List') return (obj.items as Record<string, unknown>[]).flatMap(podTemplates);
  if (obj.kind === 'Pod') return [{ pod: obj as V1Pod, namespace }];
  const path = TEMPLATE_PATHS[String(obj.kind)];
  if (!path) return [];
  let t: unknown = obj;
  for (const k of path) t = (t as Record<string, unknown>)[k];
  const tpl = t as { metadata?: object; spec: object };
  return [{ pod: { apiVersion: 'v1', kind: 'Pod', metadata: tpl.metadata ?? {}, spec: tpl.spec } as V1Pod, namespace }];
}

/** The `request` of an AdmissionReview for creating `pod`. */
export function podCreate(pod: unknown, namespace = 'default'): AdmissionRequest {
  return {
    uid: '705ab4f5-6393-11e8-b7cc-42010a800002',
    kind: { group: '', version: 'v1', kind: 'Pod' },
    resource: { group: '', version: 'v1', resource: 'pods' },
    namespace,
    operation: 'CREATE',
    object: pod,
  };
}
