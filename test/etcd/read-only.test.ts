import { describe, expect, it } from 'vitest';
import { serveEtcdHttp } from '../support/etcd-http.js';

/**
 * The agent's etcd API is read-only for everything in the pod (the app container shares the
 * loopback): whatever a local process sends, APISIX must keep reading without credentials. Only
 * APISIX's own `init_dir` markers under the prefix get through, and only a bounded number of them.
 */
const b64 = (s: string) => Buffer.from(s).toString('base64');
const DENIED = { error: 'etcdserver: permission denied', message: 'etcdserver: permission denied', code: 7 };
const serve = serveEtcdHttp;

describe('read-only mode: no process in the pod can lock APISIX out', () => {
  it('refuses every auth change (user, role, grant, enable, disable); reads keep working without a token', async () => {
    const { store, post } = await serve({ readOnly: true });
    store.write([{ op: 'put', key: '/apisix/routes/1', value: '{"uri":"/"}' }]);
    for (const [path, body] of [
      ['/v3/auth/user/add', { name: 'root', password: 'x' }],
      ['/v3/auth/role/add', { name: 'root' }],
      ['/v3/auth/user/grant', { user: 'root', role: 'root' }],
      ['/v3/auth/role/grant', { name: 'root', perm: { key: b64('/'), range_end: b64('\0'), permType: 'READWRITE' } }],
      ['/v3/auth/enable', {}],
      ['/v3/auth/disable', {}],
    ] as const) {
      const r = await post(path, body);
      expect([r.status, r.json], path).toEqual([403, DENIED]);
    }
    const read = await post('/v3/kv/range', { key: b64('/apisix/routes/1') });
    expect(read.status).toBe(200);
    expect(read.json.kvs).toHaveLength(1);
    // etcd's answer to authenticate while auth is off: nothing was turned on
    expect((await post('/v3/auth/authenticate', { name: 'root', password: 'x' })).json.error).toBe('etcdserver: authentication is not enabled');
  });

  it('refuses lease grants and revokes (they are writes); reading leases still works', async () => {
    const { post } = await serve({ readOnly: true });
    const grant = await post('/v3/lease/grant', { TTL: 60 });
    expect([grant.status, grant.json]).toEqual([403, DENIED]);
    expect((await post('/v3/kv/lease/revoke', { ID: '1' })).json).toEqual(DENIED);
    expect((await post('/v3/lease/revoke', { ID: '1' })).json).toEqual(DENIED);
    expect((await post('/v3/lease/leases', {})).status).toBe(200);
  });

  it('accepts init_dir markers only directly under /apisix/, a bounded number of them', async () => {
    const { store, post } = await serve({ readOnly: true });
    const marker = (key: string) => post('/v3/kv/put', { key: b64(key), value: b64('init_dir') });
    for (const dir of ['routes', 'stream_routes', 'plugin_metadata', 'consumer_groups']) {
      expect((await marker(`/apisix/${dir}/`)).status, dir).toBe(200);
    }
    for (const key of ['/other/routes/', '/apisix/', '/apisix/routes/1/', '/apisix/a/b/', '/apisixroutes/', `/apisix/${'x'.repeat(200)}/`]) {
      expect([(await marker(key)).status, key]).toEqual([403, key]);
    }
    const before = store.size;
    let accepted = 0;
    for (let i = 0; i < 200; i++) if ((await marker(`/apisix/d${i}/`)).status === 200) accepted++;
    expect(accepted).toBeGreaterThan(10);
    expect(accepted).toBeLessThan(200);
    expect(store.size - before).toBe(accepted);
  });
});

describe('lease bounds (any mode)', () => {
  it("refuses TTLs above etcd's MaxLeaseTTL (9,000,000,000 s) as etcd does", async () => {
    const { post } = await serve();
    const tooLarge = { error: 'etcdserver: too large lease TTL', message: 'etcdserver: too large lease TTL', code: 11 };
    for (const TTL of ['9000000001', '9223372036854775807']) {
      const r = await post('/v3/lease/grant', { TTL });
      expect([r.status, r.json], TTL).toEqual([400, tooLarge]);
    }
    const ok = await post('/v3/lease/grant', { TTL: '9000000000' });
    expect([ok.status, ok.json.TTL]).toEqual([200, '9000000000']);
  });

  it("refuses grants past the lease limit with etcd's out-of-space answer", async () => {
    const { post } = await serve({ maxLeases: 3 });
    for (let i = 0; i < 3; i++) expect((await post('/v3/lease/grant', { TTL: 60 })).status).toBe(200);
    const r = await post('/v3/lease/grant', { TTL: 60 });
    expect([r.status, r.json]).toEqual([
      429,
      { error: 'etcdserver: mvcc: database space exceeded', message: 'etcdserver: mvcc: database space exceeded', code: 8 },
    ]);
    const leases = (await post('/v3/lease/leases', {})).json.leases as Array<{ ID: string }>;
    await post('/v3/lease/revoke', { ID: leases[0]!.ID });
    expect((await post('/v3/lease/grant', { TTL: 60 })).status).toBe(200);
  });
});
