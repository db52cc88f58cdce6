// The store layout the agent gives APISIX (agent/apply.ts), checked on the store itself.
import { describe, expect, it } from 'vitest';
import { StoreApplier } from '../../agent/apply.js';
import { KvStore } from '../../agent/store/store.js';
import { keyFromText, keyToText } from '../../agent/store/keys.js';
import type { ApisixRoute, ApisixUpstream } from '../../agent/translate/apisix-types.js';

function keys(store: KvStore): string[] {
  return store.range({ key: keyFromText('/apisix/'), rangeEnd: keyFromText('/apisix0') }).kvs.map((kv) => keyToText(kv.key));
}

describe('the directories APISIX loads at start', () => {
  it('marks routes, upstreams, consumers, the L4 listeners and the TLS relay even when they are empty', () => {
    // Without /apisix/consumers/ APISIX 3.13 leaves the consumers unloaded for a moment after its
    // start, and a Prometheus scrape then fails with an [error] (seen in test/dataplane).
    const store = new KvStore();
    new StoreApplier(store).apply({ upstreams: new Map(), routes: new Map(), l4: new Map(), notes: [] });
    expect(keys(store)).toEqual(['/apisix/consumers/', '/apisix/mesh_l4/', '/apisix/mesh_tcp_upstreams/', '/apisix/mesh_tls/', '/apisix/routes/', '/apisix/upstreams/']);
  });
});

describe('objects APISIX would refuse', () => {
  const upstream = (port: number): ApisixUpstream => ({ id: 'u1', name: 'outbound|80||a', type: 'roundrobin', nodes: [{ host: '10.0.0.1', port, weight: 1 }] });
  const route = (id: string, uri = '/*'): ApisixRoute => ({ id, name: id, uri, priority: 1, upstream_id: 'u1', status: 1 });
  const changes = (upstreams: Array<[string, ApisixUpstream | null]>, routes: Array<[string, ApisixRoute | null]>, full = false) => ({ full, upstreams: new Map(upstreams), routes: new Map(routes), l4: new Map(), notes: [], remoteJwks: [] });

  it('an upstream refused by the schema takes its routes out, and they return with it', () => {
    const store = new KvStore();
    const applier = new StoreApplier(store);
    let result = applier.applyChanges(changes([['u1', upstream(8080)]], [['r1', route('r1')], ['r2', route('r2')]], true));
    expect(keys(store)).toEqual(['/apisix/consumers/', '/apisix/mesh_l4/', '/apisix/mesh_tcp_upstreams/', '/apisix/mesh_tls/', '/apisix/routes/', '/apisix/routes/r1', '/apisix/routes/r2', '/apisix/upstreams/', '/apisix/upstreams/u1']);
    expect([result.upstreams, result.routes, result.invalid]).toEqual([1, 2, []]);
    // the upstream turns invalid while its routes do not change: they go too, in the same revision
    const revision = store.revision;
    result = applier.applyChanges(changes([['u1', upstream(-1)]], []));
    expect(store.revision).toBe(revision + 1);
    expect(keys(store)).toEqual(['/apisix/consumers/', '/apisix/mesh_l4/', '/apisix/mesh_tcp_upstreams/', '/apisix/mesh_tls/', '/apisix/routes/', '/apisix/upstreams/']);
    expect(result.invalid.map((n) => [n.kind, n.name, n.reason])).toEqual([['cluster', 'outbound|80||a', 'schema-invalid'], ['route', 'r1', 'upstream-invalid'], ['route', 'r2', 'upstream-invalid']]);
    expect([result.upstreams, result.routes]).toEqual([0, 0]);
    // a route changed meanwhile is held back in its new form
    result = applier.applyChanges(changes([], [['r2', route('r2', '/two')]]));
    expect(keys(store)).toEqual(['/apisix/consumers/', '/apisix/mesh_l4/', '/apisix/mesh_tcp_upstreams/', '/apisix/mesh_tls/', '/apisix/routes/', '/apisix/upstreams/']);
    // valid again: the upstream and the held routes come back
    result = applier.applyChanges(changes([['u1', upstream(9090)]], []));
    expect(keys(store)).toEqual(['/apisix/consumers/', '/apisix/mesh_l4/', '/apisix/mesh_tcp_upstreams/', '/apisix/mesh_tls/', '/apisix/routes/', '/apisix/routes/r1', '/apisix/routes/r2', '/apisix/upstreams/', '/apisix/upstreams/u1']);
    expect(JSON.parse(Buffer.from(store.range({ key: keyFromText('/apisix/routes/r2') }).kvs[0]!.value).toString()).uri).toBe('/two');
    expect([result.upstreams, result.routes, result.invalid]).toEqual([1, 2, []]);
    // a full configuration drops what it does not name, held routes included
    applier.applyChanges(changes([['u1', upstream(-1)]], [['r1', route('r1')]]));
    result = applier.applyChanges(changes([['u1', upstream(8080)]], [], true));
    expect(keys(store)).toEqual(['/apisix/consumers/', '/apisix/mesh_l4/', '/apisix/mesh_tcp_upstreams/', '/apisix/mesh_tls/', '/apisix/routes/', '/apisix/upstreams/', '/apisix/upstreams/u1']);
    expect([result.upstreams, result.routes, result.invalid]).toEqual([1, 0, []]);
  });

  it('writes nothing when nothing differs', () => {
    const store = new KvStore();
    const applier = new StoreApplier(store);
    applier.applyChanges(changes([['u1', upstream(8080)]], [['r1', route('r1')]], true));
    const revision = store.revision;
    expect(applier.applyChanges(changes([['u1', upstream(8080)]], [['r1', route('r1')]])).revision).toBe(revision);
    expect(new StoreApplier(store).apply({ upstreams: new Map([['u1', upstream(8080)]]), routes: new Map([['r1', route('r1')]]), l4: new Map(), notes: [] }).revision).toBe(revision);
  });
});
