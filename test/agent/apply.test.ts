// The store layout the agent gives APISIX (agent/apply.ts), checked on the store itself.
import { describe, expect, it } from 'vitest';
import { StoreApplier } from '../../agent/apply.js';
import { KvStore } from '../../agent/store/store.js';
import { keyFromText, keyToText } from '../../agent/store/keys.js';

function keys(store: KvStore): string[] {
  return store.range({ key: keyFromText('/apisix/'), rangeEnd: keyFromText('/apisix0') }).kvs.map((kv) => keyToText(kv.key));
}

describe('the directories APISIX loads at start', () => {
  it('marks routes, upstreams, consumers, the L4 listeners and the TLS relay even when they are empty', () => {
    // Without /apisix/consumers/ APISIX 3.13 leaves the consumers unloaded for a moment after its
    // start, and a Prometheus scrape then fails with an [error] (seen in test/dataplane).
    const store = new KvStore();
    new StoreApplier(store).apply({ upstreams: new Map(), routes: new Map(), l4: new Map(), notes: [] });
    expect(keys(store)).toEqual(['/apisix/consumers/', '/apisix/mesh_l4/', '/apisix/mesh_tls/', '/apisix/routes/', '/apisix/upstreams/']);
  });
});
