import { RETRY_LOCATIONS, type RetryLocation } from '../../agent/translate/retries.js';

/**
 * The nginx side of Envoy's retry policies (agent/translate/retries.ts explains the design): one
 * named location per set of retriable statuses, and the upstream block they proxy through, whose
 * balancer allows a retry only for the failures the route retries on.
 *
 * A route hands its request over at the end of APISIX's access phase, with APISIX's request
 * context stashed in `$ctx_ref` (as APISIX does for `@grpc_pass`). The location restores the
 * context, lets APISIX pick the upstream and the server (`apisix.handle_upstream`, what APISIX's
 * access phase would have done next) and proxies exactly as APISIX's `location /` does (APISIX
 * 3.13's nginx.conf template: the same headers, the same header, body and log phases), through
 * `apisix_mesh_backend`: APISIX's `apisix_backend` with the retry check before APISIX's balancer.
 *
 * The check (agent/l4/lua/apisix_mesh/retry_balancer.lua) reads the failed try from nginx's
 * `$upstream_*` variables: no connect time = no connection; no header time = no answer, 504 if the
 * try timed out. A failure the route does not retry on ends the request with the status nginx would
 * have answered without retries (502, or 504 for a timeout). A retry goes to an endpoint not tried
 * yet while there is one, then to any: APISIX's balancer would answer 502 once every endpoint has
 * been tried, where Envoy (Istio's `previous_hosts` predicate, given up after
 * `host_selection_retry_max_attempts`) tries a host again. A try that read an answer before nginx
 * sent the request (a host that speaks first) is retried in a new upstream request, through the
 * location's `error_page`: nginx would have parsed that answer again in the next try.
 */
export const RETRY_UPSTREAM = 'apisix_mesh_backend';

/** APISIX's `nginx_config.http.upstream` defaults, as its `apisix_backend` block has them. */
const KEEPALIVE = 'keepalive 320;\n    keepalive_requests 1000;\n    keepalive_timeout 60s;';

/**
 * The status retry_balancer.lua ends an upstream request with to have it started again (the
 * locations' `error_page`); never sent to a client.
 */
const RETRY_RESTART_STATUS = 599;

/** The failed try's check and the restart (agent/l4/lua/apisix_mesh/retry_balancer.lua), around APISIX's balancer. */
const RETRY_BALANCER_LUA = `local retry = require("apisix_mesh.retry_balancer")
        local api_ctx = ngx.ctx.api_ctx
        if retry.before(api_ctx, ${RETRY_RESTART_STATUS}) then return end
        apisix.http_balancer_phase()
        retry.after(api_ctx)`;

export function retryUpstreamSnippet(): string {
  return `upstream ${RETRY_UPSTREAM} {
    server 0.0.0.1;
    ${KEEPALIVE}
    balancer_by_lua_block {
        ${RETRY_BALANCER_LUA}
    }
}
`;
}

function locationSnippet(location: RetryLocation, extra: string): string {
  const next = ['error', 'timeout', 'invalid_header', ...location.statuses.map((s) => `http_${s}`), 'non_idempotent'].join(' ');
  return `location @${location.name} {
    access_by_lua_block {
        ngx.ctx = require("resty.ctxdump").apply_ngx_ctx(ngx.var.ctx_ref)
        ngx.var.ctx_ref = ""
        local api_ctx = ngx.ctx.api_ctx
        if not api_ctx then
            return ngx.exit(500)
        end
        local route = api_ctx.matched_route
        apisix.handle_upstream(api_ctx, route, route.value.enable_websocket)
    }
    # a try that read an answer before its request went out: the upstream request starts again
    # (retry_balancer.lua), as many times as there are tries
    error_page ${RETRY_RESTART_STATUS} = @${location.name};
    recursive_error_pages on;
    proxy_next_upstream ${next};
    proxy_http_version 1.1;
    proxy_set_header   Host              $upstream_host;
    proxy_set_header   Upgrade           $upstream_upgrade;
    proxy_set_header   Connection        $upstream_connection;
    proxy_set_header   X-Real-IP         $remote_addr;
    proxy_pass_header  Date;
    proxy_set_header   X-Forwarded-For      $proxy_add_x_forwarded_for;
    proxy_set_header   X-Forwarded-Proto    $var_x_forwarded_proto;
    proxy_set_header   X-Forwarded-Host     $var_x_forwarded_host;
    proxy_set_header   X-Forwarded-Port     $var_x_forwarded_port;
    ${extra.trim()}
    proxy_pass      $upstream_scheme://${RETRY_UPSTREAM}$upstream_uri;
    header_filter_by_lua_block {
        apisix.http_header_filter_phase()
    }
    body_filter_by_lua_block {
        apisix.http_body_filter_phase()
    }
    log_by_lua_block {
        apisix.http_log_phase()
    }
}
`;
}

/**
 * The named locations, for APISIX's `http_server_configuration_snippet`; `locationExtra` is what
 * the sidecar config adds to APISIX's `location /` (one directive), added to each of them too.
 */
export function retryLocationsSnippet(locationExtra: string): string {
  return RETRY_LOCATIONS.map((l) => locationSnippet(l, locationExtra)).join('');
}
