// The agent fetches remote JWKS for APISIX: against a real HTTP server on loopback that answers
// well, slowly, too much, wrongly, or not at all. Keys live no longer than the cache duration.
import { spawn } from 'node:child_process';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { JwksFetcher } from '../../agent/policy/jwks-fetcher.js';
import type { RemoteJwksSource, RemoteJwksState } from '../../agent/policy/jwt.js';
import { jwksOf, signingKey } from '../support/jwt-tokens.js';
import { createTestPki, dnsLeaf } from '../support/test-pki.js';
import { waitFor } from '../support/wait.js';
import { defaultInjectionConfig } from '../../webhook/config/injection-config.js';
import { injectSidecar } from '../../webhook/injection/sidecar.js';

const LITE_POD = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'ns' }, spec: { containers: [{ name: 'app', image: 'app:1' }] } };

const keyA = signingKey('ES256', 'a');
const keyB = signingKey('ES256', 'b');

describe('JwksFetcher', () => {
  let server: Server;
  let base: string;
  let answer: (res: ServerResponse, path: string) => void;
  let requests: string[];
  let fetcher: JwksFetcher | undefined;
  let changes: number;

  beforeEach(async () => {
    requests = [];
    changes = 0;
    answer = (res) => res.end(jwksOf(keyA));
    server = createServer((req, res) => {
      requests.push(req.url ?? '');
      answer(res, req.url ?? '');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterEach(async () => {
    fetcher?.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const start = (retry = { initialMs: 50, maxMs: 200 }) => (fetcher = new JwksFetcher({ onChange: () => changes++, retry }));
  const source = (path: string, extra: Partial<RemoteJwksSource> = {}): RemoteJwksSource => ({ uri: `${base}${path}`, timeoutMs: 1000, cacheMs: 60_000, ...extra });
  const state = (path: string): RemoteJwksState | undefined => fetcher!.states().get(`${base}${path}`);
  const kids = (s: RemoteJwksState | undefined): string[] | undefined => (s && 'keys' in s ? s.keys.map((k) => k.kid) : undefined);

  it('fetches a named JWKS at once and reports the change; the states object stays the same until something changes', async () => {
    start().want([source('/jwks')]);
    expect(state('/jwks')).toEqual({ failed: 'not fetched yet' });
    await waitFor(() => changes === 1, 5000);
    expect(kids(state('/jwks'))).toEqual(['a']);
    expect(fetcher!.states()).toBe(fetcher!.states());
  });

  it('fails closed on a 500, a redirect, invalid JSON, a JWKS without keys, a body over 256 KiB, no answer in time; retries until it works', async () => {
    const bad: Record<string, (res: ServerResponse) => void> = {
      '/500': (res) => res.writeHead(500).end(),
      '/redirect': (res) => res.writeHead(302, { location: '/jwks' }).end(),
      '/json': (res) => res.end('{"keys": ['),
      '/nokeys': (res) => res.end('{"keys": []}'),
      '/huge': (res) => res.end(`{"keys":[],"pad":"${'x'.repeat(300 * 1024)}"}`),
      '/slow': () => undefined,
    };
    answer = (res, path) => bad[path]!(res);
    // only /slow may run into its timeout: on a loaded machine the others' answers can take 300 ms too
    start().want(Object.keys(bad).map((p) => source(p, { timeoutMs: p === '/slow' ? 300 : 10_000 })));
    await waitFor(() => Object.keys(bad).every((p) => { const s = state(p); return s && 'failed' in s && s.failed !== 'not fetched yet'; }), 5000);
    expect(Object.fromEntries(Object.keys(bad).map((p) => [p, state(p)]))).toEqual({
      '/500': { failed: 'answered HTTP 500' },
      '/redirect': { failed: 'answered HTTP 302' },
      '/json': { failed: 'invalid JWKS: Jwks is an invalid JSON' },
      '/nokeys': { failed: "invalid JWKS: Jwks doesn't have any valid public key" },
      '/huge': { failed: `answer of ${18 + 300 * 1024 + 2} bytes is over the limit of 262144` },
      '/slow': { failed: 'no complete answer within 300 ms' },
    });
    answer = (res) => res.end(jwksOf(keyB));
    await waitFor(() => Object.keys(bad).every((p) => kids(state(p))?.[0] === 'b'), 5000);
  });

  it('refreshes before the cache duration ends; new keys are a change, the same keys are not', async () => {
    start().want([source('/jwks', { cacheMs: 400, timeoutMs: 100 })]);
    await waitFor(() => changes === 1, 5000);
    const fetched = requests.length;
    await waitFor(() => requests.length >= fetched + 2, 5000);
    expect(changes).toBe(1);
    answer = (res) => res.end(jwksOf(keyB));
    await waitFor(() => kids(state('/jwks'))?.[0] === 'b', 5000);
    expect(changes).toBe(2);
  });

  it('keys fetched before are used until their cache duration ends, not after, when the server goes away', async () => {
    start({ initialMs: 50, maxMs: 50 }).want([source('/jwks', { cacheMs: 2000, timeoutMs: 100 })]);
    await waitFor(() => changes === 1, 20_000);
    const fetchedAt = Date.now();
    answer = (res) => res.writeHead(503).end();
    // the refresh starts at half the cache duration and fails: the keys stay (1 s before they expire)
    await waitFor(() => requests.length >= 2, 20_000);
    expect(kids(state('/jwks'))).toEqual(['a']);
    await waitFor(() => { const s = state('/jwks'); return !!s && 'failed' in s; }, 20_000);
    expect(Date.now() - fetchedAt).toBeGreaterThanOrEqual(1900);
    expect(state('/jwks')).toEqual({ failed: 'keys expired, refresh failed' });
    expect(changes).toBe(2);
  }, 60_000); // timers run late while the whole suite runs in parallel: generous budgets, exact assertions

  it('forgets a JWKS no configuration names: no more requests', async () => {
    start().want([source('/jwks', { cacheMs: 200, timeoutMs: 50 })]);
    await waitFor(() => changes === 1, 5000);
    fetcher!.want([]);
    expect(fetcher!.states().size).toBe(0);
    const count = requests.length;
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(requests.length).toBe(count);
  });

  it('over HTTPS verifies the server\'s certificate against the system\'s roots: a certificate of an unknown CA fails closed', async () => {
    const pki = createTestPki('jwks-test');
    const leaf = dnsLeaf(pki.intermediate, ['localhost']);
    const tlsServer = createHttpsServer({ cert: leaf.cert, key: leaf.key }, (_req, res) => res.end(jwksOf(keyA)));
    await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
    try {
      const uri = `https://localhost:${(tlsServer.address() as AddressInfo).port}/jwks`;
      start().want([{ uri, timeoutMs: 2000, cacheMs: 60_000 }]);
      await waitFor(() => { const s = fetcher!.states().get(uri); return !!s && 'failed' in s && s.failed !== 'not fetched yet'; }, 5000);
      expect(fetcher!.states().get(uri)).toEqual({ failed: expect.stringMatching(/CERT|certificate|SIGNED/) });
    } finally {
      tlsServer.closeAllConnections();
      await new Promise((resolve) => tlsServer.close(resolve));
    }
  });

  it('works in V8\'s lite mode (agentLiteMode), which turns WebAssembly and with it fetch\'s HTTP parser off', async () => {
    // the built fetcher in a node of its own, with the flags the injection gives the agent then
    const lite = injectSidecar(LITE_POD, { ...defaultInjectionConfig, agentLiteMode: true }).spec!.containers.find((c) => c.name === 'apisix-mesh-agent')!.command!.slice(1, -1);
    const fetcherModule = fileURLToPath(new URL('../../dist/agent/policy/jwks-fetcher.js', import.meta.url));
    const script = `
      const { JwksFetcher } = await import(${JSON.stringify(fetcherModule)});
      const f = new JwksFetcher({ onChange: () => {
        const s = f.states().get(${JSON.stringify(`${base}/jwks`)});
        if ('keys' in s) { console.log(JSON.stringify({ kids: s.keys.map((k) => k.kid), wasm: typeof WebAssembly })); f.close(); }
      } });
      f.want([{ uri: ${JSON.stringify(`${base}/jwks`)}, timeoutMs: 2000, cacheMs: 60000 }]);
    `;
    const child = spawn(process.execPath, [...lite, '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual({ kids: ['a'], wasm: 'undefined' });
  });
});
