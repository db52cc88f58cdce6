import type { HeaderMatcher, QueryParameterMatcher, RouteMatch, StringMatcher } from '../xds/envoy-types.js';
import type { ApisixVar } from './apisix-types.js';
import { regexEscape, wrapped } from './values.js';
import { fullMatchRegex, notFullMatchRegex } from './pcre.js';
import { UnsupportedMatch } from './unsupported.js';

export { UnsupportedMatch };

/**
 * Envoy's RouteMatch → lua-resty-expr conditions on APISIX's variables. Paths are matched on the
 * `uri` variable (every route sits on `/*` in the radix tree so that `priority` alone keeps Envoy's
 * first-match order); literal values are regex-escaped wherever a regex operator is needed; regexes
 * from Envoy (RE2) are anchored because Envoy requires a full match, and rewritten for PCRE
 * (pcre.ts). `case_sensitive` does not apply to a path regex, in Envoy as here.
 */
export function matchVars(match: RouteMatch): ApisixVar[] {
  const vars: ApisixVar[] = [];
  const caseSensitive = wrapped(match.case_sensitive) ?? true;
  const op = caseSensitive ? '~~' : '~*';
  if (match.prefix !== undefined && match.prefix !== null) {
    // "" and "/" match every path: no condition
    if (match.prefix !== '' && match.prefix !== '/') vars.push(['uri', op, `^${regexEscape(match.prefix)}`]);
  } else if (match.path !== undefined && match.path !== null) {
    vars.push(caseSensitive ? ['uri', '==', match.path] : ['uri', '~*', `^${regexEscape(match.path)}$`]);
  } else if (match.safe_regex) {
    vars.push(['uri', '~~', fullMatchRegex(match.safe_regex.regex ?? '')]);
  } else if (match.path_separated_prefix !== undefined && match.path_separated_prefix !== null) {
    vars.push(['uri', op, `^${regexEscape(match.path_separated_prefix)}(?:/|$)`]);
  } else if (match.connect_matcher) {
    throw new UnsupportedMatch('connect-matcher', 'CONNECT requests are not routed by APISIX routes');
  } else if (match.path_match_policy) {
    throw new UnsupportedMatch('path-match-policy', 'extension path matchers are not supported');
  }
  for (const header of match.headers ?? []) vars.push(...headerVars(header));
  for (const query of match.query_parameters ?? []) vars.push(queryVar(query));
  if (match.runtime_fraction) {
    throw new UnsupportedMatch('runtime-fraction', 'routes matched on a runtime fraction are not supported');
  }
  if (match.grpc) vars.push(['http_content_type', '~~', '^application/grpc']);
  // What the agent cannot evaluate must not be dropped from the match: the route would then match
  // every request (Istio routes on JWT claims through dynamic metadata).
  if (match.dynamic_metadata?.length) {
    throw new UnsupportedMatch('dynamic-metadata-match', 'routes matched on dynamic metadata (e.g. a JWT claim) cannot be evaluated');
  }
  if (match.tls_context) throw new UnsupportedMatch('tls-context-match', 'routes matched on the TLS context cannot be evaluated');
  return vars;
}

/** Envoy header name → nginx variable. Pseudo-headers map to what nginx knows them as. */
export function headerVariable(name: string): string {
  switch (name.toLowerCase()) {
    case ':method':
      return 'request_method';
    case ':authority':
    case 'host':
      return 'host';
    case ':scheme':
      return 'scheme';
    case ':path':
      return 'request_uri';
    default:
      if (name.startsWith(':')) throw new UnsupportedMatch('unsupported-pseudo-header', `pseudo-header ${name}`);
      return `http_${name.toLowerCase().replace(/-/g, '_')}`;
  }
}

/**
 * One header matcher → its conditions. lua-resty-expr sees a missing header as nil, which no
 * comparison matches and `!` therefore turns into a match; Envoy instead fails an inverted matcher
 * on a missing header unless `treat_missing_header_as_empty` (Istio's `withoutHeaders`) says the
 * header counts as empty. So a plain inverted value matcher also requires the header to be there.
 */
function headerVars(header: HeaderMatcher): ApisixVar[] {
  const variable = headerVariable(header.name ?? '');
  const invert = header.invert_match === true;
  const regex = header.safe_regex_match?.regex ?? header.string_match?.safe_regex?.regex;
  if (invert && regex !== undefined && (header.safe_regex_match || header.string_match?.safe_regex)) {
    // A present header must not match the regex, written as a positive condition so that a PCRE
    // error fails closed; a missing one fails the matcher (nil never matches `~~`), unless it counts
    // as empty — then it matches (exact for every pattern that does not match "")
    const notMatching: ApisixVar = [variable, '~~', notFullMatchRegex(regex)];
    return header.treat_missing_header_as_empty ? [['OR', [variable, '!', '~~', '^'], notMatching]] : [notMatching];
  }
  let condition: [string, unknown];
  if (header.string_match) condition = stringCondition(header.string_match);
  else if (header.exact_match !== undefined) condition = ['==', header.exact_match];
  else if (header.safe_regex_match) condition = ['~~', fullMatchRegex(header.safe_regex_match.regex ?? '')];
  else if (header.prefix_match !== undefined) condition = ['~~', `^${regexEscape(header.prefix_match)}`];
  else if (header.suffix_match !== undefined) condition = ['~~', `${regexEscape(header.suffix_match)}$`];
  else if (header.contains_match !== undefined) condition = ['~~', regexEscape(header.contains_match)];
  else if (header.present_match !== undefined) {
    // "present" = any value, including the empty one; "not present" inverts it.
    return [header.present_match !== invert ? [variable, '~~', '^'] : [variable, '!', '~~', '^']];
  } else if (header.range_match) throw new UnsupportedMatch('header-range-match', `range match on ${header.name}`);
  else condition = ['~~', '^'];
  if (!invert) return [[variable, condition[0], condition[1]]];
  const inverted: ApisixVar = [variable, '!', condition[0], condition[1]];
  return header.treat_missing_header_as_empty ? [inverted] : [[variable, '~~', '^'], inverted];
}

function queryVar(query: QueryParameterMatcher): ApisixVar {
  const variable = `arg_${query.name ?? ''}`;
  if (query.string_match) {
    const [op, value] = stringCondition(query.string_match);
    return [variable, op, value];
  }
  if (query.present_match === false) return [variable, '!', '~~', '^'];
  return [variable, '~~', '^'];
}

/** StringMatcher → [operator, value]; literals become escaped, anchored regexes where needed. */
export function stringCondition(m: StringMatcher): [string, unknown] {
  const ignoreCase = m.ignore_case === true;
  const re = ignoreCase ? '~*' : '~~';
  if (m.exact !== undefined && m.exact !== null) return ignoreCase ? ['~*', `^${regexEscape(m.exact)}$`] : ['==', m.exact];
  if (m.prefix !== undefined && m.prefix !== null) return [re, `^${regexEscape(m.prefix)}`];
  if (m.suffix !== undefined && m.suffix !== null) return [re, `${regexEscape(m.suffix)}$`];
  if (m.contains !== undefined && m.contains !== null) return [re, regexEscape(m.contains)];
  if (m.safe_regex) return ['~~', fullMatchRegex(m.safe_regex.regex ?? '')];
  throw new UnsupportedMatch('unsupported-string-matcher', 'string matcher without a known pattern');
}
