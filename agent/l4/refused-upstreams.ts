import type { TranslationNote } from '../translate/apisix-types.js';
import type { L4Chain, L4Listener } from './assemble.js';

/** The reason of the note (as the routes to such an upstream get in agent/apply.ts). */
export const UPSTREAM_LEFT_OUT = 'upstream-invalid';

export interface CheckedL4Listener {
  /** `listener` itself when every upstream it names is held, else a copy with those chains refused */
  listener: L4Listener;
  /** one note for the listener when chains were refused */
  note?: TranslationNote;
}

/**
 * The L4 front's chains against the upstreams APISIX actually holds. Translation resolves a TCP
 * chain to its cluster's upstream id (assemble.ts), but the store still refuses an upstream APISIX's
 * schema would refuse (agent/apply.ts): a chain naming it would then point at an upstream that is
 * not there, and its stream-side copy (stream-upstreams.ts) would hold endpoints nothing validated.
 * Such a chain is refused instead, as Envoy refuses a TCP proxy to a cluster it does not have: never
 * forwarded to where the configuration was not checked. `held(id)`: whether the store holds
 * upstream `id` once this revision is written.
 */
export function refuseChainsToMissingUpstreams(listener: L4Listener, held: (upstreamId: string) => boolean): CheckedL4Listener {
  const refusedChains: string[] = [];
  const missing = new Set<string>();
  const check = (chain: L4Chain): L4Chain => {
    if (chain.action.kind !== 'cluster') return chain;
    const gone = chain.action.clusters.map((c) => c.upstream_id).filter((id) => !held(id));
    if (gone.length === 0) return chain;
    refusedChains.push(chain.name);
    for (const id of gone) missing.add(id);
    // a refused chain needs no policy (as assemble.ts writes it): it forwards nothing
    return { name: chain.name, match: chain.match, action: { kind: 'refuse', reason: `upstream ${gone[0]} was left out` } };
  };
  const chains = listener.chains.map(check);
  const dflt = listener.default ? check(listener.default) : undefined;
  if (refusedChains.length === 0) return { listener };
  const out: L4Listener = { ...listener, chains };
  if (dflt) out.default = dflt;
  const ids = [...missing];
  return {
    listener: out,
    note: {
      kind: 'listener',
      name: listener.name,
      reason: UPSTREAM_LEFT_OUT,
      detail: `chain${refusedChains.length > 1 ? 's' : ''} ${refusedChains.slice(0, 5).join(', ')}${refusedChains.length > 5 ? ', …' : ''}: upstream${ids.length > 1 ? 's' : ''} ${ids.slice(0, 3).join(', ')}${ids.length > 3 ? ', …' : ''} left out (APISIX's schema refuses ${ids.length > 1 ? 'them' : 'it'}): ${refusedChains.length > 1 ? 'their' : 'its'} connections are refused`,
      skipped: true,
    },
  };
}
