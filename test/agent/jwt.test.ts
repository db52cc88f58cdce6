// Envoy's JWT authentication (Istio's RequestAuthentication), failure by failure: Istio-shaped
// jwt_authn configs go through the wire form, the compiler, and the Lua function APISIX runs, which
// runs here under OpenResty's resty with APISIX's lua-resty-openssl, against tokens signed by
// node:crypto. Expected answers are Envoy's: status, body (jwt_verify_lib's text), www-authenticate.
import { describe, expect, it } from 'vitest';
import { fromCanonical } from '../../agent/xds/codec.js';
import type { HttpRbac, JwtAuthentication } from '../../agent/xds/envoy-types.js';
import { JWT_AUTHN_TYPE } from '../../agent/xds/protos.js';
import { compileJwtFilter, JwtCompileError, sanitizeAudience, type CompiledJwtFilter, type RemoteJwksLookup } from '../../agent/policy/jwt.js';
import { compileRbacFilter, type CompiledRbacFilter } from '../../agent/policy/rbac.js';
import { httpPolicyPluginConf } from '../../agent/policy/rbac-plugin.js';
import { parseJwks, JWKS_STATUS } from '../../agent/policy/jwks.js';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingResty, runRbac, type RbacOutcome } from '../support/rbac-lua.js';
import { jwksOf, nowSeconds, rawToken, signingKey, signToken, type SigningKey } from '../support/jwt-tokens.js';
import { jwtAuthnFilter, requestClaim, requestPrincipals, type JwtRule } from '../support/istio-xds.js';

type Json = Record<string, unknown>;
const RBAC_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
const ISS = 'https://issuer.example.com';
const OTHER_ISS = 'https://other.example.com';

const rs256 = signingKey('RS256', 'rsa-1');
const es256 = signingKey('ES256', 'ec-1');
const forger = signingKey('RS256', 'rsa-1'); // same kid, another key
const otherIssuerKey = signingKey('ES256', 'other-1');

function compileJwt(filter: Json): CompiledJwtFilter {
  const typed = filter['typed_config'] as Json;
  return compileJwtFilter(String(filter['name']), fromCanonical<JwtAuthentication>(JWT_AUTHN_TYPE, typed));
}

function istio(rules: JwtRule[]): CompiledJwtFilter {
  return compileJwt(jwtAuthnFilter(rules));
}

function rbac(rules: Json): CompiledRbacFilter {
  return compileRbacFilter('envoy.filters.http.rbac', fromCanonical<HttpRbac>(RBAC_TYPE, { '@type': RBAC_TYPE, rules }))!;
}

interface Req {
  auth?: string;
  headers?: Record<string, string | string[]>;
  args?: string;
  method?: string;
}

function run(jwt: CompiledJwtFilter[], reqs: Req[], options: { rbac?: CompiledRbacFilter[]; remote?: RemoteJwksLookup } = {}): RbacOutcome[] {
  const conf = httpPolicyPluginConf({ jwt, rbac: options.rbac ?? [] }, options.remote);
  return runRbac(reqs.map((r) => ({
    conf,
    var: {
      uri: '/api', request_method: r.method ?? 'GET', real_request_uri: '/api', remote_addr: '10.244.1.5', connection_original_dst: '10.244.2.9:80',
      scheme: 'http', http_host: 'httpbin', ...(r.args !== undefined ? { is_args: '?', args: r.args } : { is_args: '' }),
    },
    headers: { ...(r.auth !== undefined ? { authorization: r.auth } : {}), ...r.headers },
  })));
}

const bearer = (t: string) => `Bearer ${t}`;
const claims = (extra: Json = {}): Json => ({ iss: ISS, sub: 'alice', aud: 'app', exp: nowSeconds() + 600, ...extra });
const rejected = (status: number, body: string, realm = 'http://httpbinENC(/api)') => ({
  status, body, content_type: 'text/plain', www_authenticate: `Bearer realm="${realm}", error="invalid_token"`,
});

describeWhenAvailable('JWT authentication under OpenResty (the Lua APISIX runs)', missingResty(), () => {
  const filter = istio([{ issuer: ISS, jwks: jwksOf(rs256, es256), audiences: ['app'] }]);
  const outcome = (req: Req) => run([filter], [req])[0]!;

  it('no token passes (allow_missing); a valid token passes and is not forwarded (forwardOriginalToken: false)', () => {
    expect(outcome({})).toEqual({});
    const ok = outcome({ auth: bearer(signToken(rs256, claims())), headers: { 'x-other': '1' } });
    expect(ok.status).toBeUndefined();
    expect(ok.headers).toEqual({ 'x-other': '1' });
    expect(outcome({ auth: bearer(signToken(es256, claims())) }).status).toBeUndefined();
    // not a bearer token: no token for Envoy either
    expect(outcome({ auth: 'Basic dXNlcjpwYXNz' })).toEqual({});
  });

  it('expired (past the 60 s clock skew) → 401 Jwt is expired; within the skew it passes', () => {
    expect(outcome({ auth: bearer(signToken(rs256, claims({ exp: nowSeconds() - 120 }))) })).toEqual(rejected(401, 'Jwt is expired'));
    expect(outcome({ auth: bearer(signToken(rs256, claims({ exp: nowSeconds() - 20 }))) }).status).toBeUndefined();
  });

  it('not yet valid (nbf beyond the skew) → 401 Jwt not yet valid', () => {
    expect(outcome({ auth: bearer(signToken(rs256, claims({ nbf: nowSeconds() + 180 }))) })).toEqual(rejected(401, 'Jwt not yet valid'));
    expect(outcome({ auth: bearer(signToken(rs256, claims({ nbf: nowSeconds() + 20 }))) }).status).toBeUndefined();
  });

  it('wrongly signed (another key under the same kid, a flipped byte) → 401 Jwt verification fails', () => {
    expect(outcome({ auth: bearer(signToken(forger, claims())) })).toEqual(rejected(401, 'Jwt verification fails'));
    const good = signToken(es256, claims());
    const tampered = `${good.slice(0, -4)}${good.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`;
    expect(outcome({ auth: bearer(tampered) })).toEqual(rejected(401, 'Jwt verification fails'));
    // a payload swapped under a valid signature
    const [h, , s] = good.split('.');
    const swapped = `${h}.${Buffer.from(JSON.stringify(claims({ sub: 'mallory' }))).toString('base64url')}.${s}`;
    expect(outcome({ auth: bearer(swapped) })).toEqual(rejected(401, 'Jwt verification fails'));
  });

  it('wrong audience → 403 Audiences in Jwt are not allowed (Envoy answers 403 for this one); http(s):// and a trailing / do not count', () => {
    expect(outcome({ auth: bearer(signToken(rs256, claims({ aud: 'other' }))) })).toEqual(rejected(403, 'Audiences in Jwt are not allowed'));
    expect(outcome({ auth: bearer(signToken(rs256, claims({ aud: ['x', 'https://app/'] }))) }).status).toBeUndefined();
    expect(outcome({ auth: bearer(signToken(rs256, claims({ aud: undefined }))) })).toEqual(rejected(403, 'Audiences in Jwt are not allowed'));
  });

  it('another issuer → 401 Jwt issuer is not configured; a kid the JWKS lacks → Envoy\'s kid/alg text', () => {
    expect(outcome({ auth: bearer(signToken(otherIssuerKey, claims({ iss: OTHER_ISS }))) })).toEqual(rejected(401, 'Jwt issuer is not configured'));
    expect(outcome({ auth: bearer(signToken(rs256, claims(), { kid: 'unknown' })) })).toEqual(rejected(401, "Jwks doesn't have key to match kid or alg from Jwt"));
    // RS256 header on an ECDSA token: the RSA key's alg does not match, the EC key's does not either
    expect(outcome({ auth: bearer(signToken(es256, claims(), { alg: 'RS256', kid: 'ec-1' })) })).toEqual(rejected(401, "Jwks doesn't have key to match kid or alg from Jwt"));
  });

  it('malformed tokens get jwt_verify_lib\'s parse errors, in its order', () => {
    const cases: Array<[string, string]> = [
      ['abc', 'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections'],
      ['a.b', 'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections'],
      ['a.b.c.d', 'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections'],
      ['a~b.c.d', 'Jwt header is an invalid Base64url encoded'],
      [rawToken('not json', {}), 'Jwt header is an invalid JSON'],
      [rawToken([1], {}), 'Jwt header is an invalid JSON'],
      [rawToken({ typ: 'JWT' }, {}), 'Jwt header [alg] field is required and must be a string'],
      [rawToken({ alg: 'none' }, {}), 'Jwt header [alg] is not supported'],
      [rawToken({ alg: 'RS256', kid: 7 }, {}), 'Jwt header [kid] field is not a string'],
      [`${rawToken({ alg: 'RS256' }, {}).split('.')[0]}.@@.c2ln`, 'Jwt payload is an invalid Base64url encoded'],
      [rawToken({ alg: 'RS256' }, '{"iss":'), 'Jwt payload is an invalid JSON'],
      [rawToken({ alg: 'RS256' }, { iss: 1 }), 'Jwt payload [iss] field is not a string'],
      [rawToken({ alg: 'RS256' }, { sub: null }), 'Jwt payload [sub] field is not a string'],
      [rawToken({ alg: 'RS256' }, { exp: '1' }), 'Jwt payload [exp] field is not an integer'],
      [rawToken({ alg: 'RS256' }, { exp: -1 }), 'Jwt payload [exp] field is not a positive 64 bit integer'],
      [rawToken({ alg: 'RS256' }, { nbf: 1e30 }), 'Jwt payload [nbf] field is not a positive 64 bit integer'],
      [rawToken({ alg: 'RS256' }, { iat: true }), 'Jwt payload [iat] field is not an integer'],
      [rawToken({ alg: 'RS256' }, { jti: {} }), 'Jwt payload [jti] field is not a string'],
      [rawToken({ alg: 'RS256' }, { aud: [1] }), 'Jwt payload [aud] field is not a string or string list'],
      [rawToken({ alg: 'RS256' }, { iss: ISS, aud: 'app' }, 's!g'), 'Jwt signature is an invalid Base64url encoded'],
    ];
    // in ?access_token= the whole value is the token (after "Bearer ", Envoy takes the run of base64url characters and dots)
    const outcomes = run([filter], cases.map(([t]) => ({ args: `access_token=${encodeURIComponent(t)}` })));
    expect(outcomes.map((o) => o.body)).toEqual(cases.map(([, body]) => body));
    expect(run([filter], [{ auth: bearer('a~b.c.d') }])[0]!.body).toBe('Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections');
    expect(outcomes.every((o) => o.status === 401 && o.www_authenticate?.endsWith(', error="invalid_token"'))).toBe(true);
  });

  it('garbage never crashes it: a 70 KiB token, deep JSON, binary bytes, "Bearer " alone', () => {
    const deep = rawToken({ alg: 'RS256' }, `${'['.repeat(200)}${']'.repeat(200)}`);
    const nested = rawToken({ alg: 'RS256' }, { a: JSON.parse(`${'{"a":'.repeat(150)}1${'}'.repeat(150)}`) });
    const outcomes = run([filter], [
      { auth: bearer('a'.repeat(70 * 1024) + '.b.c') },
      { auth: bearer(deep) },
      { auth: bearer(nested) },
      { auth: bearer('\u00ff\u0000.\u00fe.x') },
      { auth: 'Bearer ' },
      { auth: 'Bearer ....' },
    ]);
    expect(outcomes.map((o) => o.body)).toEqual([
      'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections',
      'Jwt payload is an invalid JSON',
      'Jwt payload is an invalid JSON',
      'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections',
      'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections',
      'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections',
    ]);
  });

  it('Envoy\'s default locations: Authorization "Bearer " anywhere in the value, then ?access_token=; every token must be valid', () => {
    const good = signToken(rs256, claims());
    const expired = signToken(rs256, claims({ exp: nowSeconds() - 600 }));
    expect(outcome({ args: `x=1&access_token=${good}` }).status).toBeUndefined();
    expect(outcome({ args: `access_token=${expired}` }).body).toBe('Jwt is expired');
    expect(outcome({ auth: `Other x, Bearer ${good}` }).status).toBeUndefined();
    expect(outcome({ auth: bearer(good), args: `access_token=${expired}` }).body).toBe('Jwt is expired');
  });

  it('RS256/384/512, PS256/384/512, ES256/384/512, HS256/384/512 and EdDSA all verify; each one fails with a wrong key', () => {
    const algs = ['RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES384', 'ES512', 'HS256', 'HS384', 'HS512', 'EdDSA'] as const;
    const keys = algs.map((alg) => signingKey(alg, `k-${alg}`));
    const wrong = algs.map((alg) => signingKey(alg, `k-${alg}`));
    const f = istio([{ issuer: ISS, jwks: jwksOf(...keys) }]);
    const outcomes = run([f], [...keys, ...wrong].map((k) => ({ auth: bearer(signToken(k, claims())) })));
    expect(outcomes.map((o) => o.body ?? 'ok')).toEqual([...algs.map(() => 'ok'), ...algs.map(() => 'Jwt verification fails')]);
  });

  it('a JWK without alg is tried for any token; its key type decides the algorithm (as jwt_verify_lib does)', () => {
    const noAlg: SigningKey = signingKey('ES256', 'ec-x', { withAlg: false });
    const f = istio([{ issuer: ISS, jwks: jwksOf(noAlg) }]);
    const t = signToken(noAlg, claims());
    expect(run([f], [{ auth: bearer(t) }, { auth: bearer(signToken(rs256, claims(), { kid: 'ec-x' })) }]).map((o) => o.body ?? 'ok'))
      .toEqual(['ok', 'Jwt verification fails']);
  });

  it('a local JWKS without a usable key → 401 Jwks doesn\'t have any valid public key (after the claims checks)', () => {
    const f = istio([{ issuer: ISS, jwks: '{"keys":[{"kty":"RSA","n":"!!","e":"AQAB"}]}' }]);
    expect(run([f], [{ auth: bearer(signToken(rs256, claims())) }, { auth: bearer(signToken(rs256, claims({ exp: 1 }))) }]).map((o) => o.body))
      .toEqual(["Jwks doesn't have any valid public key", 'Jwt is expired']);
  });

  it('remote JWKS: keys the agent fetched verify; not fetched (failed or pending) → 401 Jwks remote fetch is failed', () => {
    const uri = 'https://jwks.example.com/keys.json';
    const f = istio([{ issuer: ISS, jwksUri: uri }]);
    const token = { auth: bearer(signToken(rs256, claims())) };
    expect(run([f], [token], { remote: new Map([[uri, { keys: parseJwks(jwksOf(rs256)).keys }]]) })[0]!.status).toBeUndefined();
    expect(run([f], [token, {}], { remote: new Map([[uri, { failed: 'timeout' }]]) })).toEqual([rejected(401, 'Jwks remote fetch is failed'), {}]);
    expect(run([f], [token])[0]!.body).toBe('Jwks remote fetch is failed');
  });

  it('several issuers (Istio\'s OR of providers and AND of {provider OR missing}): each issuer\'s token passes; Envoy\'s choice of error', () => {
    const f = istio([{ issuer: ISS, jwks: jwksOf(rs256) }, { issuer: OTHER_ISS, jwks: jwksOf(otherIssuerKey) }]);
    const outcomes = run([f], [
      { auth: bearer(signToken(rs256, claims())) },
      { auth: bearer(signToken(otherIssuerKey, claims({ iss: OTHER_ISS }))) },
      {},
      { auth: bearer(signToken(rs256, claims({ iss: 'https://third' }))) },
      { auth: bearer(signToken(otherIssuerKey, claims({ iss: OTHER_ISS, exp: 1 }))) },
      { auth: bearer(signToken(forger, claims())) },
    ]);
    expect(outcomes.map((o) => o.body ?? 'ok')).toEqual(['ok', 'ok', 'ok', 'Jwt issuer is not configured', 'Jwt is expired', 'Jwt verification fails']);
  });

  it('custom locations, forward, payload and claims to headers; client-sent copies of those headers are removed', () => {
    const f = istio([{
      issuer: ISS, jwks: jwksOf(rs256), fromHeaders: [{ name: 'x-jwt', prefix: 'Token ' }], forwardOriginalToken: true,
      outputPayloadToHeader: 'x-jwt-payload', outputClaimToHeaders: [{ header: 'x-sub', claim: 'sub' }, { header: 'x-n', claim: 'n' }, { header: 'x-grp', claim: 'groups' }],
    }]);
    const token = signToken(rs256, claims({ n: 42, groups: ['a'] }));
    const [ok, spoof, ignored] = run([f], [
      { headers: { 'x-jwt': `Token ${token}` } },
      { headers: { 'x-sub': 'admin', 'x-jwt-payload': 'forged' } },
      { auth: bearer('not-checked-here') },
    ]);
    expect(ok!.status).toBeUndefined();
    expect(ok!.headers).toEqual({
      'x-jwt': `Token ${token}`, 'x-jwt-payload': token.split('.')[1], 'x-sub': 'alice', 'x-n': '42', 'x-grp': Buffer.from('["a"]').toString('base64'),
    });
    expect(spoof).toEqual({ headers: {} });
    expect(ignored).toEqual({});
  });

  it('a CORS preflight skips authentication (bypass_cors_preflight, as istiod sets it)', () => {
    const preflight = { method: 'OPTIONS', headers: { origin: 'https://a', 'access-control-request-method': 'GET' }, auth: bearer('bad') };
    expect(run([filter], [preflight, { ...preflight, method: 'GET' }]).map((o) => o.status)).toEqual([undefined, 401]);
  });

  it('hostile claim values stay data; one that would split a header (CR, LF, NUL) is not copied to it', () => {
    const nasty = '"]] os.exit(3) --[[\\\'é';
    const f = istio([{ issuer: ISS, jwks: jwksOf(rs256), outputClaimToHeaders: [{ header: 'x-n', claim: 'nasty' }] }]);
    const [kept, dropped] = run([f], [{ auth: bearer(signToken(rs256, claims({ nasty }))) }, { auth: bearer(signToken(rs256, claims({ nasty: 'a\r\nx-admin: 1' }))) }]);
    expect(kept!.headers?.['x-n']).toBe(nasty);
    expect(dropped!.headers).toEqual({});
  });
});

describeWhenAvailable('JWT claims in AuthorizationPolicy (RBAC metadata principals) under OpenResty', missingResty(), () => {
  const jwt = istio([{ issuer: ISS, jwks: jwksOf(rs256) }]);
  const allow = (principal: Json) => rbac({ action: 'ALLOW', policies: { p: { permissions: [{ any: true }], principals: [principal] } } });
  const verdicts = (policy: CompiledRbacFilter, reqs: Req[], filters = [jwt]) =>
    run(filters, reqs, { rbac: [policy] }).map((o) => (o.status === undefined ? 'allow' : `${o.status} ${o.body}`));

  it('requestPrincipals ["iss/sub"]: no token → 403, valid token of that principal → allowed, another subject → 403, bad token → 401', () => {
    const policy = allow(requestPrincipals([`${ISS}/alice`]));
    expect(verdicts(policy, [
      {},
      { auth: bearer(signToken(rs256, claims())) },
      { auth: bearer(signToken(rs256, claims({ sub: 'bob' }))) },
      { auth: bearer(signToken(forger, claims())) },
    ])).toEqual(['403 RBAC: access denied', 'allow', '403 RBAC: access denied', '401 Jwt verification fails']);
  });

  it('a token verified before (kept per worker, as Envoy\'s JWT cache) is still stripped and still feeds RBAC; only for the provider that verified it', () => {
    const policy = allow(requestPrincipals([`${ISS}/alice`]));
    const t = signToken(rs256, claims());
    const outcomes = run([jwt], [{ auth: bearer(t) }, { auth: bearer(t) }, { auth: bearer(t) }], { rbac: [policy] });
    expect(outcomes).toEqual([{ headers: {} }, { headers: {} }, { headers: {} }]);
    // provider a (forwards the token) verified it; provider b, with other keys, must not take a's word
    const provider = (keys: SigningKey) => ({ issuer: ISS, forward: true, local_jwks: { inline_string: jwksOf(keys) } });
    const both = compileJwt({ name: 'jwt', typed_config: { '@type': JWT_AUTHN_TYPE, providers: { a: provider(rs256), b: provider(es256) },
      rules: [{ match: { prefix: '/' }, requires: { requires_all: { requirements: [{ provider_name: 'a' }, { provider_name: 'b' }] } } }] } });
    expect(run([both], [{ auth: bearer(t) }, { auth: bearer(t) }]).map((o) => o.body)).toEqual(["Jwks doesn't have key to match kid or alg from Jwt", "Jwks doesn't have key to match kid or alg from Jwt"]);
  });

  it('requestPrincipals ["*"] (any authenticated request) and notRequestPrincipals', () => {
    expect(verdicts(allow(requestPrincipals(['*'])), [{}, { auth: bearer(signToken(rs256, claims())) }])).toEqual(['403 RBAC: access denied', 'allow']);
    const deny = rbac({ action: 'DENY', policies: { p: { permissions: [{ any: true }], principals: [{ not_id: requestPrincipals(['*']) }] } } });
    expect(verdicts(deny, [{}, { auth: bearer(signToken(rs256, claims())) }])).toEqual(['403 RBAC: access denied', 'allow']);
  });

  it('request.auth.claims: a list claim contains the value, a string claim equals it, scope is split at spaces, nested claims', () => {
    const groups = allow(requestClaim(['groups'], ['admins']));
    expect(verdicts(groups, [
      { auth: bearer(signToken(rs256, claims({ groups: ['users', 'admins'] }))) },
      { auth: bearer(signToken(rs256, claims({ groups: 'admins' }))) },
      { auth: bearer(signToken(rs256, claims({ groups: ['users'] }))) },
      { auth: bearer(signToken(rs256, claims({ groups: { admins: true } }))) },
    ])).toEqual(['allow', 'allow', '403 RBAC: access denied', '403 RBAC: access denied']);
    expect(verdicts(allow(requestClaim(['scope'], ['write'])), [
      { auth: bearer(signToken(rs256, claims({ scope: 'read write' }))) },
      { auth: bearer(signToken(rs256, claims({ scope: 'read' }))) },
    ])).toEqual(['allow', '403 RBAC: access denied']);
    expect(verdicts(allow(requestClaim(['realm', 'role'], ['ops*'])), [
      { auth: bearer(signToken(rs256, claims({ realm: { role: 'ops-lead' } }))) },
      { auth: bearer(signToken(rs256, claims({ realm: 'ops' }))) },
    ])).toEqual(['allow', '403 RBAC: access denied']);
  });

  it('request.auth.audiences and presenter (aud, azp claims)', () => {
    expect(verdicts(allow(requestClaim(['aud'], ['app'])), [
      { auth: bearer(signToken(rs256, claims({ aud: ['x', 'app'] }))) },
      { auth: bearer(signToken(rs256, claims({ aud: 'app' }))) },
      { auth: bearer(signToken(rs256, claims({ aud: 'x' }))) },
    ])).toEqual(['allow', 'allow', '403 RBAC: access denied']);
  });

  it('without a JWT filter the metadata is absent, as in Envoy: the principal is false (not unknown)', () => {
    const deny = rbac({ action: 'DENY', policies: { p: { permissions: [{ any: true }], principals: [requestPrincipals([`${ISS}/alice`])] } } });
    expect(verdicts(deny, [{}], [])).toEqual(['allow']);
    // Istio's older istio_authn metadata stays unknown: a DENY on it denies
    const old = rbac({ action: 'DENY', policies: { p: { permissions: [{ any: true }], principals: [{ metadata: { filter: 'istio_authn', path: [{ key: 'request.auth.principal' }], value: { string_match: { exact: 'x' } } } }] } } });
    expect(verdicts(old, [{}], [])).toEqual(['403 RBAC: access denied']);
  });
});

describe('JWT compilation (Node)', () => {
  const base = (provider: Json, rules: Json[] = [{ match: { prefix: '/' }, requires: { provider_name: 'p' } }]) =>
    compileJwt({ name: 'jwt', typed_config: { '@type': JWT_AUTHN_TYPE, providers: { p: { issuer: ISS, local_jwks: { inline_string: jwksOf(rs256) }, ...provider } }, rules } });

  it('reads Istio\'s shape: providers, default locations, 60 s skew, payload metadata, split claims, CORS bypass', () => {
    const f = istio([{ issuer: ISS, jwks: jwksOf(rs256), audiences: ['https://app/'] }]);
    expect(f).toMatchObject({
      bypassCorsPreflight: true,
      requires: { t: 'any', n: [{ t: 'provider', p: 0 }], missing: true },
      providers: [{ name: 'origins-0', issuer: ISS, audiences: ['app'], headers: [{ h: 'authorization', p: 'Bearer ' }], params: ['access_token'], clockSkew: 60, payloadInMetadata: 'payload', spaceDelimitedClaims: ['permission', 'scope'] }],
    });
  });

  it('refuses what it would not enforce as Envoy does', () => {
    const refusals: Array<[Json, Json[] | undefined, RegExp]> = [
      [{ local_jwks: { filename: '/x' } }, undefined, /local_jwks from a filename/],
      [{ remote_jwks: { http_uri: { uri: 'file:///etc/passwd', cluster: 'c', timeout: '1s' } }, local_jwks: undefined }, undefined, /http\(s\) uri/],
      [{ subjects: { exact: 'x' } }, undefined, /subjects/],
      [{ require_expiration: true }, undefined, /require_expiration/],
      [{ failed_status_in_metadata: 'f' }, undefined, /failed_status_in_metadata/],
      [{ from_headers: [{ name: ':path' }] }, undefined, /pseudo-header/],
      [{}, [{ match: { prefix: '/api' }, requires: { provider_name: 'p' } }], /only prefix "\/"/],
      [{}, [{ match: { prefix: '/' }, requirement_name: 'r' }], /requirement_name/],
      [{}, [{ match: { prefix: '/' }, requires: { provider_name: 'nope' } }], /not configured/],
      [{}, [{ match: { prefix: '/' }, requires: { allow_missing: {} } }], /allow_missing outside requires_any/],
      [{}, [{ match: { prefix: '/' }, requires: { requires_any: { requirements: [] } } }], /empty requires_any/],
      [{}, [{ match: { prefix: '/' }, requires: { requires_all: {} } }], /empty requires_all/],
    ];
    for (const [provider, rules, why] of refusals) expect(() => base(provider, rules), String(why)).toThrow(why);
    expect(() => base({}, [{ match: { prefix: '/' }, requires: { provider_name: 'p' } }])).not.toThrow();
    let deep: Json = { provider_name: 'p' };
    for (let i = 0; i < 20; i++) deep = { requires_all: { requirements: [deep] } };
    expect(() => base({}, [{ match: { prefix: '/' }, requires: deep }])).toThrow(JwtCompileError);
  });

  it('no rule: nothing is verified; a rule without a requirement lets everything through', () => {
    expect(base({}, []).requires).toBeNull();
    expect(base({}, [{ match: { prefix: '/' } }]).requires).toEqual({ t: 'ok' });
  });

  it('audiences compare as jwt_verify_lib sanitises them', () => {
    expect(['http://a/', 'https://a', 'a/', 'a', ''].map(sanitizeAudience)).toEqual(['a', 'a', 'a', 'a', '']);
  });
});

describe('JWKS parsing (Node), as jwt_verify_lib reads a JWKS', () => {
  it('keeps usable keys, skips bad ones, reports the first key error when none is left', () => {
    expect(parseJwks(jwksOf(rs256, es256)).keys.map((k) => [k.kty, k.kid, k.alg])).toEqual([['RSA', 'rsa-1', 'RS256'], ['EC', 'ec-1', 'ES256']]);
    const mixed = JSON.stringify({ keys: [{ kty: 'RSA', n: 'AQAB' }, rs256.jwk, 7] });
    expect(parseJwks(mixed)).toMatchObject({ keys: [{ kid: 'rsa-1' }] });
    expect(parseJwks(JSON.stringify({ keys: [{ kty: 'RSA', n: 'AQAB' }, { kty: 'EC', alg: 'RS256' }] })).error).toBe(JWKS_STATUS.rsaMissingE);
    expect(parseJwks('{"keys":[]}').error).toBe(JWKS_STATUS.noValidKeys);
    expect(parseJwks('nope').error).toBe(JWKS_STATUS.parseError);
    expect(parseJwks('{}').error).toBe(JWKS_STATUS.noKeys);
    expect(parseJwks('{"keys":{}}').error).toBe(JWKS_STATUS.badKeys);
    expect(parseJwks(JSON.stringify({ keys: [{ ...rs256.jwk, e: 'BQ' }] })).error).toBe(JWKS_STATUS.rsaParse); // e = 5
    expect(parseJwks(JSON.stringify({ keys: [{ ...es256.jwk, crv: 'P-384' }] })).error).toBe(JWKS_STATUS.ecAlgNotCrv);
    expect(parseJwks(JSON.stringify({ keys: [{ ...es256.jwk, x: 'AAAA' }] })).error).toBe(JWKS_STATUS.ecParse);
    expect(parseJwks(JSON.stringify({ keys: [{ kty: 'oct', k: 'a+b' }] })).error).toBe(JWKS_STATUS.octBase64);
    expect(parseJwks(JSON.stringify({ keys: [{ kty: 'OKP', crv: 'Ed25519', x: 'AAAA' }] })).error).toBe(JWKS_STATUS.okpXLength);
    expect(parseJwks(JSON.stringify({ keys: [{ kty: 'foo' }] })).error).toBe(JWKS_STATUS.notImplementedKty);
  });

  it('is bounded: an oversized JWKS is refused, keys beyond the limit are dropped (their tokens fail)', () => {
    expect(parseJwks(' '.repeat(300 * 1024)).error).toBe(JWKS_STATUS.parseError);
    const many = JSON.stringify({ keys: Array.from({ length: 70 }, (_, i) => ({ kty: 'oct', k: 'AAAA', kid: String(i) })) });
    expect(parseJwks(many)).toMatchObject({ dropped: 38 });
    expect(parseJwks(many).keys).toHaveLength(32);
  });
});
