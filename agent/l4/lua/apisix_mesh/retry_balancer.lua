-- The balancer of the retry locations' upstream block (webhook/injection/retry-locations.ts):
-- around APISIX's own balancer, what makes nginx's retries those of Envoy's retry policy.
--
-- Before each try after the first, `before_retry` reads the failed try from nginx's `$upstream_*`
-- variables (their last entry) and
-- - ends the request with the status nginx would have answered when the route does not retry that
--   failure (retry_on: no connection, no answer, a per-try timeout);
-- - forgets the hosts tried when none is left untried: APISIX's picker would answer 502, where
--   Envoy's `previous_hosts` predicate gives up after `host_selection_retry_max_attempts` and takes
--   a host again (a single host is retried as Envoy does);
-- - restarts the upstream request when the failed try read an answer before nginx had sent the
--   request (a host that speaks first: a banner, or garbage on an HTTP port). nginx resets its
--   response buffer and parser for the next try only when the request was sent
--   (ngx_http_upstream_connect → ngx_http_upstream_reinit), so the next try — on another host —
--   parsed the failed host's bytes again and failed the same way: the retry looked as if it had
--   gone back to the host that just failed. The restart is nginx's own: the balancer ends the
--   upstream request with `restart_status`, the retry location's `error_page` sends the request to the
--   location again (APISIX's context stashed as for the hand-over), and a fresh upstream request
--   picks the next host, with the tries left and the hosts tried so far.
local balancer = require("ngx.balancer")
local ctxdump = require("resty.ctxdump")

local _M = {}

-- the last entry of an `$upstream_*` list ("a, b : c"): the try that just failed
local function previous(name)
    local list = ngx.var[name]
    if not list then return nil end
    list = string.gsub(list, "[%s:]+$", "")
    return string.match(list, "([^%s,:]+)$")
end

-- a failure the route retries on (the route's retry_on, set by the access-phase hand-over)
local function retried(retry_on, status)
    if previous("upstream_header_time") ~= "-" then
        return true   -- an answer: its status is one the location retries (proxy_next_upstream)
    elseif previous("upstream_connect_time") == "-" then
        -- no connection, or an answer read before the request went out (see the top)
        if (tonumber(previous("upstream_bytes_received")) or 0) > 0 then
            return retry_on.reset
        end
        return retry_on.connect
    elseif status == 504 then
        return retry_on.timeout
    end
    return retry_on.reset
end

local function tries_allowed(up)
    local retries = up and up.retries
    if not retries or retries < 0 then
        retries = up and up.nodes and #up.nodes - 1 or 0   -- APISIX's default (balancer.lua)
    end
    return 1 + retries
end

local function forget_tried_hosts_when_none_left(api_ctx)
    local up, tried = api_ctx.upstream_conf, 0
    for _ in pairs(api_ctx.balancer_tried_servers or {}) do tried = tried + 1 end
    -- the host that just failed is added by APISIX's picker next: then none would be left
    if up and up.nodes and tried + 1 >= #up.nodes then
        api_ctx.balancer_tried_servers = nil
        api_ctx.balancer_tried_servers_count = 0
    end
end

--- Before APISIX's balancer, in every try of a request sent to a retry location. True when the
--- upstream request ends here (ngx.exit returns in the balancer: the caller must not go on).
--- `restart_status`: what the retry locations' `error_page` sends to the location again.
function _M.before(api_ctx, restart_status)
    local retry_on = api_ctx and api_ctx.apisix_mesh_retry
    if not retry_on then
        return
    end
    if api_ctx.picked_server then
        -- the first try of an upstream request: the server APISIX picked in the access phase
        return
    end
    local status = tonumber(previous("upstream_status")) or 502
    if not retried(retry_on, status) then
        ngx.exit(status)
        return true
    end
    forget_tried_hosts_when_none_left(api_ctx)
    local deadline = api_ctx.proxy_retry_deadline
    if deadline and deadline < ngx.now() then
        return   -- past the route's timeout: APISIX's balancer ends the request (502, logged)
    end
    if previous("upstream_connect_time") == "-" and (tonumber(previous("upstream_bytes_received")) or 0) > 0 then
        -- the next try would read this one's answer again: a fresh upstream request instead
        ngx.log(ngx.WARN, "apisix-mesh: ", tostring(previous("upstream_addr")), " answered before the request",
                " was sent (a server-first protocol on an HTTP port?): the retry starts a new upstream request")
        retry_on.more_tries = math.max(0, tries_allowed(api_ctx.upstream_conf) - (retry_on.tries or 0) - 1)
        retry_on.retry_deadline = deadline
        ngx.var.ctx_ref = ctxdump.stash_ngx_ctx()
        ngx.exit(restart_status)
        return true
    end
end

--- After APISIX's balancer set the peer of the try.
function _M.after(api_ctx)
    local retry_on = api_ctx and api_ctx.apisix_mesh_retry
    if not retry_on then
        return
    end
    retry_on.tries = (retry_on.tries or 0) + 1
    local more = retry_on.more_tries
    if more then
        -- a restarted upstream request: APISIX set the route's retries and retry deadline again
        retry_on.more_tries = nil
        local ok, err = balancer.set_more_tries(more)
        if not ok then
            ngx.log(ngx.ERR, "apisix-mesh: could not set the tries left after a restart: ", err)
        end
        api_ctx.proxy_retry_deadline = retry_on.retry_deadline
    end
end

return _M
