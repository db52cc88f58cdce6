import http from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { afterEach, describe, expect, it } from 'vitest';
import { KvStore } from '../../agent/store/store.js';
import { startEtcdServer, type EtcdServer, type EtcdServerOptions } from '../../agent/etcd/server.js';
import { waitFor } from '../support/wait.js';

/**
 * A watcher that does not read must not make the server buffer without end. Past a per-stream bound
 * of queued bytes the stream's watches are cancelled the way etcd cancels a watcher that fell
 * behind (`canceled` + `compact_revision`: APISIX reloads and rewatches from there) and the stream
 * ends; one that still does not read is then closed. Watchers that read are not touched.
 */
const b64 = (s: string) => Buffer.from(s).toString('base64');
const VALUE = 'v'.repeat(100 * 1024);
let servers: EtcdServer[] = [];
let cleanups: Array<() => void> = [];
afterEach(async () => {
  for (const c of cleanups) c();
  cleanups = [];
  for (const s of servers) await s.close();
  servers = [];
});

async function serve(opts: Partial<EtcdServerOptions> = {}) {
  const store = new KvStore();
  const server = await startEtcdServer({ store, port: 0, grpcPort: 0, ...opts });
  servers.push(server);
  return { store, server };
}

interface WatchMessage {
  result?: { header: { revision?: string }; created?: boolean; canceled?: boolean; compact_revision?: string; watch_id?: string; events?: Array<{ kv: { mod_revision: string } }> };
  error?: unknown;
}

const keepAlive = new http.Agent({ keepAlive: true });

/**
 * An HTTP watch on /w/ whose reading the test controls (a paused response stops reading the
 * socket). Keep-alive, as APISIX's client: the server does not close the connection on its own
 * when the response ends.
 */
function httpWatch(port: number, watchId = 0) {
  const messages: WatchMessage[] = [];
  let buf = '';
  let res: http.IncomingMessage | undefined;
  const state = { ended: false, closed: false };
  const body = JSON.stringify({ create_request: { key: b64('/w/'), range_end: b64('/w0'), ...(watchId ? { watch_id: watchId } : {}) } });
  const req = http.request({ host: '127.0.0.1', port, path: '/v3/watch', method: 'POST', agent: keepAlive, headers: { 'Content-Length': Buffer.byteLength(body) } }, (r) => {
    res = r;
    r.setEncoding('utf8');
    r.on('data', (c: string) => {
      buf += c;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        messages.push(JSON.parse(buf.slice(0, i)) as WatchMessage);
        buf = buf.slice(i + 1);
      }
    });
    r.on('end', () => (state.ended = true));
    r.on('error', () => {});
    r.on('close', () => (state.closed = true));
    r.socket.on('close', () => (state.closed = true));
  });
  req.on('error', () => (state.closed = true));
  req.end(body);
  cleanups.push(() => req.destroy());
  return {
    messages,
    state,
    created: () => waitFor(() => messages.some((m) => m.result?.created), 5000, 'created'),
    pause: () => res!.pause(),
    resume: () => res!.resume(),
    lastRevision: () => {
      const withEvents = messages.filter((m) => m.result?.events);
      return withEvents.length ? Number(withEvents.at(-1)!.result!.header.revision) : 0;
    },
  };
}

/**
 * Writes `count` 100 KiB values, one revision each: after each, waits for `reader` to have it, or
 * without a reader writes them all at once (more than the kernel's socket buffers take).
 */
async function putMany(store: KvStore, count: number, reader?: { lastRevision(): number }) {
  for (let i = 0; i < count; i++) {
    const rev = store.write([{ op: 'put', key: `/w/${i % 10}`, value: VALUE }]);
    if (reader) await readerHas(reader, rev);
  }
}

/** Yields to the event loop until the reading watcher has `rev` (tighter than waitFor's 20 ms polls). */
async function readerHas(reader: { lastRevision(): number }, rev: number) {
  const deadline = Date.now() + 5000;
  while (reader.lastRevision() < rev) {
    if (Date.now() > deadline) throw new Error(`revision ${rev} never reached the reading watcher`);
    await new Promise((r) => setImmediate(r));
  }
}

describe('HTTP watch streams bound what they buffer', () => {
  it('cancels a watcher that stopped reading as etcd cancels one that fell behind; a reading watcher is untouched', async () => {
    const { store, server } = await serve({ watchBufferBytes: 1024 * 1024, watchDrainGraceMs: 60_000 });
    const slow = httpWatch(server.httpPort);
    const good = httpWatch(server.httpPort);
    await slow.created();
    await good.created();
    slow.pause();
    const first = store.revision + 1;
    await putMany(store, 300, good);
    await waitFor(() => store.watcherCount === 1, 5000, 'the slow watcher to be cancelled');

    // The reading watcher saw every revision and no cancel.
    const goodRevs = good.messages.filter((m) => m.result?.events).map((m) => Number(m.result!.header.revision));
    expect(goodRevs).toEqual(Array.from({ length: 300 }, (_, i) => first + i));
    expect(good.messages.some((m) => m.result?.canceled)).toBe(false);

    // The slow one, once it reads again: every revision up to a point, then the cancel naming the
    // first revision it did not get, then the end of the stream.
    slow.resume();
    await waitFor(() => slow.state.ended, 10_000, 'the slow stream to end');
    const events = slow.messages.filter((m) => m.result?.events).map((m) => Number(m.result!.header.revision));
    expect(events.length).toBeGreaterThan(0);
    expect(events.length).toBeLessThan(300);
    expect(events).toEqual(Array.from({ length: events.length }, (_, i) => first + i));
    const last = slow.messages.at(-1)!.result!;
    expect(last.canceled).toBe(true);
    expect(Number(last.compact_revision)).toBe(events.at(-1)! + 1);
  });

  it('closes a cancelled stream that still does not read after the grace period, freeing what it held', async () => {
    const { store, server } = await serve({ watchBufferBytes: 8 * 1024 * 1024, watchDrainGraceMs: 300 });
    const slow = httpWatch(server.httpPort);
    await slow.created();
    slow.pause();
    await putMany(store, 300);
    expect(store.watcherCount).toBe(0);
    expect(server.watchQueuedBytes).toBeGreaterThan(8 * 1024 * 1024);
    expect(server.watchQueuedBytes).toBeLessThan(9 * 1024 * 1024);
    await waitFor(() => server.watchQueuedBytes === 0, 5000, 'the queued bytes to be dropped');
    // The client, reading at last, finds the stream cut short: no cancel at its end.
    slow.resume();
    await waitFor(() => slow.state.closed, 5000, 'the connection to be closed');
    expect(slow.messages.some((m) => m.result?.canceled)).toBe(false);
  });

  it('a bound on all streams together closes the stream with the largest backlog first', async () => {
    const { store, server } = await serve({ watchBufferBytes: 64 * 1024 * 1024, watchBufferTotalBytes: 2 * 1024 * 1024, watchDrainGraceMs: 60_000 });
    // Distinct watch ids: no two streams share an encoded message.
    const slow = [1, 2, 3].map((id) => httpWatch(server.httpPort, id));
    const good = httpWatch(server.httpPort);
    for (const w of [...slow, good]) await w.created();
    for (const w of slow) w.pause();
    await putMany(store, 200, good);
    await waitFor(() => store.watcherCount === 1, 5000, 'the slow watchers to be dropped');
    expect(good.messages.some((m) => m.result?.canceled)).toBe(false);
    expect(server.watchQueuedBytes).toBeLessThan(2 * 1024 * 1024 + 200 * 1024);
    for (const w of slow) w.resume();
    await waitFor(() => slow.every((w) => w.state.closed), 5000, 'their connections to be closed');
  });
});

describe('gRPC watch streams bound what they buffer', () => {
  function client(port: number) {
    const etcd3 = dirname(createRequire(import.meta.url).resolve('etcd3/package.json'));
    const def = protoLoader.loadSync(join(etcd3, 'proto/rpc.proto'), { keepCase: true, longs: String, defaults: false, oneofs: true });
    const pb = (grpc.loadPackageDefinition(def) as unknown as { etcdserverpb: Record<string, grpc.ServiceClientConstructor> }).etcdserverpb;
    const c = new pb.Watch!(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      Watch(): grpc.ClientDuplexStream<object, { created?: boolean; canceled?: boolean; compact_revision?: string; header: { revision: string }; events?: unknown[] }>;
    };
    cleanups.push(() => c.close());
    return c;
  }

  it('cancels a gRPC watcher that stopped reading, with compact_revision, and ends the call', async () => {
    const { store, server } = await serve({ watchBufferBytes: 1024 * 1024, watchDrainGraceMs: 60_000 });
    const call = client(server.grpcPort!).Watch();
    const got: Array<{ created?: boolean; canceled?: boolean; compact_revision?: string; header: { revision: string }; events?: unknown[] }> = [];
    let ended = false;
    call.on('data', (m) => got.push(m));
    call.on('end', () => (ended = true));
    call.on('error', () => {});
    call.write({ create_request: { key: Buffer.from('/w/'), range_end: Buffer.from('/w0') } });
    await waitFor(() => got.some((m) => m.created), 5000, 'created');
    call.pause();
    const first = store.revision + 1;
    await putMany(store, 300);
    await waitFor(() => store.watcherCount === 0, 10_000, 'the slow gRPC watcher to be cancelled');
    call.resume();
    await waitFor(() => ended, 10_000, 'the call to end');
    const revs = got.filter((m) => m.events?.length).map((m) => Number(m.header.revision));
    expect(revs.length).toBeLessThan(300);
    expect(revs).toEqual(Array.from({ length: revs.length }, (_, i) => first + i));
    const last = got.at(-1)!;
    expect(last.canceled).toBe(true);
    expect(Number(last.compact_revision)).toBe((revs.at(-1) ?? first - 1) + 1);
  });
});
