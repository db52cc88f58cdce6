import { shortQuote } from '../../cli/short-quote.js';

/**
 * Checks that a value from the network has the shape the injection walks (objects where objects
 * are expected, named lists). Returns a sentence saying what is wrong, or null. It does not validate
 * the pod against Kubernetes' schema — the API server does that after the webhook.
 */
export function podShapeProblem(value: unknown): string | null {
  if (!isObject(value)) return 'the object is not a JSON object';
  if (value.kind !== undefined && value.kind !== 'Pod') {
    const kind = typeof value.kind === 'string' ? shortQuote(value.kind) : `kind of type ${Array.isArray(value.kind) ? 'list' : typeof value.kind}`;
    return `the object is a ${kind}, not a Pod`;
  }
  const metadata = value.metadata;
  if (metadata !== undefined) {
    if (!isObject(metadata)) return 'metadata is not an object';
    for (const key of ['labels', 'annotations'] as const) {
      const map = metadata[key];
      if (map === undefined || map === null) continue;
      if (!isObject(map) || !Object.values(map).every((v) => typeof v === 'string')) return `metadata.${key} is not a map of strings`;
    }
    for (const key of ['name', 'generateName', 'namespace'] as const) {
      const v = metadata[key];
      if (v !== undefined && v !== null && typeof v !== 'string') return `metadata.${key} is not a string`;
    }
    // the canonical-service labels are derived from the controller's name (telemetry-metadata.ts)
    const owners = metadata.ownerReferences;
    if (owners !== undefined && owners !== null) {
      if (!Array.isArray(owners) || !owners.every((o) => isObject(o) && typeof o.name === 'string' && typeof o.kind === 'string')) {
        return 'metadata.ownerReferences is not a list of references';
      }
    }
  }
  const spec = value.spec;
  if (spec === undefined) return null;
  if (!isObject(spec)) return 'spec is not an object';
  for (const key of ['containers', 'initContainers', 'volumes'] as const) {
    const list = spec[key];
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) return `spec.${key} is not a list`;
    for (let i = 0; i < list.length; i++) {
      const item: unknown = list[i];
      if (!isObject(item) || typeof item.name !== 'string') return `spec.${key}[${i}] has no name`;
      if (key !== 'volumes') {
        // an earlier injection's agent keeps what it was given in its environment
        const env = item.env;
        if (env !== undefined && env !== null) {
          if (!Array.isArray(env) || !env.every((e) => isObject(e) && typeof e.name === 'string' && (e.value === undefined || e.value === null || typeof e.value === 'string'))) {
            return `spec.${key}[${i}].env is not a list of variables`;
          }
        }
        const ports = item.ports;
        if (ports !== undefined && ports !== null) {
          if (!Array.isArray(ports) || !ports.every((p) => isObject(p) && typeof p.containerPort === 'number')) {
            return `spec.${key}[${i}].ports is not a list of ports`;
          }
        }
      }
    }
  }
  return null;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}
