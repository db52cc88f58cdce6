import type { V1Pod, V1Probe } from '@kubernetes/client-node';
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

/** What the API server's defaulting adds to a pod's containers, probes and volumes. */
export function withApiServerDefaults(pod: V1Pod): V1Pod {
  const p = structuredClone(pod);
  const probe = (x: V1Probe | undefined) =>
    x &&
    Object.assign(x, { timeoutSeconds: 1, successThreshold: 1, failureThreshold: x.failureThreshold ?? 3, periodSeconds: x.periodSeconds ?? 10 }, x.httpGet ? { httpGet: { ...x.httpGet, scheme: 'HTTP' } } : {});
  for (const c of [...(p.spec!.initContainers ?? []), ...p.spec!.containers]) {
    Object.assign(c, { terminationMessagePath: '/dev/termination-log', terminationMessagePolicy: 'File', imagePullPolicy: c.imagePullPolicy ?? 'IfNotPresent' });
    for (const port of c.ports ?? []) port.protocol ??= 'TCP';
    for (const e of c.env ?? []) if (e.valueFrom?.fieldRef) e.valueFrom.fieldRef.apiVersion = 'v1';
    probe(c.readinessProbe);
    probe(c.startupProbe);
  }
  for (const v of p.spec!.volumes ?? []) {
    if (v.configMap) v.configMap.defaultMode = 420;
    if (v.projected) v.projected.defaultMode = 420;
    if (v.downwardAPI) {
      v.downwardAPI.defaultMode = 420;
      for (const item of v.downwardAPI.items ?? []) if (item.fieldRef) item.fieldRef.apiVersion = 'v1';
    }
  }
  return p;
}

/** A pod of one app container in namespace `shop`, with these annotations (the injection's input). */
export function annotatedPod(annotations: Record<string, string>): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'app', namespace: 'shop', annotations },
    spec: { containers: [{ name: 'app', image: 'app:1' }] },
  };
}
