import net from 'node:net';
import { afterEach, expect, it } from 'vitest';
import { KvStore } from '../../agent/store/store.js';
import { startEtcdServer, type EtcdServer } from '../../agent/etcd/server.js';
import { waitForEtcdClientsToLeave } from '../../agent/shutdown.js';

// The agent's SIGTERM path: it keeps serving while APISIX (a client of its etcd API) is connected.
let server: EtcdServer | undefined;
const sockets: net.Socket[] = [];
afterEach(async () => {
  for (const s of sockets) s.destroy();
  await server?.close();
});

async function connect(port: number): Promise<net.Socket> {
  const s = net.connect(port, '127.0.0.1');
  sockets.push(s);
  await new Promise((resolve) => s.once('connect', resolve));
  return s;
}

it('waits while a client is connected, returns once it has gone; gives up after its timeout', async () => {
  server = await startEtcdServer({ store: new KvStore(), port: 0, readOnly: true });
  expect(await waitForEtcdClientsToLeave({ clients: () => server!.clientConnections(), timeoutMs: 1000 })).toBe('left');
  const client = await connect(server.httpPort);
  for (let i = 0; i < 50 && (await server.clientConnections()) === 0; i++) await new Promise((r) => setTimeout(r, 10));
  expect(await server.clientConnections()).toBe(1);
  expect(await waitForEtcdClientsToLeave({ clients: () => server!.clientConnections(), timeoutMs: 200, pollMs: 20 })).toBe('timeout');
  const waiting = waitForEtcdClientsToLeave({ clients: () => server!.clientConnections(), timeoutMs: 10_000, pollMs: 20 });
  setTimeout(() => client.destroy(), 100);
  expect(await waiting).toBe('left');
});
