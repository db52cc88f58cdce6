import type { JwtAuthentication, JwtProvider, JwtRequirement } from '../xds/envoy-types.js';
import { durationSeconds } from '../translate/values.js';
import { parseJwks, type JwtKey, type ParsedJwks } from './jwks.js';

/**
 * Envoy's JWT authentication filter (`envoy.filters.http.jwt_authn`, Istio's RequestAuthentication)
 * compiled for the Lua evaluator APISIX runs (agent/l4/lua/apisix_mesh/jwt.lua). What Istio generates is enforced:
 * providers with inline (`local_jwks`) or fetched (`remote_jwks`, fetched by the agent) keys, their
 * issuer, audiences, token locations, `forward`, metadata and header outputs, and one rule for every
 * path (`prefix: "/"`) whose requirement is a tree of provider names, `requires_any` (with
 * `allow_missing` / `allow_missing_or_failed`) and `requires_all`. Anything else throws
 * JwtCompileError: the filter stays unenforced and its scope is refused.
 */
export interface JwtHeaderLocation {
  /** header name, lower case */
  h: string;
  /** value prefix ('' = the whole value) */
  p: string;
}

export interface RemoteJwksSource {
  uri: string;
  timeoutMs: number;
  /** how long fetched keys may be used */
  cacheMs: number;
}

export interface CompiledJwtProvider {
  name: string;
  /** '' = tokens of any issuer */
  issuer: string;
  /** sanitised as Envoy compares them (no http(s):// prefix, no trailing /); empty = any */
  audiences: string[];
  /** locations in Envoy's extraction order (its maps are sorted by key) */
  headers: JwtHeaderLocation[];
  params: string[];
  cookies: string[];
  forward: boolean;
  payloadInMetadata: string;
  headerInMetadata: string;
  forwardPayloadHeader: string;
  padForwardPayloadHeader: boolean;
  claimToHeaders: Array<{ h: string; c: string }>;
  clockSkew: number;
  spaceDelimitedClaims: string[];
  jwks: { local: ParsedJwks } | { remote: RemoteJwksSource };
}

/** A requirement: providers by index into `providers`. */
export type JwtRequirementNode =
  | { t: 'provider'; p: number; aud?: string[] }
  | { t: 'any'; n: JwtRequirementNode[]; missing?: boolean; failed?: boolean }
  | { t: 'all'; n: JwtRequirementNode[] }
  | { t: 'ok' };

export interface CompiledJwtFilter {
  name: string;
  providers: CompiledJwtProvider[];
  /** the requirement for every request; null when no rule applies (nothing is verified) */
  requires: JwtRequirementNode | null;
  bypassCorsPreflight: boolean;
  stripFailureResponse: boolean;
}

export class JwtCompileError extends Error {}

/** Bounds of what the agent compiles; the keys go into every route's function: 32 providers × 32 keys stays under 1 MiB. */
export const JWT_LIMITS = { providers: 32, depth: 16, nodes: 1000, locations: 32, literal: 4096 };
/** Envoy's defaults (jwt_verify_lib kClockSkewInSecond; jwks_cache.cc PubkeyCacheExpirationSec) */
const DEFAULT_CLOCK_SKEW = 60;
const DEFAULT_CACHE_MS = 600_000;
/** bounds on what istiod may ask of the agent's fetcher */
const TIMEOUT_MS = { min: 100, max: 60_000, default: 5_000 };
const CACHE_MS = { min: 10_000, max: 86_400_000 };

export function compileJwtFilter(name: string, config: JwtAuthentication): CompiledJwtFilter {
  if (config.filter_state_rules) throw new JwtCompileError('filter_state_rules are not supported');
  const entries = Object.entries(config.providers ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (entries.length > JWT_LIMITS.providers) throw new JwtCompileError(`more than ${JWT_LIMITS.providers} providers`);
  const providers = entries.map(([providerName, p]) => compileProvider(providerName, p));
  const index = new Map(entries.map(([providerName], i) => [providerName, i]));
  return {
    name,
    providers,
    requires: firstRule(config, index),
    bypassCorsPreflight: config.bypass_cors_preflight === true,
    stripFailureResponse: config.strip_failure_response === true,
  };
}

/**
 * Envoy applies the first rule whose route match matches. Istio writes one rule matching every
 * path; a rule that matches only some requests (a path, headers, query parameters) is not
 * evaluated by the sidecar, so it is refused rather than guessed.
 */
function firstRule(config: JwtAuthentication, index: Map<string, number>): JwtRequirementNode | null {
  const rule = config.rules?.[0];
  if (!rule) return null;
  const m = rule.match;
  const matchesAll = m?.path_specifier === 'prefix' && m.prefix === '/' && !m.headers?.length && !m.query_parameters?.length &&
    !m.grpc && !m.runtime_fraction && !m.tls_context && !m.dynamic_metadata?.length;
  if (!matchesAll) throw new JwtCompileError('a rule that does not match every request (only prefix "/" is supported)');
  if (rule.requirement_type === 'requirement_name') throw new JwtCompileError('requirement_name rules are not supported');
  if (!rule.requires) return { t: 'ok' };
  const budget = { nodes: 0 };
  return requirement(rule.requires, index, 1, budget);
}

function requirement(r: JwtRequirement, index: Map<string, number>, depth: number, budget: { nodes: number }): JwtRequirementNode {
  if (depth > JWT_LIMITS.depth) throw new JwtCompileError(`requirements nested deeper than ${JWT_LIMITS.depth}`);
  if (++budget.nodes > JWT_LIMITS.nodes) throw new JwtCompileError(`more than ${JWT_LIMITS.nodes} requirements`);
  switch (r.requires_type) {
    case 'provider_name':
      return { t: 'provider', p: provider(r.provider_name ?? '', index) };
    case 'provider_and_audiences': {
      const pa = r.provider_and_audiences;
      return { t: 'provider', p: provider(pa?.provider_name ?? '', index), aud: (pa?.audiences ?? []).map(sanitizeAudience) };
    }
    case 'requires_all': {
      const n = (r.requires_all?.requirements ?? []).map((c) => requirement(c, index, depth + 1, budget));
      // Envoy never completes an empty group (the request hangs): refused rather than guessed
      if (n.length === 0) throw new JwtCompileError('an empty requires_all');
      return { t: 'all', n };
    }
    case 'requires_any':
      return anyOf(r.requires_any?.requirements ?? [], index, depth, budget);
    case 'allow_missing':
    case 'allow_missing_or_failed':
      // alone, Envoy verifies the tokens of every provider's locations, choosing the provider by
      // each token's issuer: not what Istio writes, not evaluated here
      throw new JwtCompileError(`${r.requires_type} outside requires_any is not supported`);
    default:
      return { t: 'ok' }; // Envoy: a requirement without a type lets every request through
  }
}

/** Envoy's AnyVerifier: allow_missing(_or_failed) among the requirements is a flag on the group. */
function anyOf(requirements: JwtRequirement[], index: Map<string, number>, depth: number, budget: { nodes: number }): JwtRequirementNode {
  const n: JwtRequirementNode[] = [];
  let missing = false;
  let failed = false;
  for (const c of requirements) {
    if (c.requires_type === 'allow_missing') missing = true;
    else if (c.requires_type === 'allow_missing_or_failed') failed = true;
    else n.push(requirement(c, index, depth + 1, budget));
  }
  if (n.length === 0) throw new JwtCompileError(missing || failed ? 'requires_any with only allow_missing is not supported' : 'an empty requires_any');
  return { t: 'any', n, ...(missing ? { missing } : {}), ...(failed ? { failed } : {}) };
}

function provider(providerName: string, index: Map<string, number>): number {
  const i = index.get(providerName);
  // Envoy rejects the whole configuration ("Required provider ['…'] is not configured")
  if (i === undefined) throw new JwtCompileError(`requirement names provider ${providerName.slice(0, 40)}, which is not configured`);
  return i;
}

function compileProvider(name: string, p: JwtProvider): CompiledJwtProvider {
  if (p.subjects) throw new JwtCompileError(`provider ${name.slice(0, 40)}: subjects are not supported`);
  if (p.require_expiration) throw new JwtCompileError(`provider ${name.slice(0, 40)}: require_expiration is not supported`);
  if (p.max_lifetime) throw new JwtCompileError(`provider ${name.slice(0, 40)}: max_lifetime is not supported`);
  if (p.failed_status_in_metadata) throw new JwtCompileError(`provider ${name.slice(0, 40)}: failed_status_in_metadata is not supported`);
  // Envoy re-selects the route after adding claim headers; APISIX has matched its route already
  if (p.clear_route_cache && p.claim_to_headers?.length) throw new JwtCompileError(`provider ${name.slice(0, 40)}: clear_route_cache with claim_to_headers is not supported`);
  const headers = (p.from_headers ?? []).map((h) => ({ h: literal((h.name ?? '').toLowerCase()), p: literal(h.value_prefix ?? '') }));
  if (headers.some((h) => h.h === '' || h.h.startsWith(':'))) throw new JwtCompileError(`provider ${name.slice(0, 40)}: a token header that is empty or a pseudo-header`);
  let params = (p.from_params ?? []).map(literal);
  const cookies = (p.from_cookies ?? []).map(literal);
  if (headers.length === 0 && params.length === 0 && cookies.length === 0) {
    // Envoy's default locations (extractor.cc)
    headers.push({ h: 'authorization', p: 'Bearer ' });
    params = ['access_token'];
  }
  if (headers.length + params.length + cookies.length > JWT_LIMITS.locations) throw new JwtCompileError(`provider ${name.slice(0, 40)}: more than ${JWT_LIMITS.locations} token locations`);
  return {
    name,
    issuer: literal(p.issuer ?? ''),
    audiences: (p.audiences ?? []).map((a) => sanitizeAudience(literal(a))),
    headers: uniqueSorted(headers, (h) => h.h + h.p),
    params: uniqueSorted(params, (x) => x),
    cookies: uniqueSorted(cookies, (x) => x),
    forward: p.forward === true,
    payloadInMetadata: literal(p.payload_in_metadata ?? ''),
    headerInMetadata: literal(p.header_in_metadata ?? ''),
    forwardPayloadHeader: literal((p.forward_payload_header ?? '').toLowerCase()),
    padForwardPayloadHeader: p.pad_forward_payload_header === true,
    claimToHeaders: (p.claim_to_headers ?? []).map((c) => ({ h: literal((c.header_name ?? '').toLowerCase()), c: literal(c.claim_name ?? '') })),
    clockSkew: p.clock_skew_seconds && p.clock_skew_seconds > 0 ? p.clock_skew_seconds : DEFAULT_CLOCK_SKEW,
    spaceDelimitedClaims: (p.normalize_payload_in_metadata?.space_delimited_claims ?? []).map(literal),
    jwks: jwksSource(name, p),
  };
}

function jwksSource(name: string, p: JwtProvider): CompiledJwtProvider['jwks'] {
  if (p.jwks_source_specifier === 'remote_jwks') {
    const uri = p.remote_jwks?.http_uri?.uri ?? '';
    if (!/^https?:\/\/[^\s]+$/i.test(uri) || uri.length > JWT_LIMITS.literal) throw new JwtCompileError(`provider ${name.slice(0, 40)}: remote_jwks without an http(s) uri`);
    const timeout = durationSeconds(p.remote_jwks?.http_uri?.timeout);
    const cache = durationSeconds(p.remote_jwks?.cache_duration);
    return {
      remote: {
        uri,
        timeoutMs: clamp(timeout !== undefined ? timeout * 1000 : TIMEOUT_MS.default, TIMEOUT_MS.min, TIMEOUT_MS.max),
        cacheMs: clamp(cache !== undefined && cache > 0 ? cache * 1000 : DEFAULT_CACHE_MS, CACHE_MS.min, CACHE_MS.max),
      },
    };
  }
  const source = p.local_jwks;
  if (p.jwks_source_specifier !== 'local_jwks' || !source) throw new JwtCompileError(`provider ${name.slice(0, 40)}: no JWKS`);
  let text: string;
  if (source.specifier === 'inline_string') text = source.inline_string ?? '';
  else if (source.specifier === 'inline_bytes') text = Buffer.from(source.inline_bytes ?? '').toString('utf8');
  else throw new JwtCompileError(`provider ${name.slice(0, 40)}: local_jwks from a ${source.specifier ?? 'missing source'} is not supported`);
  return { local: parseJwks(text) };
}

/** jwt_verify_lib's CheckAudience: `http://` / `https://` and one trailing `/` do not count. */
export function sanitizeAudience(aud: string): string {
  if (aud === '') return aud;
  let out = aud;
  if (out.startsWith('http://')) out = out.slice(7);
  else if (out.startsWith('https://')) out = out.slice(8);
  if (aud.endsWith('/')) out = out.slice(0, -1);
  return out;
}

function literal(v: string): string {
  if (v.length > JWT_LIMITS.literal) throw new JwtCompileError(`a value longer than ${JWT_LIMITS.literal} characters`);
  return v;
}

function uniqueSorted<T>(items: T[], key: (t: T) => string): T[] {
  const byKey = new Map<string, T>();
  for (const item of items) if (!byKey.has(key(item))) byKey.set(key(item), item);
  return [...byKey.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, v]) => v);
}

function clamp(n: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, Math.round(n)));
}

/** What the agent knows of a remote JWKS now. */
export type RemoteJwksState = { keys: JwtKey[] } | { failed: string };

/** Remote JWKS states by URI (the agent's fetcher). */
export type RemoteJwksLookup = ReadonlyMap<string, RemoteJwksState>;

/** Envoy's texts for the two ways a provider can have no keys. */
export const JWKS_FETCH_FAILED = 'Jwks remote fetch is failed';
export const JWKS_NO_VALID_KEYS = "Jwks doesn't have any valid public key";

/** The remote JWKS sources the filters need (the agent fetches them). */
export function remoteJwksSources(filters: readonly CompiledJwtFilter[]): RemoteJwksSource[] {
  const out = new Map<string, RemoteJwksSource>();
  for (const f of filters) for (const p of f.providers) if ('remote' in p.jwks && !out.has(p.jwks.remote.uri)) out.set(p.jwks.remote.uri, p.jwks.remote);
  return [...out.values()];
}

/**
 * The filter as the Lua evaluator reads it, its keys resolved: a provider has `keys`, or
 * `keys_err`, the status every token that reaches signature checking gets (Envoy: a local JWKS
 * without a valid key; a remote one not fetched, or not fetched yet).
 */
export function jwtLuaData(filter: CompiledJwtFilter, remote: RemoteJwksLookup): Record<string, unknown> {
  return {
    requires: filter.requires,
    cors: filter.bypassCorsPreflight,
    strip: filter.stripFailureResponse,
    providers: filter.providers.map((p) => {
      let keys: { keys: JwtKey[] } | { keys_err: string };
      if ('local' in p.jwks) keys = p.jwks.local.error ? { keys_err: JWKS_NO_VALID_KEYS } : { keys: p.jwks.local.keys };
      else {
        const state = remote.get(p.jwks.remote.uri);
        keys = state && 'keys' in state ? { keys: state.keys } : { keys_err: JWKS_FETCH_FAILED };
      }
      return {
        iss: p.issuer,
        aud: p.audiences,
        headers: p.headers,
        params: p.params,
        cookies: p.cookies,
        fwd: p.forward,
        pim: p.payloadInMetadata,
        him: p.headerInMetadata,
        fph: p.forwardPayloadHeader,
        pad: p.padForwardPayloadHeader,
        c2h: p.claimToHeaders,
        skew: p.clockSkew,
        sdc: p.spaceDelimitedClaims,
        ...keys,
      };
    }),
  };
}

