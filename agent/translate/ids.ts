import * as crypto from 'node:crypto';

/** Node's one-shot hash (20.12+): ~2x faster than createHash for short inputs, and ids are many. */
const oneShotHash = (crypto as { hash?: (algorithm: string, data: string, encoding: 'buffer') => Buffer }).hash;

/**
 * Stable APISIX ids: the first 16 hex digits (64 bits) of the SHA-256 of the Envoy names that
 * identify the object, joined with NUL. The same istiod configuration therefore always gives the
 * same keys (no churn across agent restarts), ids fit APISIX's id pattern `^[a-zA-Z0-9-_.]+$`, and
 * a collision among 10^5 objects has odds of about 1 in 10^9.
 */
export function stableId(...parts: string[]): string {
  // hex of the first 8 bytes: a flat 16-character string (a slice of the 64-character hex digest
  // would keep the whole digest alive, and ids are kept per object)
  const data = parts.join('\0');
  const digest = oneShotHash ? oneShotHash('sha256', data, 'buffer') : crypto.createHash('sha256').update(data).digest();
  return digest.toString('hex', 0, 8);
}

/**
 * A cluster's upstream id is asked for several times per translation (its cluster, every route to
 * it, the assembly, the TLS relay and the L4 copies): remembered until `forgetUpstreamIds`, which
 * the translator calls after each assembly, so that a full snapshot hashes each cluster name once
 * and nothing stays between pushes. Bounded in case assemblies stop coming.
 */
const upstreamIds = new Map<string, string>();
const MAX_REMEMBERED_UPSTREAM_IDS = 100_000;

export function upstreamId(clusterName: string): string {
  let id = upstreamIds.get(clusterName);
  if (id === undefined) {
    if (upstreamIds.size >= MAX_REMEMBERED_UPSTREAM_IDS) upstreamIds.clear();
    upstreamIds.set(clusterName, (id = stableId('upstream', clusterName)));
  }
  return id;
}

/** Forgets the upstream ids remembered since the last call (the translator calls it after each assembly). */
export function forgetUpstreamIds(): void {
  upstreamIds.clear();
}
