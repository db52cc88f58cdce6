import { deflateRawSync, inflateRawSync } from 'node:zlib';
import type { Cluster, ClusterLoadAssignment, Listener, RouteConfiguration } from '../xds/envoy-types.js';
import { TYPE_URL, type XdsKind } from '../xds/protos.js';
import { decodeMessage } from '../xds/codec.js';
import type { ApisixNode, ApisixRoute, ApisixUpstream, TranslationNote } from './apisix-types.js';
import { translateCluster, type ClusterContext, type ClusterTranslation } from './cluster.js';
import { translateClusterLoadAssignment, type EndpointsTranslation } from './endpoints.js';
import { translateListener, scopeKey, type ListenerTranslation, type RouteScope } from './listener.js';
import type { SkipList } from '../policy/filter-inventory.js';
import { upstreamId } from './ids.js';
import {
  translateRouteConfiguration, DEFAULT_CAPTURE_PORTS,
  type CapturePorts, type RouteConfigTranslation, type RouteUpstreamSettings,
} from './route-configuration.js';
import { RouteListBuilder } from './route-list.js';
import { assembleUpstream, finalRoute, sameSettings, type RouteTarget } from './final-objects.js';
import { keepRouteConfig, releaseInflatedRoutes, routeObject, type KeptRoute, type KeptRouteConfig } from './kept-routes.js';

/** The xDS state as decoded objects: one map per type, keyed by resource name. */
export interface XdsResources {
  clusters: ReadonlyMap<string, Cluster>;
  endpoints: ReadonlyMap<string, ClusterLoadAssignment>;
  listeners: ReadonlyMap<string, Listener>;
  routeConfigs: ReadonlyMap<string, RouteConfiguration>;
}

export interface XdsResourceByKind {
  cluster: Cluster;
  endpoint: ClusterLoadAssignment;
  listener: Listener;
  route: RouteConfiguration;
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

/** One resource translated on its own (`MeshTranslator.prepare`), which is what the translator keeps of it. */
export type PreparedResource =
  | { kind: 'cluster'; translation: ClusterTranslation }
  | { kind: 'endpoint'; translation: KeptEndpoints }
  | { kind: 'listener'; translation: ListenerTranslation }
  | { kind: 'route'; translation: RouteConfigEntry }
  /** its translation threw (a bug) */
  | { kind: XdsKind; failure: string };

/** What APISIX gets: upstreams and routes by id, plus what was left out and why. */
export interface ApisixConfig {
  upstreams: Map<string, ApisixUpstream>;
  routes: Map<string, ApisixRoute>;
  notes: TranslationNote[];
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
  /** every note of the whole configuration (not only of what changed) */
  notes: TranslationNote[];
}

export interface TranslateOptions extends ClusterContext {
  ports?: CapturePorts;
  /** filters the operator lets the agent skip although it does not enforce them (insecure) */
  skipFilters?: SkipList;
}

export interface RouteConfigEntry {
  /**
   * The configuration as it came, to be translated again for a scope a listener adds later: its
   * bytes deflated (route configurations are large and repetitive: 3 MiB for 10,000 services,
   * ~10x less deflated), or the decoded object when it came without bytes.
   */
  source: Buffer | RouteConfiguration;
  /** its translation per scope it is served on (scopeKey) */
  byScope: Map<string, KeptRouteConfig>;
}

type Sources = { [K in XdsKind]: Map<string, XdsResourceByKind[K]> };

/**
 * The translation of the xDS state into APISIX objects, kept up to date by what changes.
 *
 * Each resource is translated once, when it arrives (`ingest`): a cluster, an assignment, a
 * listener, a route configuration (per scope it is served on). Neither the decoded resources nor
 * the objects APISIX gets are kept: the per-resource translations and a few indexes (which clusters
 * take their nodes from an assignment, which routes name a cluster, the settings routes give their
 * upstreams) are what stays. `assemble` then rebuilds only what depends on what changed: one
 * changed assignment is one upstream; a changed cluster is its upstream and the routes naming it; a
 * listener or route configuration rebuilds the list of routes (the routes whose translation did not
 * change keep their identity).
 *
 * The result is a pure function of the xDS state: assembling after any sequence of changes gives
 * what a fresh translator gives for the final state (tested, with random sequences).
 */
export class MeshTranslator {
  private readonly ports: CapturePorts;
  private readonly clusters = new Map<string, ClusterTranslation>();
  private readonly endpoints = new Map<string, KeptEndpoints>();
  private readonly listeners = new Map<string, ListenerTranslation>();
  private readonly routeConfigs = new Map<string, RouteConfigEntry>();
  /** resources whose translation threw (a bug): nothing is assembled while one is here */
  private readonly failures = new Map<string, string>();
  /** the notes of cluster translations, for the clusters that have some */
  private readonly clusterNotes = new Map<string, TranslationNote[]>();
  /** EDS name → the cluster (nearly always one) or clusters that take their nodes from it */
  private readonly edsUsers = new Map<string, string | string[]>();
  /** route configuration name → the scopes the listeners serve it on (undefined: to be recomputed) */
  private rdsScopes: Map<string, RouteScope[]> | undefined;

  // what changed since the last assembly
  /** clusters whose upstream and routes must be recomputed */
  private readonly dirtyClusters = new Set<string>();
  /** clusters whose upstream alone must be recomputed (their nodes changed) */
  private readonly dirtyUpstreams = new Set<string>();
  /** listeners or route configurations changed: the list of routes is rebuilt */
  private routesStale = true;
  /** the next assembly gives everything (the first one, and after a failure) */
  private full = true;

  // the assembled state
  private readonly routeList: RouteListBuilder;
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

  /** `translate`'s state: the objects it was given last, and the whole configuration */
  private given: Sources | undefined;
  private view: { upstreams: Map<string, ApisixUpstream>; routes: Map<string, ApisixRoute> } | undefined;

  constructor(private readonly options: TranslateOptions = {}) {
    this.ports = options.ports ?? DEFAULT_CAPTURE_PORTS;
    this.routeList = new RouteListBuilder(this.ports);
  }

  /**
   * Translates one resource on its own, as the ADS client decodes it (its `prepare`): the decoded
   * resource is not needed any longer. Does not change the translator.
   */
  prepare(kind: XdsKind, name: string, resource: unknown, bytes?: Uint8Array): PreparedResource {
    try {
      switch (kind) {
        case 'cluster':
          return { kind, translation: keptCluster(name, translateCluster(resource as Cluster, this.options)) };
        case 'endpoint':
          return { kind, translation: keptEndpoints(translateClusterLoadAssignment(resource as ClusterLoadAssignment)) };
        case 'listener':
          return { kind, translation: translateListener(resource as Listener, this.options.skipFilters) };
        case 'route':
          return { kind, translation: this.prepareRouteConfig(name, resource as RouteConfiguration, bytes) };
      }
    } catch (err) {
      // A translator that throws is a bug; the configuration stays as it was until the resource changes.
      return { kind, failure: `${kind} ${name.slice(0, 200)} not translated: ${(err as Error).message.slice(0, 300)}` };
    }
  }

  /** Takes what one xDS response changed (prepared by `prepare`). */
  ingest(change: XdsChange): void {
    for (const name of change.removed) this.set(change.kind, name, undefined);
    for (const [name, prepared] of change.changed) this.set(change.kind, name, prepared);
  }

  /**
   * The APISIX objects that changed since the previous call (all of them the first time). Throws
   * when a resource could not be translated; the next call then gives everything again.
   */
  assemble(): ApisixChanges {
    const failure = this.failures.values().next();
    if (!failure.done) throw new Error(failure.value);
    try {
      return this.assembleChanges();
    } catch (err) {
      this.resync();
      throw err;
    } finally {
      releaseInflatedRoutes();
    }
  }

  /** The next assembly gives the whole configuration (after its result could not be applied). */
  resync(): void {
    this.full = true;
    this.routesStale = true;
  }

  /**
   * Translates a whole xDS state given as decoded objects: what differs from the previous call (by
   * object identity) is ingested, and the whole configuration returned.
   */
  translate(xds: XdsResources): ApisixConfig {
    const given = (this.given ??= { cluster: new Map(), endpoint: new Map(), listener: new Map(), route: new Map() });
    const now: Sources = { cluster: new Map(xds.clusters), endpoint: new Map(xds.endpoints), listener: new Map(xds.listeners), route: new Map(xds.routeConfigs) };
    for (const kind of ['cluster', 'endpoint', 'listener', 'route'] as const) {
      const before = given[kind] as Map<string, object>;
      const after = now[kind] as Map<string, object>;
      for (const name of before.keys()) if (!after.has(name)) this.set(kind, name, undefined);
      for (const [name, resource] of after) if (before.get(name) !== resource) this.set(kind, name, this.prepare(kind, name, resource));
    }
    this.given = now;
    const changes = this.assemble();
    const view = (this.view ??= { upstreams: new Map(), routes: new Map() });
    if (changes.full) {
      view.upstreams.clear();
      view.routes.clear();
    }
    for (const [id, u] of changes.upstreams) {
      if (u) view.upstreams.set(id, u);
      else view.upstreams.delete(id);
    }
    for (const [id, r] of changes.routes) {
      if (r) view.routes.set(id, r);
      else view.routes.delete(id);
    }
    return { upstreams: new Map(view.upstreams), routes: new Map(view.routes), notes: changes.notes };
  }

  // ---------------------------------------------------------------- per resource

  /** Replaces (or with undefined removes) what the translator holds for a resource. */
  private set(kind: XdsKind, name: string, prepared: PreparedResource | undefined): void {
    const key = `${kind}\0${name}`;
    if (prepared && 'failure' in prepared) this.failures.set(key, prepared.failure);
    else this.failures.delete(key);
    const translation = prepared && 'translation' in prepared ? prepared.translation : undefined;
    if (kind === 'cluster') this.setCluster(name, translation as ClusterTranslation | undefined);
    else if (kind === 'endpoint') this.setEndpoints(name, translation as KeptEndpoints | undefined);
    else if (kind === 'listener') this.setListener(name, translation as ListenerTranslation | undefined);
    else this.setRouteConfig(name, translation as RouteConfigEntry | undefined);
  }

  private setCluster(name: string, after: ClusterTranslation | undefined): void {
    const before = this.clusters.get(name);
    if (before?.edsServiceName !== undefined) this.removeEdsUser(before.edsServiceName, name);
    if (after) {
      this.clusters.set(name, after);
      if (after.edsServiceName !== undefined) this.addEdsUser(after.edsServiceName, name);
    } else {
      this.clusters.delete(name);
    }
    if (after?.notes.length) this.clusterNotes.set(name, after.notes);
    else this.clusterNotes.delete(name);
    // TCP pass-through routes exist only for original-destination clusters
    if (!!before?.originalDestination !== !!after?.originalDestination) this.routesStale = true;
    this.dirtyClusters.add(name);
  }

  private setEndpoints(name: string, translation: KeptEndpoints | undefined): void {
    const had = this.endpoints.has(name);
    if (translation) this.endpoints.set(name, translation);
    else this.endpoints.delete(name);
    // nodes alone change the upstream; an assignment arriving or leaving decides whether there is one
    const dirty = had === !!translation ? this.dirtyUpstreams : this.dirtyClusters;
    const users = this.edsUsers.get(name);
    if (typeof users === 'string') dirty.add(users);
    else for (const cluster of users ?? []) dirty.add(cluster);
  }

  private addEdsUser(edsName: string, cluster: string): void {
    const users = this.edsUsers.get(edsName);
    if (users === undefined) this.edsUsers.set(edsName, cluster);
    else this.edsUsers.set(edsName, [...(typeof users === 'string' ? [users] : users), cluster]);
  }

  private removeEdsUser(edsName: string, cluster: string): void {
    const users = this.edsUsers.get(edsName);
    const left = (typeof users === 'string' ? [users] : (users ?? [])).filter((c) => c !== cluster);
    if (left.length === 0) this.edsUsers.delete(edsName);
    else this.edsUsers.set(edsName, left.length === 1 ? left[0]! : left);
  }

  private setListener(name: string, translation: ListenerTranslation | undefined): void {
    if (translation) this.listeners.set(name, translation);
    else this.listeners.delete(name);
    this.rdsScopes = undefined;
    this.routesStale = true;
  }

  private setRouteConfig(name: string, entry: RouteConfigEntry | undefined): void {
    this.routesStale = true;
    if (entry) this.routeConfigs.set(name, entry);
    else this.routeConfigs.delete(name);
  }

  private prepareRouteConfig(name: string, rc: RouteConfiguration, bytes: Uint8Array | undefined): RouteConfigEntry {
    const entry: RouteConfigEntry = { source: bytes ? deflateRawSync(bytes, { level: 1 }) : rc, byScope: new Map() };
    // translated now for the scopes the listeners serve it on, while it is decoded
    for (const scope of this.scopesOf(name)) entry.byScope.set(scopeKey(scope), this.keep(translateRouteConfiguration(rc, scope, this.ports)));
    return entry;
  }

  /** Kept routes name their clusters with the cluster translations' strings (one copy per name). */
  private keep(t: RouteConfigTranslation): KeptRouteConfig {
    for (const r of t.routes) r.clusters = r.clusters.map((c) => this.clusters.get(c)?.clusterName ?? c);
    return keepRouteConfig(t);
  }

  private scopesOf(routeConfigName: string): RouteScope[] {
    if (!this.rdsScopes) {
      this.rdsScopes = new Map();
      for (const lt of this.listeners.values()) {
        for (const { routeConfigName: rcName, scope } of lt.rds) {
          const scopes = this.rdsScopes.get(rcName) ?? [];
          if (!scopes.some((s) => scopeKey(s) === scopeKey(scope))) scopes.push(scope);
          this.rdsScopes.set(rcName, scopes);
        }
      }
    }
    return this.rdsScopes.get(routeConfigName) ?? [];
  }

  // ---------------------------------------------------------------- assembly

  private assembleChanges(): ApisixChanges {
    const full = this.full;
    const upstreams = new Map<string, ApisixUpstream | null>();
    const routes = new Map<string, ApisixRoute | null>();
    const dirtyRoutes = new Set<string>();
    if (this.routesStale || full) this.rebuildRoutes(routes, dirtyRoutes, full);
    const dirtyClusters = full ? new Set([...this.clusters.keys(), ...this.dirtyClusters]) : this.dirtyClusters;
    for (const name of dirtyClusters) {
      this.dirtyUpstreams.add(name);
      for (const id of each(this.routesByCluster.get(name))) dirtyRoutes.add(id);
    }
    for (const name of this.dirtyUpstreams) this.assembleUpstream(name, upstreams);
    for (const id of dirtyRoutes) this.assembleRoute(id, routes);
    this.dirtyClusters.clear();
    this.dirtyUpstreams.clear();
    this.routesStale = false;
    this.full = false;
    return { full, upstreams, routes, notes: this.notes() };
  }

  /** The list of routes from the listeners and route configurations; marks what differs. */
  private rebuildRoutes(routes: Map<string, ApisixRoute | null>, dirtyRoutes: Set<string>, full: boolean): void {
    const used = new Map<RouteConfigEntry, Set<string>>();
    const decoded = new Map<RouteConfigEntry, RouteConfiguration>();
    const list = this.routeList.build({
      listeners: this.listeners.values(),
      routeConfig: (name, scope) => {
        const entry = this.routeConfigs.get(name);
        if (!entry) return undefined;
        const key = scopeKey(scope);
        let t = entry.byScope.get(key);
        if (!t) {
          let rc = decoded.get(entry);
          if (!rc) decoded.set(entry, (rc = Buffer.isBuffer(entry.source) ? decodeMessage<RouteConfiguration>(TYPE_URL.route, inflateRawSync(entry.source)) : entry.source));
          entry.byScope.set(key, (t = this.keep(translateRouteConfiguration(rc, scope, this.ports))));
        }
        let keys = used.get(entry);
        if (!keys) used.set(entry, (keys = new Set()));
        keys.add(key);
        return t;
      },
      isOriginalDestination: (cluster) => !!this.clusters.get(cluster)?.originalDestination,
    });
    // translations for scopes no listener serves any more are dropped
    for (const entry of this.routeConfigs.values()) {
      const keys = used.get(entry);
      for (const key of entry.byScope.keys()) if (!keys?.has(key)) entry.byScope.delete(key);
    }
    this.listNotes = list.notes;

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
    for (const [name, settings] of derived) {
      const before = this.derived.get(name);
      if (!before || !sameSettings(before, settings)) this.dirtyUpstreams.add(name);
    }
    for (const name of this.derived.keys()) if (!derived.has(name)) this.dirtyUpstreams.add(name);
    this.slots = slots;
    this.routesByCluster = byCluster;
    this.derived = derived;
    this.conflicts = conflicts;
  }

  private hasUpstream(cluster: string): boolean {
    const t = this.clusters.get(cluster);
    return !!t?.upstream && (!!t.inlineNodes || this.endpoints.has(t.edsServiceName ?? cluster));
  }

  private assembleUpstream(name: string, out: Map<string, ApisixUpstream | null>): void {
    const t = this.clusters.get(name);
    this.upstreamNotes.delete(name);
    if (!t?.upstream) {
      out.set(upstreamId(name), null);
      return;
    }
    let nodes = t.inlineNodes;
    const notes: TranslationNote[] = [];
    if (!nodes) {
      const kept = this.endpoints.get(t.edsServiceName ?? name);
      if (kept === undefined) {
        // Envoy keeps an EDS cluster warming until its assignment arrives; so does the agent.
        this.upstreamNotes.set(name, [{ kind: 'cluster', name, reason: 'endpoints-pending', detail: 'no ClusterLoadAssignment received yet', skipped: true }]);
        out.set(t.upstream.id, null);
        return;
      }
      if (typeof kept !== 'string') notes.push(...kept.notes);
      nodes = JSON.parse(typeof kept === 'string' ? kept : kept.nodes) as ApisixNode[];
    }
    const assembled = assembleUpstream(t, nodes, this.derived.get(name));
    notes.push(...assembled.notes);
    if (notes.length) this.upstreamNotes.set(name, notes);
    out.set(t.upstream.id, assembled.upstream);
  }

  private assembleRoute(id: string, out: Map<string, ApisixRoute | null>): void {
    let route: ApisixRoute | null = null;
    const notes: TranslationNote[] = [];
    for (const r of each(this.slots.get(id))) {
      const main = r.clusters[0] !== undefined ? this.clusters.get(r.clusters[0]) : undefined;
      const passthrough = r.clusters.length === 1 ? main?.originalDestination : undefined;
      if (!passthrough) {
        const missing = r.clusters.filter((c) => !this.hasUpstream(c));
        if (missing.length) {
          const why = missing.map((c) => (this.clusters.has(c) ? `${c} (not translatable or waiting for endpoints)` : `${c} (unknown cluster)`)).join(', ');
          // a weighted split between an original destination and a service has no APISIX form
          const reason = missing.some((c) => this.clusters.get(c)?.originalDestination) ? 'passthrough-split' : 'cluster-unavailable';
          notes.push({ kind: 'route', name: routeObject(r).name, reason, detail: why, skipped: true });
          continue;
        }
      }
      const target: RouteTarget = passthrough ? { passthrough } : { connect: main?.upstream?.timeout?.connect, limits: main?.limits };
      route = finalRoute(r, target, this.ports);
    }
    if (notes.length) this.routeNotes.set(id, notes);
    else this.routeNotes.delete(id);
    out.set(id, route);
  }

  private notes(): TranslationNote[] {
    const out: TranslationNote[] = [];
    for (const notes of this.clusterNotes.values()) out.push(...notes);
    out.push(...this.listNotes);
    for (const { cluster, note } of this.conflicts) if (!this.clusters.get(cluster)?.originalDestination) out.push(note);
    for (const notes of this.upstreamNotes.values()) out.push(...notes);
    for (const notes of this.routeNotes.values()) out.push(...notes);
    return out;
  }
}

/**
 * An assignment's nodes as the translator keeps them: their JSON (a third of the objects' memory),
 * with the notes when there are any. Parsed when an upstream is assembled.
 */
type KeptEndpoints = string | { nodes: string; notes: TranslationNote[] };

function keptEndpoints(t: EndpointsTranslation): KeptEndpoints {
  const nodes = JSON.stringify(t.nodes);
  return t.notes.length ? { nodes, notes: t.notes } : nodes;
}

const NO_NOTES: TranslationNote[] = [];

/** A cluster translation sharing what it can: its EDS name is mostly its own name, its notes mostly none. */
function keptCluster(name: string, t: ClusterTranslation): ClusterTranslation {
  if (t.edsServiceName === name) t.edsServiceName = name;
  if (t.notes.length === 0) t.notes = NO_NOTES;
  return t;
}

/** One value, or several: most keys of the translator's indexes have one, and an array each would cost memory. */
type OneOrMore<T> = T | T[];

function add<T>(map: Map<string, OneOrMore<T>>, key: string, value: T): void {
  const now = map.get(key);
  if (now === undefined) map.set(key, value);
  else if (Array.isArray(now)) now.push(value);
  else map.set(key, [now, value]);
}

function each<T>(values: OneOrMore<T> | undefined): readonly T[] {
  return values === undefined ? [] : Array.isArray(values) ? values : [values];
}

function sameSlot(a: OneOrMore<KeptRoute> | undefined, b: OneOrMore<KeptRoute>): boolean {
  if (a === b) return true;
  if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
  return a.every((r, i) => r === b[i]);
}

/** One-shot translation of a whole xDS state (the reference the incremental path is compared with). */
export function translateMesh(xds: XdsResources, options: TranslateOptions = {}): ApisixConfig {
  return new MeshTranslator(options).translate(xds);
}
