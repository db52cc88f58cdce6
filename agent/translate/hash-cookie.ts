import type { RouteAction } from '../xds/envoy-types.js';
import { durationSeconds } from './values.js';

type CookiePolicy = NonNullable<NonNullable<RouteAction['hash_policy']>[number]['cookie']>;

/**
 * A cookie hash policy with a `ttl`: Envoy makes the cookie when the request has none, hashes the
 * request on it and sets it on the response, so that the client sticks to the host it got (Istio's
 * DestinationRule `consistentHash.httpCookie` with a ttl). The sidecar's Lua does the same
 * (agent/l4/lua/apisix_mesh/hash_key.lua) for the routes whose access-phase plugin carries the
 * cookie (`hash_cookie` of apisix-mesh-access).
 */
export interface HashCookie {
  name: string;
  path: string;
  /** seconds, 0: a session cookie (no Max-Age), as Envoy */
  ttl: number;
  attributes: Array<[string, string]>;
}

/** RFC 6265 cookie-name (an RFC 7230 token); a value or path: printable ASCII without `;`. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$/;
const ATTRIBUTE_VALUE = /^[\x20-\x3a\x3c-\x7e]{0,1024}$/;
const MAX_ATTRIBUTES = 16;

/** The cookie to make, or why it cannot be made (the policy then only reads the cookie). */
export function hashCookie(policy: CookiePolicy): HashCookie | { refused: string } {
  const name = policy.name ?? '';
  if (!TOKEN.test(name)) return { refused: `cookie name ${JSON.stringify(name.slice(0, 40))} is not a token` };
  const path = policy.path ?? '';
  if (!ATTRIBUTE_VALUE.test(path)) return { refused: 'cookie path has a control character, a ";" or is over 1024 bytes' };
  const attributes: Array<[string, string]> = [];
  for (const a of policy.attributes ?? []) {
    if (attributes.length === MAX_ATTRIBUTES) return { refused: `more than ${MAX_ATTRIBUTES} cookie attributes` };
    const attrName = a.name ?? '';
    const value = a.value ?? '';
    if (!TOKEN.test(attrName) || !ATTRIBUTE_VALUE.test(value)) return { refused: `cookie attribute ${JSON.stringify(attrName.slice(0, 40))} is not a token with a plain value` };
    attributes.push([attrName, value]);
  }
  // Envoy: std::chrono::duration_cast<std::chrono::seconds>, which truncates
  const ttl = Math.max(0, Math.floor(durationSeconds(policy.ttl) ?? 0));
  return { name, path, ttl, attributes };
}
