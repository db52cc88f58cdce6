import { afterEach, describe, expect, it } from 'vitest';
import { KvStore } from '../../agent/store/store.js';
import { startEtcdServer, type EtcdServer } from '../../agent/etcd/server.js';
import { RangeCache } from '../../agent/etcd/range-cache.js';

/**
 * The cache of encoded range answers is bounded in bytes, and requests that differ only in how
 * their JSON is written share one entry: 40 whitespace variants of one large readdir must not
 * hold 40 copies of its answer.
 */
const b64 = (s: string) => Buffer.from(s).toString('base64');
let servers: EtcdServer[] = [];
afterEach(async () => {
  for (const s of servers) await s.close();
  servers = [];
});

describe('range answer cache', () => {
  it('whitespace, field order and camelCase variants of one request share one entry', async () => {
    const store = new KvStore();
    for (let i = 0; i < 100; i++) store.write([{ op: 'put', key: `/apisix/routes/${i}`, value: 'x'.repeat(10_000) }]);
    const server = await startEtcdServer({ store, port: 0 });
    servers.push(server);
    const body = { key: b64('/apisix/routes/'), range_end: b64('/apisix/routes0'), limit: 0 };
    const variants = [
      JSON.stringify(body),
      ...Array.from({ length: 36 }, (_, i) => JSON.stringify(body, null, i + 1)),
      JSON.stringify({ range_end: body.range_end, key: body.key }),
      JSON.stringify({ key: body.key, rangeEnd: body.range_end }),
      JSON.stringify({ ...body, keys_only: false, count_only: false, revision: 0 }),
    ];
    const answers = new Set<string>();
    for (const v of variants) {
      const r = await fetch(`http://127.0.0.1:${server.httpPort}/v3/kv/range`, { method: 'POST', body: v });
      expect(r.status).toBe(200);
      answers.add(await r.text());
    }
    expect(answers.size).toBe(1);
    const one = [...answers][0]!.length;
    expect(one).toBeGreaterThan(1_000_000);
    expect(server.rangeCacheBytes).toBeGreaterThanOrEqual(one);
    expect(server.rangeCacheBytes).toBeLessThan(one + 1024);
  });

  it('holds at most its byte bound, whatever the requests', async () => {
    const store = new KvStore();
    for (let i = 0; i < 50; i++) store.write([{ op: 'put', key: `/k/${String(i).padStart(2, '0')}`, value: 'x'.repeat(100_000) }]);
    const server = await startEtcdServer({ store, port: 0, rangeCacheBytes: 1024 * 1024 });
    servers.push(server);
    for (let i = 0; i < 50; i++) {
      // Distinct requests, each answered with ~130 KiB up to ~6.5 MiB.
      const r = await fetch(`http://127.0.0.1:${server.httpPort}/v3/kv/range`, {
        method: 'POST',
        body: JSON.stringify({ key: b64('/k/'), range_end: b64('/k0'), limit: i + 1 }),
      });
      expect(r.status).toBe(200);
      await r.arrayBuffer();
      expect(server.rangeCacheBytes).toBeLessThanOrEqual(1024 * 1024);
    }
    expect(server.rangeCacheBytes).toBeGreaterThan(0);
  });
});

describe('RangeCache', () => {
  it('evicts the least recently used entries first and skips answers larger than the bound', () => {
    const c = new RangeCache(100);
    c.set('a', Buffer.alloc(30));
    c.set('b', Buffer.alloc(30));
    c.get('a');
    c.set('c', Buffer.alloc(30)); // 93 bytes: all fit
    c.set('d', Buffer.alloc(30)); // b is the least recently used
    expect([c.get('a') !== undefined, c.get('b') !== undefined, c.get('c') !== undefined, c.get('d') !== undefined]).toEqual([true, false, true, true]);
    expect(c.bytes).toBe(93);
    c.set('huge', Buffer.alloc(200));
    expect(c.get('huge')).toBeUndefined();
    expect(c.bytes).toBe(93);
    c.clear();
    expect([c.bytes, c.size]).toEqual([0, 0]);
  });
});
