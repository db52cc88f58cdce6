import type { Route, RouteAction, RouteConfiguration, VirtualHost } from '../xds/envoy-types.js';
import type { ApisixPlugins, ApisixRoute, ApisixVar, TranslationNote } from './apisix-types.js';
import { stableId, upstreamId } from './ids.js';
import { scopeKey, type RouteScope } from './listener.js';
import { matchVars, UnsupportedMatch } from './matchers.js';
import { pathRewrite, type PathRewrite } from './rewrite.js';
import {
  durationSeconds, hasControlBreak, redirectUriLiteral, resolveVarLiteral, wrapped,
} from './values.js';
import { faultPlugin } from './fault.js';
import { mirrorConf } from './mirror.js';
import { withAccessPhase, type AccessPhaseConf } from './access-phase.js';
import { retryHandOverConf, translateRetryPolicy } from './retries.js';
import { corsRules } from './cors.js';
import { responseHeaderOps } from './response-headers.js';
import { RESPONSE_PHASE_PLUGIN, responsePhasePlugin } from './response-phase-lua.js';
import { hashCookie, type HashCookie } from './hash-cookie.js';

/** The APISIX listeners traffic is captured to (DESIGN §3). */
export interface CapturePorts {
  outbound: number;
  inbound: number;
}

export const DEFAULT_CAPTURE_PORTS: CapturePorts = { outbound: 15001, inbound: 15006 };

/** Upstream settings that Envoy keeps on the route but APISIX keeps on the upstream. */
export interface RouteUpstreamSettings {
  hash?: { hash_on: 'vars' | 'header' | 'cookie'; key: string };
  retries?: number;
  retryTimeout?: number;
}

export interface TranslatedRoute {
  route: ApisixRoute;
  /** every cluster the route sends to: the main one first */
  clusters: string[];
  upstreamSettings: RouteUpstreamSettings;
}

export interface RouteConfigTranslation {
  routes: TranslatedRoute[];
  notes: TranslationNote[];
}

/**
 * One route configuration, as served on one scope → APISIX routes. Envoy picks the virtual host by
 * domain and then the first route that matches; here every route of the configuration gets a
 * priority that decreases with its position (the catch-all `*` host last), the scope's conditions,
 * and the host's domains.
 */
export function translateRouteConfiguration(rc: RouteConfiguration, scope: RouteScope): RouteConfigTranslation {
  const rcName = rc.name ?? '';
  const notes: TranslationNote[] = [];
  const routes: TranslatedRoute[] = [];
  const vhosts = [...(rc.virtual_hosts ?? [])];
  // Envoy prefers any named domain over `*`: the wildcard host goes last.
  vhosts.sort((a, b) => Number(isWildcard(a)) - Number(isWildcard(b)));
  // Envoy picks one virtual host by domain and answers 404 when none of its routes match; APISIX
  // would go on to the routes of a wildcard host. Where that can happen, a named host whose routes
  // do not end in a catch-all gets a final 404 route.
  const canFallThrough = vhosts.some((v) => (v.domains ?? []).some((d) => d.includes('*')));
  const needsNotFound = (v: VirtualHost) => canFallThrough && !isWildcard(v) && !endsWithCatchAll(v);
  const total = vhosts.reduce((n, v) => n + (v.routes?.length ?? 0) + (needsNotFound(v) ? 1 : 0), 0);
  const scopeVars = scopeConditions(scope);
  const scopeText = scopeKey(scope);
  const usedIds = new Set<string>();
  const floor = scopeFloor(scope, total);
  let position = 0;
  for (const vhost of vhosts) {
    const { hosts, unsupported } = hostsOf(vhost);
    if (unsupported.length) {
      notes.push({ kind: 'route', name: `${vhost.name ?? ''}#${rcName}`, reason: 'unsupported-domain', detail: `APISIX hosts cannot express ${unsupported.join(', ')}`, skipped: hosts !== undefined && hosts.length === 0 });
      if (hosts !== undefined && hosts.length === 0) {
        position += (vhost.routes?.length ?? 0) + (needsNotFound(vhost) ? 1 : 0);
        continue;
      }
    }
    for (const route of vhost.routes ?? []) {
      const priority = floor + total - position++;
      const name = `${route.name || 'anon'}#${vhost.name ?? ''}#${rcName}`.replace(/\.svc\.cluster\.local/g, '');
      const fullName = `${scopeText}#${route.name ?? ''}#${vhost.name ?? ''}#${rcName}`;
      try {
        const translated = translateRoute(route, vhost, {
          id: uniqueId(usedIds, stableId('route', scopeText, rcName, vhost.name ?? '', route.name ?? '', JSON.stringify(route.match ?? {}))),
          name: name.slice(0, 256),
          priority,
          hosts,
          scopeVars,
          notes,
          fullName,
          headerLevels: headerLevels(route, vhost, rc),
          routeConfig: rc,
        });
        if (translated) routes.push(translated);
      } catch (err) {
        const reason = err instanceof UnsupportedMatch ? err.reason : 'translation-error';
        notes.push({ kind: 'route', name: fullName, reason, detail: (err as Error).message, skipped: true });
      }
    }
    if (needsNotFound(vhost)) {
      const route: ApisixRoute = {
        id: uniqueId(usedIds, stableId('route', scopeText, rcName, vhost.name ?? '', '\0not-found')),
        name: `not-found#${vhost.name ?? ''}#${rcName}`.replace(/\.svc\.cluster\.local/g, '').slice(0, 256),
        desc: `${vhost.name ?? ''}: no route matched (Envoy answers 404 here)`.slice(0, 256),
        uri: '/*',
        priority: floor + total - position++,
        vars: scopeVars,
        plugins: { 'fault-injection': { abort: { http_status: 404 } } },
        status: 1,
      };
      if (hosts) route.hosts = hosts;
      routes.push({ route, clusters: [], upstreamSettings: {} });
    }
  }
  return { routes, notes };
}

/** Envoy's default HTTP stream idle timeout (Istio keeps it): what bounds a route without a timeout. */
const STREAM_IDLE_TIMEOUT_S = 300;

/** Priorities of route configurations served on a listener bound to one address start here. */
const ADDRESS_SCOPE_FLOOR = 10_000_000;

/**
 * Envoy picks the listener bound to the exact destination address before a port's wildcard
 * listener, and a filter chain matching the destination port before a catch-all chain. Routes of
 * different scopes may all match one request in APISIX, so the more specific scope's routes sit in
 * a higher band of priorities: address-bound above the port's (1…total), catch-all chains (no port,
 * e.g. the inbound pass-through) at or below 0.
 */
function scopeFloor(scope: RouteScope, total: number): number {
  if (scope.address) return ADDRESS_SCOPE_FLOOR;
  return scope.port > 0 ? 0 : -total;
}

/** The highest priority inside a scope's band: above every route of the scope, below more specific scopes. */
export function scopeCeiling(scope: RouteScope): number {
  if (scope.address) return 2 * ADDRESS_SCOPE_FLOOR - 1;
  return scope.port > 0 ? ADDRESS_SCOPE_FLOOR - 1 : 0;
}

function endsWithCatchAll(vhost: VirtualHost): boolean {
  const last = vhost.routes?.at(-1);
  const m = last?.match;
  if (!m) return false;
  const everyPath = m.prefix === '' || m.prefix === '/' || m.path_separated_prefix === '/';
  return everyPath && !m.headers?.length && !m.query_parameters?.length && !m.runtime_fraction && !m.grpc;
}

function uniqueId(used: Set<string>, id: string): string {
  let candidate = id;
  for (let i = 1; used.has(candidate); i++) candidate = `${id}-${i}`;
  used.add(candidate);
  return candidate;
}

/**
 * Routes of one listener only see traffic captured by that listener, for that original destination.
 * Both variables come from the L4 front's hand-off record of the request's connection (registered
 * by the sidecar's Lua hook, agent/l4/lua/apisix_mesh/hook.lua).
 */
export function scopeConditions(scope: RouteScope): ApisixVar[] {
  const vars: ApisixVar[] = [['apisix_mesh_direction', '==', scope.direction]];
  if (scope.address) {
    const destinations = [scope.address, ...(scope.also ?? [])].map((a) => `${a.includes(':') ? `[${a}]` : a}:${scope.port}`);
    vars.push(destinations.length === 1 ? ['connection_original_dst', '==', destinations[0]!] : ['connection_original_dst', 'in', destinations]);
  } else if (scope.port > 0) {
    // anchored on ':' so that port 80 does not also match 8080 or 180
    vars.push(['connection_original_dst', '~~', `:${scope.port}$`]);
  }
  return vars;
}

function isWildcard(vhost: VirtualHost): boolean {
  return (vhost.domains ?? []).includes('*');
}

/** APISIX's host pattern (schema_def.lua host_def): an optional leading `*`, no other wildcard. */
const APISIX_HOST = /^\*?[0-9a-zA-Z-._\[\]:]+$/;

/**
 * Domains → APISIX `hosts`: ports dropped (Istio ignores the Host port), duplicates removed, sorted.
 * undefined = any host (`*`); domains APISIX cannot express (`foo.*`) are returned apart.
 */
export function hostsOf(vhost: VirtualHost): { hosts: string[] | undefined; unsupported: string[] } {
  const domains = vhost.domains ?? [];
  if (domains.length === 0 || domains.includes('*')) return { hosts: undefined, unsupported: [] };
  const hosts = new Set<string>();
  const unsupported: string[] = [];
  for (const domain of domains) {
    const host = stripPort(domain).toLowerCase();
    if (APISIX_HOST.test(host)) hosts.add(host);
    else unsupported.push(domain);
  }
  return { hosts: [...hosts].sort(), unsupported };
}

function stripPort(domain: string): string {
  if (domain.startsWith('[')) {
    const end = domain.indexOf(']');
    return end > 0 ? domain.slice(0, end + 1) : domain;
  }
  const colon = domain.lastIndexOf(':');
  return colon > 0 && domain.indexOf(':') === colon && /^\d+$/.test(domain.slice(colon + 1)) ? domain.slice(0, colon) : domain;
}

interface RouteContext {
  id: string;
  name: string;
  priority: number;
  hosts: string[] | undefined;
  scopeVars: ApisixVar[];
  notes: TranslationNote[];
  fullName: string;
  /** the route's, its virtual host's and its configuration's header operations, in Envoy's order */
  headerLevels: HeaderMutations[];
  routeConfig: RouteConfiguration;
}

function translateRoute(route: Route, vhost: VirtualHost, ctx: RouteContext): TranslatedRoute | undefined {
  const note = (reason: string, detail: string, skipped = false) =>
    ctx.notes.push({ kind: 'route', name: ctx.fullName, reason, detail, skipped });
  const vars = [...ctx.scopeVars, ...matchVars(route.match ?? {})];
  // Istio's connection managers allow WebSocket upgrades (`upgrade_configs: websocket`) everywhere
  const apisix: ApisixRoute = { id: ctx.id, name: ctx.name, uri: '/*', priority: ctx.priority, enable_websocket: true, status: 1 };
  if (ctx.hosts) apisix.hosts = ctx.hosts;
  apisix.vars = vars;
  apisix.desc = `${vhost.name ?? ''} ${route.name ?? ''}`.trim().slice(0, 256);
  const plugins: ApisixPlugins = {};
  const settings: RouteUpstreamSettings = {};
  let clusters: string[] = [];
  /** what the route does at the end of the access phase (access-phase.ts) */
  const accessPhase: AccessPhaseConf = {};

  if (route.route) {
    const action = route.route;
    clusters = actionClusters(action, note);
    if (clusters.length === 0) return undefined;
    apisix.upstream_id = upstreamId(clusters[0]!);
    if (clusters.length > 1) {
      const weights = weightedClusters(action);
      plugins['traffic-split'] = {
        rules: [{ weighted_upstreams: weights.map((w) => ({ upstream_id: upstreamId(w.name), weight: w.weight })) }],
      };
    }
    const timeout = durationSeconds(action.timeout);
    if (timeout && timeout > 0) apisix.timeout = { connect: timeout, send: timeout, read: timeout };
    // Istio's default `0s` turns the route timeout off; only the connection manager's stream idle
    // timeout (5 min) is left. nginx's read/send timeouts are idle timeouts too; APISIX's default
    // 60 s would cut a long request Envoy lets run.
    else if (timeout === 0) apisix.timeout = { connect: STREAM_IDLE_TIMEOUT_S, send: STREAM_IDLE_TIMEOUT_S, read: STREAM_IDLE_TIMEOUT_S };
    const retryHandOver = applyRetryPolicy(action, settings, apisix, note);
    accessPhase.hash_cookie = applyHashPolicy(action, settings, note);
    applyRewrite(action, route.match ?? {}, plugins, note);
    accessPhase.mirror = mirrorConf(action, timeout && timeout > 0 ? timeout : STREAM_IDLE_TIMEOUT_S, note);
    accessPhase.retry = retryHandOver; // the plugin runs it last: the request leaves for the retry location
  } else if (route.redirect) {
    applyRedirect(route.redirect, route.match ?? {}, plugins, note);
  } else if (route.direct_response) {
    const status = route.direct_response.status ?? 200;
    const body = route.direct_response.body?.inline_string ?? (route.direct_response.body?.inline_bytes ? Buffer.from(route.direct_response.body.inline_bytes as Uint8Array).toString('utf8') : undefined);
    // fault-injection's abort at 100 % answers before any upstream is picked: a direct response
    // (APISIX expands variables in the body: literal, see resolveVarLiteral)
    plugins['fault-injection'] = { abort: { http_status: Math.max(200, status), ...(body !== undefined ? { body: resolveVarLiteral(body) } : {}) } };
  } else {
    note('unsupported-action', 'route without route/redirect/direct_response action', true);
    return undefined;
  }
  applyHeaders(ctx.headerLevels, plugins);
  applyResponsePhase(route, vhost, ctx, plugins);
  const fault = faultPlugin(route, note);
  if (fault && !plugins['fault-injection']) plugins['fault-injection'] = fault;
  const withAccess = withAccessPhase(plugins, accessPhase);
  if (Object.keys(withAccess).length) apisix.plugins = withAccess;
  return { route: apisix, clusters, upstreamSettings: settings };
}

function actionClusters(action: RouteAction, note: (r: string, d: string, s?: boolean) => void): string[] {
  if (action.cluster) return [action.cluster];
  if (action.weighted_clusters) {
    const weights = weightedClusters(action);
    if (weights.length === 0) {
      note('no-weighted-cluster', 'every weighted cluster has weight 0', true);
      return [];
    }
    return weights.map((w) => w.name);
  }
  if (action.cluster_header) note('cluster-header', `cluster chosen by header ${action.cluster_header} is not supported`, true);
  else note('unsupported-cluster-specifier', 'cluster specifier plugin or inline cluster', true);
  return [];
}

function weightedClusters(action: RouteAction): Array<{ name: string; weight: number }> {
  return (action.weighted_clusters?.clusters ?? [])
    .map((c) => ({ name: c.name ?? '', weight: wrapped(c.weight) ?? 1 }))
    .filter((c) => c.name && c.weight > 0);
}

/**
 * The retry policy (retries.ts): how many retries and the per-try timeout go on the upstream and
 * the route (nginx's read timeout applies to each try; the route's own timeout bounds all of them
 * as the upstream's retry_timeout); which failures are retried is the retry location's business,
 * which the returned hand-over sends the request to.
 */
function applyRetryPolicy(action: RouteAction, settings: RouteUpstreamSettings, route: ApisixRoute, note: (r: string, d: string, s?: boolean) => void): AccessPhaseConf['retry'] {
  const retry = translateRetryPolicy(action.retry_policy, note);
  settings.retries = retry.retries;
  if (retry.perTry !== undefined) {
    const total = route.timeout?.read;
    route.timeout = { connect: route.timeout?.connect ?? retry.perTry, send: retry.perTry, read: retry.perTry };
    if (total) settings.retryTimeout = total;
  }
  return retry.location && retry.conditions ? retryHandOverConf(retry.location, retry.conditions) : undefined;
}

/**
 * The first hash policy APISIX can hash on → the upstream's chash key; a cookie policy with a ttl
 * also makes the cookie when it is absent (hash-cookie.ts): the cookie returned, for the access-phase plugin.
 */
function applyHashPolicy(action: RouteAction, settings: RouteUpstreamSettings, note: (r: string, d: string, s?: boolean) => void): HashCookie | undefined {
  for (const policy of action.hash_policy ?? []) {
    if (policy.header?.header_name) {
      settings.hash = { hash_on: 'header', key: policy.header.header_name.toLowerCase() };
    } else if (policy.cookie?.name) {
      settings.hash = { hash_on: 'cookie', key: policy.cookie.name };
      if (!policy.cookie.ttl) return undefined;
      const cookie = hashCookie(policy.cookie);
      if ('refused' in cookie) {
        note('hash-cookie-not-generated', `${cookie.refused}: requests without the cookie go to a random host`);
        return undefined;
      }
      return cookie;
    } else if (policy.connection_properties?.source_ip) {
      settings.hash = { hash_on: 'vars', key: 'remote_addr' };
    } else if (policy.query_parameter?.name) {
      settings.hash = { hash_on: 'vars', key: `arg_${policy.query_parameter.name}` };
    } else {
      note('unsupported-hash-policy', 'hash policy kind has no APISIX counterpart');
      continue;
    }
    return undefined;
  }
  return undefined;
}

/**
 * The route's path rewrite (rewrite.ts) and authority rewrite → proxy-rewrite. CR, LF or NUL in the
 * new path skips the route (Envoy refuses them too).
 */
function applyRewrite(action: RouteAction, match: NonNullable<Route['match']>, plugins: ApisixPlugins, note: (r: string, d: string, s?: boolean) => void): void {
  const rewrite: Record<string, unknown> = {};
  if (action.prefix_rewrite) refuseControlBreaks('prefix_rewrite', action.prefix_rewrite);
  if (action.regex_rewrite?.substitution) refuseControlBreaks('regex_rewrite', action.regex_rewrite.substitution);
  const path = pathRewrite(match, action);
  if (path && 'unsupported' in path) note('prefix-rewrite', `${path.unsupported} is ignored`);
  else if (path) Object.assign(rewrite, proxyRewritePath(path.rewrite));
  if (action.host_rewrite_literal) {
    refuseControlBreaks('host_rewrite_literal', action.host_rewrite_literal);
    rewrite['host'] = action.host_rewrite_literal;
  } else if (wrapped(action.auto_host_rewrite)) note('auto-host-rewrite', 'auto host rewrite is not translated');
  if (Object.keys(rewrite).length) plugins['proxy-rewrite'] = rewrite;
}

/** proxy-rewrite's fields for a path rewrite. */
function proxyRewritePath(path: PathRewrite): Record<string, unknown> {
  return path.preFunction ? { _meta: { pre_function: path.preFunction } } : { regex_uri: path.regex_uri };
}

type HeaderMutations = Pick<Route, 'request_headers_to_add' | 'request_headers_to_remove' | 'response_headers_to_add' | 'response_headers_to_remove'>;

/**
 * Envoy applies the header operations of the route, then of its virtual host, then of the route
 * configuration, so the less specific level wins a conflict — unless the configuration says
 * `most_specific_header_mutations_wins`.
 */
function headerLevels(route: Route, vhost: VirtualHost, rc: RouteConfiguration): HeaderMutations[] {
  const levels = [route, vhost, rc];
  return rc.most_specific_header_mutations_wins ? levels.reverse() : levels;
}

/**
 * Header additions and removals (VirtualService `headers.request`) → proxy-rewrite, which adds,
 * then sets, then removes. Values are literals (resolveVarLiteral). Each level removes before it adds (as Envoy's header parser does), so a
 * later level's operation replaces an earlier one's on the same header.
 */
function applyHeaders(levels: HeaderMutations[], plugins: ApisixPlugins): void {
  const set = new Map<string, string>();
  const add = new Map<string, string>();
  const remove = new Set<string>();
  for (const level of levels) {
    for (const name of level.request_headers_to_remove ?? []) {
      refuseControlBreaks('request header name', name);
      const key = name.toLowerCase();
      set.delete(key);
      add.delete(key);
      remove.add(key);
    }
    for (const option of level.request_headers_to_add ?? []) {
      const key = option.header?.key?.toLowerCase();
      if (!key) continue;
      refuseControlBreaks('request header name', key);
      refuseControlBreaks(`value of request header ${key}`, option.header?.value ?? '');
      const value = resolveVarLiteral(option.header?.value ?? ''); // APISIX would expand `$http_authorization`
      const append = option.append_action ? option.append_action === 'APPEND_IF_EXISTS_OR_ADD' : wrapped(option.append) ?? true;
      remove.delete(key);
      if (!append) {
        add.delete(key);
        set.set(key, value);
      } else if (set.has(key)) {
        set.set(key, `${set.get(key)}, ${value}`);
      } else {
        add.set(key, add.has(key) ? `${add.get(key)}, ${value}` : value);
      }
    }
  }
  if (!set.size && !add.size && !remove.size) return;
  const headers: Record<string, unknown> = {};
  if (set.size) headers['set'] = Object.fromEntries(set);
  if (add.size) headers['add'] = Object.fromEntries(add);
  if (remove.size) headers['remove'] = [...remove];
  plugins['proxy-rewrite'] = { ...(plugins['proxy-rewrite'] ?? {}), headers };
}

/**
 * The route's CORS policy and response header mutations (cors.ts, response-headers.ts), enforced
 * by Lua in request-id's pre_function (response-phase-lua.ts). Direct responses and redirects get
 * them too, as Envoy applies both to them.
 */
function applyResponsePhase(route: Route, vhost: VirtualHost, ctx: RouteContext, plugins: ApisixPlugins): void {
  const cors = corsRules(route, vhost, ctx.routeConfig);
  const headers = responseHeaderOps(ctx.headerLevels);
  if (cors || headers.length) plugins[RESPONSE_PHASE_PLUGIN] = responsePhasePlugin({ cors, headers });
}

const REDIRECT_CODES: Record<string, number> = {
  MOVED_PERMANENTLY: 301,
  FOUND: 302,
  SEE_OTHER: 303,
  TEMPORARY_REDIRECT: 307,
  PERMANENT_REDIRECT: 308,
};

/**
 * Envoy builds the Location from the request: its scheme, its Host header as sent (port included:
 * nginx's `$http_host`, where `$host` drops the port) and its path with the query string, each
 * replaced where the redirect says so. A `path_redirect` keeps the request's query unless it has
 * one of its own or `strip_query` is set. A `prefix_rewrite` replaces the matched prefix: the
 * redirect plugin interpolates no variables into a regex result, so proxy-rewrite (which runs
 * before it) rewrites the path and the Location is built from its `$upstream_uri` (path and query).
 */
function applyRedirect(redirect: NonNullable<Route['redirect']>, match: NonNullable<Route['match']>, plugins: ApisixPlugins, note: (r: string, d: string, s?: boolean) => void): void {
  const code = REDIRECT_CODES[String(redirect.response_code ?? 'MOVED_PERMANENTLY')] ?? 301;
  for (const [field, value] of Object.entries({ scheme_redirect: redirect.scheme_redirect, host_redirect: redirect.host_redirect, path_redirect: redirect.path_redirect })) {
    if (value) refuseControlBreaks(field, value);
  }
  // literal parts are written so that the plugin's variable expansion leaves them as they are
  const scheme = redirect.https_redirect ? 'https' : redirect.scheme_redirect ? redirectUriLiteral(redirect.scheme_redirect) : '$scheme';
  const port = redirect.port_redirect ? `:${redirect.port_redirect}` : '';
  // a new port replaces the request's; a new scheme keeps it (Envoy drops only an explicit ':80'
  // of a plain-HTTP request, which clients do not send)
  const host = redirect.host_redirect ? redirectUriLiteral(redirect.host_redirect) : port ? '$host' : '$http_host';
  const origin = `${scheme}://${host}${port}`;
  if (redirect.regex_rewrite) note('redirect-regex-rewrite', 'a redirect\'s regex_rewrite is not translated: the path is kept');
  if (redirect.path_redirect) {
    const keepQuery = !redirect.strip_query && !redirect.path_redirect.includes('?');
    plugins['redirect'] = { uri: `${origin}${redirectUriLiteral(redirect.path_redirect)}`, ret_code: code, ...(keepQuery ? { append_query_string: true } : {}) };
    return;
  }
  if (redirect.prefix_rewrite) refuseControlBreaks('prefix_rewrite', redirect.prefix_rewrite);
  const path = pathRewrite(match, { prefix_rewrite: redirect.prefix_rewrite });
  if (path && 'unsupported' in path) note('prefix-rewrite', `redirect: ${path.unsupported} is ignored`);
  const regex = path && 'rewrite' in path ? path.rewrite.regex_uri : undefined;
  if (regex && !redirect.strip_query) {
    plugins['proxy-rewrite'] = { ...(plugins['proxy-rewrite'] ?? {}), regex_uri: regex };
    plugins['redirect'] = { uri: `${origin}$upstream_uri`, ret_code: code };
    return;
  }
  if (regex) {
    plugins['redirect'] = { regex_uri: regex, ret_code: code }; // relative Location: the query dropped, scheme and host kept by the client
    if (host !== '$http_host' || scheme !== '$scheme') note('redirect-prefix-rewrite', 'a prefix rewrite with strip_query keeps the request\'s scheme and authority');
    return;
  }
  plugins['redirect'] = { uri: `${origin}${redirect.strip_query ? '$uri' : '$request_uri'}`, ret_code: code };
}

/** CR, LF or NUL in a header or redirect target: the route is skipped (Envoy refuses them too). */
function refuseControlBreaks(what: string, value: string): void {
  if (hasControlBreak(value)) throw new UnsupportedMatch('control-character', `CR, LF or NUL in ${what}`);
}
