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
 * The check reads the failed try from nginx's `$upstream_*` variables (the last entry is the try
 * about to start): no connect time = no connection; no header time = no answer, 504 if the try
 * timed out. A failure the route does not retry on ends the request with the status nginx would
 * have answered without retries (502, or 504 for a timeout). A retry goes to an endpoint not tried
 * yet while there is one, then to any: APISIX's balancer would answer 502 once every endpoint has
 * been tried, where Envoy (Istio's `previous_hosts` predicate, given up after
 * `host_selection_retry_max_attempts`) tries a host again.
 */
export const RETRY_UPSTREAM = 'apisix_mesh_backend';

/** APISIX's `nginx_config.http.upstream` defaults, as its `apisix_backend` block has them. */
const KEEPALIVE = 'keepalive 320;\n    keepalive_requests 1000;\n    keepalive_timeout 60s;';

const RETRY_CHECK_LUA = `local api_ctx = ngx.ctx.api_ctx
        local retry_on = api_ctx and api_ctx.apisix_mesh_retry
        if retry_on and not api_ctx.picked_server then
            local function previous(name)
                local list = ngx.var[name]
                if not list then return nil end
                list = string.gsub(list, "[%s:]+$", "")
                return string.match(list, "([^%s,:]+)$")
            end
            local status = tonumber(previous("upstream_status")) or 502
            local allowed
            if previous("upstream_header_time") ~= "-" then
                allowed = true
            elseif previous("upstream_connect_time") == "-" then
                allowed = retry_on.connect
            elseif status == 504 then
                allowed = retry_on.timeout
            else
                allowed = retry_on.reset
            end
            if not allowed then
                return ngx.exit(status)
            end
            local up, tried = api_ctx.upstream_conf, 0
            for _ in pairs(api_ctx.balancer_tried_servers or {}) do tried = tried + 1 end
            if up and up.nodes and tried + 1 >= #up.nodes then
                api_ctx.balancer_tried_servers = nil
                api_ctx.balancer_tried_servers_count = 0
            end
        end
        apisix.http_balancer_phase()`;

export function retryUpstreamSnippet(): string {
  return `upstream ${RETRY_UPSTREAM} {
    server 0.0.0.1;
    ${KEEPALIVE}
    balancer_by_lua_block {
        ${RETRY_CHECK_LUA}
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
