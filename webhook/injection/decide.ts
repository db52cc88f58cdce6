import type { V1Pod } from '@kubernetes/client-node';
import { shortQuote } from '../../cli/short-quote.js';
import type { InjectionConfig } from '../config/injection-config.js';
import { APISIX_APP_NAME, APP_NAME_LABEL, ISTIO_INJECT, MODE_ANNOTATION, STATUS_ANNOTATION } from './annotations.js';
import type { InjectionMode, SkipReason } from './outcome.js';
import { parseStatus } from './status.js';

export type Decision =
  /** `none` is an injection only for a pod that carries an earlier sidecar injection (it is taken out) */
  | { kind: 'inject'; mode: InjectionMode }
  | { kind: 'skip'; reason: SkipReason }
  | { kind: 'reject'; message: string };

const MODES: readonly InjectionMode[] = ['sidecar', 'gateway', 'none'];

/**
 * Whether and how to inject one pod, in this order (docs/injection.md documents it):
 * 1. `spec.hostNetwork: true` → skip (capture rules would land on the node);
 * 2. the namespace is excluded (system namespaces, the webhook's own) → skip;
 * 3. `sidecar.istio.io/inject` label `"false"` → skip; the label, when present, decides alone;
 *    otherwise the annotation of the same name `"false"` → skip. A pod this injection already turned
 *    into a sidecar pod carries the label `"false"` itself and is re-injected, not skipped;
 * 4. the mode: `forcedMode` (the `inject --mode` flag), else annotation `apisix-mesh.io/mode`
 *    (`sidecar` | `gateway` | `none`; anything else rejects the pod), else `gateway` for pods labelled
 *    `app.kubernetes.io/name: apisix` and the configuration's `defaultMode` (`sidecar` unless set to
 *    `none`) for every other pod; `none` → skip.
 */
export function decide(
  pod: V1Pod,
  namespace: string,
  config: InjectionConfig,
  forcedMode?: InjectionMode,
): Decision {
  const labels = pod.metadata?.labels ?? {};
  const annotations = pod.metadata?.annotations ?? {};

  if (pod.spec?.hostNetwork === true) return { kind: 'skip', reason: 'host-network' };
  if (namespace !== '' && (namespace === config.webhookNamespace || config.excludedNamespaces.includes(namespace))) {
    return { kind: 'skip', reason: 'excluded-namespace' };
  }

  const label = labels[ISTIO_INJECT];
  if (label !== undefined) {
    if (label === 'false' && parseStatus(annotations[STATUS_ANNOTATION]) === null) {
      return { kind: 'skip', reason: 'opt-out-label' };
    }
  } else if (annotations[ISTIO_INJECT] === 'false') {
    return { kind: 'skip', reason: 'opt-out-annotation' };
  }

  let mode: InjectionMode;
  if (forcedMode !== undefined) {
    mode = forcedMode;
  } else if (annotations[MODE_ANNOTATION] !== undefined) {
    const value = annotations[MODE_ANNOTATION];
    if (!(MODES as readonly string[]).includes(value)) {
      return {
        kind: 'reject',
        message: `annotation ${MODE_ANNOTATION}: ${shortQuote(value)} is not a mode (allowed: ${MODES.join(', ')})`,
      };
    }
    mode = value as InjectionMode;
  } else {
    mode = labels[APP_NAME_LABEL] === APISIX_APP_NAME ? 'gateway' : config.defaultMode;
  }
  if (mode === 'none' && parseStatus(annotations[STATUS_ANNOTATION]) === null) return { kind: 'skip', reason: 'mode-none' };
  return { kind: 'inject', mode };
}
