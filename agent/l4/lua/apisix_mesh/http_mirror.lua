-- Envoy's request_mirror_policies (agent/translate/mirror.ts): a copy of the request sent, at the
-- end of the access phase, to the mirror *cluster* (the APISIX upstream of that cluster, subset
-- included: an endpoint picked by weight among the most preferred priority), with `-shadow` added
-- to the Host (before its port; not when disable_shadow_host_suffix_append), after the route's
-- rewrites and header operations, with the same method, path, query and body; each policy sampled
-- on its own. The copy leaves from a timer: the request goes on at once and the mirror's answer is
-- dropped, as Envoy drops a shadow's.
--
-- Node choice as APISIX's balancer prefers nodes (the highest `priority`, Envoy's priority 0), then
-- by weight. A mirror whose cluster has no upstream (not translated, or waiting for endpoints) is
-- skipped, as Envoy's shadow to a cluster without hosts fails quietly. Hop-by-hop headers are not
-- copied; `x-request-id` is the one the request is forwarded with (webhook/injection/apisix-config.ts).
local core = require("apisix.core")

local HOP = { connection = true, ["keep-alive"] = true, ["proxy-connection"] = true, te = true, trailer = true,
  ["transfer-encoding"] = true, upgrade = true, ["content-length"] = true, host = true, expect = true }

local _M = {}

local function pick(nodes)
  local best
  for _, n in ipairs(nodes) do
    local p = n.priority or 0
    if not best or p > best then best = p end
  end
  local total = 0
  for _, n in ipairs(nodes) do
    if (n.priority or 0) == best then total = total + (n.weight or 1) end
  end
  if total <= 0 then return nil end
  local r = math.random() * total
  for _, n in ipairs(nodes) do
    if (n.priority or 0) == best then
      r = r - (n.weight or 1)
      if r < 0 then return n end
    end
  end
end

local function shadow_host(host)
  local name, port = string.match(host, "^(.-)(:%d+)$")
  if name and (not string.find(name, ":", 1, true) or string.sub(name, -1) == "]") then
    return name .. "-shadow" .. port
  end
  return host .. "-shadow"
end

local function send(premature, url, params, timeout)
  if premature then return end
  local httpc = require("resty.http").new()
  httpc:set_timeout(timeout)
  local res, err = httpc:request_uri(url, params)
  if not res then core.log.info("apisix-mesh: mirror request to ", url, " failed: ", err) end
end

-- M: { mirrors = { { upstream, cluster, suffix, numerator, denominator }, … }, timeout_ms, max_body }
function _M.send(M, ctx)
  local chosen = {}
  for _, m in ipairs(M.mirrors) do
    if m.numerator >= m.denominator or math.random(0, m.denominator - 1) < m.numerator then
      chosen[#chosen + 1] = m
    end
  end
  if #chosen == 0 then return end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    local file = ngx.req.get_body_file()
    if file then
      local f = io.open(file, "rb")
      if f then
        body = f:read(M.max_body + 1)
        f:close()
      end
      if not body or #body > M.max_body then
        core.log.warn("apisix-mesh: request body not mirrored (over ", M.max_body, " bytes or unreadable)")
        return
      end
    end
  end
  local headers = {}
  for name, value in pairs(ngx.req.get_headers(200)) do
    if not HOP[name] then headers[name] = value end
  end
  headers["x-request-id"] = headers["x-request-id"] or ngx.var.apisix_mesh_request_id
  local host = ctx.var.upstream_host or ngx.var.http_host or ""
  local uri = ctx.var.upstream_uri
  if not uri or uri == "" then uri = ngx.var.request_uri end
  local upstreams = core.config.fetch_created_obj("/upstreams")
  for _, m in ipairs(chosen) do
    local up = upstreams and upstreams:get(m.upstream)
    local node = up and up.value.nodes and pick(up.value.nodes)
    if node then
      local copy = {}
      for k, v in pairs(headers) do copy[k] = v end
      copy["Host"] = m.suffix and shadow_host(host) or host
      local addr = node.host
      if string.find(addr, ":", 1, true) and string.sub(addr, 1, 1) ~= "[" then addr = "[" .. addr .. "]" end
      local ok, err = ngx.timer.at(0, send, "http://" .. addr .. ":" .. node.port .. uri,
        { method = ngx.req.get_method(), headers = copy, body = body }, M.timeout_ms)
      if not ok then core.log.warn("apisix-mesh: mirror to ", m.cluster, " not sent: ", err) end
    else
      core.log.info("apisix-mesh: mirror cluster ", m.cluster, " has no upstream or no node")
    end
  end
end

return _M
