import { isIPv6 } from 'node:net';

export interface HostPort {
  /** a name, an IPv4 address, or an IPv6 address without its brackets */
  host: string;
  port: number;
}

/**
 * `HOST:PORT` as gRPC and URLs write it: a name or IPv4 address, or an IPv6 address in brackets
 * (`[fd00::1]:15012`). An IPv6 address without brackets is refused with the form to write rather
 * than split at its last colon: `fd00::1:15012` is also the valid address fd00::1:15012, so no
 * parse of it can be trusted. Returns the reason when the value is none of these.
 */
export function parseHostPort(value: string): HostPort | { problem: string } {
  const bracketed = /^\[([^\]]*)\]:(\d{1,5})$/.exec(value);
  const plain = bracketed ? null : /^([^:[\]\s]+):(\d{1,5})$/.exec(value);
  const m = bracketed ?? plain;
  if (!m) {
    if (isIPv6(value)) return { problem: `an IPv6 address needs a port, and brackets around the address: [${value}]:PORT` };
    const cut = value.lastIndexOf(':');
    if (cut > 0 && isIPv6(value.slice(0, cut)) && /^\d{1,5}$/.test(value.slice(cut + 1))) {
      return { problem: `an IPv6 address goes in brackets: [${value.slice(0, cut)}]:${value.slice(cut + 1)}` };
    }
    return { problem: 'expected HOST:PORT, an IPv6 address in brackets ([fd00::1]:15012)' };
  }
  if (bracketed && !isIPv6(m[1]!)) return { problem: `[${m[1]!.slice(0, 60)}] is not an IPv6 address` };
  const port = Number(m[2]);
  if (port > 65535) return { problem: `port ${port} is above 65535` };
  return { host: m[1]!, port };
}

/** `host:port` as gRPC dials it: an IPv6 address in brackets. */
export function formatHostPort({ host, port }: HostPort): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}
