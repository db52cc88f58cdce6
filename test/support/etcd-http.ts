import { afterEach } from 'vitest';
import { KvStore } from '../../agent/store/store.js';
import { startEtcdServer, type EtcdServer } from '../../agent/etcd/server.js';

/**
 * An etcd API on a free loopback port over a fresh store, and `post` for its HTTP/JSON gateway; every
 * server a test file starts is closed after each test (the afterEach is registered on import).
 */
const servers: EtcdServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

export interface EtcdHttpOptions {
  readOnly?: boolean;
  rootPassword?: string;
  maxLeases?: number;
}

export async function serveEtcdHttp(opts: EtcdHttpOptions = {}) {
  const store = new KvStore(opts.maxLeases !== undefined ? { maxLeases: opts.maxLeases } : {});
  const server = await startEtcdServer({
    store,
    port: 0,
    readOnly: opts.readOnly ?? false,
    ...(opts.rootPassword !== undefined ? { rootPassword: opts.rootPassword } : {}),
  });
  servers.push(server);
  const base = `http://127.0.0.1:${server.httpPort}`;
  const post = async (path: string, body: unknown, headers: Record<string, string> = {}) => {
    const r = await fetch(base + path, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body), headers });
    const text = await r.text();
    return { status: r.status, text, json: (() => { try { return JSON.parse(text); } catch { return undefined; } })() };
  };
  return { store, server, base, post };
}
