import type { RouteAction } from '../xds/envoy-types.js';
import { luaLiteral } from './lua-literal.js';
import { upstreamId } from './ids.js';
import { fractionParts } from './values.js';

type Note = (reason: string, detail: string, skipped?: boolean) => void;

/** A request body larger than this is not copied to the mirror (it is held in memory to send). */
export const MIRROR_MAX_BODY = 8 * 1024 * 1024;

interface MirrorTarget {
  upstream: string;
  cluster: string;
  suffix: boolean;
  numerator: number;
  denominator: number;
}

/**
 * `request_mirror_policies` → Lua run at the end of the access phase (access-phase.ts) that sends a
 * copy of the request, as Envoy's router shadows it: to the mirror *cluster* (the APISIX upstream
 * of that cluster, subset included — an endpoint picked by weight among the most preferred
 * priority), with `-shadow` added to the Host (before its port; not when
 * `disable_shadow_host_suffix_append`), after the route's rewrites and header operations, with the
 * same method, path, query and body; each policy sampled on its own by its `runtime_fraction`. The
 * copy leaves from a timer: the request goes on at once and the mirror's answer is dropped, as
 * Envoy drops a shadow's. APISIX's `proxy-mirror` cannot do this: it sends to one host name (not
 * the cluster's endpoints) and with the request's own Host.
 */
export function mirrorLua(action: RouteAction, timeoutSeconds: number, note: Note): string | undefined {
  const targets: MirrorTarget[] = [];
  for (const policy of action.request_mirror_policies ?? []) {
    if (!policy.cluster) {
      note('mirror-target', 'a mirror chosen by request header (cluster_header) is not translated');
      continue;
    }
    const fraction = policy.runtime_fraction?.default_value;
    const { numerator, scale } = fraction ? fractionParts(fraction) : { numerator: 1, scale: 1 };
    if (numerator <= 0) continue;
    targets.push({ upstream: upstreamId(policy.cluster), cluster: policy.cluster, suffix: !policy.disable_shadow_host_suffix_append, numerator, denominator: scale });
  }
  if (targets.length === 0) return undefined;
  const data = { mirrors: targets, timeout_ms: Math.round(timeoutSeconds * 1000), max_body: MIRROR_MAX_BODY };
  return `local M = ${luaLiteral(data)}\n${MIRROR_CODE}`;
}

/**
 * Node choice as APISIX's balancer prefers nodes (the highest `priority`, Envoy's priority 0), then
 * by weight. A mirror whose cluster has no upstream (not translated, or waiting for endpoints) is
 * skipped, as Envoy's shadow to a cluster without hosts fails quietly. Hop-by-hop headers are not
 * copied; `x-request-id` is the one the request is forwarded with (webhook/injection/apisix-config.ts).
 */
const MIRROR_CODE = String.raw`local HOP = { connection = true, ["keep-alive"] = true, ["proxy-connection"] = true, te = true, trailer = true,
  ["transfer-encoding"] = true, upgrade = true, ["content-length"] = true, host = true, expect = true }

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
  if not res then require("apisix.core").log.info("apisix-mesh: mirror request to ", url, " failed: ", err) end
end

return function(conf, ctx)
  local core = require("apisix.core")
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
`;
