import type { FastifyInstance } from 'fastify';

/**
 * The status port's default address: `::` with dual-stack sockets, so that the kubelet's probes and
 * Prometheus reach it on the pod's IPv6 address (IPv6-first and IPv6-only pods) as on its IPv4 one
 * (dual-stack pods, where IPv4 clients arrive as `::ffff:a.b.c.d`).
 */
export const DUAL_STACK_HOST = '::';
export const IPV4_ANY_HOST = '0.0.0.0';

/** The errors of a kernel without IPv6 (booted with ipv6.disable=1: no AF_INET6 sockets, or no `::`). */
const NO_IPV6 = new Set(['EAFNOSUPPORT', 'EADDRNOTAVAIL', 'EPROTONOSUPPORT']);

/**
 * Listens on `host`; `::` is dual-stack (`ipv6Only: false`) and, where the kernel has no IPv6,
 * falls back to `0.0.0.0` (what Node's own listen does with no host). Any other host is taken as
 * given. Returns the host listened on.
 */
export async function listenStatus(app: FastifyInstance, host: string, port: number): Promise<string> {
  if (host !== DUAL_STACK_HOST) {
    await app.listen({ host, port });
    return host;
  }
  try {
    await app.listen({ host, port, ipv6Only: false });
    return host;
  } catch (err) {
    if (!NO_IPV6.has((err as NodeJS.ErrnoException).code ?? '')) throw err;
    app.log.warn(`status port: no IPv6 in this pod (${(err as NodeJS.ErrnoException).code}), listening on ${IPV4_ANY_HOST} only`);
    await app.listen({ host: IPV4_ANY_HOST, port });
    return IPV4_ANY_HOST;
  }
}
