// Corrupt bytes nested inside every resource type, served by the fake istiod over a real ADS stream:
// the client must live, NACK the response naming the resource, keep serving its last good version,
// and whatever it holds must translate. Corruptions a strict parser must refuse (a nested length
// running past its message, invalid UTF-8, a wrong wire type) are checked apart from arbitrary
// byte overwrites (which may or may not leave a valid message).
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdsClient } from '../../agent/xds/ads-client.js';
import { buildNode, nodeIdentityFromEnv } from '../../agent/xds/node.js';
import { lookupMessage, TYPE_URL, type XdsKind } from '../../agent/xds/protos.js';
import { translateMesh, type XdsResources } from '../../agent/translate/snapshot.js';
import { FakeIstiod } from '../support/fake-istiod.js';
import { loadCanonical } from '../support/xds-fixtures.js';
import { waitFor } from '../support/wait.js';
import { XdsMirror } from '../support/xds-mirror.js';
import { applicable, corrupt, nestedFields } from '../support/wire-corruption.js';
import { withNestedConfigs, V1 } from '../support/nested-configs.js';

const node = buildNode(nodeIdentityFromEnv({ POD_NAME: 'productpage-v1-abc', POD_NAMESPACE: 'default', INSTANCE_IP: '10.244.1.30' }), 'test');

/** One resource of each type, each with nested typed configs (Any payloads) to corrupt. */
const TARGETS: Array<{ kind: XdsKind; name: string }> = [
  { kind: 'cluster', name: V1 },
  { kind: 'endpoint', name: V1 },
  { kind: 'listener', name: '0.0.0.0_9080' },
  { kind: 'route', name: '9080' },
];

let istiod: FakeIstiod;
let client: AdsClient;
/** what the client reported (its `changes` events), decoded */
let mirror: XdsMirror;

beforeAll(async () => {
  istiod = new FakeIstiod(withNestedConfigs(loadCanonical('synthetic-reviews-xds-responses.json')));
  const port = await istiod.start();
  client = new AdsClient({ address: `127.0.0.1:${port}`, node, backoff: { initialMs: 20, maxMs: 200 } });
  mirror = new XdsMirror(client);
  client.start();
  await waitFor(() => client.isComplete(), 10_000, 'a complete snapshot');
});

afterAll(async () => {
  client?.stop();
  await istiod?.stop();
});

function held(kind: XdsKind, name: string): unknown {
  const r: XdsResources = mirror.resources();
  const byKind = { cluster: r.clusters, endpoint: r.endpoints, listener: r.listeners, route: r.routeConfigs }[kind];
  return byKind.get(name);
}

/** Serves bytes as the resource and returns the client's answer to that response. */
async function serve(kind: XdsKind, name: string, bytes: Uint8Array) {
  istiod.setRaw(kind, name, bytes);
  const sent = istiod.responses.length;
  istiod.push([kind], kind === 'cluster' || kind === 'listener' ? undefined : [name]);
  await waitFor(() => istiod.responses.length > sent);
  const response = istiod.responses.filter((r) => r.kind === kind).at(-1)!;
  await waitFor(() => istiod.requests.some((q) => q.nonce === response.nonce), 5000, `the answer to ${kind} ${response.nonce}`);
  return istiod.requests.find((q) => q.nonce === response.nonce)!;
}

describe('corrupt nested bytes of every resource type', () => {
  for (const { kind, name } of TARGETS) {
    it(`${kind}: a corruption a strict parser refuses is NACKed by name and the last good version stays`, async () => {
      const good = istiod.bytesOf(kind, name);
      const fields = nestedFields(lookupMessage(TYPE_URL[kind])!, good);
      expect(fields.length).toBeGreaterThan(5);
      await fc.assert(
        fc.asyncProperty(fc.nat(), fc.nat(), async (pickField, pickHow) => {
          const field = fields[pickField % fields.length]!;
          const ways = applicable(field);
          fc.pre(ways.length > 0);
          const before = held(kind, name);
          const answer = await serve(kind, name, corrupt(good, field, ways[pickHow % ways.length]!));
          expect(answer.verdict, `${field.path}`).toBe('nack');
          expect(answer.error).toContain(JSON.stringify(name));
          expect(held(kind, name)).toBe(before);
          expect(() => translateMesh(mirror.resources())).not.toThrow();
        }),
        { numRuns: 30 },
      );
      istiod.clearRaw();
      expect((await serve(kind, name, good)).verdict).toBe('ack');
    });

    it(`${kind}: any byte overwritten inside it is ACKed or NACKed, and what is held translates`, async () => {
      const good = istiod.bytesOf(kind, name);
      const fields = nestedFields(lookupMessage(TYPE_URL[kind])!, good);
      await fc.assert(
        fc.asyncProperty(fc.nat(), fc.nat(), fc.integer({ min: 0, max: 255 }), async (pickField, pickByte, value) => {
          const field = fields[pickField % fields.length]!;
          fc.pre(field.end > field.start);
          const bad = Uint8Array.from(good);
          bad[field.start + (pickByte % (field.end - field.start))] = value;
          const answer = await serve(kind, name, bad);
          expect(['ack', 'nack']).toContain(answer.verdict);
          if (answer.verdict === 'nack') expect(answer.error).toContain(JSON.stringify(name));
          expect(held(kind, name)).toBeDefined();
          expect(() => translateMesh(mirror.resources())).not.toThrow();
        }),
        { numRuns: 30 },
      );
      istiod.clearRaw();
      expect((await serve(kind, name, good)).verdict).toBe('ack');
    });
  }
});
