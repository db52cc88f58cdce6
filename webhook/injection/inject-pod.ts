import type { V1Pod } from '@kubernetes/client-node';
import type { InjectionConfig } from '../config/injection-config.js';
import { PodRejection } from './capture.js';
import { injectGateway } from './gateway.js';
import type { InjectionMode } from './outcome.js';
import { injectSidecar, withoutSidecar } from './sidecar.js';

export type PodInjection = { kind: 'injected'; pod: V1Pod } | { kind: 'rejected'; message: string };

/**
 * The pod as the given mode wants it. Pure: `pod` is not modified, and the result shares every
 * object the injection did not change with it. `gateway` and `none` first take out a sidecar that an
 * earlier sidecar-mode injection added; `none` returns the pod itself when there is none.
 */
export function injectPod(pod: V1Pod, mode: InjectionMode, config: InjectionConfig): PodInjection {
  try {
    switch (mode) {
      case 'sidecar':
        return { kind: 'injected', pod: injectSidecar(pod, config) };
      case 'gateway':
        return { kind: 'injected', pod: injectGateway(withoutSidecar(pod, config), config) };
      case 'none':
        return { kind: 'injected', pod: withoutSidecar(pod, config) };
    }
  } catch (err) {
    if (err instanceof PodRejection) return { kind: 'rejected', message: err.message };
    throw err;
  }
}
