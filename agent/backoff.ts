export interface Backoff {
  initialMs: number;
  maxMs: number;
}

/**
 * The wait before retry number `attempt` (0 for the first): exponential from `initialMs` up to `maxMs`,
 * jittered between half and all of it so that pods that failed together do not retry together.
 */
export function jitteredBackoff(attempt: number, { initialMs, maxMs }: Backoff, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 52));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
