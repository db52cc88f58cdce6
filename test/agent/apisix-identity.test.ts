// The workload identity handed to APISIX (agent/identity/apisix-identity.ts): one object at
// /apisix/mesh_identity/workload in the store APISIX watches, rewritten on every renewal, kept by
// the configuration's full snapshots (which delete every other key they do not name), never logged.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { Registry } from 'prom-client';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { StoreApplier } from '../../agent/apply.js';
import { IDENTITY_DIR, IDENTITY_KEY, publishIdentity, type ApisixIdentityObject } from '../../agent/identity/apisix-identity.js';
import { startWorkloadIdentity } from '../../agent/identity/start-identity.js';
import type { WorkloadIdentity } from '../../agent/identity/workload-identity.js';
import { keyFromText, keyToText } from '../../agent/store/keys.js';
import { KvStore } from '../../agent/store/store.js';
import { nodeIdentityFromEnv } from '../../agent/xds/node.js';
import { FakeIstioCa } from '../support/fake-istio-ca.js';
import { createTestPki, type TestPki } from '../support/test-pki.js';
import { waitFor } from '../support/wait.js';

const ID = 'spiffe://cluster.local/ns/bookinfo/sa/reviews';
const node = nodeIdentityFromEnv({ POD_NAME: 'reviews-v1-abc', POD_NAMESPACE: 'bookinfo', INSTANCE_IP: '10.0.0.5', SERVICE_ACCOUNT: 'reviews' });
const EMPTY = { upstreams: new Map(), routes: new Map(), l4: new Map(), notes: [] };

let pki: TestPki;
let ca: FakeIstioCa | undefined;
let identity: WorkloadIdentity | undefined;
const log: string[] = [];

beforeAll(() => {
  pki = createTestPki();
});
afterEach(async () => {
  identity?.stop();
  identity = undefined;
  await ca?.stop();
  ca = undefined;
  for (const line of log) expect(line).not.toMatch(/PRIVATE KEY|MII[A-Za-z0-9+/]{60}/);
  log.length = 0;
});

function startIdentity(caPort: number): WorkloadIdentity {
  const dir = mkdtempSync(join(tmpdir(), 'apisix-identity-'));
  writeFileSync(join(dir, 'root-cert.pem'), pki.root.pem);
  writeFileSync(join(dir, 'istio-token'), 'token-1\n');
  const logger = { info: (m: string) => log.push(`info ${m}`), warn: (m: string) => log.push(`warn ${m}`), error: (m: string) => log.push(`error ${m}`) };
  return startWorkloadIdentity(
    {
      caAddress: `127.0.0.1:${caPort}`,
      tls: { rootCertFile: join(dir, 'root-cert.pem'), tokenFile: join(dir, 'istio-token'), serverName: 'istiod.istio-system.svc' },
      trustDomain: 'cluster.local',
      certTtlMs: 24 * 3600_000,
      retry: { initialMs: 100, maxMs: 400 },
    },
    node,
    new Registry(),
    logger,
  );
}

function stored(store: KvStore, key: string): string | undefined {
  const kv = store.range({ key: keyFromText(key) }).kvs[0];
  return kv ? Buffer.from(kv.value).toString('utf8') : undefined;
}

function keys(store: KvStore): string[] {
  return store.range({ key: keyFromText('/apisix/'), rangeEnd: keyFromText('/apisix0') }).kvs.map((kv) => keyToText(kv.key));
}

describe('the workload identity in APISIX\'s store', () => {
  it('is one object with the chain, key, roots, SPIFFE id and expiry; rewritten on renewal; kept by full snapshots; never logged', async () => {
    ca = new FakeIstioCa(pki);
    ca.requiredToken = 'token-1';
    ca.lifetimeSeconds = 4;
    await ca.start(0);
    const store = new KvStore();
    const applier = new StoreApplier(store);
    identity = startIdentity(ca.port);
    publishIdentity(store, identity, { info: (m) => log.push(`info ${m}`) });
    await waitFor(() => stored(store, IDENTITY_KEY) !== undefined, 15_000, 'the identity object');

    const first = JSON.parse(stored(store, IDENTITY_KEY)!) as ApisixIdentityObject;
    expect(Object.keys(first).sort()).toEqual(['cert_chain', 'id', 'key', 'not_after', 'roots', 'spiffe_id']);
    expect(first.id).toBe('workload');
    expect(first.spiffe_id).toBe(ID);
    const chain = first.cert_chain.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g)!;
    expect(chain).toHaveLength(2); // leaf + intermediate, no root
    const leaf = new X509Certificate(chain[0]!);
    expect(leaf.subjectAltName).toBe(`URI:${ID}`);
    expect(leaf.checkPrivateKey(createPrivateKey(first.key))).toBe(true);
    expect(new X509Certificate(first.roots).fingerprint256).toBe(new X509Certificate(pki.root.pem).fingerprint256);
    expect(first.not_after).toBe(Math.floor(new Date(leaf.validTo).getTime() / 1000));
    expect(stored(store, IDENTITY_DIR)).toBe('init_dir');

    // the translation's first full snapshot deletes every key it does not name, except the identity
    applier.apply(EMPTY);
    expect(keys(store)).toContain(IDENTITY_KEY);
    expect(keys(store)).toContain(IDENTITY_DIR);

    // renewal (4 s certificates: about 2 s) rewrites the object; later applies leave it alone
    await waitFor(() => (JSON.parse(stored(store, IDENTITY_KEY)!) as ApisixIdentityObject).key !== first.key, 15_000, 'the renewed identity');
    const second = JSON.parse(stored(store, IDENTITY_KEY)!) as ApisixIdentityObject;
    expect(second.cert_chain).not.toBe(first.cert_chain);
    expect(second.spiffe_id).toBe(ID);
    applier.apply(EMPTY);
    expect(stored(store, IDENTITY_KEY)).toBe(JSON.stringify(second));
    expect(log.some((l) => l.startsWith(`info workload certificate for ${ID} (valid until`) && l.includes('handed to APISIX'))).toBe(true);
  });
});
