import { deflateRawSync, inflateRawSync } from 'node:zlib';
import type { Cluster, ClusterLoadAssignment, Listener, RouteConfiguration } from '../xds/envoy-types.js';
import { TYPE_URL, type XdsKind } from '../xds/protos.js';
import { decodeMessage } from '../xds/codec.js';
import type { ApisixNode, TranslationNote } from './apisix-types.js';
import { translateCluster, type ClusterTranslation } from './cluster.js';
import { translateClusterLoadAssignment, type EndpointsTranslation } from './endpoints.js';
import { translateListener, scopeKey, type ListenerTranslation, type RouteScope } from './listener.js';
import type { SkipList } from '../policy/filter-inventory.js';
import { translateRouteConfiguration, DEFAULT_CAPTURE_PORTS, type CapturePorts, type RouteConfigTranslation } from './route-configuration.js';
import { keepRouteConfig, type KeptRouteConfig } from './kept-routes.js';
import { add, each, remove, type OneOrMore } from './one-or-more.js';
import { l4Listener, type L4ListenerDraft } from '../l4/listener-chains.js';

export interface TranslateOptions {
  ports?: CapturePorts;
  /** filters the operator lets the agent skip although it does not enforce them (insecure) */
  skipFilters?: SkipList;
}

/** One resource translated on its own (`prepare`), which is what the translator keeps of it. */
export type PreparedResource =
  | { kind: 'cluster'; translation: ClusterTranslation }
  | { kind: 'endpoint'; translation: KeptEndpoints }
  /** `l4`: the listener as the L4 front dispatches it (null: the capture never reaches it) */
  | { kind: 'listener'; translation: ListenerTranslation; l4: L4ListenerDraft | null }
  | { kind: 'route'; translation: RouteConfigEntry }
  /** its translation threw (a bug) */
  | { kind: XdsKind; failure: string };

/**
 * An assignment's nodes as the translator keeps them: their JSON (a third of the objects' memory),
 * with the notes when there are any. Parsed when an upstream is assembled.
 */
export type KeptEndpoints = string | { nodes: string; notes: TranslationNote[]; socketMatch?: Record<string, Record<string, string>> };

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

/** What changed since the assembly last looked. */
export interface Dirty {
  /** clusters whose upstream and routes must be recomputed */
  readonly clusters: Set<string>;
  /** clusters whose upstream alone must be recomputed (their nodes changed) */
  readonly upstreams: Set<string>;
  /** listeners or route configurations changed (or a cluster's original-destination kind): the route list is rebuilt */
  routesStale: boolean;
  /** listeners whose L4 object must be assembled again (their chains changed) */
  readonly l4Listeners: Set<string>;
}

/**
 * The translation of each xDS resource on its own, replaced when the resource changes, and what
 * each change makes dirty for the assembly. Decoded resources are not kept: a cluster's
 * translation, an assignment's nodes as JSON, a listener's translation, a route configuration's
 * routes per scope (kept-routes.ts) and its deflated bytes.
 */
export class ResourceTranslations {
  readonly ports: CapturePorts;
  private readonly clusterMap = new Map<string, ClusterTranslation>();
  private readonly endpointMap = new Map<string, KeptEndpoints>();
  private readonly listenerMap = new Map<string, ListenerTranslation>();
  private readonly routeConfigs = new Map<string, RouteConfigEntry>();
  /** resources whose translation threw (a bug): nothing is assembled while one is here */
  private readonly failures = new Map<string, string>();
  /** the notes of cluster translations, for the clusters that have some */
  private readonly notesOfClusters = new Map<string, TranslationNote[]>();
  /** EDS name → the cluster (nearly always one) or clusters that take their nodes from it */
  private readonly edsUsers = new Map<string, OneOrMore<string>>();
  /** route configuration name → the scopes the listeners serve it on (undefined: to be recomputed) */
  private rdsScopes: Map<string, RouteScope[]> | undefined;
  /** listener name → its L4 view, for the listeners the capture reaches */
  private readonly l4Map = new Map<string, L4ListenerDraft>();
  /** cluster → the listeners whose TCP chains name it */
  private readonly l4Users = new Map<string, OneOrMore<string>>();
  readonly dirty: Dirty = { clusters: new Set(), upstreams: new Set(), routesStale: true, l4Listeners: new Set() };

  constructor(private readonly options: TranslateOptions = {}) {
    this.ports = options.ports ?? DEFAULT_CAPTURE_PORTS;
  }

  get clusters(): ReadonlyMap<string, ClusterTranslation> {
    return this.clusterMap;
  }

  get listeners(): ReadonlyMap<string, ListenerTranslation> {
    return this.listenerMap;
  }

  get l4Drafts(): ReadonlyMap<string, L4ListenerDraft> {
    return this.l4Map;
  }

  /** The listeners whose L4 chains name the cluster. */
  l4UsersOf(cluster: string): Iterable<string> {
    return each(this.l4Users.get(cluster));
  }

  /** Whether a TCP chain names the cluster (its endpoints go to the stream workers: agent/l4/stream-upstreams.ts). */
  namedByL4(cluster: string): boolean {
    return this.l4Users.has(cluster);
  }

  get clusterNotes(): Iterable<TranslationNote[]> {
    return this.notesOfClusters.values();
  }

  /** Why nothing can be assembled, if a resource's translation failed. */
  failure(): string | undefined {
    return this.failures.values().next().value;
  }

  /** Translates one resource on its own (the state is only read: which scopes serve a route configuration). */
  prepare(kind: XdsKind, name: string, resource: unknown, bytes?: Uint8Array): PreparedResource {
    try {
      switch (kind) {
        case 'cluster':
          return { kind, translation: keptCluster(name, translateCluster(resource as Cluster)) };
        case 'endpoint':
          return { kind, translation: keptEndpoints(translateClusterLoadAssignment(resource as ClusterLoadAssignment)) };
        case 'listener':
          return { kind, translation: translateListener(resource as Listener, this.options.skipFilters), l4: l4Listener(resource as Listener, this.options.skipFilters) ?? null };
        case 'route':
          return { kind, translation: this.prepareRouteConfig(name, resource as RouteConfiguration, bytes) };
      }
    } catch (err) {
      // A translator that throws is a bug; the configuration stays as it was until the resource changes.
      return { kind, failure: `${kind} ${name.slice(0, 200)} not translated: ${(err as Error).message.slice(0, 300)}` };
    }
  }

  /** Replaces (or with undefined removes) what is kept for a resource, and marks what depends on it. */
  set(kind: XdsKind, name: string, prepared: PreparedResource | undefined): void {
    const key = `${kind}\0${name}`;
    if (prepared && 'failure' in prepared) this.failures.set(key, prepared.failure);
    else this.failures.delete(key);
    const translation = prepared && 'translation' in prepared ? prepared.translation : undefined;
    if (kind === 'cluster') this.setCluster(name, translation as ClusterTranslation | undefined);
    else if (kind === 'endpoint') this.setEndpoints(name, translation as KeptEndpoints | undefined);
    else if (kind === 'listener') this.setListener(name, translation as ListenerTranslation | undefined, prepared && 'l4' in prepared ? prepared.l4 : null);
    else this.setRouteConfig(name, translation as RouteConfigEntry | undefined);
  }

  /** Whether the cluster has an upstream: translatable, with its nodes (inline or received). */
  hasUpstream(cluster: string): boolean {
    const t = this.clusterMap.get(cluster);
    return !!t?.upstream && (!!t.inlineNodes || this.endpointMap.has(t.edsServiceName ?? cluster));
  }

  /** The nodes of a cluster with an upstream, undefined while its assignment has not arrived. */
  nodes(t: ClusterTranslation): { nodes: ApisixNode[]; notes: TranslationNote[]; socketMatch?: Record<string, Record<string, string>> | undefined } | undefined {
    if (t.inlineNodes) return { nodes: t.inlineNodes, notes: NO_NOTES, socketMatch: t.tls?.inlineSocketMatch };
    const kept = this.endpointMap.get(t.edsServiceName ?? t.clusterName);
    if (kept === undefined) return undefined;
    return typeof kept === 'string' ? { nodes: JSON.parse(kept) as ApisixNode[], notes: NO_NOTES } : { nodes: JSON.parse(kept.nodes) as ApisixNode[], notes: kept.notes, socketMatch: kept.socketMatch };
  }

  /**
   * A route configuration translated for a scope (undefined while it has not been received),
   * translated again from its bytes the first time a listener serves it on that scope. `session`
   * lives for one rebuild of the route list: it holds what was decoded and which scopes were used.
   */
  routeConfig(name: string, scope: RouteScope, session: RouteListSession): KeptRouteConfig | undefined {
    const entry = this.routeConfigs.get(name);
    if (!entry) return undefined;
    const key = scopeKey(scope);
    let t = entry.byScope.get(key);
    if (!t) {
      let rc = session.decoded.get(entry);
      if (!rc) session.decoded.set(entry, (rc = Buffer.isBuffer(entry.source) ? decodeMessage<RouteConfiguration>(TYPE_URL.route, inflateRawSync(entry.source)) : entry.source));
      entry.byScope.set(key, (t = this.keep(translateRouteConfiguration(rc, scope))));
    }
    let keys = session.used.get(entry);
    if (!keys) session.used.set(entry, (keys = new Set()));
    keys.add(key);
    return t;
  }

  /** After a rebuild: translations for scopes no listener serves any more are dropped. */
  dropUnusedScopes(session: RouteListSession): void {
    for (const entry of this.routeConfigs.values()) {
      const keys = session.used.get(entry);
      for (const key of entry.byScope.keys()) if (!keys?.has(key)) entry.byScope.delete(key);
    }
  }

  private setCluster(name: string, after: ClusterTranslation | undefined): void {
    const before = this.clusterMap.get(name);
    if (before?.edsServiceName !== undefined) remove(this.edsUsers, before.edsServiceName, name);
    if (after) {
      this.clusterMap.set(name, after);
      if (after.edsServiceName !== undefined) add(this.edsUsers, after.edsServiceName, name);
    } else {
      this.clusterMap.delete(name);
    }
    if (after?.notes.length) this.notesOfClusters.set(name, after.notes);
    else this.notesOfClusters.delete(name);
    // TCP pass-through routes exist only for original-destination clusters
    if (!!before?.originalDestination !== !!after?.originalDestination) this.dirty.routesStale = true;
    this.dirty.clusters.add(name);
  }

  private setEndpoints(name: string, translation: KeptEndpoints | undefined): void {
    const had = this.endpointMap.has(name);
    if (translation) this.endpointMap.set(name, translation);
    else this.endpointMap.delete(name);
    // nodes alone change the upstream; an assignment arriving or leaving decides whether there is one
    const dirty = had === !!translation ? this.dirty.upstreams : this.dirty.clusters;
    for (const cluster of each(this.edsUsers.get(name))) dirty.add(cluster);
  }

  private setListener(name: string, translation: ListenerTranslation | undefined, l4: L4ListenerDraft | null): void {
    if (translation) this.listenerMap.set(name, translation);
    else this.listenerMap.delete(name);
    const before = l4Clusters(this.l4Map.get(name));
    for (const cluster of before) remove(this.l4Users, cluster, name);
    const after = l4Clusters(l4 && translation ? l4 : undefined);
    if (l4 && translation) {
      this.l4Map.set(name, l4);
      for (const cluster of after) add(this.l4Users, cluster, name);
    } else {
      this.l4Map.delete(name);
    }
    // a cluster this listener starts or stops naming: its upstream is emitted again, so that the
    // stream workers' copy of its endpoints appears or goes (assembly: L4Upstreams)
    for (const cluster of before) if (!after.has(cluster)) this.dirty.upstreams.add(cluster);
    for (const cluster of after) if (!before.has(cluster)) this.dirty.upstreams.add(cluster);
    this.dirty.l4Listeners.add(name);
    this.rdsScopes = undefined;
    this.dirty.routesStale = true;
  }

  private setRouteConfig(name: string, entry: RouteConfigEntry | undefined): void {
    this.dirty.routesStale = true;
    if (entry) this.routeConfigs.set(name, entry);
    else this.routeConfigs.delete(name);
  }

  private prepareRouteConfig(name: string, rc: RouteConfiguration, bytes: Uint8Array | undefined): RouteConfigEntry {
    const entry: RouteConfigEntry = { source: bytes ? deflateRawSync(bytes, { level: 1 }) : rc, byScope: new Map() };
    // translated now for the scopes the listeners serve it on, while it is decoded
    for (const scope of this.scopesOf(name)) entry.byScope.set(scopeKey(scope), this.keep(translateRouteConfiguration(rc, scope)));
    return entry;
  }

  /** Kept routes name their clusters with the cluster translations' strings (one copy per name). */
  private keep(t: RouteConfigTranslation): KeptRouteConfig {
    for (const r of t.routes) r.clusters = r.clusters.map((c) => this.clusterMap.get(c)?.clusterName ?? c);
    return keepRouteConfig(t);
  }

  private scopesOf(routeConfigName: string): RouteScope[] {
    if (!this.rdsScopes) {
      this.rdsScopes = new Map();
      for (const lt of this.listenerMap.values()) {
        for (const { routeConfigName: rcName, scope } of lt.rds) {
          const scopes = this.rdsScopes.get(rcName) ?? [];
          if (!scopes.some((s) => scopeKey(s) === scopeKey(scope))) scopes.push(scope);
          this.rdsScopes.set(rcName, scopes);
        }
      }
    }
    return this.rdsScopes.get(routeConfigName) ?? [];
  }
}

/** What one rebuild of the route list decoded and used. */
export interface RouteListSession {
  decoded: Map<RouteConfigEntry, RouteConfiguration>;
  used: Map<RouteConfigEntry, Set<string>>;
}

export function newRouteListSession(): RouteListSession {
  return { decoded: new Map(), used: new Map() };
}

function keptEndpoints(t: EndpointsTranslation): KeptEndpoints {
  const nodes = JSON.stringify(t.nodes);
  if (t.socketMatch) return { nodes, notes: t.notes, socketMatch: t.socketMatch };
  return t.notes.length ? { nodes, notes: t.notes } : nodes;
}

const NO_NOTES: TranslationNote[] = [];

/** The clusters a listener's TCP chains name, each once. */
function l4Clusters(draft: L4ListenerDraft | undefined): Set<string> {
  const out = new Set<string>();
  if (!draft) return out;
  for (const chain of draft.default ? [...draft.chains, draft.default] : draft.chains) {
    if (chain.target.kind === 'tcp') for (const c of chain.target.clusters) out.add(c.name);
  }
  return out;
}

/** A cluster translation sharing what it can: its EDS name is mostly its own name, its notes mostly none. */
function keptCluster(name: string, t: ClusterTranslation): ClusterTranslation {
  if (t.edsServiceName === name) t.edsServiceName = name;
  if (t.notes.length === 0) t.notes = NO_NOTES;
  return t;
}
