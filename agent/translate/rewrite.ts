import type { RouteMatch } from '../xds/envoy-types.js';
import { luaLiteral } from './lua-literal.js';
import { re2ToPcre, rewriteTemplate } from './pcre.js';
import { regexEscape, substitutionLiteral, wrapped } from './values.js';

/**
 * Envoy's path rewrites (a route's or a redirect's `prefix_rewrite` / `regex_rewrite`) as
 * proxy-rewrite settings. proxy-rewrite rewrites the path APISIX matched on (`ctx.var.uri`, the
 * normalised path without the query), keeps the query string and re-encodes the result; so does
 * Envoy, on the path without the query.
 *
 * - `prefix_rewrite` replaces what the route matched: the prefix (a `prefix` or
 *   `path_separated_prefix` match, compared without case when the route says so), the whole exact
 *   path, or — after a `safe_regex` match, whose match is the whole path — the whole path
 *   (Envoy's RegexRouteEntryImpl rewrites the path it matched). One substitution, so
 *   proxy-rewrite's `regex_uri` (`ngx.re.sub`, first match only) expresses it exactly.
 * - `regex_rewrite` replaces *every* match (RE2's GlobalReplace), which `regex_uri` cannot: the
 *   substitution runs as `ngx.re.gsub` in proxy-rewrite's `_meta.pre_function`, which APISIX calls
 *   right before proxy-rewrite's own rewrite and which hands proxy-rewrite the new path through
 *   `ctx.var.uri` (APISIX's variable cache; nginx's `$uri` cannot be written).
 */
export interface PathRewrite {
  regex_uri?: [string, string];
  /** Lua for proxy-rewrite's `_meta.pre_function` (a chunk returning the function, as APISIX loads it) */
  preFunction?: string;
}

export type PathRewriteResult = { rewrite: PathRewrite } | { unsupported: string };

export function pathRewrite(match: RouteMatch, rewrite: { prefix_rewrite?: string | null; regex_rewrite?: { pattern?: { regex?: string } | null; substitution?: string } | null }): PathRewriteResult | undefined {
  if (rewrite.regex_rewrite?.pattern?.regex !== undefined) {
    return { rewrite: { preFunction: globalSubstitutionLua(re2ToPcre(rewrite.regex_rewrite.pattern.regex), rewriteTemplate(rewrite.regex_rewrite.substitution ?? '')) } };
  }
  const prefixRewrite = rewrite.prefix_rewrite;
  if (prefixRewrite === undefined || prefixRewrite === null || prefixRewrite === '') return undefined;
  const replacement = substitutionLiteral(prefixRewrite); // a `$` in it stays a `$` (ngx.re.sub template)
  const caseless = (wrapped(match.case_sensitive) ?? true) ? '' : '(?i)';
  const prefix = match.prefix ?? match.path_separated_prefix;
  if (prefix !== undefined && prefix !== null) return { rewrite: { regex_uri: [`${caseless}^${regexEscape(prefix)}(.*)`, `${replacement}$1`] } };
  if (match.path !== undefined && match.path !== null) return { rewrite: { regex_uri: [`${caseless}^${regexEscape(match.path)}\\z`, replacement] } };
  // a regex route matches the whole path, so the whole path is what gets replaced
  if (match.safe_regex) return { rewrite: { regex_uri: ['^[\\s\\S]*', replacement] } };
  return { unsupported: 'a prefix rewrite on a route matched neither on a prefix, a path nor a regex' };
}

/**
 * Every match of `pattern` in the path replaced with `template` (ngx.re.gsub's syntax). A PCRE
 * error (the match limit on a hostile path) answers 500 as proxy-rewrite does for its own regexes:
 * the request is never sent on with its path half rewritten. Pattern and template are data (Lua
 * string literals), never code.
 */
export function globalSubstitutionLua(pattern: string, template: string): string {
  return `return function(conf, ctx)
  local uri, _, err = ngx.re.gsub(ctx.var.uri, ${luaLiteral(pattern)}, ${luaLiteral(template)}, "jo")
  if not uri then
    require("apisix.core").log.error("apisix-mesh: regex_rewrite failed: ", err)
    return ngx.exit(500)
  end
  ctx.var.uri = uri
end
`;
}
