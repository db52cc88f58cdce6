import { describe, expect, it } from 'vitest';
import { serveEtcdHttp } from '../support/etcd-http.js';
import { firstJsonValue } from '../../agent/etcd/go-json.js';
import { decodeBase64, decodeBody, RangeRequest } from '../../agent/etcd/proto-json.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const serve = serveEtcdHttp;

describe('read-only mode (how the agent serves APISIX)', () => {
  it("refuses writes with etcd's permission error, keeps reads working", async () => {
    const { store, post } = await serve({ readOnly: true });
    store.write([{ op: 'put', key: '/apisix/routes/1', value: '{"uri":"/"}' }]);
    for (const [path, body] of [
      ['/v3/kv/put', { key: b64('/apisix/routes/2'), value: b64('{}') }],
      ['/v3/kv/deleterange', { key: b64('/apisix/routes/1') }],
      ['/v3/kv/txn', { success: [{ request_put: { key: b64('/x'), value: b64('y') } }] }],
      ['/v3/kv/compaction', { revision: 2 }],
    ] as const) {
      const r = await post(path, body);
      expect(r.status, path).toBe(403);
      expect(r.json).toEqual({ error: 'etcdserver: permission denied', message: 'etcdserver: permission denied', code: 7 });
    }
    expect(store.revision).toBe(2);
    const read = await post('/v3/kv/range', { key: b64('/apisix/routes/1') });
    expect(read.status).toBe(200);
    expect(read.json.kvs).toHaveLength(1);
    // a txn that only reads is fine
    expect((await post('/v3/kv/txn', { success: [{ request_range: { key: b64('/apisix/routes/1') } }] })).status).toBe(200);
  });

  it("accepts APISIX CLI's init_dir markers (exact bytes), writing each only once", async () => {
    const { store, post } = await serve({ readOnly: true });
    const body = '{"value":"' + b64('init_dir') + '", "key":"' + b64('/apisix/routes/') + '"}';
    const first = await post('/v3/kv/put', body);
    expect(first.status).toBe(200);
    expect(first.json.header.revision).toBe('2');
    const again = await post('/v3/kv/put', body);
    expect(again.json.header.revision).toBe('2');
    expect(store.revision).toBe(2);
    // same key, other value: refused
    expect((await post('/v3/kv/put', { key: b64('/apisix/routes/'), value: b64('x') })).status).toBe(403);
  });
});

describe('gateway framing and errors', () => {
  it('/version, /health, unknown paths, wrong methods answer like etcd', async () => {
    const { base } = await serve();
    const v = await fetch(`${base}/version`);
    expect(await v.json()).toEqual({ etcdserver: '3.4.23', etcdcluster: '3.4.0' });
    expect(await (await fetch(`${base}/health`)).text()).toBe('{"health":"true"}');
    const nf = await fetch(`${base}/v2/keys/a`);
    expect([nf.status, await nf.text()]).toEqual([404, '404 page not found\n']);
    const nf3 = await fetch(`${base}/v3/kv/rangex`, { method: 'POST' });
    expect([nf3.status, await nf3.text()]).toEqual([404, 'Not Found\n']);
    const m = await fetch(`${base}/version`, { method: 'POST' });
    expect([m.status, m.headers.get('allow')]).toEqual([405, 'GET']);
  });

  it('large answers are chunked, small ones carry Content-Length; cached answers stay correct across revisions', async () => {
    const { store, post, base } = await serve();
    for (let i = 0; i < 5; i++) store.write([{ op: 'put', key: `/apisix/routes/${i}`, value: 'x'.repeat(1000) }]);
    const body = JSON.stringify({ key: b64('/apisix/routes/'), range_end: b64('/apisix/routes0') });
    const r = await fetch(`${base}/v3/kv/range`, { method: 'POST', body });
    expect(r.headers.get('transfer-encoding')).toBe('chunked');
    expect(((await r.json()) as { count: string }).count).toBe('5');
    store.write([{ op: 'delete', key: '/apisix/routes/0' }]);
    const again = await post('/v3/kv/range', body);
    expect(again.json.count).toBe('4');
    expect(again.json.header.revision).toBe(String(store.revision));
    const small = await fetch(`${base}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: b64('/none') }) });
    expect(small.headers.get('content-length')).not.toBeNull();
  });

  it('auth: a configured root password is checked, tokens are required', async () => {
    const { post } = await serve({ rootPassword: 's3cret' });
    expect((await post('/v3/auth/authenticate', { name: 'root', password: 'wrong' })).status).toBe(400);
    const ok = await post('/v3/auth/authenticate', { name: 'root', password: 's3cret' });
    expect(ok.json.token).toMatch(/^[A-Za-z]{16}\.\d+$/);
    const denied = await post('/v3/kv/range', { key: b64('/a') });
    expect(denied.json.error).toBe('etcdserver: user name is empty');
    expect((await post('/v3/kv/range', { key: b64('/a') }, { Authorization: ok.json.token })).status).toBe(200);
    expect((await post('/v3/kv/range', { key: b64('/a') }, { Authorization: 'bogus' })).status).toBe(401);
  });
});

describe("Go's JSON and base64 rules", () => {
  it('reads only the first JSON value, with Go error texts', () => {
    expect(firstJsonValue('{"a":1} trailing').text).toBe('{"a":1}');
    expect(() => firstJsonValue('{"key":"YQ=="')).toThrow('unexpected EOF');
    expect(() => firstJsonValue('not json')).toThrow("invalid character 'o' in literal null (expecting 'u')");
    expect(() => firstJsonValue('{"a" 1}')).toThrow("invalid character '1' after object key");
  });

  it('decodes requests like grpc-gateway: camelCase wins, int64 strings, strict base64 and bools', () => {
    const d = decodeBody(JSON.stringify({ key: b64('/a'), range_end: b64('/ab0'), rangeEnd: b64('/a0'), limit: '2' }), RangeRequest);
    expect((d.range_end as Buffer).toString()).toBe('/a0');
    expect(d.limit).toBe(2n);
    expect(() => decodeBase64('YQ')).toThrow('illegal base64 data at input byte 0');
    expect(() => decodeBase64('_-8=')).toThrow('illegal base64 data at input byte 0');
    expect(() => decodeBody('{"key":"L2E=","keys_only":"true"}', RangeRequest)).toThrow('cannot unmarshal string into Go value of type bool');
    expect(() => decodeBody('{"key":"L2E=","limit":1.5}', RangeRequest)).toThrow('cannot unmarshal number 1.5 into Go value of type int64');
    expect(() => decodeBody('{"key":"L2E=","sort_order":"descend"}', RangeRequest)).toThrow('unknown value "descend" for enum etcdserverpb.RangeRequest_SortOrder');
    expect(decodeBody('', RangeRequest)).toEqual({});
  });
});
