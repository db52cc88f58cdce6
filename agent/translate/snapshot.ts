import type { Cluster, ClusterLoadAssignment, Listener, RouteConfiguration } from '../xds/envoy-types.js';
import type { XdsKind } from '../xds/protos.js';
import type { ApisixRoute, ApisixUpstream, TranslationNote } from './apisix-types.js';
import { upstreamId } from './ids.js';
import type { RouteUpstreamSettings } from './route-configuration.js';
import { RouteListBuilder } from './route-list.js';
import { assembleUpstream, finalRoute, sameSettings, type RouteTarget } from './final-objects.js';
import { releaseInflatedRoutes, routeObject, type KeptRoute } from './kept-routes.js';
import { newRouteListSession, ResourceTranslations, type PreparedResource, type TranslateOptions } from './resource-translations.js';
import { add, each, type OneOrMore } from './one-or-more.js';
import { forgetUpstreamIds, stableId } from './ids.js';
import { assembleL4Listener, type L4Listener } from '../l4/assemble.js';
import { remoteJwksSources, type RemoteJwksLookup, type RemoteJwksSource } from '../policy/jwt.js';
import { TlsOrigination, type RelayCluster } from '../mtls/origination.js';
import { L4Upstreams, type L4Upstream } from '../l4/stream-upstreams.js';

export type { PreparedResource, TranslateOptions } from './resource-translations.js';

/** The xDS state as decoded objects: one map per type, keyed by resource name. */
export interface XdsResources {
  clusters: ReadonlyMap<string, Cluster>;
  endpoints: ReadonlyMap<string, ClusterLoadAssignment>;
  listeners: ReadonlyMap<string, Listener>;
  routeConfigs: ReadonlyMap<string, RouteConfiguration>;
}

export interface ChangedResource<T> {
  /** decoded: only for the moment, nothing downstream keeps it */
  resource: T;
  /** its bytes as they came on the wire (a view into the response: copied by whoever keeps them) */
  bytes?: Uint8Array;
}

/**
 * What one accepted xDS response changed, for one type: its new or changed resources by name (as
 * the ADS client's `prepare` made them: decoded by default, prepared for the translator in the
 * agent) and the names it removed.
 */
export interface XdsChange<T = PreparedResource> {
  kind: XdsKind;
  changed: ReadonlyMap<string, T>;
  removed: readonly string[];
}

/** What APISIX gets: upstreams and routes by id, plus what was left out and why. */
export interface ApisixConfig {
  upstreams: Map<string, ApisixUpstream>;
  routes: Map<string, ApisixRoute>;
  /** every listener as the L4 front dispatches its connections (agent/l4/) */
  l4: Map<string, L4Listener>;
  /** the TLS relay's clusters by id (agent/mtls/origination.ts) */
  tlsRelay?: Map<string, RelayCluster>;
  /** the endpoints of the clusters TCP chains name, by upstream id, for the stream workers (agent/l4/stream-upstreams.ts) */
  l4Upstreams?: Map<string, L4Upstream>;
  notes: TranslationNote[];
  /** the JWKS the routes' JWT filters name by URI: the agent fetches them (agent/policy/jwks-fetcher.ts) */
  remoteJwks?: RemoteJwksSource[];
}

/**
 * What changed in the APISIX objects since the previous assembly: objects by id (null: gone).
 * `full`: the complete configuration, whatever it does not name is gone. An object named here may
 * be unchanged in content (the store's writer compares bytes); one not named is unchanged.
 */
export interface ApisixChanges {
  full: boolean;
  upstreams: ReadonlyMap<string, ApisixUpstream | null>;
  routes: ReadonlyMap<string, ApisixRoute | null>;
  /** the L4 front's listeners by id (null: gone) */
  l4: ReadonlyMap<string, L4Listener | null>;
  /** the TLS relay's clusters by id (null: gone) */
  tlsRelay?: ReadonlyMap<string, RelayCluster | null>;
  /** the stream workers' copies of the upstreams TCP chains name, by upstream id (null: gone) */
  l4Upstreams?: ReadonlyMap<string, L4Upstream | null>;
  /** every note of the whole configuration (not only of what changed) */
  notes: TranslationNote[];
  /** the JWKS the routes' JWT filters name by URI (all of them, not only what changed) */
  remoteJwks: RemoteJwksSource[];
}

const KINDS = ['cluster', 'endpoint', 'listener', 'route'] as const;
const FIELD = { cluster: 'clusters', endpoint: 'endpoints', listener: 'listeners', route: 'routeConfigs' } as const;

/**
 * The translation of the xDS state into APISIX objects, kept up to date by what changes.
 *
 * Each resource is translated once, when it arrives (`prepare`, then `ingest`; see
 * resource-translations.ts). Neither the decoded resources nor the objects APISIX gets are kept:
 * the per-resource translations and a few indexes (which routes name a cluster, the settings routes
 * give their upstreams) are what stays. `assemble` then rebuilds only what depends on what changed:
 * one changed assignment is one upstream; a changed cluster is its upstream and the routes naming
 * it; a listener or route configuration rebuilds the list of routes (the routes whose translation
 * did not change keep their identity and are not rebuilt).
 *
 * The result is a pure function of the xDS state: assembling after any sequence of changes gives
 * what a fresh translator gives for the final state (tested, with random sequences).
 */
export class MeshTranslator {
  private readonly resources: ResourceTranslations;
  private readonly routeList: RouteListBuilder;
  /** upstreams whose endpoints need TLS go through the sidecar's relay */
  private readonly tls = new TlsOrigination();
  /** the stream workers' copies of the upstreams TCP chains name */
  private readonly l4Upstreams = new L4Upstreams();
  /** the clusters whose upstream the current round assembled */
  private readonly assembledNow = new Set<string>();
  /** the next assembly gives everything (the first one, and after a failure) */
  private full = true;
  /** route id → the translated route (or routes, in list order: the last one served wins) with that id */
  private slots = new Map<string, OneOrMore<KeptRoute>>();
  /** cluster → the ids of the routes that name it */
  private routesByCluster = new Map<string, OneOrMore<string>>();
  /** per cluster, the upstream settings of the first route that names it */
  private derived = new Map<string, RouteUpstreamSettings>();
  private conflicts: Array<{ cluster: string; note: TranslationNote }> = [];
  private listNotes: TranslationNote[] = [];
  private readonly upstreamNotes = new Map<string, TranslationNote[]>();
  private readonly routeNotes = new Map<string, TranslationNote[]>();
  /** listener name → the notes of its L4 object (its chains', and what they could not resolve) */
  private readonly l4Notes = new Map<string, TranslationNote[]>();
  /** remote JWKS keys as the agent fetched them; the routes whose policy uses them follow their changes */
  private remoteJwks: RemoteJwksLookup = new Map();
  private remoteJwksList: RemoteJwksSource[] = [];

  /** `translate`'s state: the objects it was given last, and the whole configuration */
  private given: XdsResources | undefined;
  private view: { upstreams: Map<string, ApisixUpstream>; routes: Map<string, ApisixRoute>; l4: Map<string, L4Listener>; tlsRelay: Map<string, RelayCluster>; l4Upstreams: Map<string, L4Upstream> } | undefined;

  constructor(options: TranslateOptions = {}) {
    this.resources = new ResourceTranslations(options);
    this.routeList = new RouteListBuilder();
  }

  /**
   * Translates one resource on its own, as the ADS client decodes it (its `prepare`): the decoded
   * resource is not needed any longer. Does not change the translator.
   */
  prepare(kind: XdsKind, name: string, resource: unknown, bytes?: Uint8Array): PreparedResource {
    return this.resources.prepare(kind, name, resource, bytes);
  }

  /** Takes what one xDS response changed (prepared by `prepare`). */
  ingest(change: XdsChange): void {
    for (const name of change.removed) this.resources.set(change.kind, name, undefined);
    for (const [name, prepared] of change.changed) this.resources.set(change.kind, name, prepared);
  }

  /**
   * The APISIX objects that changed since the previous call (all of them the first time). Throws
   * when a resource could not be translated; the next call then gives everything again.
   */
  assemble(): ApisixChanges {
    const failure = this.resources.failure();
    if (failure !== undefined) throw new Error(failure);
    try {
      return this.assembleChanges();
    } catch (err) {
      this.resync();
      throw err;
    } finally {
      releaseInflatedRoutes();
      forgetUpstreamIds();
    }
  }

  /**
   * The keys fetched for remote JWKS (the agent's fetcher hands the same object until something
   * changes): when they change, the routes whose JWT filters name a remote JWKS are rebuilt.
   */
  useRemoteJwks(lookup: RemoteJwksLookup): void {
    if (lookup === this.remoteJwks) return;
    this.remoteJwks = lookup;
    if (this.remoteJwksList.length) this.resources.dirty.routesStale = true;
  }

  /** The next assembly gives the whole configuration (after its result could not be applied). */
  resync(): void {
    this.full = true;
  }

  /**
   * Translates a whole xDS state given as decoded objects: what differs from the previous call (by
   * object identity) is ingested, and the whole configuration returned.
   */
  translate(xds: XdsResources, remoteJwks?: RemoteJwksLookup): ApisixConfig {
    if (remoteJwks) this.useRemoteJwks(remoteJwks);
    const given = this.given;
    for (const kind of KINDS) {
      const before = (given?.[FIELD[kind]] ?? new Map()) as ReadonlyMap<string, object>;
      const after = xds[FIELD[kind]] as ReadonlyMap<string, object>;
      for (const name of before.keys()) if (!after.has(name)) this.resources.set(kind, name, undefined);
      for (const [name, resource] of after) if (before.get(name) !== resource) this.resources.set(kind, name, this.prepare(kind, name, resource));
    }
    this.given = { clusters: new Map(xds.clusters), endpoints: new Map(xds.endpoints), listeners: new Map(xds.listeners), routeConfigs: new Map(xds.routeConfigs) };
    const changes = this.assemble();
    const view = (this.view ??= { upstreams: new Map(), routes: new Map(), l4: new Map(), tlsRelay: new Map(), l4Upstreams: new Map() });
    if (changes.full) {
      view.upstreams.clear();
      view.routes.clear();
      view.l4.clear();
      view.tlsRelay.clear();
      view.l4Upstreams.clear();
    }
    for (const [id, c] of changes.tlsRelay ?? []) {
      if (c) view.tlsRelay.set(id, c);
      else view.tlsRelay.delete(id);
    }
    for (const [id, u] of changes.l4Upstreams ?? []) {
      if (u) view.l4Upstreams.set(id, u);
      else view.l4Upstreams.delete(id);
    }
    for (const [id, l] of changes.l4) {
      if (l) view.l4.set(id, l);
      else view.l4.delete(id);
    }
    for (const [id, u] of changes.upstreams) {
      if (u) view.upstreams.set(id, u);
      else view.upstreams.delete(id);
    }
    for (const [id, r] of changes.routes) {
      if (r) view.routes.set(id, r);
      else view.routes.delete(id);
    }
    return { upstreams: new Map(view.upstreams), routes: new Map(view.routes), l4: new Map(view.l4), tlsRelay: new Map(view.tlsRelay), l4Upstreams: new Map(view.l4Upstreams), notes: changes.notes, remoteJwks: changes.remoteJwks };
  }

  // ---------------------------------------------------------------- assembly

  private assembleChanges(): ApisixChanges {
    const full = this.full;
    this.assembledNow.clear(); // what a round that threw left
    const upstreams = new Map<string, ApisixUpstream | null>();
    const routes = new Map<string, ApisixRoute | null>();
    const dirtyRoutes = new Set<string>();
    const dirty = this.resources.dirty;
    if (dirty.routesStale || full) this.rebuildRoutes(routes, dirtyRoutes, full);
    const dirtyClusters = full ? new Set([...this.resources.clusters.keys(), ...dirty.clusters]) : dirty.clusters;
    for (const name of dirtyClusters) {
      dirty.upstreams.add(name);
      for (const id of each(this.routesByCluster.get(name))) dirtyRoutes.add(id);
    }
    for (const name of dirty.upstreams) this.assembleUpstream(name, upstreams);
    const tlsRelay = this.tls.emit(upstreams, (name) => {
      const rebuilt = new Map<string, ApisixUpstream | null>();
      this.assembleUpstream(name, rebuilt);
      return rebuilt.get(upstreamId(name)) ?? null;
    });
    // the stream workers' copies: from the upstreams as emitted (relay aliases in place), for the
    // clusters TCP chains name; an endpoint change rewrites its cluster's copy and no listener
    if (full) this.l4Upstreams.reset();
    const assembled = [...this.assembledNow].map((name): [string, string, ApisixUpstream | null | undefined] => {
      const id = upstreamId(name);
      return [name, id, upstreams.get(id)];
    });
    this.assembledNow.clear();
    const l4Upstreams = this.l4Upstreams.emit(assembled, (name) => this.resources.namedByL4(name));
    for (const id of dirtyRoutes) this.assembleRoute(id, routes);
    // L4 objects: the listeners that changed, and those whose TCP chains name a changed cluster
    // (an endpoint change alone never touches them: they name upstreams, not nodes)
    const l4 = new Map<string, L4Listener | null>();
    const dirtyL4 = full ? new Set([...this.resources.l4Drafts.keys(), ...dirty.l4Listeners]) : dirty.l4Listeners;
    for (const name of dirtyClusters) for (const listener of this.resources.l4UsersOf(name)) dirtyL4.add(listener);
    for (const name of dirtyL4) this.assembleL4(name, l4);
    dirty.clusters.clear();
    dirty.upstreams.clear();
    dirty.l4Listeners.clear();
    dirty.routesStale = false;
    this.full = false;
    return { full, upstreams, routes, l4, tlsRelay, l4Upstreams, notes: this.notes(), remoteJwks: this.remoteJwksList };
  }

  private assembleL4(listenerName: string, out: Map<string, L4Listener | null>): void {
    const draft = this.resources.l4Drafts.get(listenerName);
    this.l4Notes.delete(listenerName);
    if (!draft) {
      out.set(stableId('l4', listenerName), null);
      return;
    }
    const notes = [...draft.notes];
    const upstreamIdOf = (cluster: string) => (this.resources.hasUpstream(cluster) ? this.resources.clusters.get(cluster)?.upstream?.id : undefined);
    const l4 = assembleL4Listener(draft, this.resources.clusters, upstreamIdOf, notes);
    if (notes.length) this.l4Notes.set(listenerName, notes);
    out.set(l4.id, l4);
  }

  /** The list of routes from the listeners and route configurations; marks what differs. */
  private rebuildRoutes(routes: Map<string, ApisixRoute | null>, dirtyRoutes: Set<string>, full: boolean): void {
    const session = newRouteListSession();
    const list = this.routeList.build({
      listeners: this.resources.listeners.values(),
      routeConfig: (name, scope) => this.resources.routeConfig(name, scope, session),
      remoteJwks: this.remoteJwks,
    });
    this.resources.dropUnusedScopes(session);
    this.listNotes = list.notes;
    this.remoteJwksList = remoteJwksSources(list.jwtFilters);

    const slots = new Map<string, OneOrMore<KeptRoute>>();
    const byCluster = new Map<string, OneOrMore<string>>();
    const derived = new Map<string, RouteUpstreamSettings>();
    const conflicts: Array<{ cluster: string; note: TranslationNote }> = [];
    for (const r of list.routes) {
      add(slots, r.id, r);
      // Settings Envoy keeps per route but APISIX per upstream: the first route that names a
      // cluster decides; a disagreeing later route is reported.
      for (const name of r.clusters) {
        const ids = byCluster.get(name);
        if (ids !== r.id && !(Array.isArray(ids) && ids[ids.length - 1] === r.id)) add(byCluster, name, r.id);
        const previous = derived.get(name);
        if (!previous) derived.set(name, r.upstreamSettings);
        else if (!sameSettings(previous, r.upstreamSettings)) {
          conflicts.push({ cluster: name, note: { kind: 'cluster', name, reason: 'conflicting-route-settings', detail: `routes disagree on retries or hash key; route ${routeObject(r).name} is not honoured for them`, skipped: false } });
        }
      }
    }
    for (const [id, slot] of slots) {
      const before = this.slots.get(id);
      if (full || !sameSlot(before, slot)) dirtyRoutes.add(id);
    }
    for (const id of this.slots.keys()) {
      if (slots.has(id)) continue;
      routes.set(id, null);
      this.routeNotes.delete(id);
    }
    const dirtyUpstreams = this.resources.dirty.upstreams;
    for (const [name, settings] of derived) {
      const before = this.derived.get(name);
      if (!before || !sameSettings(before, settings)) dirtyUpstreams.add(name);
    }
    for (const name of this.derived.keys()) if (!derived.has(name)) dirtyUpstreams.add(name);
    this.slots = slots;
    this.routesByCluster = byCluster;
    this.derived = derived;
    this.conflicts = conflicts;
  }

  private assembleUpstream(name: string, out: Map<string, ApisixUpstream | null>): void {
    this.assembledNow.add(name);
    const t = this.resources.clusters.get(name);
    this.upstreamNotes.delete(name);
    if (!t?.upstream) {
      this.tls.plan(name, t, null);
      out.set(upstreamId(name), null);
      return;
    }
    const nodes = this.resources.nodes(t);
    if (!nodes) {
      // Envoy keeps an EDS cluster warming until its assignment arrives; so does the agent.
      this.tls.plan(name, t, null);
      this.upstreamNotes.set(name, [{ kind: 'cluster', name, reason: 'endpoints-pending', detail: 'no ClusterLoadAssignment received yet', skipped: true }]);
      out.set(t.upstream.id, null);
      return;
    }
    const assembled = assembleUpstream(t, nodes.nodes, this.derived.get(name));
    const tlsNotes = this.tls.plan(name, t, assembled.upstream, nodes.socketMatch);
    const notes = [...nodes.notes, ...assembled.notes, ...tlsNotes];
    if (notes.length) this.upstreamNotes.set(name, notes);
    out.set(t.upstream.id, assembled.upstream);
  }

  private assembleRoute(id: string, out: Map<string, ApisixRoute | null>): void {
    let route: ApisixRoute | null = null;
    const notes: TranslationNote[] = [];
    const clusters = this.resources.clusters;
    for (const r of each(this.slots.get(id))) {
      const main = r.clusters[0] !== undefined ? clusters.get(r.clusters[0]) : undefined;
      const passthrough = r.clusters.length === 1 ? main?.originalDestination : undefined;
      if (!passthrough) {
        const missing = r.clusters.filter((c) => !this.resources.hasUpstream(c));
        if (missing.length) {
          const why = missing.map((c) => (clusters.has(c) ? `${c} (not translatable or waiting for endpoints)` : `${c} (unknown cluster)`)).join(', ');
          // a weighted split between an original destination and a service has no APISIX form
          const reason = missing.some((c) => clusters.get(c)?.originalDestination) ? 'passthrough-split' : 'cluster-unavailable';
          notes.push({ kind: 'route', name: routeObject(r).name, reason, detail: why, skipped: true });
          continue;
        }
      }
      const target: RouteTarget = passthrough ? { passthrough, limits: main?.limits } : { connect: main?.upstream?.timeout?.connect, limits: main?.limits };
      route = finalRoute(r, target, this.resources.ports);
    }
    if (notes.length) this.routeNotes.set(id, notes);
    else this.routeNotes.delete(id);
    out.set(id, route);
  }

  private notes(): TranslationNote[] {
    const out: TranslationNote[] = [];
    for (const notes of this.resources.clusterNotes) out.push(...notes);
    out.push(...this.listNotes);
    for (const { cluster, note } of this.conflicts) if (!this.resources.clusters.get(cluster)?.originalDestination) out.push(note);
    for (const notes of this.upstreamNotes.values()) out.push(...notes);
    for (const notes of this.routeNotes.values()) out.push(...notes);
    for (const notes of this.l4Notes.values()) out.push(...notes);
    return out;
  }
}

function sameSlot(a: OneOrMore<KeptRoute> | undefined, b: OneOrMore<KeptRoute>): boolean {
  if (a === b) return true;
  if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
  return a.every((r, i) => r === b[i]);
}

/** One-shot translation of a whole xDS state (the reference the incremental path is compared with). */
export function translateMesh(xds: XdsResources, options: TranslateOptions = {}, remoteJwks?: RemoteJwksLookup): ApisixConfig {
  return new MeshTranslator(options).translate(xds, remoteJwks);
}
