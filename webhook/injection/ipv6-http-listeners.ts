import type { InjectionConfig } from '../config/injection-config.js';

/**
 * APISIX's status API (readiness) and its Prometheus export on IPv6. The kubelet probes a pod's
 * first address and Prometheus scrapes the address it discovers, which in IPv6-first and
 * IPv6-only clusters is the IPv6 one; APISIX 3.13 renders each of these listeners from one address
 * (`apisix.status.ip`, `plugin_attr.prometheus.export_addr.ip`: `listen <ip>:<port>` in
 * cli/ngx_tpl.lua), which stays `0.0.0.0`. So the sidecar adds an IPv6 twin of each server, with
 * the locations APISIX's template gives them and the same privileged-agent process, in a file the
 * config-copy init container writes only where the pod's kernel has IPv6 (nginx refuses a `[::]`
 * listener there is no IPv6 for), included by a glob from the http block (nothing when absent) —
 * as the L4 front's `[::]` capture listeners (apisix-config.ts, `ipv6ListenFile`).
 */
export const IPV6_HTTP_LISTENERS_FILE = 'apisix-mesh-ipv6-http.conf';

/** The `include` for the http block: a glob (the [f]), so that a missing file includes nothing. */
export function ipv6HttpListenersInclude(): string {
  return `include ${IPV6_HTTP_LISTENERS_FILE.slice(0, -1)}[f];\n`;
}

/**
 * The two servers, listening on IPv6 only (`ipv6only=on`: the IPv4 side is APISIX's own), one line
 * each (the text is part of the pod's spec).
 */
export function ipv6HttpListeners(config: InjectionConfig): string[] {
  const listen = (port: number) => `listen [::]:${port} ipv6only=on enable_process=privileged_agent; access_log off;`;
  const lua = (path: string, code: string) => `location ${path} { content_by_lua_block { ${code} } }`;
  return [
    `server { ${listen(config.ports.apisixStatus)} ${lua('/status', 'apisix.status()')} ${lua('/status/ready', 'apisix.status_ready()')} }`,
    `server { ${listen(config.ports.apisixMetrics)} ${lua('/', 'require("apisix.plugins.prometheus.exporter").export_metrics()')} ` +
      // the export reads nginx's counters with a subrequest here (subrequests skip allow/deny)
      `location = /apisix/nginx_status { allow 127.0.0.0/24; deny all; stub_status; } }`,
  ];
}

/**
 * The shell step writing the file into `confDir` (run only where the kernel has IPv6, see
 * `ipv6ListenCommand`). The text goes in single quotes: it holds none (checked, never escaped).
 */
export function ipv6HttpListenersWrite(config: InjectionConfig, confDir: string): string {
  const lines = ipv6HttpListeners(config);
  if (lines.some((l) => l.includes("'"))) throw new Error('the IPv6 listeners must not contain a single quote');
  return `printf '%s\\n' ${lines.map((l) => `'${l}'`).join(' ')} > ${confDir}/${IPV6_HTTP_LISTENERS_FILE}`;
}
