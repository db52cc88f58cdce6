import { stringify } from 'yaml';
import type { InjectionConfig } from '../config/injection-config.js';
import type { WorkerProcesses } from './worker-processes.js';
import { BACKSLASH_VARIABLE, DOLLAR_VARIABLE } from '../../agent/translate/values.js';
import { retryLocationsSnippet, retryUpstreamSnippet } from './retry-locations.js';
import { TLS_RELAY_PORT, TLS_RELAY_TCP_PORT } from '../../agent/mtls/origination.js';
import { ipv6HttpListenersInclude, ipv6HttpListenersWrite } from './ipv6-http-listeners.js';

/**
 * The plugins the agent's translation of Istio routing puts on APISIX routes (weighted clusters,
 * rewrites, faults, mirrors, redirects, direct responses, CORS policies), plus `prometheus` for the
 * proxy's metrics. APISIX only runs plugins listed here.
 */
export const APISIX_PLUGINS: readonly string[] = Object.freeze([
  'traffic-split',
  'proxy-rewrite',
  'fault-injection',
  'proxy-mirror',
  'limit-conn',
  'redirect',
  'response-rewrite',
  'cors',
  'request-id',
  'prometheus',
  // RequestAuthentication + AuthorizationPolicy: the sidecar's own plugin, loaded from the agent's
  // Lua directory (extra_lua_path) as apisix.plugins.apisix-mesh-policy (agent/policy/rbac-plugin.ts)
  'apisix-mesh-policy',
  // pass-through, mirrors, retry hand-over: its own plugin too (agent/translate/access-phase.ts)
  'apisix-mesh-access',
]);

/**
 * The source address APISIX connects from when it forwards inbound traffic to the app. The capture
 * rules send the proxy's own connections to the pod IP back to the inbound listener (a service that
 * resolved to this pod must pass inbound policy), except those from this address: without it, an
 * inbound request forwarded to `<pod IP>:<port>` would be captured again, forever. Istio's Envoy
 * binds the same address for the same reason.
 */
export const INBOUND_PASSTHROUGH_SOURCE = '127.0.0.6';

export const APISIX_HOME = '/usr/local/apisix';
/** Where APISIX's container mounts the Lua modules the agent writes (agent/l4/lua/). */
export const APISIX_LUA_DIR = `${APISIX_HOME}/mesh-lua`;
/** APISIX's own stream listener, which `proxy_mode: http&stream` requires. */
export const UNUSED_STREAM_PORT = 15002;

/**
 * APISIX's HTTP listener, on loopback only: the L4 front hands it the captured connections that
 * speak HTTP (agent/l4/lua/apisix_mesh/handoff.lua). A request reaching it any other way has no
 * capture facts and is refused (403).
 */
export const HTTP_HANDOFF_PORT = 15081;

/**
 * APISIX's TLS listener, on loopback only: the L4 front hands it the inbound connections whose
 * filter chain terminates Istio's mTLS, with the same hand-off as HTTP. The sidecar's hook presents
 * the workload certificate there whatever the SNI and requires a client certificate chained to the
 * mesh roots (agent/l4/lua/apisix_mesh/mesh_tls.lua, which names this port too).
 */
export const MESH_TLS_PORT = 15082;

/**
 * The front's stream TLS listener, on loopback only: the L4 front hands it the inbound connections
 * whose filter chain terminates Istio's mTLS before a TCP proxy, with the same hand-off as HTTP; it
 * presents the workload certificate, verifies the client against the mesh roots, judges the chain's
 * SAN matchers and network RBAC with the peer's principal, then forwards the plaintext bytes where
 * the front decided (agent/l4/lua/apisix_mesh/tcp_mtls.lua).
 */
export const MESH_TCP_TLS_PORT = 15085;

/**
 * The file that makes the front listen on a capture port for IPv6 too (`listen [::]:<port>`), in
 * APISIX's conf directory. The config-copy init container writes it only where the pod's kernel
 * has IPv6 (`ipv6ListenCommand`): nginx refuses to start on a `[::]` listener there is no IPv6 for,
 * and whether a node has it is only known in the pod. IPv6 connections come only through the
 * IPv6 capture rules, which the init container installs when the pod has an IPv6 address.
 */
export function ipv6ListenFile(port: number): string {
  return `apisix-mesh-ipv6-${port}.conf`;
}

/**
 * The shell step (config-copy container) writing the IPv6 listeners into `confDir`, when there is
 * IPv6: the capture ports' and the status API's and Prometheus export's (ipv6-http-listeners.ts).
 */
export function ipv6ListenCommand(config: InjectionConfig, confDir: string): string {
  const writes = [config.ports.outbound, config.ports.inbound].map((port) => `printf 'listen [::]:${port} ipv6only=on;\\n' > ${confDir}/${ipv6ListenFile(port)}`);
  writes.push(ipv6HttpListenersWrite(config, confDir));
  return `if [ -e /proc/net/if_inet6 ]; then ${writes.join(' && ')}; fi`;
}

/**
 * The L4 front (agent/l4/): a stream `server` on each capture port whose Lua reads the original
 * destination and dispatches the connection as Envoy would with istiod's listeners; `proxy_bind`
 * takes the hand-off address (HTTP) or the inbound passthrough source, set per connection.
 * Connections stay open while bytes flow: Envoy's TCP proxy idle timeout (1 h) bounds idle ones.
 * A side that closes its half (FIN) still gets the other side's bytes, as with Envoy's TCP proxy
 * (`proxy_half_close`; nginx would otherwise close both at the first FIN and lose the answer).
 */
export function streamFrontSnippet(config: InjectionConfig): string {
  const { outbound, inbound } = config.ports;
  const server = (port: number, direction: string): string =>
    `server {\n` +
    `    listen ${port};\n` +
    // a glob (the [f]): nginx includes nothing, without an error, when the file is not there
    `    include ${ipv6ListenFile(port).slice(0, -1)}[f];\n` +
    `    preread_buffer_size 20k;\n` +
    `    preread_timeout 300s;\n` +
    `    preread_by_lua_block {\n        require("apisix_mesh.l4").preread("${direction}", ${HTTP_HANDOFF_PORT}, ${outbound}, ${inbound}, ${MESH_TLS_PORT}, ${TLS_RELAY_TCP_PORT}, ${MESH_TCP_TLS_PORT})\n    }\n` +
    `    proxy_pass apisix_mesh_l4;\n` +
    `    proxy_bind $apisix_mesh_bind;\n` +
    `    proxy_timeout 3600s;\n` +
    `    proxy_half_close on;\n` +
    `    log_by_lua_block {\n        require("apisix_mesh.l4").log()\n    }\n` +
    `}\n`;
  return (
    `map $remote_addr $apisix_mesh_bind {\n    default "";\n}\n` +
    `upstream apisix_mesh_l4 {\n    server 0.0.0.1:1;\n    balancer_by_lua_block {\n        require("apisix_mesh.l4").balance()\n    }\n}\n` +
    server(outbound, 'outbound') +
    server(inbound, 'inbound') +
    tlsRelaySnippet() +
    tcpMtlsSnippet()
  );
}

/**
 * The stream TLS listener for TCP proxies behind Istio's mTLS (tcp_mtls.lua, docs/mtls.md). nginx
 * wants a certificate on an `ssl` listener: APISIX's placeholder (the one its own TLS listener
 * names), never presented, since the certificate phase replaces it with the workload chain or fails
 * the handshake. No `ssl_alpn`: no protocol is negotiated (Envoy clients then send no metadata
 * exchange header). The handshake precedes preread in nginx's stream phases, so the Lua judges a
 * verified peer; then it proxies as the front does, from Istio's inbound source address.
 * `reuseport`, as APISIX's own hand-off listeners: one socket per worker, so that a hand-off is
 * steered to the worker whose front made it (handoff_steering.lua).
 */
export function tcpMtlsSnippet(): string {
  return (
    `server {\n` +
    `    listen 127.0.0.1:${MESH_TCP_TLS_PORT} ssl reuseport;\n` +
    `    ssl_certificate cert/ssl_PLACE_HOLDER.crt;\n` +
    `    ssl_certificate_key cert/ssl_PLACE_HOLDER.key;\n` +
    `    ssl_protocols TLSv1.2 TLSv1.3;\n` +
    `    ssl_certificate_by_lua_block {\n        require("apisix_mesh.tcp_mtls").ssl_certificate()\n    }\n` +
    `    preread_by_lua_block {\n        require("apisix_mesh.tcp_mtls").preread()\n    }\n` +
    `    log_by_lua_block {\n        require("apisix_mesh.l4_metrics").log()\n    }\n` +
    `    proxy_pass apisix_mesh_l4;\n` +
    `    proxy_bind $apisix_mesh_bind;\n` +
    `    proxy_timeout 3600s;\n` +
    `    proxy_half_close on;\n` +
    `}\n`
  );
}

/**
 * The TLS relay (agent/l4/lua/apisix_mesh/tls_origin.lua, docs/mtls.md): APISIX connects to a
 * loopback alias per (cluster, endpoint) in 127.64.0.0/10, which nginx cannot listen on as a range,
 * so the server listens on the wildcard address and the Lua refuses every connection whose
 * destination is not an alias or whose source is not loopback (a loopback destination cannot be
 * reached from outside the pod). Both ports are reserved in the pod (capture.ts).
 */
export function tlsRelaySnippet(): string {
  return (
    `server {\n` +
    `    listen ${TLS_RELAY_PORT};\n` +
    `    listen ${TLS_RELAY_TCP_PORT};\n` +
    `    content_by_lua_block {\n        require("apisix_mesh.tls_origin").relay(${TLS_RELAY_TCP_PORT})\n    }\n` +
    // the cosockets' default here is TLS 1.2 at most; Istio's clusters ask for 1.2 to 1.3
    `    lua_ssl_protocols TLSv1.2 TLSv1.3;\n` +
    `}\n`
  );
}

/**
 * Inbound requests are forwarded from the passthrough source: the hook sets this variable per
 * request from the hand-off record (agent/l4/lua/apisix_mesh/hook.lua); empty binds nothing.
 */
export function upstreamBindSnippet(): string {
  return 'set $apisix_mesh_upstream_bind "";\nproxy_bind $apisix_mesh_upstream_bind;\ngrpc_bind $apisix_mesh_upstream_bind;\n';
}

/**
 * The hand-off listeners' peer is the front's stream proxy, which logs a reset from its upstream at
 * [error]: a TLS client's close_notify arriving after the HTTP side closed its socket (after a
 * `Connection: close` answer) is answered with a reset. Lingering close (nginx shuts down its write
 * side and reads until the client's end, at most `lingering_timeout`) ends those connections
 * cleanly.
 */
export function handOffCloseSnippet(): string {
  return 'lingering_close always;\n';
}

/**
 * What the HTTP side reads a handed-off request into first. nginx's default is 1 KiB: a request of
 * 1 to 4 KiB (headers and a small body, which the front writes in one piece) then takes three
 * syscalls (a 1 KiB read, FIONREAD, the rest) and a second buffer for the body. The listeners only
 * serve the front's hand-offs; the buffer is freed while a keep-alive connection is idle.
 */
export const HANDOFF_HEADER_BUFFER = '4k';

export function handOffReadSnippet(): string {
  return `client_header_buffer_size ${HANDOFF_HEADER_BUFFER};\n`;
}

/**
 * nginx variables holding a literal `$` and `\`: the agent writes them where APISIX would expand
 * `$name` in a value taken from Istio (header values, redirect targets; agent/translate/values.ts).
 * `geo` values are plain strings, never expanded.
 */
export function literalVariablesSnippet(): string {
  return `geo $${DOLLAR_VARIABLE} {\n    default "$";\n}\ngeo $${BACKSLASH_VARIABLE} {\n    default "\\\\";\n}\n`;
}

/**
 * `x-request-id` as Envoy (with Istio's defaults) handles it: a request that has one keeps it, one
 * without gets a fresh UUID (version 4 form, from nginx's `$request_id`, 128 random bits), on every
 * request APISIX forwards, in and out. Plain nginx (a `map` and `proxy_set_header` in APISIX's
 * `location /`): no Lua and no per-route configuration. Trace headers (W3C `traceparent`, B3) are
 * never touched: APISIX forwards request headers as they came.
 */
export const REQUEST_ID_VARIABLE = 'apisix_mesh_request_id';

export function requestIdSnippets(): { http: string; location: string } {
  const hex = (n: number) => `[0-9a-f]{${n}}`;
  const uuid = `"~^(?<apisix_mesh_r1>${hex(8)})(?<apisix_mesh_r2>${hex(4)})${hex(1)}(?<apisix_mesh_r3>${hex(3)})${hex(1)}(?<apisix_mesh_r4>${hex(3)})(?<apisix_mesh_r5>${hex(12)})$"`;
  return {
    http:
      `map $request_id $apisix_mesh_uuid {
    ${uuid} "$apisix_mesh_r1-$apisix_mesh_r2-4$apisix_mesh_r3-8$apisix_mesh_r4-$apisix_mesh_r5";
}
` +
      `map $http_x_request_id $${REQUEST_ID_VARIABLE} {
    "" $apisix_mesh_uuid;
    default $http_x_request_id;
}
`,
    location: `proxy_set_header X-Request-Id $${REQUEST_ID_VARIABLE};
`,
  };
}

/**
 * APISIX's `config.yaml` for the sidecar: the one place that says how APISIX runs in a pod.
 * - data plane only, configuration from the agent's etcd v3 API on loopback, prefix `/apisix`;
 * - the Admin API and the control API off (nothing in the pod may change routes but the agent);
 * - the L4 front on the capture ports (outbound and inbound, APISIX's stream subsystem with the
 *   agent's Lua: `streamFrontSnippet`), handing HTTP to APISIX's HTTP listener on loopback, and
 *   inbound mTLS to its TLS listener on loopback (`MESH_TLS_PORT`), or, before a TCP proxy, to the
 *   front's stream TLS listener (`MESH_TCP_TLS_PORT`);
 * - the status API (`/status/ready`) and the Prometheus export on the ports the capture rules
 *   always leave alone, so the kubelet and Prometheus reach them directly;
 * - logs to stdout/stderr (the root filesystem is read-only);
 * - inbound requests forwarded from the passthrough source (see `upstreamBindSnippet`);
 * - the etcd health check's quarantine cut to 1 s (APISIX's default 10 s): the one etcd endpoint is
 *   the agent on loopback, and while a failed endpoint is quarantined APISIX neither watches nor
 *   reads, so a restarted agent's pushes waited ~10 s. Not 0: lua-resty-etcd stores the quarantine
 *   in a shared dict with that expiry, and 0 means never;
 * - the literal `$` and `\` variables (see `literalVariablesSnippet`);
 * - `x-request-id` kept or generated on every forwarded request (see `requestIdSnippets`);
 * - the locations Envoy's retry policies are carried out in (retry-locations.ts).
 * APISIX's own nginx.conf template already bounds every regex match (`lua_regex_match_limit
 * 100000`), which is what keeps Istio's regexes from backtracking for long (agent/translate/pcre.ts);
 * setting it again here would be a duplicate directive.
 * `workers`: the pod's nginx worker processes (worker-processes.ts).
 */
export function apisixConfigDocument(config: InjectionConfig, workers: WorkerProcesses): Record<string, unknown> {
  const requestId = requestIdSnippets();
  return {
    apisix: {
      node_listen: [{ ip: '127.0.0.1', port: HTTP_HANDOFF_PORT }],
      proxy_mode: 'http&stream',
      // APISIX's stream server is required by proxy_mode but unused (the front is ours, and no
      // stream_routes exist): on loopback, it closes every connection
      stream_proxy: { tcp: [{ addr: `127.0.0.1:${UNUSED_STREAM_PORT}` }] },
      // $prefix: nginx's prefix, APISIX's home (where APISIX_LUA_DIR is mounted)
      extra_lua_path: `$prefix/${APISIX_LUA_DIR.slice(APISIX_HOME.length + 1)}/?.lua`,
      lua_module_hook: 'apisix_mesh.hook',
      // h2c (gRPC) and HTTP/1.1 on the one hand-off listener: nginx tells them apart by the preface
      enable_http2: true,
      enable_admin: false,
      enable_control: false,
      enable_server_tokens: false,
      // inbound mTLS (MESH_TLS_PORT): APISIX's SNI router and SSL objects stay unused there
      ssl: { enable: true, listen: [{ ip: '127.0.0.1', port: MESH_TLS_PORT }] },
      status: { ip: '0.0.0.0', port: config.ports.apisixStatus },
      // APISIX 3.13 loads the whole configuration once at start, then each worker watches from the
      // revision of a second read taken once that load is consumed (config_etcd.lua, init_watch_ctx):
      // an agent write between the two (the agent keeps writing while APISIX starts, e.g. routes
      // with fetched JWKS keys) was never seen. Without that start-up load each worker reads its
      // directories after its watch revision is fixed, so nothing falls between them.
      disable_sync_configuration_during_start: true,
    },
    deployment: {
      role: 'data_plane',
      role_data_plane: { config_provider: 'etcd' },
      etcd: {
        host: [`http://127.0.0.1:${config.ports.etcd}`],
        prefix: '/apisix',
        timeout: 30,
        health_check_timeout: 1,
      },
    },
    nginx_config: {
      worker_processes: workers,
      error_log: '/dev/stderr',
      // Istio's standard metrics (agent/l4/lua/apisix_mesh/istio_metrics.lua): sized for its bound
      // of 1000 series (~13 KiB each measured, more with long label values; pages are used as filled);
      // outlier detection's state per upstream node, shared by the workers (apisix_mesh/outlier.lua);
      // the revision each worker serves, which the Prometheus export shows (apisix_mesh/served_revisions.lua)
      http: { ...accessLog(config), custom_lua_shared_dict: { [ISTIO_METRICS_DICT]: '32m', apisix_mesh_outlier: '2m', [SERVED_REVISIONS_DICT]: '1m' } },
      stream_configuration_snippet: streamFrontSnippet(config),
      http_configuration_snippet: literalVariablesSnippet() + requestId.http + retryUpstreamSnippet() + ipv6HttpListenersInclude(),
      http_server_configuration_snippet: upstreamBindSnippet() + handOffCloseSnippet() + handOffReadSnippet() + retryLocationsSnippet(requestId.location),
      http_server_location_configuration_snippet: requestId.location,
    },
    plugins: [...APISIX_PLUGINS],
    plugin_attr: {
      prometheus: { export_addr: { ip: '0.0.0.0', port: config.ports.apisixMetrics } },
    },
    // the sidecar's own settings, read by its Lua (APISIX's schema lets other top-level keys be)
    apisix_mesh: { lua_gc: { ...config.apisixLuaGc } },
  };
}

/**
 * APISIX's per-request log line, as Istio's `meshConfig.accessLogFile` (`accessLogFile`): none by
 * default, as an Envoy sidecar writes none by default. The error log is not affected.
 */
export function accessLog(config: InjectionConfig): Record<string, unknown> {
  return config.accessLogFile === '' ? { enable_access_log: false } : { access_log: config.accessLogFile };
}

/** The shared dict Istio's standard metrics are counted in (istio_metrics.lua names it too). */
export const ISTIO_METRICS_DICT = 'apisix-mesh-istio-metrics';

/**
 * The shared dict the workers record the newest revision they serve in, per directory, for the
 * Prometheus export (served_revisions.lua names it too): the privileged agent that serves the
 * export holds no configuration of its own (privileged_agent.lua).
 */
export const SERVED_REVISIONS_DICT = 'apisix_mesh_served_revisions';

/** APISIX's default `export_uri` of the Prometheus export (plugin_attr.prometheus). */
export const APISIX_METRICS_PATH = '/apisix/prometheus/metrics';

/** The text delivered to the APISIX container as `/usr/local/apisix/conf/config.yaml`. */
export function renderApisixConfig(config: InjectionConfig, workers: WorkerProcesses): string {
  return `# Generated by apisix-mesh: APISIX as the pod's mesh sidecar.\n${stringify(apisixConfigDocument(config, workers))}`;
}
