import { luaLiteral } from './lua-literal.js';
import { RBAC_PRIORITY } from '../policy/rbac-plugin.js';
import type { CorsRules } from './cors.js';
import type { ResponseHeaderOp } from './response-headers.js';

/**
 * Envoy's CORS filter and the router's response header mutations, for one route, as Lua that APISIX
 * runs in the two phases they need: the request (a CORS preflight is answered there, before the
 * fault filter, as Envoy's filter order has it) and the response headers.
 *
 * APISIX's own plugins do not say the same thing: its `cors` answers every OPTIONS request itself,
 * adds the preflight headers to every response and reads `*` differently; `response-rewrite`
 * cannot add a header only when absent (or replace it only when present) and refuses values with a
 * colon. So the Lua carries Envoy's rules (cors.ts, response-headers.ts), and rides as the
 * `_meta.pre_function` of `request-id` — the one enabled plugin that runs in both phases and whose
 * own work is wanted anyway (it keeps or generates `x-request-id`, as Envoy does; it is told not to
 * echo it in the response). APISIX runs a `_meta.pre_function` before the plugin in each of its
 * phases and caches the compiled chunk by its text, so routes with the same policy share one.
 * The plugin runs just after the RBAC evaluator (RBAC_PRIORITY) and before fault-injection (11000):
 * Envoy's order is RBAC, CORS, fault.
 */
export const RESPONSE_PHASE_PLUGIN = 'request-id';
export const RESPONSE_PHASE_PRIORITY = RBAC_PRIORITY - 250;

export interface ResponsePhaseRules {
  cors?: CorsRules | undefined;
  headers: ResponseHeaderOp[];
}

export function responsePhasePlugin(rules: ResponsePhaseRules): Record<string, unknown> {
  return { include_in_response: false, _meta: { priority: RESPONSE_PHASE_PRIORITY, pre_function: responsePhaseLua(rules) } };
}

/** The data as a Lua constructor (strings byte by byte: nothing from xDS is read as code), then the code. */
export function responsePhaseLua(rules: ResponsePhaseRules): string {
  const cors = rules.cors && {
    origins: rules.cors.origins,
    methods: rules.cors.methods,
    headers: rules.cors.headers,
    expose: rules.cors.expose,
    max_age: rules.cors.maxAge,
    credentials: rules.cors.credentials,
    private_network: rules.cors.privateNetwork,
    forward_unmatched: rules.cors.forwardUnmatched,
    enabled_below: rules.cors.enabledBelow,
  };
  return `local D = ${luaLiteral({ cors, ops: rules.headers })}\n${RESPONSE_PHASE_CODE}`;
}

/**
 * The request part (any phase but header_filter: APISIX runs its "rewrite" plugins inside nginx's
 * access phase) and the response part. CORS as Envoy's CorsFilter: no Origin (or an empty one),
 * nothing; the origin is allowed when a matcher matches it or matches "*"; a preflight is an
 * OPTIONS request with a non-empty Access-Control-Request-Method, answered 200 with the preflight
 * headers when the origin is allowed (or when unmatched preflights are not forwarded, then without
 * an allowed origin); any other request from an allowed origin gets Allow-Origin (the origin
 * itself), Allow-Credentials and Expose-Headers on its response. `*` in allowed methods or headers
 * echoes what the preflight asked for, as Envoy does.
 */
const RESPONSE_PHASE_CODE = String.raw`return function(conf, ctx)
  local h = ngx.header
  if ngx.get_phase() ~= "header_filter" then
    local cors = D.cors
    if not cors then return end
    local origin = ngx.var.http_origin
    if not origin or origin == "" then return end
    if cors.enabled_below and (tonumber(string.sub(ngx.var.request_id, 17, 24), 16) or 0) >= cors.enabled_below then return end
    local allowed = false
    for _, re in ipairs(cors.origins) do
      if ngx.re.find("*", re, "jo") or ngx.re.find(origin, re, "jo") then
        allowed = true
        break
      end
    end
    if allowed then ctx.apisix_mesh_cors_origin = origin end
    local asked = ngx.var.http_access_control_request_method
    if ngx.req.get_method() ~= "OPTIONS" or not asked or asked == "" then return end
    if not allowed and cors.forward_unmatched then return end
    if allowed then h["Access-Control-Allow-Origin"] = origin end
    if cors.credentials then h["Access-Control-Allow-Credentials"] = "true" end
    if cors.methods ~= "" then h["Access-Control-Allow-Methods"] = cors.methods == "*" and asked or cors.methods end
    if cors.headers ~= "" then
      h["Access-Control-Allow-Headers"] = cors.headers == "*" and (ngx.var.http_access_control_request_headers or "") or cors.headers
    end
    if cors.max_age ~= "" then h["Access-Control-Max-Age"] = cors.max_age end
    if cors.private_network and ngx.var.http_access_control_request_private_network == "true" then
      h["Access-Control-Allow-Private-Network"] = "true"
    end
    ctx.apisix_mesh_cors_preflight = true
    return ngx.exit(200)
  end
  if ctx.apisix_mesh_cors_preflight then return end
  for _, op in ipairs(D.ops) do
    local kind, name, value = op[1], op[2], op[3]
    if kind == "remove" then
      h[name] = nil
    elseif kind == "set" then
      h[name] = value
    elseif kind == "absent" then
      if h[name] == nil then h[name] = value end
    elseif kind == "present" then
      if h[name] ~= nil then h[name] = value end
    else
      local current = h[name]
      if current == nil then
        h[name] = value
      elseif type(current) == "table" then
        current[#current + 1] = value
        h[name] = current
      else
        h[name] = { current, value }
      end
    end
  end
  local origin = ctx.apisix_mesh_cors_origin
  if origin then
    h["Access-Control-Allow-Origin"] = origin
    if D.cors.credentials then h["Access-Control-Allow-Credentials"] = "true" end
    if D.cors.expose ~= "" then h["Access-Control-Expose-Headers"] = D.cors.expose end
  end
end
`;
