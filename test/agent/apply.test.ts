// The store layout the agent gives APISIX (agent/apply.ts), checked on the store itself, and what it
// leaves out or refuses when APISIX's schema refuses an object (agent/l4/refused-upstreams.ts).
import { describe, expect, it } from 'vitest';
import { REVISION_BYTES, revisionsOf, StoreApplier } from '../../agent/apply.js';
import { KvStore, type StoreWrite } from '../../agent/store/store.js';
import { keyFromText, keyToText } from '../../agent/store/keys.js';
import type { ApisixRoute, ApisixUpstream } from '../../agent/translate/apisix-types.js';
import type { L4Chain, L4Listener } from '../../agent/l4/assemble.js';
import type { L4Upstream } from '../../agent/l4/stream-upstreams.js';
import { refuseChainsToMissingUpstreams } from '../../agent/l4/refused-upstreams.js';

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

describe('a TCP chain to an upstream APISIX would refuse', () => {
  const upstream = (port: number): ApisixUpstream => ({ id: 'u1', name: 'outbound|9000||db', type: 'roundrobin', nodes: [{ host: '10.0.0.1', port, weight: 1 }] });
  const copy = (port: number): L4Upstream => ({ id: 'u1', nodes: [{ host: '10.0.0.1', port, weight: 1 }] });
  const toDb: L4Chain = { name: 'db', match: { port: 9000 }, action: { kind: 'cluster', clusters: [{ upstream_id: 'u1', weight: 1 }] }, rbac: [{ rules: {} }] };
  const passthrough: L4Chain = { name: 'PassthroughFilterChain', match: {}, action: { kind: 'passthrough', connect_timeout: 10 } };
  const listener = (id: string, chains: L4Chain[] = [toDb]): L4Listener => ({ id, name: `listener-${id}`, direction: 'outbound', bind: { address: '10.96.0.9', port: 9000 }, chains, default: passthrough });
  const changes = (o: { upstream?: ApisixUpstream; l4?: Array<[string, L4Listener | null]>; full?: boolean }) => ({
    full: o.full ?? false,
    upstreams: new Map(o.upstream ? [['u1', o.upstream] as const] : []),
    routes: new Map(),
    l4: new Map(o.l4 ?? []),
    l4Upstreams: new Map(o.upstream ? [['u1', copy(o.upstream.nodes[0]!.port)] as const] : []),
    notes: [],
    remoteJwks: [],
  });
  const stored = (store: KvStore, key: string): unknown => {
    const kv = store.range({ key: keyFromText(key) }).kvs[0];
    return kv ? JSON.parse(Buffer.from(kv.value).toString()) : undefined;
  };
  const refusedDb = { name: 'db', match: { port: 9000 }, action: { kind: 'refuse', reason: 'upstream u1 was left out' } };

  it('refuses the chain\'s connections with a note (not a chain to a missing upstream), its stream-side copy withdrawn, and restores both with the upstream', () => {
    const store = new KvStore();
    const applier = new StoreApplier(store);
    let result = applier.applyChanges(changes({ upstream: upstream(9000), l4: [['l1', listener('l1')]], full: true }));
    expect(stored(store, '/apisix/mesh_l4/l1')).toEqual(listener('l1'));
    expect(stored(store, '/apisix/mesh_tcp_upstreams/u1')).toEqual(copy(9000));
    expect(result.invalid).toEqual([]);
    // the upstream turns invalid while the listener does not change: its chain is refused in the same revision
    const revision = store.revision;
    result = applier.applyChanges(changes({ upstream: upstream(-1) }));
    expect(store.revision).toBe(revision + 1);
    expect(stored(store, '/apisix/upstreams/u1')).toBeUndefined();
    expect(stored(store, '/apisix/mesh_tcp_upstreams/u1')).toBeUndefined();
    // the refused chain forwards nothing, so it carries no policy; the pass-through default stays
    expect(stored(store, '/apisix/mesh_l4/l1')).toEqual({ ...listener('l1'), chains: [refusedDb] });
    expect(result.invalid.map((n) => [n.kind, n.name, n.reason, n.skipped])).toEqual([['cluster', 'outbound|9000||db', 'schema-invalid', true], ['listener', 'listener-l1', 'upstream-invalid', true]]);
    expect(result.invalid[1]!.detail).toBe('chain db: upstream u1 left out (APISIX\'s schema refuses it): its connections are refused');
    // a listener that arrives meanwhile naming it is written refused too
    result = applier.applyChanges(changes({ l4: [['l2', listener('l2')]] }));
    expect(stored(store, '/apisix/mesh_l4/l2')).toEqual({ ...listener('l2'), chains: [refusedDb] });
    expect(result.invalid.map((n) => n.name).sort()).toEqual(['listener-l1', 'listener-l2', 'outbound|9000||db']);
    // valid again: the upstream, its copy and both listeners as translated come back
    result = applier.applyChanges(changes({ upstream: upstream(9090) }));
    expect(stored(store, '/apisix/mesh_tcp_upstreams/u1')).toEqual(copy(9090));
    expect(stored(store, '/apisix/mesh_l4/l1')).toEqual(listener('l1'));
    expect(stored(store, '/apisix/mesh_l4/l2')).toEqual(listener('l2'));
    expect(result.invalid).toEqual([]);
    // a full configuration that no longer names a refused listener drops its note
    applier.applyChanges(changes({ upstream: upstream(-1) }));
    result = applier.applyChanges(changes({ upstream: upstream(-1), l4: [['l1', listener('l1')]], full: true }));
    expect(stored(store, '/apisix/mesh_l4/l2')).toBeUndefined();
    expect(result.invalid.map((n) => n.name)).toEqual(['outbound|9000||db', 'listener-l1']);
  });

  it('a weighted split refuses its chain when any upstream of it is left out; chains to held upstreams are untouched', () => {
    const split: L4Chain = { name: 'split', match: { port: 9001 }, action: { kind: 'cluster', clusters: [{ upstream_id: 'u1', weight: 90 }, { upstream_id: 'gone', weight: 10 }] } };
    const checked = refuseChainsToMissingUpstreams(listener('l3', [toDb, split]), (id) => id === 'u1');
    expect(checked.listener.chains).toEqual([toDb, { name: 'split', match: { port: 9001 }, action: { kind: 'refuse', reason: 'upstream gone was left out' } }]);
    expect(checked.note?.detail).toBe('chain split: upstream gone left out (APISIX\'s schema refuses it): its connections are refused');
    const whole = listener('l4');
    expect(refuseChainsToMissingUpstreams(whole, () => true)).toEqual({ listener: whole });
  });
});

describe('a large change as several revisions (what APISIX reads per watch response)', () => {
  const upstream = (i: number): ApisixUpstream => ({ id: `u${i}`, name: `outbound|80||svc-${i}`, type: 'roundrobin', nodes: [{ host: `10.0.${i >> 8}.${i & 255}`, port: 8080, weight: 1 }] });
  const route = (i: number, upstreamId = `u${i}`): ApisixRoute => ({ id: `r${i}`, name: `r${i}`, uri: '/*', hosts: [`svc-${i}.ns.svc.cluster.local`], priority: 1, upstream_id: upstreamId, status: 1 });
  const changes = (upstreams: Array<[string, ApisixUpstream | null]>, routes: Array<[string, ApisixRoute | null]>, full = false) => ({ full, upstreams: new Map(upstreams), routes: new Map(routes), l4: new Map(), notes: [], remoteJwks: [] });
  const N = 3000;

  /** each revision `apply` writes, as its writes in order ('put <key>' / 'delete <key>'), as a watcher gets them */
  function revisionsWritten(store: KvStore, apply: () => void): string[][] {
    const out: string[][] = [];
    const start = store.watch({ key: keyFromText('/apisix/'), rangeEnd: keyFromText('/apisix0') }, (_revision, events) => {
      out.push(events.map((e) => `${e.type === 'DELETE' ? 'delete' : 'put'} ${keyToText(e.kv.key)}`));
    });
    if (start.kind !== 'watching') throw new Error(start.kind);
    apply();
    start.watcher.cancel();
    return out;
  }

  it('cuts the writes into revisions of at most REVISION_BYTES, in order: after each one every route\'s upstream is there', () => {
    const store = new KvStore();
    const applier = new StoreApplier(store);
    const ups = Array.from({ length: N }, (_, i) => [`u${i}`, upstream(i)] as [string, ApisixUpstream]);
    const routes = Array.from({ length: N }, (_, i) => [`r${i}`, route(i)] as [string, ApisixRoute]);
    let last = 0;
    const revisions = revisionsWritten(store, () => (last = applier.applyChanges(changes(ups, routes, true)).revision));
    expect(last).toBe(store.revision);
    expect(revisions.length).toBeGreaterThan(1);
    // nothing lost, nothing twice
    expect(revisions.flat().filter((w) => /^put \/apisix\/(routes|upstreams)\/./.test(w))).toHaveLength(2 * N);
    const present = new Set<string>();
    for (const writes of revisions) {
      let bytes = 0;
      for (const w of writes) {
        const key = w.slice(4);
        present.add(key);
        const kv = store.range({ key: keyFromText(key) }).kvs[0]!;
        bytes += key.length + kv.value.length;
      }
      // a revision's bytes stay under the bound (the bound is in characters of the key; ASCII here)
      expect(bytes).toBeLessThanOrEqual(REVISION_BYTES);
      for (const key of present) if (key.startsWith('/apisix/routes/r')) expect(present.has(`/apisix/upstreams/u${key.slice('/apisix/routes/r'.length)}`), key).toBe(true);
    }
  });

  it('deletes routes before their upstreams across revisions, and moves routes to new upstreams only after those exist', () => {
    const store = new KvStore();
    const applier = new StoreApplier(store);
    applier.applyChanges(changes(Array.from({ length: N }, (_, i) => [`u${i}`, upstream(i)]), Array.from({ length: N }, (_, i) => [`r${i}`, route(i)]), true));
    // every route moves to a new upstream, every old upstream goes
    const moved = Array.from({ length: N }, (_, i) => [`v${i}`, { ...upstream(i), id: `v${i}` }] as [string, ApisixUpstream]);
    const revisions = revisionsWritten(store, () => applier.applyChanges(changes(moved, Array.from({ length: N }, (_, i) => [`r${i}`, route(i, `v${i}`)]), true)));
    expect(revisions.length).toBeGreaterThan(1);
    const order = revisions.flat();
    const at = (w: string) => order.indexOf(w);
    for (let i = 0; i < N; i += 97) {
      expect(at(`put /apisix/upstreams/v${i}`)).toBeLessThan(at(`put /apisix/routes/r${i}`));
      expect(at(`put /apisix/routes/r${i}`)).toBeLessThan(at(`delete /apisix/upstreams/u${i}`));
    }
  });

  it('keeps a small change in one revision', () => {
    const store = new KvStore();
    const applier = new StoreApplier(store);
    applier.applyChanges(changes([['u1', upstream(1)]], [['r1', route(1)]], true));
    const revision = store.revision;
    applier.applyChanges(changes([['u2', upstream(2)]], [['r2', route(2)]]));
    expect(store.revision).toBe(revision + 1);
  });
});

describe('revisionsOf', () => {
  const put = (key: string, bytes: number): StoreWrite => ({ op: 'put', key, value: 'x'.repeat(bytes) });
  it('fills each revision up to the bound, keeps the order, and gives a larger write a revision of its own', () => {
    const writes = [put('a', 4), put('b', 4), put('c', 4), put('big', 20), put('d', 2), { op: 'delete', key: 'e' } as StoreWrite];
    expect(revisionsOf(writes, 10).map((r) => r.map((w) => w.key))).toEqual([['a', 'b'], ['c'], ['big'], ['d', 'e']]);
    expect(revisionsOf([], 10)).toEqual([]);
    expect(revisionsOf(writes, 1000)).toEqual([writes]);
  });
});
