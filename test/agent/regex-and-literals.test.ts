// What Istio's values become in APISIX: RE2 regexes as PCRE with the same meaning (fail-closed
// where PCRE gives up), and literal text that APISIX's variable expansion leaves as it was. APISIX's
// expansion is ported below from apisix 3.13 (core.utils.resolve_var, resolve_var_with_captures,
// the redirect plugin's uri parser, ngx.re.sub's template), so a literal is checked by expanding it.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fromCanonical } from '../../agent/xds/codec.js';
import { TYPE_URL } from '../../agent/xds/protos.js';
import type { RouteConfiguration } from '../../agent/xds/envoy-types.js';
import { translateRouteConfiguration } from '../../agent/translate/route-configuration.js';
import { validateApisix } from '../../agent/schema/validate.js';
import { re2ToPcre } from '../../agent/translate/pcre.js';
import { luaLiteral } from '../../agent/translate/lua-literal.js';

const scope = { direction: 'outbound' as const, port: 9080 };
/** the nginx variables of a request, as APISIX's ctx.var would give them */
const VARS: Record<string, string> = { http_authorization: 'Bearer secret', remote_addr: '10.0.0.9', host: 'h.example', http_host: 'h.example', scheme: 'http', request_uri: '/p?q=1', uri: '/p', apisix_mesh_dollar: '$', apisix_mesh_backslash: '\\' };

/** apisix/core/utils.lua resolve_var */
function resolveVar(tpl: string): string {
  return tpl.replace(/(?<!\\)\$(\{(\w+)\}|(\w+))/g, (_m, _a, braced: string | undefined, bare: string | undefined) => VARS[(braced ?? bare)!] ?? '');
}

/** proxy-rewrite's header values: captures of regex_uri first (none here), then variables */
function proxyRewriteHeader(value: string): string {
  return resolveVar(value.replace(/(?<!\\)\$\{?(\d+)\}?/g, ''));
}

/** apisix/plugins/redirect.lua concat_new_uri (re.gmatch with "jiox": unmatched characters are dropped) */
function redirectUri(uri: string): string {
  let out = '';
  for (const m of uri.matchAll(/(\\\$[0-9a-zA-Z_]+)|\$\{([0-9a-zA-Z_]+)\}|\$([0-9a-zA-Z_]+)|(\$|[^$\\]+)/gi)) {
    if (m[2] ?? m[3]) out += VARS[(m[2] ?? m[3])!] ?? '';
    else out += m[1] ?? m[4];
  }
  return out;
}

/** ngx.re.sub's replacement template: $$ is "$", $N and ${N} a capture, any other $ an error */
function subTemplate(template: string, captures: string[]): string {
  return template.replace(/\$(\$|\d|\{(\d+)\}|.?)/g, (_m, what: string, braced: string | undefined) => {
    if (what === '$') return '$';
    if (braced !== undefined || /^\d$/.test(what)) return captures[Number(braced ?? what)] ?? '';
    throw new Error(`invalid template at $${what}`);
  });
}

/** text made of what variable expansion reacts to */
const TEMPLATE_TEXT = fc.string({ unit: fc.constantFrom('$', '\\', '{', '}', 'a', 'http_host', '1', '_', ' ', '/', 'é') });

function routes(route: Record<string, unknown>, match: Record<string, unknown> = { prefix: '/' }) {
  const rc = fromCanonical<RouteConfiguration>(TYPE_URL.route, { name: '9080', virtual_hosts: [{ name: 'vh', domains: ['*'], routes: [{ name: 'r', match, ...route }] }] });
  return translateRouteConfiguration(rc, scope);
}

function onlyRoute(route: Record<string, unknown>, match?: Record<string, unknown>) {
  const t = routes(route, match);
  expect(t.notes.filter((n) => n.skipped)).toEqual([]);
  expect(validateApisix('route', t.routes[0]!.route)).toBeNull();
  return t.routes[0]!.route;
}

describe('literal values', () => {
  it('a header value naming a variable reaches the upstream as written, not as the client\'s credentials', () => {
    const route = onlyRoute({ route: { cluster: 'c' }, request_headers_to_add: [{ header: { key: 'x-copy', value: '$http_authorization ${remote_addr} \\$host $1' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }] });
    const set = (route.plugins!['proxy-rewrite'] as { headers: { set: Record<string, string> } }).headers.set;
    expect(proxyRewriteHeader(set['x-copy']!)).toBe('$http_authorization ${remote_addr} \\$host $1');
  });

  it('any header value survives proxy-rewrite\'s expansion', () => {
    fc.assert(fc.property(fc.oneof(TEMPLATE_TEXT, fc.string({ unit: 'binary' })).filter((s) => !/[\0\r\n]/.test(s)), (value) => {
      const route = onlyRoute({ route: { cluster: 'c' }, request_headers_to_add: [{ header: { key: 'x-v', value } }] });
      const add = (route.plugins!['proxy-rewrite'] as { headers: { add: Record<string, string> } }).headers.add;
      expect(proxyRewriteHeader(add['x-v']!)).toBe(value);
    }));
  });

  it('a direct response body is not expanded either', () => {
    const route = onlyRoute({ direct_response: { status: 403, body: { inline_string: 'denied for $remote_addr' } } });
    const abort = (route.plugins!['fault-injection'] as { abort: { body: string } }).abort;
    expect(resolveVar(abort.body)).toBe('denied for $remote_addr');
  });

  it('redirect targets stay literal, the request\'s own parts are still filled in', () => {
    fc.assert(fc.property(fc.oneof(TEMPLATE_TEXT, fc.string({ unit: 'grapheme-ascii' })).filter((s) => !/[\0\r\n]/.test(s)), (text) => {
      const path = `/${text}`;
      const route = onlyRoute({ redirect: { path_redirect: path, response_code: 'FOUND' } });
      expect(redirectUri((route.plugins!['redirect'] as { uri: string }).uri)).toBe(`http://h.example${path}`);
    }));
    const route = onlyRoute({ redirect: { host_redirect: 'x.$host.example', https_redirect: true } });
    expect(redirectUri((route.plugins!['redirect'] as { uri: string }).uri)).toBe('https://x.$host.example/p?q=1');
  });

  it('a prefix-rewriting redirect replaces the matched prefix, with a template ngx.re.sub accepts', () => {
    // proxy-rewrite (which runs first) rewrites the path; the redirect's Location is built from it
    const location = (redirect: Record<string, unknown>, path: string) => {
      const route = onlyRoute({ redirect }, { prefix: '/old/' });
      const [pattern, template] = (route.plugins!['proxy-rewrite'] as { regex_uri: [string, string] }).regex_uri;
      const upstreamUri = subTemplate(template, [...new RegExp(pattern.replace('\\z', '$')).exec(path)!]);
      VARS['upstream_uri'] = upstreamUri; // expanded once by the redirect plugin, not re-read
      return redirectUri((route.plugins!['redirect'] as { uri: string }).uri);
    };
    expect(location({ prefix_rewrite: '/n$w/' }, '/old/x/y')).toBe('http://h.example/n$w/x/y');
    expect(location({ prefix_rewrite: '/new/', host_redirect: 'other.example', https_redirect: true }, '/old/x')).toBe('https://other.example/new/x');
  });

  it('rewrites: $ stays literal, RE2 groups become ngx.re.sub captures', () => {
    const prefix = onlyRoute({ route: { cluster: 'c', prefix_rewrite: '/v$2/' } }, { prefix: '/v1/' });
    const [pattern, template] = (prefix.plugins!['proxy-rewrite'] as { regex_uri: [string, string] }).regex_uri;
    expect(subTemplate(template, [...new RegExp(pattern).exec('/v1/items')!])).toBe('/v$2/items');
    // regex_rewrite replaces every match: ngx.re.gsub in proxy-rewrite's pre_function, with the
    // pattern and template as Lua string literals
    const regex = onlyRoute({ route: { cluster: 'c', regex_rewrite: { pattern: { regex: '^/api/(\\w+)$' }, substitution: '/\\1/$x\\\\' } } });
    const lua = ((regex.plugins!['proxy-rewrite'] as { _meta: { pre_function: string } })._meta.pre_function);
    expect(lua).toContain(`ngx.re.gsub(ctx.var.uri, ${luaLiteral('^/api/(\\w+)\\z')}, ${luaLiteral('/${1}/$$x\\')}, "jo")`);
    expect(subTemplate('/${1}/$$x\\', ['/api/v', 'v'])).toBe('/v/$x\\');
  });

  it('CR, LF or NUL in a header or redirect target skips the route, with a note', () => {
    for (const route of [
      { route: { cluster: 'c' }, request_headers_to_add: [{ header: { key: 'x-a', value: 'b\r\nx-evil: 1' } }] },
      { route: { cluster: 'c' }, request_headers_to_add: [{ header: { key: 'x-a\n', value: 'b' } }] },
      { route: { cluster: 'c' }, request_headers_to_remove: ['x-a\r'] },
      { route: { cluster: 'c', host_rewrite_literal: 'a\nb' } },
      { redirect: { path_redirect: '/a\r\nSet-Cookie: x' } },
    ]) {
      const t = routes(route);
      expect(t.routes).toEqual([]);
      expect(t.notes).toContainEqual(expect.objectContaining({ reason: 'control-character', skipped: true }));
    }
  });
});

describe('RE2 regexes for PCRE', () => {
  it('rewrites where PCRE reads the same text differently', () => {
    expect(re2ToPcre('/a$')).toBe('/a\\z'); // PCRE's $ also matches before a final newline
    expect(re2ToPcre('(?m)^a$')).toBe('(?m)^a$');
    expect(re2ToPcre('(?m:a$)b$')).toBe('(?m:a$)b\\z');
    expect(re2ToPcre('a\\vb\\s\\S')).toBe('a\\x0Bb[\\t\\n\\f\\r ][^\\t\\n\\f\\r ]');
    expect(re2ToPcre('[\\s\\v]')).toBe('[\\t\\n\\f\\r \\x0B]');
    expect(re2ToPcre('a{,2}b{2}c{1,}')).toBe('a\\{,2}b{2}c{1,}');
    expect(re2ToPcre('\\Qa.*$\\E+')).toBe('a\\.\\*\\$+');
    expect(re2ToPcre('[]a][[:alpha:]][^$]')).toBe('[\\]a][[:alpha:]][^$]');
    expect(re2ToPcre('\\x{41}\\x42\\101')).toBe('\\x41\\x42\\x41');
    expect(re2ToPcre('(?P<id>[0-9]+)\\pL\\p{Greek}')).toBe('(?P<id>[0-9]+)\\pL\\p{Greek}');
  });

  it('refuses what RE2 refuses, and what PCRE would read as bytes', () => {
    expect(() => re2ToPcre('(a)\\1')).toThrow(/invalid RE2 regex/);
    expect(() => re2ToPcre('(?=a)')).toThrow(/invalid RE2 regex/);
    expect(() => re2ToPcre('café')).toThrow(/non-ASCII/);
    expect(() => re2ToPcre('\\x{e9}')).toThrow(/above U\+007F/);
  });

  it('path regexes are full matches, case sensitive whatever case_sensitive says (as in Envoy)', () => {
    const route = onlyRoute({ route: { cluster: 'c' } }, { safe_regex: { regex: '/items/[0-9]+' }, case_sensitive: false });
    expect(route.vars!.at(-1)).toEqual(['uri', '~~', '^(?:/items/[0-9]+)\\z']);
  });

  it('an inverted regex header match fails closed when PCRE gives up; an absent header fails it unless it counts as empty (Envoy)', () => {
    const header = { name: 'x-user', string_match: { safe_regex: { regex: '(a+)+' } }, invert_match: true };
    const route = onlyRoute({ route: { cluster: 'c' } }, { prefix: '/', headers: [header] });
    expect(route.vars!.at(-1)).toEqual(['http_x_user', '~~', '^(?!(?:(a+)+)\\z)']);
    const empty = onlyRoute({ route: { cluster: 'c' } }, { prefix: '/', headers: [{ ...header, treat_missing_header_as_empty: true }] });
    expect(empty.vars!.at(-1)).toEqual(['OR', ['http_x_user', '!', '~~', '^'], ['http_x_user', '~~', '^(?!(?:(a+)+)\\z)']]);
  });

  it('a route with a regex RE2 refuses (from a config dump, not validated) is skipped with a note', () => {
    const t = routes({ route: { cluster: 'c' } }, { safe_regex: { regex: '(a)\\1' } });
    expect(t.routes).toEqual([]);
    expect(t.notes).toContainEqual(expect.objectContaining({ reason: 'invalid-regex', skipped: true }));
  });
});
