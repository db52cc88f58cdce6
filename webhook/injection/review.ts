import type { V1Pod } from '@kubernetes/client-node';
import type { InjectionConfig } from '../config/injection-config.js';
import type { AdmissionRequest } from './admission-types.js';
import { decide } from './decide.js';
import { injectPod } from './inject-pod.js';
import { injectionWarnings } from './warnings.js';
import type { ReviewOutcome } from './outcome.js';
import { diff } from './patch.js';
import { podShapeProblem } from './pod-shape.js';

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** A Pod CREATE, judged by the request's `kind`/`resource` (not by the object, which could lie). */
function isPodCreate(request: Record<string, unknown>): boolean {
  if (request.operation !== 'CREATE') return false;
  const kind = request.kind;
  const resource = request.resource;
  const byKind = isObject(kind) && (kind.group ?? '') === '' && kind.kind === 'Pod';
  const byResource = isObject(resource) && (resource.group ?? '') === '' && resource.resource === 'pods';
  const sub = request.subResource;
  return (byKind || byResource) && (sub === undefined || sub === '');
}

/**
 * The injection's answer to one AdmissionReview `request` (v1 and v1beta1 alike). Never throws,
 * whatever the JSON: anything that is not a Pod CREATE is skipped; a Pod CREATE whose object is not a
 * pod is rejected with the reason; otherwise the decision (see `decide`) and, when injecting, the JSON
 * Patch from the submitted pod to the injected one (empty when the pod already is injected).
 */
export function reviewAdmission(request: AdmissionRequest, config: InjectionConfig): ReviewOutcome {
  try {
    if (!isObject(request) || !isPodCreate(request as unknown as Record<string, unknown>)) {
      return { kind: 'skipped', reason: 'not-pod-create' };
    }
    const object = request.object;
    const problem = podShapeProblem(object);
    if (problem !== null) return { kind: 'rejected', message: `cannot read the pod: ${problem}` };
    const pod = object as V1Pod;
    const namespace =
      typeof pod.metadata?.namespace === 'string' && pod.metadata.namespace !== ''
        ? pod.metadata.namespace
        : typeof request.namespace === 'string'
          ? request.namespace
          : '';
    const decision = decide(pod, namespace, config);
    if (decision.kind === 'skip') return { kind: 'skipped', reason: decision.reason };
    if (decision.kind === 'reject') return { kind: 'rejected', message: decision.message };
    const result = injectPod(pod, decision.mode, config);
    if (result.kind === 'rejected') return { kind: 'rejected', message: result.message };
    const warnings = injectionWarnings(result.pod);
    return { kind: 'injected', mode: decision.mode, patch: diff(pod, result.pod), ...(warnings.length ? { warnings } : {}) };
  } catch (err) {
    // A bug, not the caller's fault; still an answer rather than a crash of the webhook.
    const message = err instanceof Error ? err.message : String(err);
    return { kind: 'rejected', message: `internal error while injecting: ${message}` };
  }
}
