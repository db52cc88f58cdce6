import type { KvStore, StoreWrite } from './store/store.js';
import { keyFromText, keyToText, prefixEnd } from './store/keys.js';
import type { ApisixChanges, ApisixConfig } from './translate/snapshot.js';
import type { ApisixRoute, ApisixUpstream, TranslationNote } from './translate/apisix-types.js';
import { validateApisix } from './schema/validate.js';
import type { L4Listener } from './l4/assemble.js';
import type { RelayCluster } from './mtls/origination.js';
import type { L4Upstream } from './l4/stream-upstreams.js';
import { refuseChainsToMissingUpstreams } from './l4/refused-upstreams.js';
import { IDENTITY_DIR } from './identity/apisix-identity.js';
import { SDS_DIR } from './mtls/sds-secrets.js';

/** APISIX 3.x's key layout under its etcd prefix. */
export const APISIX_PREFIX = '/apisix/';
const UPSTREAMS = `${APISIX_PREFIX}upstreams/`;
const ROUTES = `${APISIX_PREFIX}routes/`;
/** the L4 front's listeners (agent/l4/), read by the sidecar's Lua in APISIX's stream workers */
const L4 = `${APISIX_PREFIX}mesh_l4/`;
/** the TLS relay's clusters (agent/mtls/origination.ts), read by tls_config.lua in the stream workers */
const TLS_RELAY = `${APISIX_PREFIX}mesh_tls/`;
/**
 * the endpoints of the clusters TCP chains name (agent/l4/stream-upstreams.ts), read by
 * l4_upstreams.lua in the stream workers. Not under a name starting with `mesh_l4`: APISIX reads a
 * directory as a key prefix without its trailing slash, so /mesh_l4's watch would take these too.
 */
const L4_UPSTREAMS = `${APISIX_PREFIX}mesh_tcp_upstreams/`;
/** Keys under the prefix that other writers of the agent own (the workload identity, credentialName's SDS secrets): never deleted here. */
const WRITTEN_ELSEWHERE = [IDENTITY_DIR, SDS_DIR];
/**
 * Directories APISIX's CLI marks with `init_dir` (kept when present; those of ALWAYS_MARKED always
 * written). A data plane's CLI writes none, and a directory without its marker is missing from
 * the configuration APISIX's workers load at start: it stays unloaded (`values` nil) until that
 * worker's first fetch of it.
 */
const MARKER_DIRS = ['consumers', 'consumer_groups', 'global_rules', 'plugin_configs', 'plugin_metadata', 'plugins', 'protos', 'routes', 'secrets', 'services', 'ssls', 'stream_routes', 'upstreams', 'mesh_l4', 'mesh_tls', 'mesh_tcp_upstreams'];
/**
 * routes and upstreams: what the agent writes. consumers: APISIX 3.13's Prometheus exporter reads
 * the consumers' list on every scrape and fails (`consumer.lua: attempt to get length of local
 * 'data_list' (a nil value)`, an [error] line and a 500) while it is unloaded, which is the case
 * for a moment after every start without the marker.
 */
const ALWAYS_MARKED = new Set(['routes', 'upstreams', 'consumers', 'mesh_l4', 'mesh_tls', 'mesh_tcp_upstreams']);

/**
 * Puts before deletes; upstreams before the routes that use them; route deletes before the upstream
 * deletes (APISIX never sees a route whose upstream is missing, within the revision or after it).
 */
export function applyOrder(a: StoreWrite, b: StoreWrite): number {
  return rank(a) - rank(b) || byKey(a, b);
}

/**
 * The most key and value bytes one revision carries when a change is larger (a first snapshot, a
 * mesh that grows by thousands of services): APISIX's etcd client reads a revision's watch response
 * as one line, copies it twice and decodes it whole in every Lua VM that watches, and LuaJIT keeps
 * the pages of that peak (BENCHMARKS.md: ~15 MiB for 10,000 services cost each worker ~2x its
 * configuration). A single larger object still goes in a revision of its own.
 */
export const REVISION_BYTES = 512 * 1024;

/**
 * `writes` (in `applyOrder`) cut into revisions of at most `maxBytes` of keys and values, the order
 * kept: every revision boundary still has upstreams before the routes that use them and puts before
 * the deletes that follow, so APISIX never sees a route whose upstream is missing between them either.
 */
export function revisionsOf(writes: readonly StoreWrite[], maxBytes = REVISION_BYTES): StoreWrite[][] {
  const out: StoreWrite[][] = [];
  let current: StoreWrite[] = [];
  let bytes = 0;
  for (const w of writes) {
    const size = w.key.length + (w.op === 'put' ? w.value.length : 0);
    if (current.length > 0 && bytes + size > maxBytes) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(w);
    bytes += size;
  }
  if (current.length > 0) out.push(current);
  return out;
}

function byKey(a: StoreWrite, b: StoreWrite): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

function rank(w: StoreWrite): number {
  // the relay's entries with the upstreams (sorted before them by key): an alias is known to the
  // relay no later than the upstream that points at it
  // and the stream workers' copies of the upstreams: before the L4 listeners that name them
  const upstream = w.key.startsWith(UPSTREAMS) || (w.op === 'put' && (w.key.startsWith(TLS_RELAY) || w.key.startsWith(L4_UPSTREAMS)));
  const route = w.key.startsWith(ROUTES);
  if (w.op === 'put') return upstream ? 0 : route ? 1 : 2;
  return route ? 3 : upstream ? 4 : 5;
}

export interface ApplyResult {
  revision: number;
  /** objects left out because APISIX's schema refuses them, and the L4 listeners whose chains were refused for such an upstream */
  invalid: TranslationNote[];
  upstreams: number;
  routes: number;
}

/** A route held back while its upstream is refused, written again once the upstream is valid. */
interface WithheldRoute {
  upstreamKey: string;
  route: ApisixRoute;
}

/**
 * Writes translated configurations into the store, one revision per call, touching only the keys
 * whose bytes change: APISIX reloads an object whenever its key is written. Every object is checked
 * against APISIX's schema before it is written (an object whose bytes equal the stored ones was
 * checked when it was stored); an invalid one is left out with a note rather than handed to APISIX,
 * which would refuse it anyway, and so are the routes to an upstream left out. The store's values
 * are the only copy of the objects: nothing else is kept per object.
 */
export class StoreApplier {
  /** what is left out, by key */
  private readonly invalid = new Map<string, TranslationNote>();
  private readonly withheld = new Map<string, WithheldRoute>();
  /** L4 listeners written with chains refused for an upstream left out, as translated (by key) */
  private readonly l4Withheld = new Map<string, L4Listener>();
  private counts: { upstreams: number; routes: number } | undefined;

  constructor(private readonly store: KvStore) {}

  /** Makes the store hold exactly `config` (every object named, so each one is encoded). */
  apply(config: ApisixConfig): ApplyResult {
    return this.applyChanges({ full: true, upstreams: config.upstreams, routes: config.routes, l4: config.l4, tlsRelay: config.tlsRelay ?? new Map(), l4Upstreams: config.l4Upstreams ?? new Map(), notes: config.notes, remoteJwks: config.remoteJwks ?? [] });
  }

  /** Writes what changed (`full`: and deletes what `changes` does not name). */
  applyChanges(changes: ApisixChanges): ApplyResult {
    const batch = new StagedWrites(this.store);
    const refused: string[] = [];
    for (const [id, u] of changes.upstreams) this.stageUpstream(batch, `${UPSTREAMS}${id}`, u, refused);
    for (const [id, r] of changes.routes) this.stageRoute(batch, `${ROUTES}${id}`, r);
    // L4 listeners have no APISIX schema: the Lua that reads them (l4_config.lua) validates their
    // shape; their TCP chains are checked against the upstreams this revision leaves in the store
    for (const [id, l] of changes.l4) this.stageL4(batch, `${L4}${id}`, l);
    // the relay's clusters: validated by the Lua that reads them (tls_config.lua)
    for (const [id, c] of changes.tlsRelay ?? []) {
      if (c) batch.put(`${TLS_RELAY}${id}`, encode(c));
      else batch.delete(`${TLS_RELAY}${id}`);
    }
    // the stream workers' copies of upstreams: validated by the Lua that reads them (l4_upstreams.lua),
    // and only of upstreams the store holds (no chain names a refused one: stageL4)
    for (const [id, u] of changes.l4Upstreams ?? []) {
      if (u && batch.willExist(`${UPSTREAMS}${id}`)) batch.put(`${L4_UPSTREAMS}${id}`, encode(u));
      else batch.delete(`${L4_UPSTREAMS}${id}`);
    }
    if (changes.full) this.dropUnnamed(batch, changes);
    for (const key of refused) this.withholdRoutesTo(batch, key);
    for (const [key, w] of [...this.withheld]) {
      if (!batch.staged(key) && batch.willExist(w.upstreamKey)) this.stageRoute(batch, key, w.route);
    }
    if (refused.length) this.refuseStoredL4ChainsTo(batch, new Set(refused.map((key) => key.slice(UPSTREAMS.length))));
    // listeners held in a refused form: checked again (their upstreams may be back)
    for (const [key, l] of [...this.l4Withheld]) if (!batch.staged(key)) this.stageL4(batch, key, l);
    for (const dir of ALWAYS_MARKED) {
      const key = `${APISIX_PREFIX}${dir}/`;
      if (!batch.currentEquals(key, INIT_DIR)) batch.put(key, INIT_DIR);
    }
    const counts = (this.counts ??= { upstreams: this.count(UPSTREAMS), routes: this.count(ROUTES) });
    for (const { key, exists } of batch.existenceChanges()) {
      const delta = exists ? 1 : -1;
      if (key.startsWith(UPSTREAMS) && key !== UPSTREAMS) counts.upstreams += delta;
      else if (key.startsWith(ROUTES) && key !== ROUTES) counts.routes += delta;
    }
    const revision = batch.commit();
    return { revision, invalid: [...this.invalid.values()], upstreams: counts.upstreams, routes: counts.routes };
  }

  /** The objects the store holds for APISIX (for /debug/config). */
  objects(): { upstreams: unknown[]; routes: unknown[]; l4: unknown[]; tlsRelay: unknown[]; l4Upstreams: unknown[] } {
    return { upstreams: this.values(UPSTREAMS), routes: this.values(ROUTES), l4: this.values(L4), tlsRelay: this.values(TLS_RELAY), l4Upstreams: this.values(L4_UPSTREAMS) };
  }

  private stageUpstream(batch: StagedWrites, key: string, u: ApisixUpstream | null, refused: string[]): void {
    if (!u) {
      this.invalid.delete(key);
      batch.delete(key);
      return;
    }
    const bytes = encode(u);
    if (batch.currentEquals(key, bytes)) {
      this.invalid.delete(key);
      return;
    }
    const error = validateApisix('upstream.strict', u);
    if (error) {
      this.invalid.set(key, { kind: 'cluster', name: u.name, reason: 'schema-invalid', detail: error, skipped: true });
      if (batch.willExist(key)) refused.push(key);
      batch.delete(key);
      return;
    }
    this.invalid.delete(key);
    batch.put(key, bytes);
  }

  private stageRoute(batch: StagedWrites, key: string, r: ApisixRoute | null): void {
    this.withheld.delete(key);
    this.invalid.delete(key);
    if (!r) {
      batch.delete(key);
      return;
    }
    if (r.upstream_id) {
      const upstreamKey = `${UPSTREAMS}${r.upstream_id}`;
      if (!batch.willExist(upstreamKey)) {
        this.withheld.set(key, { upstreamKey, route: r });
        this.invalid.set(key, { kind: 'route', name: r.name, reason: 'upstream-invalid', detail: `its upstream ${r.upstream_id} was left out`, skipped: true });
        batch.delete(key);
        return;
      }
    }
    const bytes = encode(r);
    if (batch.currentEquals(key, bytes)) return;
    const error = validateApisix('route.strict', r);
    if (error) {
      this.invalid.set(key, { kind: 'route', name: r.name, reason: 'schema-invalid', detail: error, skipped: true });
      batch.delete(key);
      return;
    }
    batch.put(key, bytes);
  }

  /** An L4 listener whose TCP chains name an upstream this revision leaves out is written with those chains refused. */
  private stageL4(batch: StagedWrites, key: string, l: L4Listener | null): void {
    this.l4Withheld.delete(key);
    this.invalid.delete(key);
    if (!l) {
      batch.delete(key);
      return;
    }
    const checked = refuseChainsToMissingUpstreams(l, (id) => batch.willExist(`${UPSTREAMS}${id}`));
    if (checked.note) {
      this.l4Withheld.set(key, l);
      this.invalid.set(key, checked.note);
    }
    batch.put(key, encode(checked.listener));
  }

  /**
   * Upstreams that were stored are refused now: the stored L4 listeners whose chains name them are
   * written again with those chains refused. Rare (an endpoint APISIX's schema refuses, such as one
   * on port 0), so a scan of the few listeners is acceptable.
   */
  private refuseStoredL4ChainsTo(batch: StagedWrites, ids: Set<string>): void {
    for (const kv of this.store.range({ key: keyFromText(L4), rangeEnd: prefixEnd(keyFromText(L4)) }).kvs) {
      const key = keyToText(kv.key);
      if (key === L4 || batch.staged(key) || this.l4Withheld.has(key)) continue;
      const l = JSON.parse(Buffer.from(kv.value).toString('utf8')) as L4Listener;
      const chains = l.default ? [...l.chains, l.default] : l.chains;
      if (chains.some((c) => c.action.kind === 'cluster' && c.action.clusters.some((x) => ids.has(x.upstream_id)))) this.stageL4(batch, key, l);
    }
  }

  /** A full configuration: the objects it does not name go, and so do the other keys under the prefix. */
  private dropUnnamed(batch: StagedWrites, changes: ApisixChanges): void {
    const marker = new Set(MARKER_DIRS.map((dir) => `${APISIX_PREFIX}${dir}/`));
    for (const key of this.keys(APISIX_PREFIX)) {
      if (batch.staged(key) || marker.has(key) || WRITTEN_ELSEWHERE.some((dir) => key.startsWith(dir))) continue;
      const named = key.startsWith(UPSTREAMS)
        ? changes.upstreams.has(key.slice(UPSTREAMS.length))
        : key.startsWith(ROUTES)
          ? changes.routes.has(key.slice(ROUTES.length))
          : key.startsWith(L4)
            ? changes.l4.has(key.slice(L4.length))
            : key.startsWith(TLS_RELAY)
              ? !!changes.tlsRelay?.has(key.slice(TLS_RELAY.length))
              : key.startsWith(L4_UPSTREAMS) && !!changes.l4Upstreams?.has(key.slice(L4_UPSTREAMS.length));
      if (!named) batch.delete(key);
    }
    for (const key of [...this.invalid.keys()]) {
      const named = key.startsWith(UPSTREAMS)
        ? changes.upstreams.has(key.slice(UPSTREAMS.length))
        : key.startsWith(ROUTES)
          ? changes.routes.has(key.slice(ROUTES.length))
          : changes.l4.has(key.slice(L4.length));
      if (!named) {
        this.invalid.delete(key);
        this.withheld.delete(key);
        this.l4Withheld.delete(key);
      }
    }
    this.counts = undefined;
  }

  /**
   * An upstream that was stored is refused now: the stored routes to it go too (held back until it
   * is valid again). Only a translation bug leads here, so the scan of every route is acceptable.
   */
  private withholdRoutesTo(batch: StagedWrites, upstreamKey: string): void {
    const id = upstreamKey.slice(UPSTREAMS.length);
    for (const kv of this.store.range({ key: keyFromText(ROUTES), rangeEnd: prefixEnd(keyFromText(ROUTES)) }).kvs) {
      const key = keyToText(kv.key);
      if (key === ROUTES || batch.staged(key)) continue;
      const route = JSON.parse(Buffer.from(kv.value).toString('utf8')) as ApisixRoute;
      if (route.upstream_id === id) this.stageRoute(batch, key, route);
    }
  }

  private keys(prefix: string): string[] {
    return this.store.range({ key: keyFromText(prefix), rangeEnd: prefixEnd(keyFromText(prefix)), keysOnly: true }).kvs.map((kv) => keyToText(kv.key));
  }

  private count(prefix: string): number {
    return this.keys(prefix).filter((key) => key !== prefix).length;
  }

  private values(prefix: string): unknown[] {
    const kvs = this.store.range({ key: keyFromText(prefix), rangeEnd: prefixEnd(keyFromText(prefix)) }).kvs;
    return kvs.filter((kv) => keyToText(kv.key) !== prefix).map((kv) => JSON.parse(Buffer.from(kv.value).toString('utf8')) as unknown);
  }
}

const INIT_DIR = Buffer.from('init_dir', 'utf8');

function encode(object: ApisixUpstream | ApisixRoute | L4Listener | RelayCluster | L4Upstream): Buffer {
  return Buffer.from(JSON.stringify(object), 'utf8');
}

/**
 * The writes of one revision, staged against the store's current values: a put of the bytes a key
 * already holds and a delete of a key that is not there are no writes at all.
 */
class StagedWrites {
  private readonly writes = new Map<string, StoreWrite>();

  constructor(private readonly store: KvStore) {}

  put(key: string, value: Buffer): void {
    if (this.currentEquals(key, value)) this.writes.delete(key);
    else this.writes.set(key, { op: 'put', key, value });
  }

  delete(key: string): void {
    if (this.stored(key)) this.writes.set(key, { op: 'delete', key });
    else this.writes.delete(key);
  }

  staged(key: string): boolean {
    return this.writes.has(key);
  }

  /** whether the key holds a value once these writes are committed */
  willExist(key: string): boolean {
    const w = this.writes.get(key);
    return w ? w.op === 'put' : this.stored(key) !== undefined;
  }

  /** whether the store holds exactly these bytes under the key now */
  currentEquals(key: string, value: Buffer): boolean {
    const stored = this.stored(key);
    return !!stored && value.equals(stored);
  }

  /** keys that appear or disappear with these writes */
  existenceChanges(): Array<{ key: string; exists: boolean }> {
    const out: Array<{ key: string; exists: boolean }> = [];
    for (const w of this.writes.values()) {
      const before = this.stored(w.key) !== undefined;
      if (before !== (w.op === 'put')) out.push({ key: w.key, exists: w.op === 'put' });
    }
    return out;
  }

  /**
   * One revision, or several of `REVISION_BYTES` when the change is larger, in `applyOrder` (ranked
   * once per write: a comparator ranking both sides of every comparison took ~60 ms for 20,000
   * writes). Within a rank the keys are sorted as plain strings (V8's sort without a comparator, no
   * call into JS per comparison; the same order as `byKey`). Returns the last revision.
   */
  commit(): number {
    let revision = this.store.revision;
    if (this.writes.size === 0) return revision;
    const byRank: string[][] = [[], [], [], [], [], []];
    for (const w of this.writes.values()) byRank[rank(w)]!.push(w.key);
    const ordered = byRank.flatMap((keys) => keys.sort().map((key) => this.writes.get(key)!));
    for (const writes of revisionsOf(ordered)) revision = this.store.write(writes);
    return revision;
  }

  private stored(key: string): Buffer | undefined {
    const kv = this.store.get(keyFromText(key));
    return kv ? Buffer.from(kv.value.buffer, kv.value.byteOffset, kv.value.byteLength) : undefined;
  }
}
