-- Envoy's JWT authentication (jwt_authn, Istio's RequestAuthentication), evaluated for the HTTP
-- policy plugin (apisix/plugins/apisix-mesh-policy.lua), which runs it before RBAC as Envoy does.
-- The data (one entry per filter, in the chain's order) is agent/policy/jwt.ts's jwtLuaData; new()
-- turns it into the per-request check `authn(ctx, f)` once per configuration.
-- It follows Envoy's code path (extractor.cc, authenticator.cc, verifier.cc, jwt_verify_lib):
-- - tokens come from the provider's header locations (value prefix found anywhere in the value, the
--   base64url-and-dot run after it), then query parameters, then cookies, each group in its sorted
--   order, and are verified from the last to the first; every token must be valid;
-- - a token is parsed (3 non-empty dot-separated sections, base64url, JSON objects, `alg` among
--   Envoy's 13, typed claims), its issuer checked, then its time (exp/nbf with the clock skew), its
--   audiences, then its signature with the keys whose kid and alg allow it (the key's type picks
--   the algorithm family: RSA PKCS#1 v1.5 or PSS, ECDSA with the raw r||s form, HMAC, Ed25519);
-- - a requirement is a provider, `requires_any` (with allow_missing / allow_missing_or_failed and
--   Envoy's choice of the error to report), `requires_all`, or nothing;
-- - a valid token's payload (space-delimited claims split) and header go to `f.jwt_meta` (Envoy's
--   dynamic metadata namespace `envoy.filters.http.jwt_authn`, which RBAC's metadata matchers read),
--   its claims to headers, its payload to a header, and the token header is removed unless `forward`;
-- - a failure answers 401 (403 for audiences) with Envoy's text and `www-authenticate`.
-- Bounds: a token longer than 64 KiB is refused as malformed (Envoy's headers stop at 60 KiB); JSON
-- nesting stops at depth 100 (protobuf's JSON parser limit). Nothing a client sends raises an error:
-- the caller still runs it under pcall and fails closed.
local core = require("apisix.core")
local cjson_mod = require("cjson.safe")
local pkey = require("resty.openssl.pkey")
local hmac = require("resty.openssl.hmac")
local lrucache = require("resty.lrucache")
local json = cjson_mod.new()
json.decode_array_with_array_mt(true)
json.decode_invalid_numbers(false)
json.decode_max_depth(100)
local array_mt, null = cjson_mod.array_mt, cjson_mod.null
local get_headers = ngx.req.get_headers
local decode_base64, encode_base64, unescape_uri, now = ngx.decode_base64, ngx.encode_base64, ngx.unescape_uri, ngx.time
local byte, sub, find, gsub, match, gmatch, rep, format, concat = string.byte, string.sub, string.find, string.gsub, string.match, string.gmatch, string.rep, string.format, table.concat
local ipairs, pairs, type, getmetatable, setmetatable, floor = ipairs, pairs, type, getmetatable, setmetatable, math.floor
local bxor, bor = bit.bxor, bit.bor

local OK = "OK"
local MISSED = "Jwt is missing"
local UNKNOWN_ISSUER = "Jwt issuer is not configured"
local AUDIENCE = "Audiences in Jwt are not allowed"
local S = {
  bad_format = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
  header_b64 = "Jwt header is an invalid Base64url encoded",
  header_json = "Jwt header is an invalid JSON",
  bad_alg = "Jwt header [alg] field is required and must be a string",
  alg = "Jwt header [alg] is not supported",
  kid = "Jwt header [kid] field is not a string",
  payload_b64 = "Jwt payload is an invalid Base64url encoded",
  payload_json = "Jwt payload is an invalid JSON",
  iss = "Jwt payload [iss] field is not a string",
  sub = "Jwt payload [sub] field is not a string",
  iat = { type = "Jwt payload [iat] field is not an integer", range = "Jwt payload [iat] field is not a positive 64 bit integer" },
  nbf = { type = "Jwt payload [nbf] field is not an integer", range = "Jwt payload [nbf] field is not a positive 64 bit integer" },
  exp = { type = "Jwt payload [exp] field is not an integer", range = "Jwt payload [exp] field is not a positive 64 bit integer" },
  jti = "Jwt payload [jti] field is not a string",
  aud = "Jwt payload [aud] field is not a string or string list",
  sig_b64 = "Jwt signature is an invalid Base64url encoded",
  not_yet_valid = "Jwt not yet valid",
  expired = "Jwt is expired",
  verification = "Jwt verification fails",
  kid_alg = "Jwks doesn't have key to match kid or alg from Jwt",
  ed25519_length = "Jwt ED25519 signature is wrong length",
}
local MAX_TOKEN = 65536
-- tokens whose signature a provider's keys verified (per worker, per configuration: new() makes
-- one cache for its keys), as Envoy's JWT cache: issuer, time and audiences are still checked on
-- every request; only verified tokens, of at most 4 KiB, are kept
local VERIFIED_TOKENS = 128
local MAX_CACHED_TOKEN = 4096
local ALGS = { ES256 = true, ES384 = true, ES512 = true, HS256 = true, HS384 = true, HS512 = true, RS256 = true,
               RS384 = true, RS512 = true, PS256 = true, PS384 = true, PS512 = true, EdDSA = true }
local DIGEST = { ES384 = "sha384", ES512 = "sha512", RS384 = "sha384", RS512 = "sha512", PS384 = "sha384",
                 PS512 = "sha512", HS384 = "sha384", HS512 = "sha512" }
local PSS = pkey.PADDINGS.RSA_PKCS1_PSS_PADDING

-- absl's WebSafeBase64Unescape: the URL-safe alphabet, padding optional
local function b64url(s)
  if find(s, "[^A-Za-z0-9%-_=]") then return nil end
  local body, pad = match(s, "^([^=]*)(=*)$")
  if not body or #pad > 2 then return nil end
  local r = #body % 4
  if r == 1 or (#pad > 0 and (#body + #pad) % 4 ~= 0) then return nil end
  body = gsub(body, "[-_]", { ["-"] = "+", ["_"] = "/" })
  if r > 0 then body = body .. rep("=", 4 - r) end
  return decode_base64(body)
end

local function is_object(v) return type(v) == "table" and getmetatable(v) ~= array_mt end
local function is_list(v) return type(v) == "table" and getmetatable(v) == array_mt end

-- jwt_verify_lib's StructUtils: a missing claim is empty, one of another type an error
local function get_string(t, k)
  local v = t[k]
  if v == nil then return "" end
  if type(v) ~= "string" then return false end
  return v
end

local function get_uint64(t, k)
  local v = t[k]
  if v == nil then return 0 end
  if type(v) ~= "number" then return nil, "type" end
  if v < 0 or v >= 18446744073709551616 then return nil, "range" end
  return floor(v)
end

local function parse(token)
  if #token > MAX_TOKEN then return S.bad_format end
  local parts, n = {}, 0
  for part in gmatch(token, "[^.]+") do
    n = n + 1
    if n > 3 then return S.bad_format end
    parts[n] = part
  end
  if n ~= 3 then return S.bad_format end
  local header_json = b64url(parts[1])
  if not header_json then return S.header_b64 end
  local header = json.decode(header_json)
  if not is_object(header) then return S.header_json end
  local alg = header.alg
  if type(alg) ~= "string" then return S.bad_alg end
  if not ALGS[alg] then return S.alg end
  local kid = get_string(header, "kid")
  if kid == false then return S.kid end
  local payload_json = b64url(parts[2])
  if not payload_json then return S.payload_b64 end
  local payload = json.decode(payload_json)
  if not is_object(payload) then return S.payload_json end
  local iss = get_string(payload, "iss")
  if iss == false then return S.iss end
  if get_string(payload, "sub") == false then return S.sub end
  local times = {}
  for _, claim in ipairs({ "iat", "nbf", "exp" }) do
    local v, err = get_uint64(payload, claim)
    if err then return S[claim][err] end
    times[claim] = v
  end
  if get_string(payload, "jti") == false then return S.jti end
  local aud, auds = payload.aud, {}
  if type(aud) == "string" then
    auds[1] = aud
  elseif is_list(aud) then
    for i, a in ipairs(aud) do
      if type(a) ~= "string" then return S.aud end
      auds[i] = a
    end
  elseif aud ~= nil then
    return S.aud
  end
  local sig = b64url(parts[3])
  if not sig then return S.sig_b64 end
  return { header = header, payload = payload, alg = alg, kid = kid, iss = iss, nbf = times.nbf, exp = times.exp,
           aud = auds, sig = sig, signed = parts[1] .. "." .. parts[2], payload_b64 = parts[2] }
end

-- jwt_verify_lib's CheckAudience: http(s):// and one trailing / do not count
local function sanitize_audience(a)
  if a == "" then return a end
  local out = a
  if sub(out, 1, 7) == "http://" then out = sub(out, 8) elseif sub(out, 1, 8) == "https://" then out = sub(out, 9) end
  if byte(a, -1) == 47 then out = sub(out, 1, -2) end
  return out
end

local function audience_allowed(allowed, auds)
  if #allowed == 0 then return true end
  for _, a in ipairs(auds) do
    local s = sanitize_audience(a)
    for _, x in ipairs(allowed) do
      if x == s then return true end
    end
  end
  return false
end

local function equal_secret(a, b)
  if #a ~= #b then return false end
  local diff = 0
  for i = 1, #a do diff = bor(diff, bxor(byte(a, i), byte(b, i))) end
  return diff == 0
end

-- one key: true, false, or "length" (Ed25519's own error); the key's type picks the algorithm family
local function verify_with(key, jwt)
  local kty = key.kty
  if kty == "oct" then
    if key.secret == nil then key.secret = decode_base64(key.k64) or false end
    if not key.secret then return false end
    local h = hmac.new(key.secret, DIGEST[jwt.alg] or "sha256")
    local mac = h and h:final(jwt.signed)
    return mac ~= nil and equal_secret(mac, jwt.sig)
  end
  if key.pk == nil then key.pk = pkey.new(key.pem) or false end
  local pk = key.pk
  if not pk then return false end
  if kty == "EC" then
    return pk:verify(jwt.sig, jwt.signed, DIGEST[jwt.alg] or "sha256", nil, { ecdsa_use_raw = true }) == true
  end
  if kty == "RSA" then
    local family = sub(jwt.alg, 1, 2)
    if family == "RS" then return pk:verify(jwt.sig, jwt.signed, DIGEST[jwt.alg] or "sha256") == true end
    if family == "PS" then return pk:verify(jwt.sig, jwt.signed, DIGEST[jwt.alg] or "sha256", PSS, { pss_saltlen = -2 }) == true end
    return false
  end
  if kty == "OKP" then
    if #jwt.sig ~= 64 then return "length" end
    return pk:verify(jwt.sig, jwt.signed) == true
  end
  return false
end

-- verifyJwtWithoutTimeChecking: the keys whose kid and alg allow this token, in order
local function verify_signature(keys, jwt)
  local matched = false
  for _, key in ipairs(keys) do
    if (jwt.kid == "" or key.kid == "" or key.kid == jwt.kid) and (key.alg == "" or key.alg == jwt.alg) then
      matched = true
      local r = verify_with(key, jwt)
      if r == true then return OK end
      if r == "length" then return S.ed25519_length end
    end
  end
  return matched and S.verification or S.kid_alg
end

-- request facts shared with the RBAC evaluator: f.headers is dropped whenever a header changes
local function header_values(f, name)
  local h = f.headers
  if not h then h = get_headers(0); f.headers = h end
  return h[name]
end

local function header_value(f, name)
  local v = header_values(f, name)
  if type(v) == "table" then return concat(v, ",") end
  return v
end

local function set_header(f, name, value)
  core.request.set_header(f.ctx, name, value)
  f.headers = nil
end

local function add_header(f, name, value)
  core.request.add_header(f.ctx, name, value)
  f.headers = nil
end

-- Envoy's parseAndDecodeQueryString: the first value of a name wins
local function query_param(f, name)
  local q = f.query
  if not q then
    q = {}
    local args = f.ctx.var.args
    if type(args) == "string" then
      for pair in gmatch(args, "[^&]+") do
        local eq = find(pair, "=", 1, true)
        local k = unescape_uri(eq and sub(pair, 1, eq - 1) or pair)
        if q[k] == nil then q[k] = unescape_uri(eq and sub(pair, eq + 1) or "") end
      end
    end
    f.query = q
  end
  return q[name]
end

-- Envoy's parseCookies: every cookie header, "; "-separated pairs, quotes stripped, first wins
local function cookie(f, name)
  local c = f.cookies
  if not c then
    c = {}
    local v = header_values(f, "cookie")
    for _, line in ipairs(type(v) == "table" and v or { v }) do
      for part in gmatch(line, "[^;]+") do
        local k, value = match(part, "^%s*([^=]*)=(.*)$")
        if k and c[k] == nil then
          if #value >= 2 and byte(value, 1) == 34 and byte(value, -1) == 34 then value = sub(value, 2, -2) end
          c[k] = value
        end
      end
    end
    f.cookies = c
  end
  return c[name]
end

-- the token after the prefix: the first run of base64url characters and dots (or the whole value)
local re_find = ngx.re.find
local function after_prefix(value, from)
  local s, e = re_find(value, "[A-Za-z0-9_.-]+", "jo", { pos = from })
  if not s then return value end
  return sub(value, s, e)
end

local function extract(f, p)
  local tokens = {}
  for _, loc in ipairs(p.headers) do
    local v = header_value(f, loc.h)
    if v then
      if loc.p == "" then
        tokens[#tokens + 1] = { v = v, h = loc.h }
      else
        local at = find(v, loc.p, 1, true)
        if at then tokens[#tokens + 1] = { v = after_prefix(v, at + #loc.p), h = loc.h } end
      end
    end
  end
  for _, name in ipairs(p.params) do
    local v = query_param(f, name)
    if v then tokens[#tokens + 1] = { v = v } end
  end
  for _, name in ipairs(p.cookies) do
    local v = cookie(f, name)
    if v then tokens[#tokens + 1] = { v = v } end
  end
  return tokens
end

-- a claim by name, '.' separating nested claims (StructUtils::GetValue)
local function claim_value(payload, name)
  if name == "" then return nil end
  local v = payload
  for part in gmatch(name, "[^.]+") do
    if not is_object(v) then return nil end
    v = v[part]
  end
  return v
end

-- a claim as Envoy copies it to a header (claim_to_headers); one that would split the header is not
local function claim_text(v)
  local t = type(v)
  if t == "string" then return find(v, "[%z\r\n]") and "" or v end
  if t == "boolean" then return v and "true" or "false" end
  if t == "number" then
    if v >= 0 and v < 18446744073709551616 and v == floor(v) then return format("%.0f", v) end
    return format("%f", v)
  end
  if t == "table" then
    local text = json.encode(v)
    return text and encode_base64(text) or ""
  end
  return ""
end

local function normalised_payload(payload, claims)
  if #claims == 0 then return payload end
  local out = {}
  for k, v in pairs(payload) do out[k] = v end
  for _, claim in ipairs(claims) do
    local v = payload[claim]
    if type(v) == "string" then
      local list = setmetatable({}, array_mt)
      for part in gmatch(v, "[^ ]+") do list[#list + 1] = part end
      if #list > 0 then out[claim] = list end
    end
  end
  return out
end

local function good_token(f, p, token, jwt)
  if p.fph ~= "" then
    local payload = jwt.payload_b64
    if p.pad and #payload % 4 ~= 0 then payload = payload .. rep("=", 4 - #payload % 4) end
    add_header(f, p.fph, payload)
  end
  for _, c in ipairs(p.c2h) do
    local text = claim_text(claim_value(jwt.payload, c.c))
    if text ~= "" then add_header(f, c.h, text) end
  end
  if not p.fwd and token.h then set_header(f, token.h, nil) end
  local extracted = f.extracted or {}
  if p.him ~= "" then extracted[p.him] = jwt.header end
  if p.pim ~= "" then extracted[p.pim] = normalised_payload(jwt.payload, p.sdc) end
  f.extracted = extracted
end

local function verify_token(f, p, token, audiences)
  local cacheable = #token.v <= MAX_CACHED_TOKEN
  local known = cacheable and f.verified:get(token.v) or nil
  local jwt = known and known.jwt
  if not jwt then
    local parsed = f.parsed
    if not parsed then parsed = {}; f.parsed = parsed end
    jwt = parsed[token.v]
    if jwt == nil then
      jwt = parse(token.v)
      parsed[token.v] = jwt
    end
    if type(jwt) == "string" then return jwt end
  end
  if p.iss ~= "" and jwt.iss ~= p.iss then return UNKNOWN_ISSUER end
  local t = now()
  if t + p.skew < jwt.nbf then return S.not_yet_valid end
  if jwt.exp ~= 0 and t > jwt.exp + p.skew then return S.expired end
  if not audience_allowed(audiences or p.aud, jwt.aud) then return AUDIENCE end
  if p.keys_err then return p.keys_err end
  if not (known and known.by[p]) then
    local status = verify_signature(p.keys, jwt)
    if status ~= OK then return status end
    if cacheable then
      known = known or { jwt = jwt, by = {} }
      known.by[p] = true
      f.verified:set(token.v, known)
    end
  end
  good_token(f, p, token, jwt)
  return OK
end

local function verify_provider(f, p, audiences)
  if p.fph ~= "" and header_values(f, p.fph) ~= nil then set_header(f, p.fph, nil) end
  for _, c in ipairs(p.c2h) do
    if header_values(f, c.h) ~= nil then set_header(f, c.h, nil) end
  end
  local tokens = extract(f, p)
  if #tokens == 0 then return MISSED end
  for i = #tokens, 1, -1 do
    local status = verify_token(f, p, tokens[i], audiences)
    if status ~= OK then return status end
  end
  return OK
end

local requirement
function requirement(F, node, f)
  local t = node.t
  if t == "provider" then return verify_provider(f, F.providers[node.p + 1], node.aud) end
  if t == "all" then
    for _, child in ipairs(node.n) do
      local status = requirement(F, child, f)
      if status ~= OK then return status end
    end
    return OK
  end
  if t == "any" then
    local final = MISSED
    for _, child in ipairs(node.n) do
      local status = requirement(F, child, f)
      if status == OK then return OK end
      -- Envoy reports an error other than "missing" or "unknown issuer" when there is one
      if (status ~= MISSED and status ~= UNKNOWN_ISSUER) or final == MISSED then final = status end
    end
    if node.failed or (node.missing and final == MISSED) then return OK end
    return final
  end
  return OK
end

local function preflight(f)
  if f.ctx.var.request_method ~= "OPTIONS" then return false end
  local origin, method = header_value(f, "origin"), header_value(f, "access-control-request-method")
  return origin ~= nil and origin ~= "" and method ~= nil and method ~= ""
end

-- Envoy's buildOriginalUri: scheme://host + the path (query included), cut at 256 bytes
local function realm(f)
  local var = f.ctx.var
  local path = core.utils.uri_safe_encode(var.uri or "/") .. (var.is_args or "") .. (var.args or "")
  return (var.scheme or "http") .. "://" .. (var.http_host or "") .. sub(path, 1, 256)
end

local function merge_extracted(f)
  local extracted = f.extracted
  if not extracted then return end
  local meta = f.jwt_meta or {}
  for k, v in pairs(extracted) do meta[k] = v end
  f.jwt_meta = meta
  f.extracted = nil
end

local function authenticate(filters, verified, ctx, f)
  f.verified = verified
  for _, F in ipairs(filters) do
    if F.requires and not (F.cors and preflight(f)) then
      local status = requirement(F, F.requires, f)
      merge_extracted(f)
      if status ~= OK then
        local code = status == AUDIENCE and 403 or 401
        if F.strip then return code, "" end
        local www = 'Bearer realm="' .. realm(f) .. '"'
        if status ~= MISSED then www = www .. ', error="invalid_token"' end
        return code, status, www
      end
    end
  end
end

local _M = {}

-- The check for these filters (the data is the caller's own copy: keys are parsed into it once).
function _M.new(filters)
  local verified = lrucache.new(VERIFIED_TOKENS)
  return function(ctx, f)
    return authenticate(filters, verified, ctx, f)
  end
end

local function is_list(v, max)
  if type(v) ~= "table" or #v > max then return false end
  for k in pairs(v) do
    if type(k) ~= "number" then return false end
  end
  return true
end

-- nil when the data has the shape jwt.ts writes (the parts the code indexes), else what is wrong
function _M.check(filters)
  if not is_list(filters, 64) then return "JWT filters are not a list" end
  for _, F in ipairs(filters) do
    if type(F) ~= "table" or not is_list(F.providers, 256) then return "bad JWT filter" end
    if F.requires ~= nil and type(F.requires) ~= "table" then return "bad JWT requirement" end
    for _, p in ipairs(F.providers) do
      if type(p) ~= "table" or not is_list(p.headers, 64) or not is_list(p.params, 64) or not is_list(p.cookies, 64)
        or not is_list(p.aud, 1024) or not is_list(p.c2h, 256) or not is_list(p.sdc, 256)
        or type(p.iss) ~= "string" or type(p.skew) ~= "number" or type(p.fph) ~= "string"
        or type(p.pim) ~= "string" or type(p.him) ~= "string" then
        return "bad JWT provider"
      end
      if p.keys_err == nil and not is_list(p.keys, 1024) then return "JWT provider without keys" end
    end
  end
  return nil
end

return _M
