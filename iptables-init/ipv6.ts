import type { NetworkInterfaceInfo } from 'node:os';

/**
 * `--ipv6=auto`: IPv6 rules when the namespace has a global IPv6 address — one that is neither
 * loopback nor link-local (fe80::/10). Unique local addresses (fd00::/8) count, as the kernel gives
 * them global scope.
 */
export function hasGlobalIpv6(interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>): boolean {
  return Object.values(interfaces).some((addrs) =>
    (addrs ?? []).some((a) => a.family === 'IPv6' && !a.internal && !/^fe[89ab]/i.test(a.address) && a.address !== '::1'),
  );
}
