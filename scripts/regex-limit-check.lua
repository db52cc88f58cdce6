-- What an Istio regex costs APISIX on a hostile input, and that the agent's conditions fail closed
-- when PCRE gives up: lua-resty-expr (APISIX's `vars`) evaluating the vars exactly as the agent
-- writes them (agent/translate/matchers.ts, pcre.ts), under APISIX's own `lua_regex_match_limit`.
-- Needs an APISIX runtime (OpenResty + APISIX's Lua deps); by hand, not part of the test suite:
--   R=/path/to/apisix-runtime/prefix
--   $R/openresty/bin/resty -I $R/apisix/deps/share/lua/5.1 \
--     --http-conf 'lua_regex_match_limit 100000;' scripts/regex-limit-check.lua
-- (100000 is what APISIX's nginx.conf template sets; 0 means PCRE's default, 10 000 000.)
local expr = require("resty.expr.v1")
local cjson = require("cjson.safe")
local inverted = assert(expr.new(cjson.decode([=[ [["OR", ["http_x_user", "!", "~~", "^"], ["http_x_user", "~~", "^(?!(?:(a+)+)\\z)"]]] ]=])))
local plain = assert(expr.new(cjson.decode([=[ [["uri", "~~", "^(?:(a+)+)\\z"]] ]=])))
local bang = assert(expr.new(cjson.decode([=[ [["http_x_user", "!", "~~", "^(?:(a+)+)$"]] ]=])))
local hostile = string.rep("a", 40) .. "b"
local function t(label, e, ctx, n)
  n = n or 50
  local s = os.clock()
  local r
  for _ = 1, n do r = e:eval(ctx) end
  print(string.format("%-60s -> %-5s %7.3f ms CPU/eval", label, tostring(r), (os.clock() - s) * 1000 / n))
end
t("inverted regex, header absent (Envoy: matches)", inverted, {})
t("inverted regex, header 'aaa' (Envoy: no match)", inverted, { http_x_user = "aaa" })
t("inverted regex, header 'bob' (Envoy: matches)", inverted, { http_x_user = "bob" })
t("inverted regex, hostile header (limit hit: fails closed)", inverted, { http_x_user = hostile })
t("'!' in front of the regex, hostile header (limit hit: matches)", bang, { http_x_user = hostile })
t("regex, hostile uri (limit hit: no match)", plain, { uri = hostile })
t("regex, 'aaaa' (match)", plain, { uri = "aaaa" })
t("regex, 'aaaa\\n' (RE2: no match; PCRE's $ would match)", plain, { uri = "aaaa\n" })
