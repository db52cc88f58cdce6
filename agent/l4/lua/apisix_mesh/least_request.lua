-- Envoy's LEAST_REQUEST load balancing (Istio's default), as the picker of APISIX's `least_conn`
-- upstreams, which is what the agent makes of it (agent/translate/cluster.ts).
--
-- APISIX's own least_conn keeps its servers in a binary heap ordered by active requests and takes
-- the top one; when the servers are idle (every request done before the next: a low-rate or
-- one-at-a-time client) their scores tie and the heap alternates between two of them — with three
-- servers one is never picked, which one the heap's order decides (a new pod after a scale-up can
-- receive nothing).
-- Envoy picks instead, per request:
-- - all weights equal: two hosts drawn at random (the same one possibly twice), the one with fewer
--   active requests, the first drawn on a tie;
-- - weights differing: each host's weight divided by (its active requests + 1) — Envoy's
--   active_request_bias 1.0 — and a host chosen in proportion to that (Envoy walks an EDF schedule
--   of the same weights; a random draw spreads the same way on average).
-- Active requests are counted per worker (as APISIX's least_conn does). A retry does not pick a
-- host it already tried (APISIX's `ctx.balancer_tried_servers`, as its least_conn: Istio's
-- previous_hosts retry predicate); with every host tried there is none, and APISIX moves on to the
-- next priority or answers 502.
local core = require("apisix.core")
local random = math.random
local pairs = pairs

local _M = {}

local function untried(servers, tried)
    if not tried then
        return servers
    end
    local out = {}
    for i = 1, #servers do
        if not tried[servers[i]] then
            out[#out + 1] = servers[i]
        end
    end
    return out
end

-- two random draws, the less busy (Envoy's choice_count 2)
local function pick_of_two(candidates, active)
    local n = #candidates
    local first = candidates[random(n)]
    if n == 1 then
        return first
    end
    local second = candidates[random(n)]
    if active[second] < active[first] then
        return second
    end
    return first
end

local function pick_weighted(candidates, weights, active)
    local total = 0
    for i = 1, #candidates do
        local s = candidates[i]
        total = total + weights[s] / (active[s] + 1)
    end
    local at = random() * total
    for i = 1, #candidates do
        local s = candidates[i]
        at = at - weights[s] / (active[s] + 1)
        if at < 0 then
            return s
        end
    end
    return candidates[#candidates]
end

-- the request's set of tried hosts back to APISIX's table pool (the request is done, or its retries
-- move on to the next priority)
local function release_tried(ctx)
    if ctx.balancer_tried_servers then
        core.tablepool.release("balancer_tried_servers", ctx.balancer_tried_servers)
        ctx.balancer_tried_servers = nil
    end
end

-- up_nodes: "host:port" → weight (one priority's nodes, as APISIX hands them to its pickers)
function _M.new(up_nodes, upstream)
    local servers, weights, active = {}, {}, {}
    local equal, first_weight = true, nil
    for server, weight in pairs(up_nodes) do
        servers[#servers + 1] = server
        weights[server] = weight
        active[server] = 0
        first_weight = first_weight or weight
        if weight ~= first_weight then
            equal = false
        end
    end

    return {
        upstream = upstream,
        get = function(ctx)
            local candidates = untried(servers, ctx.balancer_tried_servers)
            if #candidates == 0 then
                -- a retry past every host: APISIX goes on to the next priority, or fails the request
                return nil, "all upstream servers tried"
            end
            local server = equal and pick_of_two(candidates, active) or pick_weighted(candidates, weights, active)
            active[server] = active[server] + 1
            return server
        end,
        after_balance = function(ctx, before_retry)
            local server = ctx.balancer_server
            if active[server] and active[server] > 0 then
                active[server] = active[server] - 1
            end
            if not before_retry then
                release_tried(ctx)
                return nil
            end
            if not ctx.balancer_tried_servers then
                ctx.balancer_tried_servers = core.tablepool.fetch("balancer_tried_servers", 0, 2)
            end
            ctx.balancer_tried_servers[server] = true
        end,
        before_retry_next_priority = release_tried,
        -- for tests and the bench: what this worker counts as in flight
        active = function(server)
            return active[server]
        end,
    }
end

-- In init_by_lua (hook.lua), HTTP subsystem: APISIX loads a picker module per upstream type on first
-- use (`require("apisix.balancer." .. type)`), so this one answers for `least_conn`.
function _M.install()
    package.loaded["apisix.balancer.least_conn"] = _M
end

return _M
