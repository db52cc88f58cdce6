import type { CidrRange, HeaderMatcher, HttpRbac, MetadataMatcher, Permission, Principal, StringMatcher, ValueMatcher } from '../xds/envoy-types.js';
import { fullMatchRegex } from '../translate/pcre.js';
import { UnsupportedMatch } from '../translate/unsupported.js';

/**
 * Envoy's HTTP RBAC filter (Istio's AuthorizationPolicy) compiled to a small tree that the Lua
 * evaluator (agent/l4/lua/apisix_mesh/rbac.lua, run by the policy plugin) walks per request. Evaluation is three-valued: true, false, or unknown
 * (`{t: 'unknown'}`) for what the sidecar cannot know yet — SNI (`requested_server_name`), a
 * client-supplied remote address, dynamic metadata of any filter but jwt_authn. JWT claims
 * (`request.auth.*`: metadata of `envoy.filters.http.jwt_authn`, which the JWT evaluator fills
 * before RBAC runs, as Envoy does) are known. Unknown propagates by Kleene's
 * rules (false AND unknown = false, true OR unknown = true), so a definite answer is the one Envoy
 * gives whatever the unknown values are, and an unknown answer fails closed: an ALLOW policy does
 * not allow, a DENY policy denies.
 */
export type RbacAction = 'ALLOW' | 'DENY' | 'LOG';

export interface StringMatch {
  k: 'exact' | 'prefix' | 'suffix' | 'contains' | 're';
  /** the literal (lower-cased when `ic`), or a PCRE pattern anchored for a full match */
  v: string;
  ic?: boolean;
}

/** A request attribute a header matcher reads: a header by lower-case name, or a pseudo-header. */
export type HeaderSource = { h: string } | { pseudo: 'method' | 'path' | 'authority' | 'scheme' };

export type RbacNode =
  | { t: 'any' }
  | { t: 'unknown'; why: string }
  | { t: 'and' | 'or'; n: RbacNode[] }
  | { t: 'not'; n: RbacNode }
  /** Envoy's HeaderMatcher: `present` set for a presence matcher, `m` for a value matcher */
  | { t: 'header'; src: HeaderSource; m?: StringMatch; present?: boolean; inv?: boolean; empty?: boolean }
  /** the normalised path without the query */
  | { t: 'path'; m: StringMatch }
  /** the original destination port, in [lo, hi) */
  | { t: 'dport'; lo: number; hi: number }
  /** an address in a CIDR range: the original destination, the peer, or the client (XFF) */
  | { t: 'ip'; of: 'destination' | 'direct' | 'remote'; v: 4 | 6; b: number[]; len: number }
  /**
   * the verified mTLS peer's URI SAN (`$apisix_mesh_peer_principal`): Envoy's `authenticated`
   * (`m` absent: any mTLS peer) and Istio's `io.istio.peer_principal` filter state; false without mTLS
   */
  | { t: 'peer'; m?: StringMatch }
  /** Envoy's MetadataMatcher on jwt_authn's metadata: the value at `path` matched by `m`, inverted by `inv` */
  | { t: 'meta'; path: string[]; m: ValueMatch; inv?: boolean }
  /** the TLS server name (SNI) the client sent (network RBAC only: the L4 front may have read it) */
  | { t: 'sni'; m: StringMatch };

/** Envoy's ValueMatcher on a JSON value (a claim): only a value of the matcher's kind can match. */
export type ValueMatch =
  | { k: 'str'; m: StringMatch }
  | { k: 'or'; n: ValueMatch[] }
  /** a list with an element that `one` matches */
  | { k: 'list'; one: ValueMatch }
  /** `present_match: true`: any value (JSON null too); false never matches (Envoy) */
  | { k: 'present'; v: boolean }
  | { k: 'bool'; v: boolean }
  | { k: 'null' }
  /** a number equal to `eq`, or in [lo, hi) */
  | { k: 'num'; eq?: number; lo?: number; hi?: number }
  | { k: 'unknown'; why: string };

/** The dynamic metadata namespace Envoy's JWT filter writes (and Istio's request.auth.* policies read). */
export const JWT_AUTHN_METADATA = 'envoy.filters.http.jwt_authn';

export interface RbacPolicyTree {
  name: string;
  /** any permission AND any principal */
  match: RbacNode;
}

export interface CompiledRbacFilter {
  name: string;
  action: RbacAction;
  policies: RbacPolicyTree[];
}

/** The bounds of what the agent compiles: beyond them the filter stays refused. */
export const RBAC_LIMITS = { depth: 32, nodes: 20_000, literal: 4096 };

/** The filter cannot be compiled: it stays unenforced, so its scope is refused. */
export class RbacCompileError extends Error {}

/**
 * Envoy's network RBAC filter (`envoy.filters.network.rbac`): the same rules, judged per connection
 * by the L4 front (agent/l4/lua/apisix_mesh/l4_rbac.lua). Not among grpc-js-xds's generated types;
 * the fields the agent reads.
 */
export interface NetworkRbac {
  rules?: HttpRbac['rules'];
  matcher?: HttpRbac['matcher'];
  shadow_matcher?: HttpRbac['shadow_matcher'];
  stat_prefix?: string;
  /** ONE_TIME_ON_FIRST_BYTE or CONTINUOUS: the same answer here, where nothing it reads changes */
  enforcement_type?: string;
}

/**
 * What a connection has and a request has not: a network filter's rules see no headers, path or
 * JWT metadata (unknown: they fail closed, where Envoy would judge them against nothing), its
 * `remote_ip` is the peer (no X-Forwarded-For on a connection), its `requested_server_name` is the
 * SNI when the front read one.
 */
interface Scope {
  network: boolean;
}
const HTTP_SCOPE: Scope = { network: false };
const NETWORK_SCOPE: Scope = { network: true };

/**
 * One RBAC filter config → its tree; `null` when the filter enforces nothing (no `rules`: Envoy
 * then lets every request through, e.g. Istio's shadow-only filter for CUSTOM policies).
 * `shadow_rules` only feed stats in Envoy and are ignored.
 */
export function compileRbacFilter(name: string, config: HttpRbac): CompiledRbacFilter | null {
  return compileRules(name, config, HTTP_SCOPE);
}

/** One network RBAC filter config → its tree, as compileRbacFilter; null when it enforces nothing. */
export function compileNetworkRbacFilter(name: string, config: NetworkRbac): CompiledRbacFilter | null {
  return compileRules(name, config, NETWORK_SCOPE);
}

function compileRules(name: string, config: NetworkRbac, scope: Scope): CompiledRbacFilter | null {
  if (config.matcher || config.shadow_matcher) throw new RbacCompileError('the xDS matcher form of RBAC is not supported');
  const rules = config.rules;
  if (!rules) return null;
  const action = rules.action ?? 'ALLOW';
  if (action !== 'ALLOW' && action !== 'DENY' && action !== 'LOG') throw new RbacCompileError(`unknown action ${String(action).slice(0, 20)}`);
  const budget = { nodes: 0 };
  // Envoy keeps policies in a map; the decision does not depend on their order, sorting keeps the output stable
  const policies = Object.entries(rules.policies ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([policyName, policy]) => ({
    name: policyName,
    match: and([
      or((policy.permissions ?? []).map((p) => permission(p, 1, budget, scope))),
      or((policy.principals ?? []).map((p) => principal(p, 1, budget, scope))),
      ...(policy.condition || policy.checked_condition ? [unknown('CEL condition')] : []),
    ]),
  }));
  return { name, action, policies };
}

type Budget = { nodes: number };

function count(depth: number, budget: Budget): void {
  if (depth > RBAC_LIMITS.depth) throw new RbacCompileError(`rules nested deeper than ${RBAC_LIMITS.depth}`);
  if (++budget.nodes > RBAC_LIMITS.nodes) throw new RbacCompileError(`more than ${RBAC_LIMITS.nodes} rules`);
}

function permission(p: Permission, depth: number, budget: Budget, scope: Scope): RbacNode {
  count(depth, budget);
  switch (p.rule) {
    case 'any':
      return p.any === true ? { t: 'any' } : unknown('any: false');
    case 'and_rules':
      return and((p.and_rules?.rules ?? []).map((r) => permission(r, depth + 1, budget, scope)));
    case 'or_rules':
      return or((p.or_rules?.rules ?? []).map((r) => permission(r, depth + 1, budget, scope)));
    case 'not_rule':
      return p.not_rule ? { t: 'not', n: permission(p.not_rule, depth + 1, budget, scope) } : unknown('empty not_rule');
    case 'header':
      return scope.network ? unknown('header on a connection') : header(p.header!);
    case 'url_path':
      return scope.network ? unknown('url_path on a connection') : urlPath(p.url_path?.path);
    case 'destination_port': {
      const port = p.destination_port ?? 0;
      return { t: 'dport', lo: port, hi: port + 1 };
    }
    case 'destination_port_range': {
      const r = p.destination_port_range;
      return { t: 'dport', lo: r?.start ?? 0, hi: r?.end ?? 0 };
    }
    case 'destination_ip':
      return cidr('destination', p.destination_ip);
    case 'requested_server_name':
      return scope.network ? serverName(p.requested_server_name) : unknown('requested server name (no TLS termination yet)');
    case 'metadata':
      return scope.network ? unknown('dynamic metadata on a connection') : metadata(p.metadata, depth, budget);
    default:
      return unknown(`permission ${String(p.rule ?? 'without a rule').slice(0, 40)}`);
  }
}

function principal(p: Principal, depth: number, budget: Budget, scope: Scope): RbacNode {
  count(depth, budget);
  switch (p.identifier) {
    case 'any':
      return p.any === true ? { t: 'any' } : unknown('any: false');
    case 'and_ids':
      return and((p.and_ids?.ids ?? []).map((r) => principal(r, depth + 1, budget, scope)));
    case 'or_ids':
      return or((p.or_ids?.ids ?? []).map((r) => principal(r, depth + 1, budget, scope)));
    case 'not_id':
      return p.not_id ? { t: 'not', n: principal(p.not_id, depth + 1, budget, scope) } : unknown('empty not_id');
    case 'source_ip':
      return cidr('direct', p.source_ip);
    case 'direct_remote_ip':
      return cidr('direct', p.direct_remote_ip);
    case 'remote_ip':
      return cidr(scope.network ? 'direct' : 'remote', p.remote_ip);
    case 'header':
      return scope.network ? unknown('header on a connection') : header(p.header!);
    case 'url_path':
      return scope.network ? unknown('url_path on a connection') : urlPath(p.url_path?.path);
    case 'authenticated':
      return peerPrincipal(p.authenticated?.principal_name);
    case 'filter_state':
      if (p.filter_state?.key !== PEER_PRINCIPAL_STATE || !p.filter_state.string_match) return unknown(`filter state ${String(p.filter_state?.key ?? '(none)').slice(0, 40)}`);
      return peerPrincipal(p.filter_state.string_match);
    case 'metadata':
      return scope.network ? unknown('dynamic metadata on a connection') : metadata(p.metadata, depth, budget);
    default:
      return unknown(`principal ${String(p.identifier ?? 'without an identifier').slice(0, 40)}`);
  }
}

/**
 * Metadata of the JWT filter only: the sidecar knows it exactly (absent when no token was
 * verified, as in Envoy). Any other namespace (Istio's old `istio_authn`, …) stays unknown.
 */
function metadata(m: MetadataMatcher | null | undefined, depth: number, budget: Budget): RbacNode {
  if (!m || m.filter !== JWT_AUTHN_METADATA) return unknown(`dynamic metadata of ${String(m?.filter ?? '(none)').slice(0, 40)}`);
  const path: string[] = [];
  for (const segment of m.path ?? []) {
    if (segment.segment !== 'key' || segment.key === undefined) return unknown('metadata path segment without a key');
    path.push(segment.key);
  }
  if (path.length === 0) return unknown('metadata matcher without a path');
  const value = valueMatch(m.value, depth + 1, budget);
  return { t: 'meta', path, m: value, ...(m.invert ? { inv: true } : {}) };
}

function valueMatch(v: ValueMatcher | null | undefined, depth: number, budget: Budget): ValueMatch {
  count(depth, budget);
  switch (v?.match_pattern) {
    case 'string_match': {
      const m = stringMatch(v.string_match!);
      return 't' in m ? { k: 'unknown', why: m.t === 'unknown' ? m.why : 'string matcher' } : { k: 'str', m };
    }
    case 'or_match':
      return { k: 'or', n: (v.or_match?.value_matchers ?? []).map((x) => valueMatch(x, depth + 1, budget)) };
    case 'list_match':
      return v.list_match?.one_of ? { k: 'list', one: valueMatch(v.list_match.one_of, depth + 1, budget) } : { k: 'unknown', why: 'list matcher without one_of' };
    case 'present_match':
      return { k: 'present', v: v.present_match === true };
    case 'bool_match':
      return { k: 'bool', v: v.bool_match === true };
    case 'null_match':
      return { k: 'null' };
    case 'double_match': {
      const d = v.double_match;
      if (d?.match_pattern === 'exact') return finite({ k: 'num', eq: Number(d.exact) });
      if (d?.match_pattern === 'range') return finite({ k: 'num', lo: Number(d.range?.start ?? 0), hi: Number(d.range?.end ?? 0) });
      return { k: 'unknown', why: 'double matcher kind' };
    }
    default:
      return { k: 'unknown', why: `value matcher ${String(v?.match_pattern ?? '(none)').slice(0, 20)}` };
  }
}

function finite(m: ValueMatch & { k: 'num' }): ValueMatch {
  return [m.eq, m.lo, m.hi].every((x) => x === undefined || Number.isFinite(x)) ? m : { k: 'unknown', why: 'a number that is not finite' };
}

function unknown(why: string): RbacNode {
  return { t: 'unknown', why };
}

/** The filter state Istio's authn filter records the mTLS peer's principal in (its URI SAN). */
const PEER_PRINCIPAL_STATE = 'io.istio.peer_principal';

/**
 * The peer of an inbound mTLS connection (agent/l4/lua/apisix_mesh/mesh_tls.lua): its certificate
 * verified against the mesh roots, its first URI SAN the principal. Istio's certificates carry exactly
 * one URI SAN and no DNS SAN or subject, where Envoy's `authenticated` would also try those.
 */
function peerPrincipal(m: StringMatcher | null | undefined): RbacNode {
  if (!m) return { t: 'peer' };
  const compiled = stringMatch(m);
  return 't' in compiled ? compiled : { t: 'peer', m: compiled };
}

/** Envoy: an empty AND is true, an empty OR false. */
function and(n: RbacNode[]): RbacNode {
  return n.length === 1 ? n[0]! : { t: 'and', n };
}
function or(n: RbacNode[]): RbacNode {
  return n.length === 1 ? n[0]! : { t: 'or', n };
}

/**
 * nginx decodes every percent-escape of the path before APISIX (and this evaluator) sees it, where
 * Envoy decodes only unreserved characters: a pattern holding `%` would never match the decoded
 * path, so a DENY written as `/a%20b` would let `/a%20b` through. Such a path matcher is unknown.
 */
function urlPath(m: StringMatcher | null | undefined): RbacNode {
  if (!m) return unknown('url_path without a matcher');
  const compiled = stringMatch(m);
  if ('t' in compiled) return compiled;
  if (compiled.v.includes('%')) return unknown('path pattern with a percent-escape');
  return { t: 'path', m: compiled };
}

function header(h: HeaderMatcher): RbacNode {
  const name = (h.name ?? '').toLowerCase();
  let src: HeaderSource;
  if (name === ':method') src = { pseudo: 'method' };
  else if (name === ':path') src = { pseudo: 'path' };
  else if (name === ':authority') src = { pseudo: 'authority' };
  else if (name === ':scheme') src = { pseudo: 'scheme' };
  else if (name.startsWith(':') || name === 'host' || name === '') return unknown(`header ${name.slice(0, 40)}`);
  else src = { h: name };
  const flags = { ...(h.invert_match ? { inv: true } : {}), ...(h.treat_missing_header_as_empty ? { empty: true } : {}) };
  let m: StringMatch | RbacNode;
  if (h.present_match !== undefined && h.header_match_specifier === 'present_match') return { t: 'header', src, present: h.present_match, ...flags };
  if (h.string_match) m = stringMatch(h.string_match);
  else if (h.exact_match !== undefined) m = h.exact_match === '' ? { k: 'prefix', v: '' } : literal('exact', h.exact_match); // Envoy: an empty value matches any
  else if (h.safe_regex_match) m = regex(h.safe_regex_match.regex ?? '');
  else if (h.prefix_match !== undefined) m = literal('prefix', h.prefix_match);
  else if (h.suffix_match !== undefined) m = literal('suffix', h.suffix_match);
  else if (h.contains_match !== undefined) m = literal('contains', h.contains_match);
  else if (h.range_match) return unknown('header range match');
  else m = { k: 'prefix', v: '' }; // no specifier: presence of any value
  if ('t' in m) return m;
  if ('pseudo' in src && src.pseudo === 'path' && m.v.includes('%')) return unknown('path pattern with a percent-escape');
  return { t: 'header', src, m, ...flags };
}

function literal(k: StringMatch['k'], v: string, ignoreCase = false): StringMatch | RbacNode {
  if (v.length > RBAC_LIMITS.literal) throw new RbacCompileError(`a value longer than ${RBAC_LIMITS.literal} characters`);
  return ignoreCase ? { k, v: v.toLowerCase(), ic: true } : { k, v };
}

function regex(pattern: string): StringMatch | RbacNode {
  if (pattern.length > RBAC_LIMITS.literal) throw new RbacCompileError(`a regex longer than ${RBAC_LIMITS.literal} characters`);
  try {
    return { k: 're', v: fullMatchRegex(pattern) };
  } catch (err) {
    // RE2 that PCRE cannot mean the same way: this matcher cannot be evaluated
    if (err instanceof UnsupportedMatch) return unknown(`regex: ${err.message.slice(0, 60)}`);
    throw err;
  }
}

function stringMatch(m: StringMatcher): StringMatch | RbacNode {
  const ic = m.ignore_case === true;
  if (m.exact !== undefined && m.exact !== null) return literal('exact', m.exact, ic);
  if (m.prefix !== undefined && m.prefix !== null) return literal('prefix', m.prefix, ic);
  if (m.suffix !== undefined && m.suffix !== null) return literal('suffix', m.suffix, ic);
  if (m.contains !== undefined && m.contains !== null) return literal('contains', m.contains, ic);
  if (m.safe_regex) return regex(m.safe_regex.regex ?? '');
  return unknown('string matcher kind');
}

/** The SNI matcher: literals and regexes as for headers (the name is matched as the client sent it). */
function serverName(m: StringMatcher | null | undefined): RbacNode {
  if (!m) return unknown('requested_server_name without a matcher');
  const compiled = stringMatch(m);
  return 't' in compiled ? compiled : { t: 'sni', m: compiled };
}

function cidr(of: 'destination' | 'direct' | 'remote', range: CidrRange | null | undefined): RbacNode {
  const address = range?.address_prefix ?? '';
  const bytes = parseAddress(address);
  if (!bytes) return unknown(`address ${address.slice(0, 45)}`);
  const max = bytes.length * 8;
  const len = Math.min(range?.prefix_len?.value ?? max, max); // Envoy clamps an over-long prefix
  // the network part only: the evaluator compares the address masked the same way
  const b = bytes.map((byte, i) => {
    const keep = Math.max(0, Math.min(8, len - i * 8));
    return byte & ((0xff << (8 - keep)) & 0xff);
  });
  return { t: 'ip', of, v: bytes.length === 4 ? 4 : 6, b, len };
}

/** An IPv4 or IPv6 address → its bytes; undefined for anything else (incl. embedded IPv4 in IPv6). */
export function parseAddress(text: string): number[] | undefined {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (v4) {
    const bytes = v4.slice(1).map(Number);
    return bytes.every((b) => b <= 255) ? bytes : undefined;
  }
  if (!/^[0-9a-fA-F:]+$/.test(text)) return undefined;
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const groups = (part: string | undefined) => (part ? part.split(':') : []);
  const head = groups(halves[0]);
  const tail = groups(halves[1]);
  if ([...head, ...tail].some((g) => g.length === 0 || g.length > 4)) return undefined;
  const fill = 8 - head.length - tail.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) return undefined;
  const all = [...head, ...Array<string>(fill).fill('0'), ...tail].map((g) => parseInt(g, 16));
  return all.flatMap((g) => [g >> 8, g & 0xff]);
}
