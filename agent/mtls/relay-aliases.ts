/**
 * Loopback aliases for the TLS relay: each (cluster, endpoint) that needs TLS gets an address of its
 * own in 127.64.0.0/10, which APISIX's upstream connects to instead of the endpoint. The relay
 * (agent/l4/lua/apisix_mesh/tls_origin.lua) reads the destination address of the connection to
 * know which endpoint, SNI and identity it stands for, and APISIX's keep-alive pool (keyed by
 * address and port) never mixes two endpoints or two clusters.
 *
 * An alias is a hash of its key (so the same configuration gives the same aliases, across pushes
 * and agent restarts, and a pooled connection is not silently re-pointed), probed linearly on the
 * rare collision in the order of the sorted keys (so the result depends on the set only).
 */

export const RELAY_ALIAS_BASE = (127 << 24) | (64 << 16); // 127.64.0.0
export const RELAY_ALIAS_BITS = 22; // /10: 4 194 304 addresses
const SIZE = 2 ** RELAY_ALIAS_BITS;

export function aliasKey(cluster: string, host: string, port: number): string {
  return `${cluster}\0${host}:${port}`;
}

/** FNV-1a, 32 bits: cheap and well spread for short strings. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function address(offset: number): string {
  const n = (RELAY_ALIAS_BASE + offset) >>> 0;
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** Every key's alias; throws only when there are more keys than addresses. */
export function assignAliases(keys: Iterable<string>): Map<string, string> {
  const sorted = [...new Set(keys)].sort();
  if (sorted.length >= SIZE) throw new Error(`${sorted.length} TLS endpoints: more than the relay's ${SIZE - 1} loopback aliases`);
  const taken = new Set<number>([0]); // 127.64.0.0 itself is never handed out
  const out = new Map<string, string>();
  for (const key of sorted) {
    let offset = fnv1a(key) % SIZE;
    while (taken.has(offset)) offset = (offset + 1) % SIZE;
    taken.add(offset);
    out.set(key, address(offset));
  }
  return out;
}

/** True for an address of the relay's alias range (what the Lua side checks, too). */
export function isRelayAlias(ip: string): boolean {
  const parts = ip.split('.').map(Number);
  return parts.length === 4 && parts[0] === 127 && parts[1]! >= 64 && parts[1]! <= 127;
}
