import type { Listener } from '../xds/envoy-types.js';
import type { ClusterTranslation } from '../translate/cluster.js';
import type { ApisixUpstream, TranslationNote } from '../translate/apisix-types.js';
import type { SkipList } from '../policy/filter-inventory.js';
import { l4Listener, type L4ListenerDraft } from './listener-chains.js';
import { assembleL4Listener, type L4Listener } from './assemble.js';

/**
 * The L4 part of a mesh translation: every listener's chains for the front, resolved against the
 * clusters of the same translation. Drafts are kept per listener object (a listener's bytes did not
 * change: same object), and the assembled object keeps its identity while its content is the same,
 * so the applier re-encodes only what changed.
 */
export class L4Translator {
  private readonly drafts = new WeakMap<Listener, L4ListenerDraft | null>();
  private readonly assembled = new WeakMap<L4ListenerDraft, { json: string; listener: L4Listener }>();

  constructor(private readonly skip?: SkipList) {}

  translate(
    listeners: ReadonlyMap<string, Listener>,
    clusters: ReadonlyMap<string, ClusterTranslation>,
    upstreamByCluster: ReadonlyMap<string, ApisixUpstream>,
    notes: TranslationNote[],
  ): Map<string, L4Listener> {
    const out = new Map<string, L4Listener>();
    for (const listener of listeners.values()) {
      let draft = this.drafts.get(listener);
      if (draft === undefined) this.drafts.set(listener, (draft = l4Listener(listener, this.skip) ?? null));
      if (!draft) continue;
      notes.push(...draft.notes);
      const fresh = assembleL4Listener(draft, clusters, upstreamByCluster, notes);
      const json = JSON.stringify(fresh);
      const cached = this.assembled.get(draft);
      const l4 = cached && cached.json === json ? cached.listener : fresh;
      if (l4 === fresh) this.assembled.set(draft, { json, listener: fresh });
      out.set(l4.id, l4);
    }
    return out;
  }
}
