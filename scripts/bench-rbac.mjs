#!/usr/bin/env node
// `npm run bench -- rbac`: what the policy plugin (apisix-mesh-policy: RBAC and JWT) costs APISIX per
// request. The sidecar's plugin, with the configuration the agent compiles from Istio-shaped filters,
// runs under the APISIX runtime's `resty` — the LuaJIT, PCRE and lua-resty-openssl APISIX runs it
// with — against one request, many times, next to a baseline function that does nothing (what a
// route without policy pays: nothing at all, in fact).
// RBAC cases: one DENY rule; 10 ALLOW policies × 10 rules each (method AND path prefix AND a header),
// the request matching only the last rule of the last policy, so that every rule is evaluated; the
// same with regex path rules.
// JWT cases (RequestAuthentication, inline JWKS): a request without a token; a valid RS256 / ES256
// token seen before (its signature verified once: the function keeps verified tokens per worker, as
// Envoy's JWT cache) and 200 distinct valid tokens in turn (more than that cache holds: every request
// verifies a signature); a valid RS256 token and an ALLOW requiring a request principal; a forged
// RS256 token (never kept). Needs APISIX_RUNTIME (as the data-plane tests do).
// Plain ESM over dist/ (npm run bench builds first).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync, sign } from 'node:crypto';
import { fromCanonical } from '../dist/agent/xds/codec.js';
import { compileRbacFilter } from '../dist/agent/policy/rbac.js';
import { compileJwtFilter } from '../dist/agent/policy/jwt.js';
import { httpPolicyPluginConf, rbacPluginConf } from '../dist/agent/policy/rbac-plugin.js';
import { LUA_SOURCE_DIR } from '../dist/agent/l4/lua-modules.js';

const RBAC_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
const JWT_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication';
const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 200_000);
const runtime = process.env.APISIX_RUNTIME;
if (!runtime) {
  console.log('skipped: set APISIX_RUNTIME (the APISIX runtime the data-plane tests use)');
  process.exit(0);
}

const compile = (rules) => compileRbacFilter('envoy.filters.http.rbac', fromCanonical(RBAC_TYPE, { '@type': RBAC_TYPE, rules }));
const or = (rule) => ({ or_rules: { rules: [rule] } });
const istioRule = (method, path, team) => ({
  and_rules: { rules: [or({ header: { name: ':method', exact_match: method } }), or({ url_path: { path } }), or({ header: { name: 'x-team', string_match: { exact: team } } })] },
});
function policies(n, rulesEach, pathOf) {
  const out = {};
  for (let p = 0; p < n; p++) {
    const permissions = [];
    for (let r = 0; r < rulesEach; r++) permissions.push(istioRule('GET', pathOf(p, r), `team-${p}-${r}`));
    out[`ns[bench]-policy[p${p}]-rule[0]`] = { permissions, principals: [{ any: true }] };
  }
  return out;
}

// ---- JWT: keys, the filter istiod writes for one RequestAuthentication, tokens
const ISS = 'https://issuer.example.com';
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const forgedRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = (k, kid, alg) => ({ ...k.publicKey.export({ format: 'jwk' }), kid, alg });
const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
function token(keyPair, kid, alg, n = 0) {
  const signed = `${b64({ alg, kid, typ: 'JWT' })}.${b64({ iss: ISS, sub: `alice-${n}`, aud: 'app', exp: Math.floor(Date.now() / 1000) + 3600, scope: 'read write' })}`;
  const sig = alg === 'ES256' ? sign('sha256', Buffer.from(signed), { key: keyPair.privateKey, dsaEncoding: 'ieee-p1363' }) : sign('sha256', Buffer.from(signed), keyPair.privateKey);
  return `${signed}.${sig.toString('base64url')}`;
}
const jwt = compileJwtFilter('envoy.filters.http.jwt_authn', fromCanonical(JWT_TYPE, {
  '@type': JWT_TYPE,
  providers: { 'origins-0': {
    issuer: ISS, audiences: ['app'], payload_in_metadata: 'payload', normalize_payload_in_metadata: { space_delimited_claims: ['permission', 'scope'] },
    local_jwks: { inline_string: JSON.stringify({ keys: [jwk(rsa, 'rsa-1', 'RS256'), jwk(ec, 'ec-1', 'ES256')] }) },
  } },
  rules: [{ match: { prefix: '/' }, requires: { requires_any: { requirements: [{ provider_name: 'origins-0' }, { allow_missing: {} }] } } }],
  bypass_cors_preflight: true,
}));
const claim = (key, m) => ({ metadata: { filter: 'envoy.filters.http.jwt_authn', path: [{ key: 'payload' }, { key }], value: { string_match: m } } });
const requirePrincipal = compile({ action: 'ALLOW', policies: { p: { permissions: [{ any: true }], principals: [{ and_ids: { ids: [claim('iss', { safe_regex: { regex: '.+' } }), claim('sub', { safe_regex: { regex: '.+' } })] } }] } } });
const bearer = (t) => ({ authorization: `Bearer ${t}` });
const distinct = (keyPair, kid, alg) => Array.from({ length: 200 }, (_, i) => `Bearer ${token(keyPair, kid, alg, i)}`);

const cases = [
  ['no policy (baseline: an empty function)', null],
  ['1 DENY rule (path prefix)', rbacPluginConf([compile({ action: 'DENY', policies: { d: { permissions: [{ url_path: { path: { prefix: '/admin' } } }], principals: [{ any: true }] } } })])],
  ['10 ALLOW policies x 10 rules, prefix paths', rbacPluginConf([compile({ action: 'ALLOW', policies: policies(10, 10, (p, r) => ({ prefix: `/api/${p}/${r}` })) })])],
  ['10 ALLOW policies x 10 rules, regex paths', rbacPluginConf([compile({ action: 'ALLOW', policies: policies(10, 10, (p, r) => ({ safe_regex: { regex: `/api/${p}/${r}/[a-z]+` } })) })])],
  ['JWT: no token (allow_missing)', httpPolicyPluginConf({ jwt: [jwt], rbac: [] })],
  ['JWT: RS256 token seen before', httpPolicyPluginConf({ jwt: [jwt], rbac: [] }), bearer(token(rsa, 'rsa-1', 'RS256'))],
  ['JWT: ES256 token seen before', httpPolicyPluginConf({ jwt: [jwt], rbac: [] }), bearer(token(ec, 'ec-1', 'ES256'))],
  ['JWT: RS256, 200 tokens in turn (verify each)', httpPolicyPluginConf({ jwt: [jwt], rbac: [] }), {}, distinct(rsa, 'rsa-1', 'RS256')],
  ['JWT: ES256, 200 tokens in turn (verify each)', httpPolicyPluginConf({ jwt: [jwt], rbac: [] }), {}, distinct(ec, 'ec-1', 'ES256')],
  ['JWT RS256 + ALLOW requiring a principal', httpPolicyPluginConf({ jwt: [jwt], rbac: [requirePrincipal] }), bearer(token(rsa, 'rsa-1', 'RS256'))],
  ['JWT: forged RS256 token (401)', httpPolicyPluginConf({ jwt: [jwt], rbac: [] }), bearer(token(forgedRsa, 'rsa-1', 'RS256'))],
];

const HARNESS = String.raw`
local cjson = require("cjson.safe")
local cases = cjson.decode(assert(io.open(arg[1])):read("*a"))
local n = tonumber(arg[2])
local headers
ngx.req.get_headers = function() return headers end
package.loaded["apisix.core"] = {
  log = { warn = function() end, info = function() end, error = function(...) io.stderr:write(table.concat({ ... }), "\n") end },
  response = { set_header = function() end },
  utils = { uri_safe_encode = function(s) return s end },
  -- the JWT check removes the token header: the same request is evaluated again each time
  request = { set_header = function() end, add_header = function() end },
  schema = { check = function(schema, conf) return require("jsonschema").generate_validator(schema)(conf) end },
  table = { deepcopy = function(t) return cjson.decode(cjson.encode(t)) end },
}
local plugin = require("apisix.plugins.apisix-mesh-policy")
for _, case in ipairs(cases) do
  headers = { ["x-team"] = "team-9-9", ["user-agent"] = "bench" }
  for k, v in pairs(case.headers or {}) do headers[k] = v end
  local fn = function() end
  if case.conf then
    local conf = cjson.decode(case.conf)
    assert(plugin.check_schema(conf))
    fn = function(_, ctx) return plugin.rewrite(conf, ctx) end
  end
  local var = { uri = "/api/9/9/x", request_method = "GET", real_request_uri = "/api/9/9/x", remote_addr = "10.244.1.5",
                connection_original_dst = "10.244.2.9:8080", is_args = "", upstream_uri = "" }
  local ctx = { var = var }
  local tokens = case.tokens
  local function one(i)
    if tokens then headers.authorization = tokens[i % #tokens + 1] end
    return fn({}, ctx)
  end
  local status = one(0)
  for i = 1, n / 10 do one(i) end -- warm-up (JIT)
  local t0 = os.clock() -- CPU time: the machine is shared
  for i = 1, n do one(i) end
  print(cjson.encode({ name = case.name, ns = (os.clock() - t0) * 1e9 / n, status = status or 0 }))
end
`;

const dir = mkdtempSync(join(tmpdir(), 'bench-rbac-'));
try {
  writeFileSync(join(dir, 'harness.lua'), HARNESS);
  writeFileSync(join(dir, 'cases.json'), JSON.stringify(cases.map(([name, conf, headers, tokens]) => ({ name, ...(conf ? { conf: JSON.stringify(conf) } : {}), headers, tokens }))));
  const deps = join(runtime, 'prefix/apisix/deps/share/lua/5.1'); // lua-resty-openssl, as APISIX loads it
  const res = spawnSync(join(runtime, 'prefix/openresty/bin/resty'), ['-I', LUA_SOURCE_DIR, '-I', deps, join(dir, 'harness.lua'), join(dir, 'cases.json'), String(ITERATIONS)], { encoding: 'utf8' });
  if (res.status !== 0) throw new Error(res.stderr.slice(0, 2000));
  const rows = res.stdout.trim().split('\n').map((l) => JSON.parse(l));
  const base = rows[0].ns;
  console.log(`${ITERATIONS} evaluations each, one request (GET /api/9/9/x, allowed by the last rule only):`);
  for (const r of rows) {
    const perCore = Math.round(1e9 / r.ns);
    console.log(`  ${r.name.padEnd(46)} ${(r.ns / 1000).toFixed(3).padStart(7)} µs/request  (+${((r.ns - base) / 1000).toFixed(3)} µs over baseline, ${r.ns > 100 ? `${perCore.toLocaleString('en')} /s per core` : 'free'})  ${r.status === 0 ? 'allowed' : r.status}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
