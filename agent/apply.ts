import type { KvStore, StoreWrite } from './store/store.js';
import { keyFromText, keyToText, prefixEnd } from './store/keys.js';
import type { ApisixConfig } from './translate/snapshot.js';
import type { ApisixRoute, ApisixUpstream, TranslationNote } from './translate/apisix-types.js';
import { validateApisix } from './schema/validate.js';
import { IDENTITY_DIR } from './identity/apisix-identity.js';

/** APISIX 3.x's key layout under its etcd prefix. */
export const APISIX_PREFIX = '/apisix/';
const UPSTREAMS = `${APISIX_PREFIX}upstreams/`;
const ROUTES = `${APISIX_PREFIX}routes/`;
/** the L4 front's listeners (agent/l4/), read by the sidecar's Lua in APISIX's stream workers */
const L4 = `${APISIX_PREFIX}mesh_l4/`;
/** the TLS relay's clusters (agent/mtls/origination.ts), read by tls_config.lua in the stream workers */
const TLS_RELAY = `${APISIX_PREFIX}mesh_tls/`;
/**
 * Directories APISIX's CLI marks with `init_dir` (kept when present; those of ALWAYS_MARKED always
 * written). A data plane's CLI writes none, and a directory without its marker is missing from
 * the configuration APISIX's workers load at start: it stays unloaded (`values` nil) until that
 * worker's first fetch of it.
 */
const MARKER_DIRS = ['consumers', 'consumer_groups', 'global_rules', 'plugin_configs', 'plugin_metadata', 'plugins', 'protos', 'routes', 'secrets', 'services', 'ssls', 'stream_routes', 'upstreams', 'mesh_l4', 'mesh_tls'];
/**
 * routes and upstreams: what the agent writes. consumers: APISIX 3.13's Prometheus exporter reads
 * the consumers' list on every scrape and fails (`consumer.lua: attempt to get length of local
 * 'data_list' (a nil value)`, an [error] line and a 500) while it is unloaded, which is the case
 * for a moment after every start without the marker.
 */
const ALWAYS_MARKED = new Set(['routes', 'upstreams', 'consumers', 'mesh_l4', 'mesh_tls']);
/** Keys under the prefix that other writers of the agent own (the workload identity): never deleted here. */
const WRITTEN_ELSEWHERE = [IDENTITY_DIR];

/**
 * Puts before deletes; upstreams before the routes that use them; route deletes before the upstream
 * deletes (APISIX never sees a route whose upstream is missing, within the revision or after it).
 */
export function applyOrder(a: StoreWrite, b: StoreWrite): number {
  return rank(a) - rank(b) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
}

function rank(w: StoreWrite): number {
  const upstream = w.key.startsWith(UPSTREAMS);
  const route = w.key.startsWith(ROUTES);
  if (w.op === 'put') return upstream ? 0 : route ? 1 : 2;
  return route ? 3 : upstream ? 4 : 5;
}

export interface ApplyResult {
  revision: number;
  /** objects left out because APISIX's schema refuses them (a translation bug if it ever happens) */
  invalid: TranslationNote[];
  upstreams: number;
  routes: number;
}

/**
 * Writes a translated configuration into the store as one revision. Every object is checked against
 * APISIX's schema first (results remembered per object, and objects keep their identity while
 * their inputs do not change, so an unchanged object costs a map lookup); an invalid one is left
 * out with a note rather than handed to APISIX, which would refuse it anyway.
 */
export class StoreApplier {
  /**
   * Per object its JSON as the bytes the store keeps (the same Buffer: one copy of every value, not
   * a string here and its bytes in the store), and its schema check.
   */
  private readonly encoded = new WeakMap<object, { bytes: Buffer; error: string | null }>();
  /** what the last apply left under the prefix (the API is read-only, so the store still holds it) */
  private last: Map<string, Uint8Array | 'init_dir'> | undefined;

  constructor(private readonly store: KvStore) {}

  apply(config: ApisixConfig): ApplyResult {
    const desired = new Map<string, Uint8Array | 'init_dir'>();
    const invalid: TranslationNote[] = [];
    let upstreams = 0;
    let routes = 0;
    for (const u of config.upstreams.values()) {
      const e = this.encode('upstream.strict', u);
      if (e.error) invalid.push({ kind: 'cluster', name: u.name, reason: 'schema-invalid', detail: e.error, skipped: true });
      else {
        desired.set(`${UPSTREAMS}${u.id}`, e.bytes);
        upstreams++;
      }
    }
    for (const r of config.routes.values()) {
      if (r.upstream_id && !desired.has(`${UPSTREAMS}${r.upstream_id}`)) {
        invalid.push({ kind: 'route', name: r.name, reason: 'upstream-invalid', detail: `its upstream ${r.upstream_id} was left out`, skipped: true });
        continue;
      }
      const e = this.encode('route.strict', r);
      if (e.error) invalid.push({ kind: 'route', name: r.name, reason: 'schema-invalid', detail: e.error, skipped: true });
      else {
        desired.set(`${ROUTES}${r.id}`, e.bytes);
        routes++;
      }
    }
    for (const l of config.l4.values()) desired.set(`${L4}${l.id}`, this.encodeL4(l));
    for (const c of config.tlsRelay?.values() ?? []) desired.set(`${TLS_RELAY}${c.id}`, this.encodeL4(c));
    for (const dir of MARKER_DIRS) {
      const key = `${APISIX_PREFIX}${dir}/`;
      const always = ALWAYS_MARKED.has(dir);
      if (always || this.store.range({ key: keyFromText(key), countOnly: true }).count > 0) desired.set(key, 'init_dir');
    }
    let revision: number;
    if (!this.last) {
      revision = this.store.applySnapshot(APISIX_PREFIX, withKeysWrittenElsewhere(this.store, desired), applyOrder);
    } else {
      // Diff against the previous snapshot: unchanged objects reuse the same bytes, so this is a
      // pointer comparison per key instead of re-encoding every value.
      const writes: StoreWrite[] = [];
      for (const [key, value] of desired) if (this.last.get(key) !== value) writes.push({ op: 'put', key, value });
      for (const key of this.last.keys()) if (!desired.has(key)) writes.push({ op: 'delete', key });
      revision = writes.length ? this.store.write(writes.sort(applyOrder)) : this.store.revision;
    }
    this.last = desired;
    return { revision, invalid, upstreams, routes };
  }

  /** L4 listeners and relay clusters have no APISIX schema: the Lua that reads them validates their shape. */
  private encodeL4(listener: object): Buffer {
    let e = this.encoded.get(listener);
    if (!e) this.encoded.set(listener, (e = { bytes: Buffer.from(JSON.stringify(listener), 'utf8'), error: null }));
    return e.bytes;
  }

  private encode(schema: 'upstream.strict' | 'route.strict', object: ApisixUpstream | ApisixRoute): { bytes: Buffer; error: string | null } {
    let e = this.encoded.get(object);
    if (!e) this.encoded.set(object, (e = { bytes: Buffer.from(JSON.stringify(object), 'utf8'), error: validateApisix(schema, object) }));
    return e;
  }
}

/** `desired` plus the current keys other writers own, so that a full snapshot keeps them. */
function withKeysWrittenElsewhere(store: KvStore, desired: ReadonlyMap<string, Uint8Array | 'init_dir'>): Map<string, Uint8Array | string> {
  const out = new Map<string, Uint8Array | string>(desired);
  for (const prefix of WRITTEN_ELSEWHERE) {
    const from = keyFromText(prefix);
    for (const kv of store.range({ key: from, rangeEnd: prefixEnd(from) }).kvs) out.set(keyToText(kv.key), kv.value);
  }
  return out;
}
