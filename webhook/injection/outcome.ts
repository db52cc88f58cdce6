import type { Operation } from 'fast-json-patch';

/**
 * What the injection decided about one admission request: the contract between the pure injection
 * logic (`webhook/injection/`) and the HTTP layer (`webhook/server/`), which only turns it into an
 * AdmissionResponse and metrics.
 */
export type InjectionMode = 'sidecar' | 'gateway' | 'none';

/** Why a pod was left alone; each is a value of the `reason` label of the skip metric. */
export type SkipReason =
  | 'not-pod-create'
  | 'host-network'
  | 'excluded-namespace'
  | 'opt-out-label'
  | 'opt-out-annotation'
  | 'mode-none';

export type ReviewOutcome =
  /**
   * Injected: `patch` turns the submitted pod into the injected one (empty when already injected).
   * Mode `none` here: an earlier sidecar injection taken out.
   */
  | { kind: 'injected'; mode: InjectionMode; patch: Operation[]; warnings?: string[] }
  /** Allowed unchanged. */
  | { kind: 'skipped'; reason: SkipReason }
  /** Refused, with a message naming the offending annotation and value. */
  | { kind: 'rejected'; message: string };
