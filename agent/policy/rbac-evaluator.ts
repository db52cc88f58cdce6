/**
 * The generic RBAC evaluator APISIX runs (OpenResty's LuaJIT), prepended by rbac-lua.ts with the
 * compiled filters as `FILTERS`. It holds no policy of its own: it walks the trees of rbac.ts with
 * three values (T, F, U = unknown) and answers 403 `RBAC: access denied` (Envoy's body) when a
 * filter denies. Request facts are read lazily, once per request:
 * - the path is nginx's `$uri`: percent-decoded, dot segments resolved, slashes merged — the form
 *   Envoy's `normalize_path` + `merge_slashes` gives, and more (see docs/security.md); a
 *   path holding a backslash (which Envoy turns into `/`, nginx does not) is unknown;
 * - the upstream must get the path the policy judged: nginx would forward the raw request line
 *   (`/public/../admin`), so when it differs from `$uri` the function sets `$upstream_uri` to the
 *   normalised path (re-escaped by APISIX's own `uri_safe_encode`) and the raw query;
 * - the remote address (Envoy's `remote_ip`) comes from X-Forwarded-For when it is present, which the
 *   sidecar does not parse: unknown then; the peer (`direct_remote_ip`) is `$remote_addr`; the
 *   destination is `$connection_original_dst`.
 * A regex that PCRE gives up on (APISIX's match limit) is unknown, never "no match".
 * Before the filters, `AUTHN` (the JWT evaluator, jwt-evaluator.ts; nil without JWT filters) runs:
 * it answers a request with a bad token itself, and leaves the verified claims in `f.jwt_meta`,
 * which metadata matchers (`request.auth.*`) read as Envoy reads jwt_authn's dynamic metadata.
 */
export const RBAC_EVALUATOR_LUA = String.raw`
local core = require("apisix.core")
local cjson_mod = require("cjson.safe")
local array_mt, json_null = cjson_mod.array_mt, cjson_mod.null
local re_find = ngx.re.find
local get_headers = ngx.req.get_headers
local byte, sub, find, lower, match, concat = string.byte, string.sub, string.find, string.lower, string.match, table.concat
local band, rshift = bit.band, bit.rshift
local ipairs, type, tonumber, tostring, getmetatable, pcall = ipairs, type, tonumber, tostring, getmetatable, pcall
local T, F, U = 1, 0, 2
local DENIED = "RBAC: access denied"

local function parse_v4(s)
  local a, b, c, d = match(s, "^(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)$")
  if not a then return nil end
  a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
  if a > 255 or b > 255 or c > 255 or d > 255 then return nil end
  return { a, b, c, d }
end

local function groups(part, out)
  if part == "" then return true end
  for g in (part .. ":"):gmatch("([^:]*):") do
    if #g == 0 or #g > 4 then return false end
    out[#out + 1] = tonumber(g, 16)
  end
  return true
end

local function parse_v6(s)
  if find(s, "[^%x:]") then return nil end
  local head, tail = s, ""
  local gap = find(s, "::", 1, true)
  if gap then
    head, tail = sub(s, 1, gap - 1), sub(s, gap + 2)
    if find(tail, "::", 1, true) then return nil end
  end
  local h, t = {}, {}
  if not groups(head, h) or not groups(tail, t) then return nil end
  local fill = 8 - #h - #t
  if (gap and fill < 1) or (not gap and fill ~= 0) then return nil end
  local bytes = {}
  local function push(g) bytes[#bytes + 1] = rshift(g, 8); bytes[#bytes + 1] = band(g, 255) end
  for _, g in ipairs(h) do push(g) end
  for _ = 1, fill do push(0) end
  for _, g in ipairs(t) do push(g) end
  return bytes
end

local function parse_ip(s)
  if type(s) ~= "string" then return nil end
  if find(s, ":", 1, true) then return parse_v6(s) end
  return parse_v4(s)
end

-- facts of the request, each read once
local function path(f)
  if f.path == nil then
    local uri = f.ctx.var.uri
    f.path = (type(uri) == "string" and not find(uri, "\\", 1, true)) and uri or false
  end
  return f.path or nil
end

local function original_dst(f)
  if f.dst_port == nil then
    f.dst_port = false
    local dst = f.ctx.var.connection_original_dst
    if type(dst) == "string" then
      local host, port = match(dst, "^%[?([^%]]+)%]?:(%d+)$")
      if host then f.dst_ip, f.dst_port = parse_ip(host), tonumber(port) end
    end
  end
  return f.dst_ip, f.dst_port or nil
end

local function address(f, of)
  if of == "destination" then return (original_dst(f)) end
  if f.peer == nil then f.peer = parse_ip(f.ctx.var.remote_addr) or false end
  if of == "remote" and f.ctx.var.http_x_forwarded_for ~= nil then return nil end
  return f.peer or nil
end

local function header_value(f, src)
  local pseudo = src.pseudo
  if pseudo == "method" then return f.ctx.var.request_method end
  if pseudo == "authority" then return f.ctx.var.http_host end
  if pseudo == "scheme" then return f.ctx.var.scheme end
  if pseudo == "path" then
    local p = path(f)
    if not p then return nil, true end
    if f.ctx.var.is_args == "?" then return p .. "?" .. (f.ctx.var.args or "") end
    return p
  end
  if not f.headers then f.headers = get_headers(0) end
  local v = f.headers[src.h]
  if type(v) == "table" then return concat(v, ",") end
  return v
end

local function string_match(m, s)
  if m.ic then s = lower(s) end
  local k, v = m.k, m.v
  if k == "exact" then return s == v and T or F end
  if k == "prefix" then return sub(s, 1, #v) == v and T or F end
  if k == "suffix" then return (#v == 0 or sub(s, -#v) == v) and T or F end
  if k == "contains" then return find(s, v, 1, true) and T or F end
  local from, _, err = re_find(s, v, "jo")
  if err then
    core.log.warn("apisix-mesh: RBAC regex not evaluated: ", err)
    return U
  end
  return from and T or F
end

-- Envoy's HeaderUtility::matchHeaders
local function header_match(node, f)
  local v, cannot = header_value(f, node.src)
  if cannot then return U end
  if v == nil and not node.empty then
    if node.inv then return (node.present == true) and T or F end
    return (node.present == false) and T or F
  end
  local m
  if node.present ~= nil then m = node.present and T or F else m = string_match(node.m, v or "") end
  if m == U or not node.inv then return m end
  return m == T and F or T
end

local function in_cidr(bytes, node)
  if #bytes ~= (node.v == 4 and 4 or 16) then return F end
  local len, net = node.len, node.b
  for i = 1, #net do
    local keep = len - (i - 1) * 8
    if keep <= 0 then break end
    local mask = keep >= 8 and 255 or 256 - 2 ^ (8 - keep)
    if band(bytes[i], mask) ~= net[i] then return F end
  end
  return T
end

-- the value at a path of the JWT filter's metadata (nil: absent, as Envoy's metadataValue)
local function meta_value(f, path)
  local v = f.jwt_meta
  for _, k in ipairs(path) do
    if type(v) ~= "table" or getmetatable(v) == array_mt then return nil end
    v = v[k]
  end
  return v
end

-- Envoy's ValueMatcher: a matcher matches only a value of its kind
local value_match
function value_match(m, v)
  local k = m.k
  if k == "str" then
    if type(v) ~= "string" then return F end
    return string_match(m.m, v)
  end
  if k == "or" or k == "list" then
    local items = m.n
    if k == "list" then
      if type(v) ~= "table" or getmetatable(v) ~= array_mt then return F end
      items = v
    end
    local r = F
    for _, x in ipairs(items) do
      local got
      if k == "or" then got = value_match(x, v) else got = value_match(m.one, x) end
      if got == T then return T end
      if got == U then r = U end
    end
    return r
  end
  if k == "present" then return (m.v and v ~= nil) and T or F end
  if k == "bool" then return (type(v) == "boolean" and v == m.v) and T or F end
  if k == "null" then return v == json_null and T or F end
  if k == "num" then
    if type(v) ~= "number" then return F end
    if m.eq ~= nil then return v == m.eq and T or F end
    return (v >= m.lo and v < m.hi) and T or F
  end
  return U
end

local eval
function eval(node, f)
  local t = node.t
  if t == "any" then return T end
  if t == "and" then
    local r = T
    for _, n in ipairs(node.n) do
      local v = eval(n, f)
      if v == F then return F end
      if v == U then r = U end
    end
    return r
  end
  if t == "or" then
    local r = F
    for _, n in ipairs(node.n) do
      local v = eval(n, f)
      if v == T then return T end
      if v == U then r = U end
    end
    return r
  end
  if t == "not" then
    local v = eval(node.n, f)
    if v == U then return U end
    return v == T and F or T
  end
  if t == "header" then return header_match(node, f) end
  if t == "path" then
    local p = path(f)
    if not p then return U end
    return string_match(node.m, p)
  end
  if t == "dport" then
    local _, port = original_dst(f)
    if not port then return U end
    return (port >= node.lo and port < node.hi) and T or F
  end
  if t == "ip" then
    local bytes = address(f, node.of)
    if not bytes then return U end
    return in_cidr(bytes, node)
  end
  if t == "meta" then
    local r = value_match(node.m, meta_value(f, node.path))
    if r == U or not node.inv then return r end
    return r == T and F or T
  end
  return U
end

-- one filter: true when it lets the request on
local function passes(filter, f)
  if filter.action == "LOG" then return true end
  local unknown = false
  for _, policy in ipairs(filter.policies) do
    local v = eval(policy.match, f)
    if v == T then return filter.action == "ALLOW" end
    if v == U then unknown = true end
  end
  -- ALLOW: nothing matched for sure; DENY: denied when a policy may have matched
  if filter.action == "ALLOW" then return false end
  return not unknown
end

-- Envoy forwards the normalised path; nginx would forward the raw one
local function forward_normalised(ctx)
  local raw = ctx.var.real_request_uri or ngx.var.request_uri
  local q = find(raw, "?", 1, true)
  local raw_path = q and sub(raw, 1, q - 1) or raw
  local uri = ctx.var.uri
  local upstream = ctx.var.upstream_uri
  if raw_path ~= uri and (upstream == nil or upstream == "") then
    ctx.var.upstream_uri = core.utils.uri_safe_encode(uri) .. (ctx.var.is_args or "") .. (ctx.var.args or "")
  end
end

-- Envoy's jwt_authn runs before RBAC; a check that raises an error fails closed
local function authenticate(ctx, f)
  local ok, code, body, www = pcall(AUTHN, ctx, f)
  if ok then return code, body, www end
  core.log.error("apisix-mesh: JWT authentication raised an error, request refused: ", sub(tostring(code), 1, 200))
  return 401, "Jwt verification fails"
end

return function(conf, ctx)
  local f = { ctx = ctx }
  if AUTHN then
    local code, body, www = authenticate(ctx, f)
    if code then
      if body ~= "" then core.response.set_header("Content-Type", "text/plain") end
      if www then core.response.set_header("WWW-Authenticate", www) end
      return code, body
    end
  end
  for _, filter in ipairs(FILTERS) do
    if not passes(filter, f) then
      core.response.set_header("Content-Type", "text/plain")
      return 403, DENIED
    end
  end
  forward_normalised(ctx)
end
`;
