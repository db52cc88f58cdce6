// The ADS client against the fake istiod (test/support/fake-istiod.ts), which serves real fixture
// resources over a real gRPC stream and behaves like istiod (stale nonces ignored, NACKs never
// answered, partial EDS, Unavailable at first, streams closed).
import { afterEach, describe, expect, it } from 'vitest';
import { AdsClient } from '../../agent/xds/ads-client.js';
import { buildNode, nodeIdentityFromEnv } from '../../agent/xds/node.js';
import { FakeIstiod } from '../support/fake-istiod.js';
import { loadCanonical } from '../support/xds-fixtures.js';
import { waitFor } from '../support/wait.js';
import { XdsMirror } from '../support/xds-mirror.js';

const env = { POD_NAME: 'productpage-v1-abc', POD_NAMESPACE: 'default', INSTANCE_IP: '10.244.1.30', SERVICE_ACCOUNT: 'bookinfo-productpage', ISTIO_META_MESH_ID: 'cluster.local', ISTIO_METAJSON_LABELS: '{"app":"productpage","version":"v1"}' };
const node = buildNode(nodeIdentityFromEnv(env), 'test');

let istiod: FakeIstiod;
let client: AdsClient | undefined;
/** what the client reported (its `changes` events), decoded */
let mirror: XdsMirror;
afterEach(async () => {
  client?.stop();
  client = undefined;
  await istiod?.stop();
});

async function connect(fixture = 'synthetic-reviews-xds-responses.json', unavailable = 0) {
  istiod = new FakeIstiod(loadCanonical(fixture));
  istiod.unavailableStreams = unavailable;
  const port = await istiod.start();
  client = new AdsClient({ address: `127.0.0.1:${port}`, node, backoff: { initialMs: 20, maxMs: 200 } });
  mirror = new XdsMirror(client);
  client.start();
  await waitFor(() => client!.isComplete(), 10_000, 'a complete snapshot');
  return client;
}

describe('ADS client against the fake istiod', () => {
  it('subscribes wildcard CDS/LDS, then EDS/RDS by name, and gets the full state', async () => {
    const c = await connect();
    const r = mirror.resources();
    expect([...r.clusters.keys()].sort()).toEqual([...istiodNames('cluster')].sort());
    expect(r.endpoints.size).toBe(4);
    expect([...r.routeConfigs.keys()]).toEqual(['9080']);
    const first = istiod.requests[0]!;
    expect(first.node?.['id']).toBe('sidecar~10.244.1.30~productpage-v1-abc.default~default.svc.cluster.local');
    expect(istiod.requests.filter((q) => q.node).length).toBe(1); // node only on the first message
    const eds = istiod.requests.find((q) => q.kind === 'endpoint')!;
    expect(eds.names).toEqual([...r.endpoints.keys()].sort());
    expect(eds.nonce).toBe('');
  });

  it('sends node metadata typed as istiod parses it', async () => {
    await connect();
    const fields = (istiod.requests[0]!.node!['metadata'] as { fields: Record<string, Record<string, unknown>> }).fields;
    expect(fields['INSTANCE_IPS']).toMatchObject({ stringValue: '10.244.1.30' });
    expect(fields['NAMESPACE']).toMatchObject({ stringValue: 'default' });
    expect(fields['SERVICE_ACCOUNT']).toMatchObject({ stringValue: 'bookinfo-productpage' });
    expect(fields['CLUSTER_ID']).toMatchObject({ stringValue: 'Kubernetes' });
    expect(fields['MESH_ID']).toMatchObject({ stringValue: 'cluster.local' });
    const labels = (fields['LABELS']!['structValue'] as { fields: Record<string, { stringValue: string }> }).fields;
    expect(labels['app']!.stringValue).toBe('productpage');
  });

  it('ACKs every response with its nonce, its version and the full name list', async () => {
    await connect();
    await waitFor(() => istiod.requests.filter((q) => q.verdict === 'ack').length >= istiod.responses.length);
    for (const response of istiod.responses) {
      const ack = istiod.requests.find((q) => q.nonce === response.nonce && q.verdict === 'ack');
      expect(ack, `ACK for ${response.kind} ${response.nonce}`).toBeDefined();
      if (response.kind === 'endpoint') expect(ack!.names.length).toBe(4);
    }
    expect(istiod.requests.filter((q) => q.verdict === 'stale')).toEqual([]);
  });

  it('NACKs a malformed response with error_detail, keeps the last good state, and is not answered', async () => {
    const c = await connect();
    const before = mirror.resources();
    const version = c.versions().cluster;
    const nacked = new Promise<string>((resolve) => c.once('nack', (_k, d: string) => resolve(d)));
    istiod.pushMalformed('cluster');
    expect(await nacked).toMatch(/duplicate cluster resource/);
    await waitFor(() => istiod.requests.some((q) => q.verdict === 'nack'));
    const nack = istiod.requests.find((q) => q.verdict === 'nack')!;
    const responsesAfterNack = istiod.responses.length;
    await new Promise((r) => setTimeout(r, 300));
    expect(istiod.responses.length).toBe(responsesAfterNack); // istiod does not answer a NACK
    expect(nack.versionInfo).toBe(version);
    expect(c.versions().cluster).toBe(version);
    expect([...mirror.resources().clusters.keys()]).toEqual([...before.clusters.keys()]);
    expect(c.names('cluster').sort()).toEqual([...before.clusters.keys()].sort());
    // the next good push is accepted again
    istiod.push(['cluster']);
    await waitFor(() => c.versions().cluster !== version);
  });

  it('a malformed response envelope ends the stream; the client reconnects and keeps its state', async () => {
    const c = await connect();
    const before = mirror.resources();
    // DiscoveryResponse { resources: [Any { type_url: length 7, 3 bytes in the Any }], 'xxxx',
    // nonce: "n" }: the Any's string runs on into the envelope ("abcxxxx"), which protobufjs reads
    // without complaint, and the envelope goes on with a nonce
    const any = Uint8Array.of(0x0a, 7, ...Buffer.from('abc'));
    const envelope = Uint8Array.of(0x12, any.length, ...any, ...Buffer.from('xxxx'), 0x2a, 1, ...Buffer.from('n'));
    const reconnects = c.stats.reconnects;
    istiod.writeRaw(envelope);
    await waitFor(() => c.stats.reconnects > reconnects, 5000, 'a reconnect');
    expect(mirror.resources().clusters.size).toBe(before.clusters.size);
    expect(c.names('cluster').length).toBe(before.clusters.size);
    await waitFor(() => istiod.streamCount === 1 && c.isComplete());
  });

  it('merges a partial EDS push by name', async () => {
    const c = await connect();
    const name = 'outbound|9080|v1|reviews.default.svc.cluster.local';
    const cla = structuredClone(istiod.get('endpoint', name)!) as { endpoints: Array<{ lb_endpoints: unknown[] }> };
    expect(cla.endpoints.length).toBe(2);
    cla.endpoints = cla.endpoints.slice(0, 1);
    istiod.set('endpoint', cla as unknown as Record<string, unknown>);
    const other = mirror.resources().endpoints.get('outbound|9080|v3|reviews.default.svc.cluster.local');
    const reported = mirror.changes.length;
    istiod.push(['endpoint'], [name]);
    await waitFor(() => mirror.resources().endpoints.get(name)?.endpoints?.length === 1);
    expect(mirror.resources().endpoints.size).toBe(4);
    expect(c.names('endpoint').length).toBe(4);
    // only the changed assignment is reported (decoded), the untouched one is not decoded again
    expect(mirror.changes.slice(reported).map((ch) => [ch.kind, [...ch.changed.keys()], ch.removed])).toEqual([['endpoint', [name], []]]);
    expect(mirror.resources().endpoints.get('outbound|9080|v3|reviews.default.svc.cluster.local')).toBe(other);
  });

  it('follows LDS: a new listener adds an RDS name, istiod answers with only that one, the rest is kept', async () => {
    const c = await connect();
    const kept = mirror.resources().routeConfigs.get('9080');
    const listener = structuredClone(istiod.get('listener', '0.0.0.0_9080')!) as Record<string, unknown>;
    const text = JSON.stringify(listener).replaceAll('9080', '8081');
    istiod.set('listener', JSON.parse(text) as Record<string, unknown>);
    istiod.set('route', { ...(JSON.parse(JSON.stringify(istiod.get('route', '9080')).replaceAll('"name":"9080"', '"name":"8081"')) as Record<string, unknown>) });
    istiod.push(['listener']);
    await waitFor(() => mirror.resources().routeConfigs.has('8081'));
    const partial = istiod.responses.filter((r) => r.kind === 'route').at(-1)!;
    expect(partial.names).toEqual(['8081']); // only the added name, as istiod does
    expect(mirror.resources().routeConfigs.get('9080')).toBe(kept);
    const ack = istiod.requests.filter((q) => q.kind === 'route' && q.verdict === 'ack').at(-1)!;
    await waitFor(() => istiod.requests.some((q) => q.kind === 'route' && q.nonce === partial.nonce));
    expect(istiod.requests.find((q) => q.kind === 'route' && q.nonce === partial.nonce)!.names).toEqual(['8081', '9080']);
    expect(ack).toBeDefined();
  });

  it('follows CDS: a removed cluster drops its EDS name and its assignment', async () => {
    const c = await connect();
    const gone = 'outbound|9080|v3|reviews.default.svc.cluster.local';
    istiod.remove('cluster', gone);
    istiod.push(['cluster']);
    await waitFor(() => !mirror.resources().endpoints.has(gone));
    expect(c.names('endpoint')).not.toContain(gone);
    expect(mirror.changes.filter((ch) => ch.removed.length).map((ch) => [ch.kind, ch.removed])).toEqual([['cluster', [gone]], ['endpoint', [gone]]]);
    await waitFor(() => istiod.requests.some((q) => q.kind === 'endpoint' && q.verdict === 'ack' && q.names.length === 3));
  });

  it('retries after Unavailable with backoff, then converges', async () => {
    const c = await connect('synthetic-reviews-xds-responses.json', 2);
    expect(c.stats.reconnects).toBeGreaterThanOrEqual(2);
    expect(mirror.resources().clusters.size).toBe(istiodNames('cluster').length);
  });

  it('reconnects after the server closes the stream, re-subscribing with empty nonces and keeping state meanwhile', async () => {
    const c = await connect();
    const before = mirror.resources();
    const firstStream = istiod.requests[0]!.stream;
    istiod.closeStreams();
    await waitFor(() => c.stats.reconnects >= 1);
    expect(mirror.resources().clusters.size).toBe(before.clusters.size); // last good state still served
    expect(c.names('cluster').length).toBe(before.clusters.size);
    const later = () => istiod.requests.filter((q) => q.stream !== firstStream);
    await waitFor(() => later().filter((q) => q.verdict === 'ack').length >= 4);
    const again = later();
    expect(again[0]!.node).toBeDefined();
    for (const kind of ['cluster', 'listener', 'endpoint', 'route'] as const) {
      const init = again.find((q) => q.kind === kind)!;
      expect(init.nonce, kind).toBe('');
    }
    expect(again.find((q) => q.kind === 'endpoint')!.names.length).toBe(4);
  });

  it('waits for every requested assignment, up to the warming timeout', async () => {
    const resources = loadCanonical('synthetic-reviews-xds-responses.json');
    const missing = String(resources.endpoint[0]!['cluster_name']);
    resources.endpoint = resources.endpoint.slice(1); // istiod never answers for this cluster
    istiod = new FakeIstiod(resources);
    const port = await istiod.start();
    client = new AdsClient({ address: `127.0.0.1:${port}`, node, warmingTimeoutMs: 600 });
    mirror = new XdsMirror(client);
    client.start();
    await waitFor(() => mirror.resources().endpoints.size === 3);
    expect(client.isComplete()).toBe(false);
    expect(client.pendingNames().endpoint).toEqual([missing]);
    await waitFor(() => client!.isComplete(), 5000, 'the warming timeout');
  });

  it('accepts responses larger than gRPC\'s 4 MiB default', async () => {
    istiod = new FakeIstiod(loadCanonical('synthetic-reviews-xds-responses.json'));
    const template = istiod.get('cluster', 'outbound|9080||reviews.default.svc.cluster.local')!;
    for (let i = 0; i < 2500; i++) istiod.set('cluster', { ...template, name: `outbound|9080||svc-${i}.default.svc.cluster.local`, eds_cluster_config: { eds_config: { ads: {} }, service_name: `outbound|9080||svc-${i}.default.svc.cluster.local` } });
    const port = await istiod.start();
    client = new AdsClient({ address: `127.0.0.1:${port}`, node, backoff: { initialMs: 20, maxMs: 200 } });
    mirror = new XdsMirror(client);
    client.start();
    await waitFor(() => mirror.resources().clusters.size > 2500, 20_000, 'the large CDS');
    expect(client.stats.nacks).toBe(0);
  });
});

function istiodNames(kind: 'cluster'): string[] {
  return loadCanonical('synthetic-reviews-xds-responses.json')[kind].map((r) => String(r['name']));
}
