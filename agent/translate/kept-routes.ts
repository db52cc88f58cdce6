import { deflateRawSync, inflateRawSync } from 'node:zlib';
import type { ApisixRoute, TranslationNote } from './apisix-types.js';
import type { RouteConfigTranslation, RouteUpstreamSettings, TranslatedRoute } from './route-configuration.js';

/**
 * A translated route as the translator keeps it between pushes: what the assembly reads of every
 * route (id, clusters, upstream settings), and its APISIX object only as JSON text, parsed again
 * when the route's final form has to be rebuilt (its cluster changed). The texts of a route
 * configuration's routes are deflated together: a mesh's routes differ in a few names, so 10,000
 * routes' 4.6 MiB of JSON keep as ~0.5 MiB, where the objects took ~13 MiB.
 */
export interface KeptRoute {
  readonly id: string;
  /** every cluster the route sends to: the main one first */
  readonly clusters: readonly string[];
  readonly upstreamSettings: RouteUpstreamSettings;
  readonly text: RouteText;
}

export interface KeptRouteConfig {
  routes: KeptRoute[];
  notes: TranslationNote[];
}

type RouteText = string | { block: TextBlock; line: number };

/**
 * Routes' JSON, deflated together; inflated on first use until `releaseInflatedRoutes`. The objects
 * they were made from stay until then too: the assembly that follows a translation uses them
 * (parsing 10,000 routes back took ~60 ms).
 */
class TextBlock {
  private readonly deflated: Buffer;
  private lines: string[] | undefined;
  private objects: ApisixRoute[] | undefined;

  constructor(routes: ApisixRoute[]) {
    // JSON text has no raw line breaks (JSON.stringify escapes them in strings)
    this.deflated = deflateRawSync(routes.map((r) => JSON.stringify(r)).join('\n'), { level: 1 });
    this.objects = routes;
    inflated.add(this);
  }

  route(i: number): ApisixRoute {
    if (this.objects) return this.objects[i]!;
    if (!this.lines) {
      this.lines = inflateRawSync(this.deflated).toString('utf8').split('\n');
      inflated.add(this);
    }
    return JSON.parse(this.lines[i]!) as ApisixRoute;
  }

  release(): void {
    this.lines = undefined;
    this.objects = undefined;
  }
}

/** blocks inflated (or made) since the last release */
const inflated = new Set<TextBlock>();

/** Drops the inflated texts (the translator calls it after each assembly). */
export function releaseInflatedRoutes(): void {
  for (const block of inflated) block.release();
  inflated.clear();
}

const NO_NOTES: TranslationNote[] = [];
/** the same settings are one object (most routes share a handful) */
const settingsByText = new Map<string, RouteUpstreamSettings>();

/** One route kept on its own (refusals, pass-through and RBAC variants: a few per listener). */
export function keepRoute(r: TranslatedRoute): KeptRoute {
  return { id: r.route.id, clusters: r.clusters, upstreamSettings: sharedSettings(r.upstreamSettings), text: JSON.stringify(r.route) };
}

/** A route configuration's routes, their texts in one block. */
export function keepRouteConfig(t: RouteConfigTranslation): KeptRouteConfig {
  const notes = t.notes.length ? t.notes : NO_NOTES;
  if (t.routes.length < 2) return { routes: t.routes.map(keepRoute), notes };
  const block = new TextBlock(t.routes.map((r) => r.route));
  const routes = t.routes.map((r, line): KeptRoute => ({ id: r.route.id, clusters: r.clusters, upstreamSettings: sharedSettings(r.upstreamSettings), text: { block, line } }));
  return { routes, notes };
}

/** The route's APISIX object, not to be changed (it may be the one it was kept from). */
export function routeObject(r: KeptRoute): ApisixRoute {
  return typeof r.text === 'string' ? (JSON.parse(r.text) as ApisixRoute) : r.text.block.route(r.text.line);
}

function sharedSettings(settings: RouteUpstreamSettings): RouteUpstreamSettings {
  const text = JSON.stringify(settings);
  let shared = settingsByText.get(text);
  if (!shared) {
    // bounded: settings come from a few fields of the routes; a mesh with more variety keeps its own
    if (settingsByText.size >= 4096) return settings;
    settingsByText.set(text, (shared = settings));
  }
  return shared;
}
