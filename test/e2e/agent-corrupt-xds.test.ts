// The whole agent (fake istiod → ADS → validation → translation → store) fed with resources that
// used to crash it or wipe its configuration: corrupt nested typed configs, a corrupt length prefix,
// an RE2-invalid regex, CR/LF in a header value. Each must be NACKed by name while the store keeps
// serving exactly the last good configuration; a valid push afterwards must still be applied.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../../agent/agent.js';
import { nodeIdentityFromEnv } from '../../agent/xds/node.js';
import { lookupMessage, TYPE_URL, type XdsKind } from '../../agent/xds/protos.js';
import { keyFromText, keyToText, prefixEnd } from '../../agent/store/keys.js';
import type { CanonicalResources } from '../../agent/xds/config-dump.js';
import { FakeIstiod } from '../support/fake-istiod.js';
import { loadCanonical } from '../support/xds-fixtures.js';
import { waitFor } from '../support/wait.js';
import { corrupt, nestedFields } from '../support/wire-corruption.js';
import { V1, withNestedConfigs } from '../support/nested-configs.js';

const identity = nodeIdentityFromEnv({ POD_NAME: 'productpage-v1-abc', POD_NAMESPACE: 'default', INSTANCE_IP: '10.244.1.30' });

let istiod: FakeIstiod;
let agent: RunningAgent;
let resources: CanonicalResources;

function served(): Map<string, string> {
  const prefix = keyFromText('/apisix/');
  const { kvs } = agent.store.range({ key: prefix, rangeEnd: prefixEnd(prefix) });
  return new Map(kvs.map((kv) => [keyToText(kv.key), Buffer.from(kv.value).toString('utf8')]));
}

/** Pushes the kind and returns the agent's answer to that response. */
async function push(kind: XdsKind) {
  const sent = istiod.responses.length;
  istiod.push([kind]);
  await waitFor(() => istiod.responses.length > sent);
  const response = istiod.responses.filter((r) => r.kind === kind).at(-1)!;
  await waitFor(() => istiod.requests.some((q) => q.nonce === response.nonce), 5000, `the answer to ${kind}`);
  return istiod.requests.find((q) => q.nonce === response.nonce)!;
}

/** The served bytes of a resource with its first nested length past the end inside `within`. */
function overrunInside(kind: XdsKind, name: string, within: string): Uint8Array {
  const good = istiod.bytesOf(kind, name);
  const field = nestedFields(lookupMessage(TYPE_URL[kind])!, good).find((f) => f.path.includes(within) && 2 ** (7 * f.lengthWidth) - 1 > f.parentEnd - f.start);
  if (!field) throw new Error(`no nested field inside ${within}`);
  return corrupt(good, field, 'overrun');
}

function routeConfig(): { name: string; virtual_hosts: Array<{ routes: Array<Record<string, unknown>> }> } {
  return structuredClone(resources.route.find((r) => r['name'] === '9080')) as never;
}

/** Expects the push to be NACKed naming the resource, and the store to stay exactly as it was. */
async function expectRefused(kind: XdsKind, mention: string, detail?: RegExp) {
  const before = served();
  const revision = agent.store.revision;
  const answer = await push(kind);
  expect(answer.verdict).toBe('nack');
  expect(answer.error).toContain(mention);
  if (detail) expect(answer.error).toMatch(detail);
  await new Promise((r) => setTimeout(r, 150)); // longer than the coalescing window
  expect(served()).toEqual(before);
  expect(agent.store.revision).toBe(revision);
}

beforeAll(async () => {
  resources = withNestedConfigs(loadCanonical('synthetic-reviews-xds-responses.json'));
  istiod = new FakeIstiod(resources);
  const port = await istiod.start();
  agent = await startAgent({
    xdsAddress: `127.0.0.1:${port}`, identity, etcdHost: '127.0.0.1', etcdPort: 0, statusHost: '127.0.0.1', statusPort: 0,
    coalesceMs: 20, maxCoalesceMs: 100, backoff: { initialMs: 50, maxMs: 300 }, logger: { level: 'silent' },
  });
  await waitFor(() => agent.isReady(), 10_000, 'the first configuration');
});

afterAll(async () => {
  await agent?.close();
  await istiod?.stop();
});

describe('the agent refuses what Envoy would, and keeps serving the last good configuration', () => {
  it('a corrupt HttpProtocolOptions inside a cluster', async () => {
    istiod.setRaw('cluster', V1, overrunInside('cluster', V1, '<HttpProtocolOptions>'));
    await expectRefused('cluster', JSON.stringify(V1), /HttpProtocolOptions/);
    istiod.clearRaw();
  });

  it('a corrupt HTTP connection manager inside a listener', async () => {
    istiod.setRaw('listener', '0.0.0.0_9080', overrunInside('listener', '0.0.0.0_9080', '<HttpConnectionManager>'));
    await expectRefused('listener', '"0.0.0.0_9080"', /HttpConnectionManager/);
    istiod.clearRaw();
  });

  it('a corrupt fault filter config inside a route', async () => {
    istiod.setRaw('route', '9080', overrunInside('route', '9080', '<HTTPFault>'));
    await expectRefused('route', '"9080"', /HTTPFault/);
    istiod.clearRaw();
  });

  it('a cluster whose name length prefix is corrupt', async () => {
    const bytes = Uint8Array.from(istiod.bytesOf('cluster', V1));
    // the name (field 1, first) swallows the next field's two bytes: protobufjs reads on happily
    // (a cluster named "…local\x10\x03" in place of V1: a deletion); a name no longer names it
    bytes[1]! += 2;
    istiod.setRaw('cluster', V1, bytes);
    await expectRefused('cluster', V1, /invalid name/);
    istiod.clearRaw();
    bytes[1] = 1; // a name of one byte, the rest unreadable: refused, quoting what can be read
    istiod.setRaw('cluster', V1, bytes);
    await expectRefused('cluster', '"o" as far as it can be read', /undecodable/);
    istiod.clearRaw();
  });

  it('a regex RE2 refuses (a backreference)', async () => {
    const rc = routeConfig();
    rc.virtual_hosts[0]!.routes[0]!['match'] = { safe_regex: { regex: '/(a+)\\1' } };
    istiod.set('route', rc);
    await expectRefused('route', '"9080"', /invalid RE2 regex/);
  });

  it('CR/LF in a header value to add', async () => {
    const rc = routeConfig();
    rc.virtual_hosts[0]!.routes[0]!['request_headers_to_add'] = [{ header: { key: 'x-a', value: 'b\r\nx-injected: 1' } }];
    istiod.set('route', rc);
    await expectRefused('route', '"9080"', /header value/);
  });

  it('a valid push is still applied, and a header value that names a variable stays literal', async () => {
    const rc = routeConfig();
    rc.virtual_hosts[0]!.routes[0]!['request_headers_to_add'] = [{ header: { key: 'x-copy', value: '$http_authorization' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }];
    istiod.set('route', rc);
    expect((await push('route')).verdict).toBe('ack');
    await waitFor(() => [...served().values()].some((v) => v.includes('x-copy')), 5000, 'the new route');
    const route = JSON.parse([...served().values()].find((v) => v.includes('x-copy'))!) as { plugins: { 'proxy-rewrite': { headers: { set: Record<string, string> } } } };
    expect(route.plugins['proxy-rewrite'].headers.set['x-copy']).toBe('${apisix_mesh_dollar}http_authorization');
  });
});
