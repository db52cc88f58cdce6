import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { KvStore, StoreError, type RequestOp, type StoreEvent, type StoreWrite } from '../../agent/store/store.js';
import { prefixEnd } from '../../agent/store/keys.js';

const text = (v: Uint8Array) => Buffer.from(v).toString('utf8');
const bytes = (s: string) => new Uint8Array(Buffer.from(s));

function contents(store: KvStore, prefix = '/'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of store.range({ key: prefix, rangeEnd: prefixEnd(prefix) }).kvs) out[kv.key] = text(kv.value);
  return out;
}

function collect(store: KvStore, req: Parameters<KvStore['watch']>[0]) {
  const got: Array<{ revision: number; events: readonly StoreEvent[] }> = [];
  const start = store.watch(req, (revision, events) => got.push({ revision, events }));
  return { start, got };
}

describe('KvStore revisions and the agent API', () => {
  it('starts at revision 1; one write batch is one revision with shared mod_revision', () => {
    const s = new KvStore();
    expect(s.revision).toBe(1);
    const rev = s.write([
      { op: 'put', key: '/apisix/upstreams/1', value: '{"u":1}' },
      { op: 'put', key: '/apisix/routes/1', value: '{"r":1}' },
    ]);
    expect(rev).toBe(2);
    const kvs = s.range({ key: '/apisix/', rangeEnd: '/apisix0' }).kvs;
    expect(kvs.map((k) => [k.key, k.createRevision, k.modRevision, k.version])).toEqual([
      ['/apisix/routes/1', 2, 2, 1],
      ['/apisix/upstreams/1', 2, 2, 1],
    ]);
    s.write([{ op: 'put', key: '/apisix/routes/1', value: '{"r":2}' }]);
    const r1 = s.range({ key: '/apisix/routes/1' }).kvs[0]!;
    expect([r1.createRevision, r1.modRevision, r1.version]).toEqual([2, 3, 2]);
  });

  it('write keeps the given order in the events of its revision', () => {
    const s = new KvStore();
    const { got } = collect(s, { key: '/', rangeEnd: '0' });
    s.write([
      { op: 'put', key: '/b', value: '1' },
      { op: 'put', key: '/a', value: '1' },
    ]);
    expect(got[0]!.events.map((e) => e.kv.key)).toEqual(['/b', '/a']);
  });

  it('refuses the same key twice in one write', () => {
    const s = new KvStore();
    expect(() => s.write([{ op: 'put', key: '/a', value: '1' }, { op: 'delete', key: '/a' }])).toThrow(StoreError);
    expect(s.revision).toBe(1);
  });

  it('applySnapshot writes only differences, in one revision, in the given order', () => {
    const s = new KvStore();
    s.write([{ op: 'put', key: '/other', value: 'keep' }]);
    const r1 = s.applySnapshot('/apisix/', new Map([['/apisix/routes/1', 'A'], ['/apisix/upstreams/1', 'U']]));
    expect(r1).toBe(3);
    expect(s.applySnapshot('/apisix/', new Map([['/apisix/routes/1', 'A'], ['/apisix/upstreams/1', 'U']]))).toBe(3);
    const { got } = collect(s, { key: '/', rangeEnd: '0' });
    // upstreams put first, route deletes before the upstream deletes: the agent's order.
    const order = (a: StoreWrite, b: StoreWrite) => {
      const rank = (w: StoreWrite) =>
        w.op === 'put' ? (w.key.includes('/upstreams/') ? 0 : 1) : w.key.includes('/routes/') ? 2 : 3;
      return rank(a) - rank(b);
    };
    const r2 = s.applySnapshot('/apisix/', new Map([['/apisix/routes/2', 'B'], ['/apisix/upstreams/2', 'V']]), order);
    expect(r2).toBe(4);
    expect(got).toHaveLength(1);
    expect(got[0]!.events.map((e) => `${e.type} ${e.kv.key}`)).toEqual([
      'PUT /apisix/upstreams/2',
      'PUT /apisix/routes/2',
      'DELETE /apisix/routes/1',
      'DELETE /apisix/upstreams/1',
    ]);
    expect(contents(s)).toEqual({ '/apisix/routes/2': 'B', '/apisix/upstreams/2': 'V', '/other': 'keep' });
    // unchanged keys are untouched
    s.applySnapshot('/apisix/', new Map([['/apisix/routes/2', 'B'], ['/apisix/upstreams/2', 'W']]));
    expect(s.range({ key: '/apisix/routes/2' }).kvs[0]!.modRevision).toBe(4);
  });

  it('initialRevision: a replacement store starts above the old one and answers older watches "compacted"', () => {
    const s = new KvStore({ initialRevision: 5000 });
    expect(s.revision).toBe(5000);
    expect(s.watch({ key: '/a', startRevision: 10 }, () => {}).kind).toBe('compacted');
    expect(s.write([{ op: 'put', key: '/a', value: '1' }])).toBe(5001);
  });
});

describe('KvStore reads in the past and compaction', () => {
  function history() {
    const s = new KvStore();
    s.put({ key: '/k', value: bytes('v1') }); // 2
    s.put({ key: '/k', value: bytes('v2') }); // 3
    s.put({ key: '/k2', value: bytes('x') }); // 4
    s.deleteRange({ key: '/k' }); // 5
    s.put({ key: '/k', value: bytes('v5') }); // 6
    return s;
  }

  it('range at a past revision sees the state of that revision', () => {
    const s = history();
    const at = (rev: number) => s.range({ key: '/k', rangeEnd: '/l', revision: rev }).kvs.map((kv) => `${kv.key}=${text(kv.value)}@${kv.modRevision}`);
    expect(at(1)).toEqual([]);
    expect(at(2)).toEqual(['/k=v1@2']);
    expect(at(4)).toEqual(['/k=v2@3', '/k2=x@4']);
    expect(at(5)).toEqual(['/k2=x@4']);
    expect(at(6)).toEqual(['/k=v5@6', '/k2=x@4']);
    expect(s.range({ key: '/k', revision: 4 }).revision).toBe(6);
    expect(() => s.range({ key: '/k', revision: 7 })).toThrow('future revision');
  });

  it('compaction: older reads and watches refused, the compact revision itself still readable', () => {
    const s = history();
    expect(s.compact(4)).toBe(6);
    expect(() => s.range({ key: '/k', revision: 3 })).toThrow('has been compacted');
    expect(s.range({ key: '/k', revision: 4 }).kvs.map((kv) => text(kv.value))).toEqual(['v2']);
    expect(() => s.compact(4)).toThrow('has been compacted');
    expect(() => s.compact(9)).toThrow('future revision');
    expect(s.watch({ key: '/k', startRevision: 3 }, () => {})).toEqual({ kind: 'compacted', compactRevision: 4 });
    const ok = s.watch({ key: '/', rangeEnd: '0', startRevision: 4 }, () => {});
    expect(ok.kind === 'watching' && ok.catchUp.map((e) => e.kv.modRevision)).toEqual([4, 5, 6]);
  });

  it('history is bounded: old revisions are compacted automatically', () => {
    const s = new KvStore({ maxHistoryEvents: 3 });
    for (let i = 0; i < 10; i++) s.put({ key: '/a', value: bytes(String(i)) }); // revisions 2..11
    expect(s.compactRevision).toBe(9);
    expect(s.watch({ key: '/a', startRevision: 8 }, () => {}).kind).toBe('compacted');
    const w = s.watch({ key: '/a', startRevision: 9 }, () => {});
    expect(w.kind === 'watching' && w.catchUp.map((e) => text(e.kv.value))).toEqual(['7', '8', '9']);
    const big = new KvStore({ maxHistoryBytes: 1000 });
    for (let i = 0; i < 10; i++) big.put({ key: '/a', value: new Uint8Array(400) });
    expect(big.compactRevision).toBeGreaterThan(8);
  });
});

describe('KvStore watches', () => {
  it('catch-up from the past, live events one message per revision, future start skips earlier ones', () => {
    const s = new KvStore();
    s.put({ key: '/a', value: bytes('1') }); // 2
    const past = collect(s, { key: '/a', startRevision: 2 });
    const future = collect(s, { key: '/a', startRevision: 4 });
    expect(past.start.kind === 'watching' && past.start.catchUp.length).toBe(1);
    s.put({ key: '/a', value: bytes('2') }); // 3
    s.put({ key: '/a', value: bytes('3') }); // 4
    expect(past.got.map((m) => m.revision)).toEqual([3, 4]);
    expect(future.got.map((m) => m.revision)).toEqual([4]);
  });

  it('single key, prefix, NOPUT/NODELETE filters; deletes carry no value but keep prev_kv', () => {
    const s = new KvStore();
    const one = collect(s, { key: '/a' });
    const all = collect(s, { key: '\0', rangeEnd: '\0' });
    const noPut = collect(s, { key: '/', rangeEnd: '0', noPut: true });
    const noDel = collect(s, { key: '/', rangeEnd: '0', noDelete: true });
    s.put({ key: '/a', value: bytes('1') });
    s.put({ key: '/ab', value: bytes('1') });
    s.deleteRange({ key: '/a', rangeEnd: '/b' });
    s.deleteRange({ key: '/missing' }); // no revision, no event
    expect(s.revision).toBe(4);
    expect(one.got.map((m) => m.events.map((e) => e.type))).toEqual([['PUT'], ['DELETE']]);
    expect(all.got.flatMap((m) => m.events.map((e) => `${e.type} ${e.kv.key}`))).toEqual([
      'PUT /a',
      'PUT /ab',
      'DELETE /a',
      'DELETE /ab',
    ]);
    expect(noPut.got.flatMap((m) => m.events.map((e) => e.type))).toEqual(['DELETE', 'DELETE']);
    expect(noDel.got.flatMap((m) => m.events.map((e) => e.type))).toEqual(['PUT', 'PUT']);
    const del = all.got[2]!.events[0]!;
    expect(del.kv.value.byteLength).toBe(0);
    expect(del.kv.version).toBe(0);
    expect(text(del.prevKv!.value)).toBe('1');
  });

  it('fan-out shares the same event objects between watchers', () => {
    const s = new KvStore();
    const a = collect(s, { key: '/', rangeEnd: '0' });
    const b = collect(s, { key: '/', rangeEnd: '0' });
    s.put({ key: '/x', value: bytes('v') });
    expect(a.got[0]!.events[0]).toBe(b.got[0]!.events[0]);
    expect(s.watcherCount).toBe(2);
    if (a.start.kind === 'watching') a.start.watcher.cancel();
    expect(s.watcherCount).toBe(1);
  });
});

describe('KvStore txn', () => {
  it('compares, picks a branch, applies all writes in one revision', () => {
    const s = new KvStore();
    s.put({ key: '/r', value: bytes('1') }); // 2
    const res = s.txn({
      compare: [{ key: '/r', target: 'MOD', result: 'EQUAL', operand: 2 }],
      success: [{ put: { key: '/r', value: bytes('2') } }, { put: { key: '/s', value: bytes('x') } }, { range: { key: '/r' } }],
      failure: [],
    });
    expect(res.succeeded).toBe(true);
    expect(res.revision).toBe(3);
    const range = res.responses[2] as { range: { kvs: { value: Uint8Array }[]; revision: number } };
    expect(text(range.range.kvs[0]!.value)).toBe('2');
    const stale = s.txn({
      compare: [{ key: '/r', target: 'MOD', result: 'EQUAL', operand: 2 }],
      success: [{ put: { key: '/r', value: bytes('3') } }],
      failure: [{ range: { key: '/r' } }],
    });
    expect(stale.succeeded).toBe(false);
    expect(stale.revision).toBe(3);
    // setnx: CREATE == 0 holds for a missing key only
    const setnx = (key: string) =>
      s.txn({ compare: [{ key, target: 'CREATE', result: 'EQUAL', operand: 0 }], success: [{ put: { key, value: bytes('n') } }], failure: [] }).succeeded;
    expect(setnx('/new')).toBe(true);
    expect(setnx('/new')).toBe(false);
    expect(() => s.txn({ compare: [], success: [{ put: { key: '/d', value: bytes('1') } }, { put: { key: '/d', value: bytes('2') } }], failure: [] })).toThrow('duplicate key');
  });

  it('put errors: missing key, ignore_value on a missing key, unknown lease; nothing half-applied', () => {
    const s = new KvStore();
    expect(() => s.put({ key: '' })).toThrow('key is not provided');
    expect(() => s.put({ key: '/m', ignoreValue: true })).toThrow('key not found');
    expect(() =>
      s.txn({ compare: [], success: [{ put: { key: '/ok', value: bytes('1') } }, { put: { key: '/l', value: bytes('x'), lease: '12345' } }], failure: [] }),
    ).toThrow('requested lease not found');
    expect(s.revision).toBe(1);
    expect(s.range({ key: '/ok' }).kvs).toEqual([]);
  });
});

describe('KvStore leases', () => {
  it('keys on an expired lease are deleted as DELETE events in a new revision', () => {
    let now = 1_000_000;
    const s = new KvStore({ clock: () => now });
    const { id, ttl } = s.grantLease(0);
    expect(ttl).toBe(2); // etcd's minimum
    s.put({ key: '/apisix/data_plane/server_info/n1', value: bytes('{}'), lease: id });
    expect(s.range({ key: '/apisix/data_plane/server_info/n1' }).kvs[0]!.lease).toBe(id);
    const { got } = collect(s, { key: '/apisix/', rangeEnd: '/apisix0' });
    now += 1500;
    expect(s.expireLeases()).toEqual([]);
    expect(s.keepAliveLease(id)).toBe(2);
    now += 1500;
    expect(s.expireLeases()).toEqual([]);
    expect(s.leaseTimeToLive(id)).toMatchObject({ grantedTtl: 2, keys: ['/apisix/data_plane/server_info/n1'] });
    now += 2500;
    expect(s.expireLeases()).toEqual([id]);
    expect(got.map((m) => m.events.map((e) => e.type))).toEqual([['DELETE']]);
    expect(s.leaseTimeToLive(id).ttl).toBe(-1);
    expect(() => s.revokeLease(id)).toThrow('requested lease not found');
  });

  it('explicit ids are honoured once; revoke deletes attached keys in one revision', () => {
    const s = new KvStore();
    expect(s.grantLease(30, '4242').id).toBe('4242');
    expect(() => s.grantLease(30, '4242')).toThrow('lease already exists');
    s.put({ key: '/a', value: bytes('1'), lease: '4242' });
    s.put({ key: '/b', value: bytes('1'), lease: '4242' });
    const before = s.revision;
    expect(s.revokeLease('4242')).toBe(before + 1);
    expect(contents(s)).toEqual({});
  });
});

describe('KvStore range index', () => {
  it('ranges see every key put and deleted before them, in byte order, also inside one transaction', () => {
    // random txns of puts, deletes (single keys and ranges) and ranges, against a model map; the
    // whole store is read after some txns only, so several txns may change the index unread
    const key = fc.constantFrom('a', 'a/1', 'a/2', 'b', 'b/1', 'b/10', 'b/2', 'c', '\u00ff', 'a/\u00e9');
    const op = fc.oneof(fc.record({ put: key }), fc.record({ del: key }), fc.record({ delFrom: key }), fc.record({ rangeFrom: key }));
    const txn = fc.record({ ops: fc.array(op, { minLength: 1, maxLength: 6 }), readAfter: fc.boolean() });
    fc.assert(
      fc.property(fc.array(txn, { minLength: 1, maxLength: 12 }), (txns) => {
        const store = new KvStore();
        const model = new Map<string, string>();
        const expectRange = (from: string, kvs: Array<{ key: string; value: Uint8Array }>) => {
          expect(kvs.map((kv) => [kv.key, text(kv.value)])).toEqual([...model].filter(([k]) => k >= from).sort(([a], [b]) => (a < b ? -1 : 1)));
        };
        txns.forEach(({ ops, readAfter }, t) => {
          // etcd refuses a key written twice in one txn (a put and a delete covering it included)
          const puts = new Set<string>();
          const deleted: Array<(k: string) => boolean> = [];
          const success = ops.flatMap((o): RequestOp[] => {
            if ('put' in o) {
              if (puts.has(o.put) || deleted.some((covers) => covers(o.put))) return [];
              puts.add(o.put);
              return [{ put: { key: o.put, value: bytes(`${t}`) } }];
            }
            if ('del' in o) {
              if (puts.has(o.del)) return [];
              deleted.push((k) => k === o.del);
              return [{ deleteRange: { key: o.del } }];
            }
            if ('delFrom' in o) {
              if ([...puts].some((k) => k >= o.delFrom)) return [];
              deleted.push((k) => k >= o.delFrom);
              return [{ deleteRange: { key: o.delFrom, rangeEnd: '\0' } }];
            }
            return [{ range: { key: o.rangeFrom, rangeEnd: '\0' } }];
          });
          const result = store.txn({ compare: [], success, failure: [] });
          // replay on the model, checking each range against the model at its point in the txn
          success.forEach((o, i) => {
            if ('put' in o) {
              model.set(o.put.key, `${t}`);
            } else if ('deleteRange' in o) {
              const { key: from, rangeEnd } = o.deleteRange;
              for (const k of [...model.keys()]) if (rangeEnd ? k >= from : k === from) model.delete(k);
            } else if ('range' in o) {
              expectRange(o.range.key, (result.responses[i] as { range: { kvs: Array<{ key: string; value: Uint8Array }> } }).range.kvs);
            }
          });
          if (readAfter) expectRange('\0', store.range({ key: '\0', rangeEnd: '\0' }).kvs);
        });
        expectRange('\0', store.range({ key: '\0', rangeEnd: '\0' }).kvs);
      }),
      { numRuns: 300 },
    );
  });
});

describe('KvStore duplicate writes in one transaction', () => {
  it('refuses a key both put and deleted (alone or in a deleted range), passes deletes and puts of other keys', () => {
    const store = new KvStore();
    store.write(Array.from({ length: 100 }, (_, i): StoreWrite => ({ op: 'put', key: `/old/${i}`, value: 'x' })));
    const put = (key: string) => ({ put: { key, value: bytes('y') } });
    const refused = [
      [put('/old/1'), { deleteRange: { key: '/old/1' } }],
      [{ deleteRange: { key: '/old/1' } }, put('/old/1')],
      [{ deleteRange: { key: '/old/', rangeEnd: prefixEnd('/old/') } }, put('/old/7')],
      [put('/z'), { deleteRange: { key: '/a', rangeEnd: '\0' } }],
    ];
    for (const success of refused) expect(() => store.txn({ compare: [], success, failure: [] }), JSON.stringify(success)).toThrow(StoreError);
    const before = store.revision;
    const revision = store.txn({ compare: [], success: [...Array.from({ length: 100 }, (_, i) => ({ deleteRange: { key: `/old/${i}` } })), ...Array.from({ length: 100 }, (_, i) => put(`/new/${i}`)), { deleteRange: { key: '/p/', rangeEnd: prefixEnd('/p/') } }], failure: [] }).revision;
    expect(revision).toBe(before + 1);
    expect(Object.keys(contents(store))).toEqual(Array.from({ length: 100 }, (_, i) => `/new/${i}`).sort());
  });
});
