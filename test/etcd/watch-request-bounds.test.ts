import net from 'node:net';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { KvStore } from '../../agent/store/store.js';
import { startEtcdServer, type EtcdServer, type EtcdServerOptions } from '../../agent/etcd/server.js';
import { JsonValueSplitter } from '../../agent/etcd/json-values.js';
import { firstJsonValue } from '../../agent/etcd/go-json.js';
import { waitFor } from '../support/wait.js';

/**
 * A watch request body is a stream of JSON messages that may stay open: what it holds while a
 * message is unfinished is bounded in size and in time, and finding where messages end is linear.
 */
const b64 = (s: string) => Buffer.from(s).toString('base64');
let servers: EtcdServer[] = [];
let sockets: net.Socket[] = [];
afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets = [];
  for (const s of servers) await s.close();
  servers = [];
});

async function serve(opts: Partial<EtcdServerOptions> = {}) {
  const store = new KvStore();
  const server = await startEtcdServer({ store, port: 0, ...opts });
  servers.push(server);
  return { store, server };
}

/** A raw connection sending a chunked watch request whose body the test writes piece by piece. */
function rawWatch(port: number) {
  const socket = net.connect(port, '127.0.0.1');
  sockets.push(socket);
  let received = '';
  const state = { closed: false };
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => (received += d));
  socket.on('close', () => (state.closed = true));
  socket.on('error', () => {});
  // Expect: 100-continue: etcd's Go server then answers while the body is still open.
  socket.write('POST /v3/watch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n');
  const chunk = (text: string) => socket.write(`${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`);
  return { socket, chunk, state, received: () => received };
}

describe('watch request bodies are bounded', () => {
  it("a message over the size bound is refused as etcd refuses one (429, in-stream error), nothing kept", async () => {
    const { server } = await serve();
    const w = rawWatch(server.httpPort);
    w.chunk(`{"create_request":{"key":"`);
    const piece = 'A'.repeat(64 * 1024);
    for (let i = 0; i < 64 && !w.state.closed && !w.received().includes('grpc_code'); i++) {
      w.chunk(piece);
      await new Promise((r) => setImmediate(r));
    }
    await waitFor(() => w.received().includes('"grpc_code":8'), 5000, 'the size refusal');
    expect(w.received()).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 429 Too Many Requests\r\n/);
    expect(w.received()).toMatch(/\{"error":\{"grpc_code":8,"http_code":429,"message":"grpc: received message larger than max \(\d+ vs\. \d+\)","http_status":"Too Many Requests"\}\}/);
  });

  it('a message that does not arrive whole in time ends the stream (504, in-stream error)', async () => {
    const { server } = await serve({ watchRequestTimeoutMs: 300, watchDrainGraceMs: 300 });
    const w = rawWatch(server.httpPort);
    w.chunk(`{"create_request":{"key":"${b64('/a')}"`); // never finished
    await waitFor(() => w.received().includes('grpc_code'), 5000, 'the timeout');
    expect(w.received()).toContain('HTTP/1.1 504 Gateway Timeout');
    expect(w.received()).toContain('{"error":{"grpc_code":4,"http_code":504,"message":"context deadline exceeded","http_status":"Gateway Timeout"}}');
    // The client keeps the connection open and sends nothing more: it is closed.
    await waitFor(() => w.state.closed, 5000, 'the connection to be closed');
  });

  it('messages that keep arriving whole keep the stream open, however long it lasts', async () => {
    const { store, server } = await serve({ watchRequestTimeoutMs: 300 });
    const w = rawWatch(server.httpPort);
    const create = JSON.stringify({ create_request: { key: b64('/a'), watch_id: 1 } });
    // Every message split across two chunks, the stream open for several timeout periods.
    for (let id = 1; id <= 8; id++) {
      const m = create.replace('"watch_id":1', `"watch_id":${id}`);
      w.chunk(m.slice(0, 10));
      await new Promise((r) => setTimeout(r, 100));
      w.chunk(m.slice(10));
      await new Promise((r) => setTimeout(r, 100));
    }
    await waitFor(() => store.watcherCount === 8, 5000, 'eight watchers');
    expect(w.received()).not.toContain('grpc_code');
    expect(w.state.closed).toBe(false);
  });
});

describe('JsonValueSplitter', () => {
  const value = fc.oneof(
    fc.json(),
    fc.constantFrom('{"a" 1}', 'xyz', '{"a":"\\q"}', '[1,]', '"\\u12"', 'tru', '{"a":"b}"}', '{"a":"\\"}"}'),
  );

  it('finds the same values and the same Go error whatever the chunking', () => {
    fc.assert(
      fc.property(fc.array(value, { maxLength: 5 }), fc.array(fc.nat(), { maxLength: 6 }), (values, cuts) => {
        const text = values.join(' \n');
        const run = (chunks: string[]) => {
          const s = new JsonValueSplitter(1 << 20);
          const out: string[] = [];
          for (const c of chunks) {
            const r = s.push(c);
            out.push(...r.values);
            if (r.error) return { out, error: r.error.message };
          }
          const e = s.end();
          out.push(...e.values);
          return { out, error: e.error?.message };
        };
        const points = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
        const chunks = [0, ...points].map((p, i, all) => text.slice(p, all[i + 1] ?? text.length));
        expect(run(chunks)).toEqual(run([text]));
      }),
      { numRuns: 500 },
    );
  });

  it('reads valid values exactly as firstJsonValue does', () => {
    fc.assert(
      fc.property(fc.json(), (json) => {
        const s = new JsonValueSplitter(1 << 20);
        const got = [...s.push(json).values, ...s.end().values];
        expect(got).toEqual([firstJsonValue(json).text]);
      }),
    );
  });

  it('refuses nesting deeper than its limit with Go\'s error instead of overflowing the stack', () => {
    expect(() => firstJsonValue('['.repeat(100_000))).toThrow('exceeded max depth');
    const s = new JsonValueSplitter(1 << 20);
    expect(s.push('['.repeat(5000) + ']'.repeat(5000)).error?.message).toBe('exceeded max depth');
  });
});
