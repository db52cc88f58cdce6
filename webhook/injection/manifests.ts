import type { V1ObjectMeta, V1Pod, V1PodSpec } from '@kubernetes/client-node';
import { parseAllDocuments, stringify } from 'yaml';
import type { InjectionConfig } from '../config/injection-config.js';
import { decide } from './decide.js';
import { injectPod } from './inject-pod.js';
import { injectionWarnings } from './warnings.js';
import type { InjectionMode } from './outcome.js';
import { podShapeProblem } from './pod-shape.js';

/** A YAML document that cannot be read. `documentIndex` counts from 1, as people count. */
export class ManifestParseError extends Error {
  constructor(
    readonly documentIndex: number,
    reason: string,
  ) {
    super(`document ${documentIndex}: ${reason}`);
    this.name = 'ManifestParseError';
  }
}

/** A pod (template) the injection refuses; the message names the object and the reason. */
export class ManifestRejection extends Error {
  constructor(
    readonly documentIndex: number,
    readonly object: string,
    reason: string,
  ) {
    super(`document ${documentIndex} (${object}): ${reason}`);
    this.name = 'ManifestRejection';
  }
}

export interface InjectManifestsOptions {
  config: InjectionConfig;
  /** Forces the mode of every pod (the `--mode` flag); opt-outs and hostNetwork still apply. */
  mode?: InjectionMode;
}

export interface InjectManifestsResult {
  yaml: string;
  /** One line per pod (template) seen: what was done with it. */
  report: string[];
  /** What the user should hear even without -v: pod templates left alone because their kind is unknown. */
  warnings: string[];
}

/** Where the pod template sits in each workload kind. */
const TEMPLATE_PATHS: Record<string, string[]> = {
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  ReplicationController: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

type Obj = Record<string, unknown>;
const isObject = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

function describeObject(obj: Obj): string {
  const meta = isObject(obj.metadata) ? obj.metadata : {};
  const name = typeof meta.name === 'string' ? meta.name : typeof meta.generateName === 'string' ? `${meta.generateName}*` : '(unnamed)';
  const ns = typeof meta.namespace === 'string' ? `${meta.namespace}/` : '';
  return `${String(obj.kind)} ${ns}${name}`;
}

/**
 * Injects every pod and pod template in a YAML stream (like `istioctl kube-inject`): Pods, the
 * templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, ReplicationControllers, Jobs and
 * CronJobs, and the items of `List`s; every other object passes through unchanged. Throws
 * `ManifestParseError` for unreadable YAML and `ManifestRejection` for a pod the injection refuses.
 */
export function injectManifests(yamlText: string, options: InjectManifestsOptions): InjectManifestsResult {
  const docs = parseAllDocuments(yamlText, { uniqueKeys: false });
  const list = Array.isArray(docs) ? docs : [docs];
  const report: string[] = [];
  const warnings: string[] = [];
  const out: string[] = [];
  list.forEach((doc, i) => {
    const index = i + 1;
    const error = doc.errors[0];
    if (error) throw new ManifestParseError(index, error.message.split('\n')[0] ?? error.message);
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) return; // an empty document (e.g. a trailing `---`)
    if (!isObject(value)) throw new ManifestParseError(index, 'is not a Kubernetes object (a mapping with kind)');
    out.push(stringify(injectObject(value, index, options, report, warnings), { lineWidth: 0 }));
  });
  return { yaml: out.join('---\n'), report, warnings };
}

function injectObject(obj: Obj, index: number, options: InjectManifestsOptions, report: string[], warnings: string[]): Obj {
  const kind = obj.kind;
  if (typeof kind !== 'string') throw new ManifestParseError(index, 'has no kind');
  if (kind === 'List' || (kind.endsWith('List') && Array.isArray(obj.items))) {
    if (!Array.isArray(obj.items)) return obj;
    return { ...obj, items: obj.items.map((item) => (isObject(item) ? injectObject(item, index, options, report, warnings) : item)) };
  }
  const namespace = isObject(obj.metadata) && typeof obj.metadata.namespace === 'string' ? obj.metadata.namespace : '';
  if (kind === 'Pod') {
    return injectOne(obj, namespace, describeObject(obj), index, options, report, warnings) as Obj;
  }
  const path = Object.hasOwn(TEMPLATE_PATHS, kind) ? TEMPLATE_PATHS[kind] : undefined;
  if (!path) {
    // Argo Rollouts, OpenKruise, Knative, …: a pod template where Deployments keep theirs
    if (hasPodTemplate(obj)) {
      warnings.push(`${describeObject(obj)} (document ${index}): its pod template was left as it is (inject knows ${Object.keys(TEMPLATE_PATHS).join(', ')} and Pod); in a cluster the webhook injects its pods when they are created`);
    }
    return obj;
  }
  const parents: Obj[] = [obj];
  for (const key of path) {
    const next = parents[parents.length - 1]![key];
    if (!isObject(next)) return obj; // no template: nothing to inject
    parents.push(next);
  }
  const template = parents[parents.length - 1]!;
  const injected = injectOne(template, namespace, describeObject(obj), index, options, report, warnings);
  // Rebuild the path down to the template with the injected one in place.
  let rebuilt: Obj = injected;
  for (let depth = path.length - 1; depth >= 0; depth--) rebuilt = { ...parents[depth], [path[depth]!]: rebuilt };
  return rebuilt;
}

function hasPodTemplate(obj: Obj): boolean {
  const spec = obj.spec;
  const template = isObject(spec) ? spec.template : undefined;
  return isObject(template) && isObject(template.spec) && Array.isArray(template.spec.containers);
}

/** One pod or pod template (`{metadata, spec}`): the decision, then the injection. */
function injectOne(podLike: Obj, namespace: string, what: string, index: number, options: InjectManifestsOptions, report: string[], warnings: string[]): Obj {
  const shape = podShapeProblem({ metadata: podLike.metadata, spec: podLike.spec });
  if (shape !== null) throw new ManifestRejection(index, what, `cannot read the pod template: ${shape}`);
  const pod = podLike as V1Pod;
  const decision = decide(pod, namespace, options.config, options.mode);
  if (decision.kind === 'skip') {
    report.push(`${what}: skipped (${decision.reason})`);
    return podLike;
  }
  if (decision.kind === 'reject') throw new ManifestRejection(index, what, decision.message);
  const result = injectPod(pod, decision.mode, options.config);
  if (result.kind === 'rejected') throw new ManifestRejection(index, what, result.message);
  report.push(`${what}: ${decision.mode}`);
  for (const warning of injectionWarnings(result.pod)) warnings.push(`${what} (document ${index}): ${warning}`);
  return { ...podLike, metadata: result.pod.metadata as V1ObjectMeta, spec: result.pod.spec as V1PodSpec };
}
