import type { CorsPolicy, Route, RouteConfiguration, StringMatcher, VirtualHost } from '../xds/envoy-types.js';
import { unpackAny, type PackedAny } from '../xds/codec.js';
import { re2ToPcre } from './pcre.js';
import { SAMPLE_DIGITS } from './random-sample.js';
import { UnsupportedMatch } from './unsupported.js';
import { fractionParts, hasControlBreak, regexEscape, wrapped } from './values.js';

const CORS_FILTER = 'envoy.filters.http.cors';
const CORS_POLICY_TYPE = 'type.googleapis.com/envoy.config.route.v3.CorsPolicy';

/**
 * What Envoy's CORS filter decides from, for one route, as data for the Lua that enforces it
 * (response-phase-lua.ts). Origins are PCRE patterns (full-match semantics already written in).
 */
export interface CorsRules {
  origins: string[];
  methods: string;
  headers: string;
  expose: string;
  maxAge: string;
  credentials: boolean;
  privateNetwork: boolean;
  /** preflights from origins that are not allowed go on to the upstream (Envoy's default) */
  forwardUnmatched: boolean;
  /** filter_enabled below 100 %: the policy applies when digits 17–24 of $request_id are below this */
  enabledBelow?: number;
}

/**
 * The CORS policy Envoy's CORS filter applies to a route: the `typed_per_filter_config` policies of
 * the route, its virtual host and its route configuration, most specific first — or, when none of
 * them has one, the older `cors` fields of the route action and the virtual host. Each setting comes
 * from the most specific policy that sets it; whether CORS is on at all from the most specific
 * policy (Envoy's CorsFilter). undefined: no CORS handling (the filter lets everything through).
 */
export function corsRules(route: Route, vhost: VirtualHost, rc: RouteConfiguration): CorsRules | undefined {
  const typed = [route, vhost, rc]
    .map((level) => unpackAny<CorsPolicy>((level.typed_per_filter_config as Record<string, PackedAny> | undefined)?.[CORS_FILTER], CORS_POLICY_TYPE))
    .filter((p): p is CorsPolicy => p !== undefined);
  const policies = typed.length ? typed : [route.route?.cors, vhost.cors].filter((p): p is CorsPolicy => !!p);
  const first = policies[0];
  if (!first) return undefined;
  const fraction = enabledFraction(first);
  if (fraction <= 0) return undefined; // off (a shadow policy is evaluated, never enforced)
  const pick = <T>(get: (p: CorsPolicy) => T | undefined, isSet: (v: T) => boolean): T | undefined => {
    for (const p of policies) {
      const v = get(p);
      if (v !== undefined && isSet(v)) return v;
    }
    return undefined;
  };
  const text = (get: (p: CorsPolicy) => string | undefined) => literal(pick(get, (v) => v !== '') ?? '');
  const flag = (get: (p: CorsPolicy) => { value?: boolean } | null | undefined) => pick((p) => wrapped(get(p)), () => true);
  const matchers = pick((p) => p.allow_origin_string_match, (v) => v.length > 0) ?? [];
  const rules: CorsRules = {
    origins: matchers.map(originPattern),
    methods: text((p) => p.allow_methods),
    headers: text((p) => p.allow_headers),
    expose: text((p) => p.expose_headers),
    maxAge: text((p) => p.max_age),
    credentials: flag((p) => p.allow_credentials) ?? false,
    privateNetwork: flag((p) => p.allow_private_network_access) ?? false,
    forwardUnmatched: flag((p) => p.forward_not_matching_preflights) ?? true,
  };
  if (fraction < 1) rules.enabledBelow = Math.round(fraction * 16 ** SAMPLE_DIGITS);
  return rules;
}

/**
 * The share of requests the policy is enforced for: filter_enabled's default value, else 100 %
 * (`shadow_enabled` alone changes nothing in Envoy: it only evaluates where enforcement is off).
 */
function enabledFraction(policy: CorsPolicy): number {
  if (!policy.filter_enabled) return 1;
  const enabled = policy.filter_enabled.default_value;
  if (!enabled) return 0;
  const { numerator, scale } = fractionParts(enabled);
  return numerator / scale;
}

/** A StringMatcher on the Origin as a PCRE pattern with Envoy's full-match semantics. */
function originPattern(m: StringMatcher): string {
  const caseless = m.ignore_case ? '(?i)' : '';
  if (m.exact !== undefined && m.exact !== null) return `${caseless}^${regexEscape(m.exact)}\\z`;
  if (m.prefix !== undefined && m.prefix !== null) return `${caseless}^${regexEscape(m.prefix)}`;
  if (m.suffix !== undefined && m.suffix !== null) return `${caseless}${regexEscape(m.suffix)}\\z`;
  if (m.contains !== undefined && m.contains !== null) return `${caseless}${regexEscape(m.contains)}`;
  if (m.safe_regex) return `^(?:${re2ToPcre(m.safe_regex.regex ?? '')})\\z`;
  throw new UnsupportedMatch('cors-origin-matcher', 'a CORS origin matcher of an unknown kind');
}

function literal(value: string): string {
  if (hasControlBreak(value)) throw new UnsupportedMatch('control-character', 'CR, LF or NUL in a CORS header value');
  return value;
}
