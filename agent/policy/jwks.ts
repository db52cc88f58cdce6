import { createPublicKey, X509Certificate, type JsonWebKey, type KeyObject } from 'node:crypto';

/**
 * A JWKS as Envoy's jwt_verify_lib reads it (jwks.cc), turned into the keys APISIX verifies with:
 * each usable key as a SubjectPublicKeyInfo PEM (RSA, EC, Ed25519: lua-resty-openssl loads PEM),
 * or an HMAC secret (base64), with its `kid` and `alg` for Envoy's key selection. The rules follow
 * jwt_verify_lib: a key it would reject is skipped, and the JWKS is unusable (`error`, Envoy's
 * status text) when no key is left; the first key error is the one reported.
 */
export interface JwtKey {
  kty: 'RSA' | 'EC' | 'oct' | 'OKP';
  /** '' when the key names none (it is then tried for every token) */
  kid: string;
  /** '' when the key names none */
  alg: string;
  /** EC: P-256 | P-384 | P-521; OKP: Ed25519 */
  crv?: string;
  pem?: string;
  /** HMAC secret, base64 */
  k64?: string;
}

export interface ParsedJwks {
  keys: JwtKey[];
  /** Envoy's status text when the JWKS has no usable key */
  error?: string;
  /** keys beyond JWKS_LIMITS.keys, not used (tokens signed with them fail: closed, not open) */
  dropped: number;
}

/** What the agent reads of a JWKS; beyond them a JWKS is refused or truncated (real ones hold a handful of keys). */
export const JWKS_LIMITS = { bytes: 256 * 1024, keys: 32 };

/** jwt_verify_lib's status texts (status.cc) for the JWKS errors. */
export const JWKS_STATUS = {
  parseError: 'Jwks is an invalid JSON',
  noKeys: 'Jwks does not have [keys] field',
  badKeys: '[keys] in Jwks is not an array',
  noValidKeys: "Jwks doesn't have any valid public key",
  rsaParse: 'Jwks RSA [n] or [e] field is missing or has a parse error',
  ecXorYBase64: 'Jwks EC [x] or [y] field is an invalid Base64.',
  ecParse: 'Jwks EC [x] and [y] fields have a parse error.',
  octBase64: 'Jwks Oct key is an invalid Base64',
  okpXBase64: 'Jwks OKP [x] field is an invalid Base64.',
  okpXLength: 'Jwks OKP [x] field is wrong length.',
  missingKty: '[kty] is missing in [keys]',
  badKty: '[kty] is bad in [keys]',
  notImplementedKty: '[kty] is not supported in [keys]',
  rsaBadAlg: '[alg] is not started with [RS] or [PS] for an RSA key',
  rsaMissingN: '[n] field is missing for a RSA key',
  rsaBadN: '[n] field is not string for a RSA key',
  rsaMissingE: '[e] field is missing for a RSA key',
  rsaBadE: '[e] field is not string for a RSA key',
  ecBadAlg: '[alg] is not started with [ES] for an EC key',
  ecBadCrv: '[crv] field is not string for an EC key',
  ecUnsupported: '[crv] or [alg] field is not supported for an EC key',
  ecAlgNotCrv: '[crv] field specified is not compatible with [alg] for an EC key',
  ecMissingX: '[x] field is missing for an EC key',
  ecBadX: '[x] field is not string for an EC key',
  ecMissingY: '[y] field is missing for an EC key',
  ecBadY: '[y] field is not string for an EC key',
  hmacBadAlg: '[alg] does not start with [HS] for an HMAC key',
  hmacMissingK: '[k] field is missing for an HMAC key',
  hmacBadK: '[k] field is not string for an HMAC key',
  okpBadAlg: '[alg] is not [EdDSA] for an OKP key',
  okpMissingCrv: '[crv] field is missing for an OKP key',
  okpBadCrv: '[crv] field is not string for an OKP key',
  okpCrvUnsupported: '[crv] field is not supported for an OKP key',
  okpMissingX: '[x] field is missing for an OKP key',
  okpBadX: '[x] field is not string for an OKP key',
  x509Parse: 'X509 parse pubkey fails',
  x509Pubkey: 'X509 parse pubkey internal fails: get pubkey',
} as const;

type Json = Record<string, unknown>;
class KeyError extends Error {}

/** The JWKS text → its usable keys, or why none. Never throws on any input. */
export function parseJwks(text: string): ParsedJwks {
  if (Buffer.byteLength(text, 'utf8') > JWKS_LIMITS.bytes) return { keys: [], error: JWKS_STATUS.parseError, dropped: 0 };
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return { keys: [], error: JWKS_STATUS.parseError, dropped: 0 };
  }
  if (!isObject(doc)) return { keys: [], error: JWKS_STATUS.parseError, dropped: 0 };
  if (!('keys' in doc)) return isX509Form(doc) ? fromX509(doc) : { keys: [], error: JWKS_STATUS.noKeys, dropped: 0 };
  if (!Array.isArray(doc['keys'])) return { keys: [], error: JWKS_STATUS.badKeys, dropped: 0 };
  const keys: JwtKey[] = [];
  let firstError: string | undefined;
  let dropped = 0;
  for (const entry of doc['keys'] as unknown[]) {
    if (!isObject(entry)) continue; // jwt_verify_lib skips them silently
    try {
      const key = jwk(entry);
      if (keys.length < JWKS_LIMITS.keys) keys.push(key);
      else dropped++;
    } catch (err) {
      if (!(err instanceof KeyError)) throw err;
      firstError ??= err.message;
    }
  }
  if (keys.length === 0) return { keys, error: firstError ?? JWKS_STATUS.noValidKeys, dropped };
  return { keys, dropped };
}

function jwk(entry: Json): JwtKey {
  const kty = entry['kty'];
  if (kty === undefined) throw new KeyError(JWKS_STATUS.missingKty);
  if (typeof kty !== 'string') throw new KeyError(JWKS_STATUS.badKty);
  // a `kid` or `alg` of another type is ignored, as jwt_verify_lib's GetString leaves it empty
  const kid = typeof entry['kid'] === 'string' ? entry['kid'] : '';
  const alg = typeof entry['alg'] === 'string' ? entry['alg'] : '';
  switch (kty) {
    case 'RSA':
      return rsa(entry, kid, alg);
    case 'EC':
      return ec(entry, kid, alg);
    case 'oct':
      return oct(entry, kid, alg);
    case 'OKP':
      return okp(entry, kid, alg);
    default:
      throw new KeyError(JWKS_STATUS.notImplementedKty);
  }
}

function rsa(entry: Json, kid: string, alg: string): JwtKey {
  if (alg && !alg.startsWith('RS') && !alg.startsWith('PS')) throw new KeyError(JWKS_STATUS.rsaBadAlg);
  const n = stringField(entry, 'n', JWKS_STATUS.rsaMissingN, JWKS_STATUS.rsaBadN);
  const e = stringField(entry, 'e', JWKS_STATUS.rsaMissingE, JWKS_STATUS.rsaBadE);
  const nBytes = base64url(n);
  const eBytes = base64url(e);
  if (!nBytes || !eBytes) throw new KeyError(JWKS_STATUS.rsaParse);
  // jwt_verify_lib accepts only the usual public exponents
  const exponent = BigInt(`0x${eBytes.toString('hex') || '0'}`);
  if (exponent !== 3n && exponent !== 65537n) throw new KeyError(JWKS_STATUS.rsaParse);
  const pem = publicPem({ kty: 'RSA', n: nBytes.toString('base64url'), e: eBytes.toString('base64url') }, JWKS_STATUS.rsaParse);
  return { kty: 'RSA', kid, alg, pem };
}

const EC_CURVES: Record<string, string> = { ES256: 'P-256', ES384: 'P-384', ES512: 'P-521' };

function ec(entry: Json, kid: string, alg: string): JwtKey {
  if (alg && !alg.startsWith('ES')) throw new KeyError(JWKS_STATUS.ecBadAlg);
  const crvField = entry['crv'];
  if (crvField !== undefined && typeof crvField !== 'string') throw new KeyError(JWKS_STATUS.ecBadCrv);
  let crv = typeof crvField === 'string' ? crvField : '';
  if (alg && crv && EC_CURVES[alg] !== crv) throw new KeyError(JWKS_STATUS.ecAlgNotCrv);
  if (!alg && !crv) crv = 'P-256';
  const curve = EC_CURVES[alg] ?? (Object.values(EC_CURVES).includes(crv) ? crv : undefined);
  if (!curve) throw new KeyError(JWKS_STATUS.ecUnsupported);
  const x = stringField(entry, 'x', JWKS_STATUS.ecMissingX, JWKS_STATUS.ecBadX);
  const y = stringField(entry, 'y', JWKS_STATUS.ecMissingY, JWKS_STATUS.ecBadY);
  const xBytes = base64url(x);
  const yBytes = base64url(y);
  if (!xBytes || !yBytes) throw new KeyError(JWKS_STATUS.ecXorYBase64);
  const size = curve === 'P-521' ? 66 : curve === 'P-384' ? 48 : 32;
  if (xBytes.length > size || yBytes.length > size) throw new KeyError(JWKS_STATUS.ecParse);
  const pad = (b: Buffer) => Buffer.concat([Buffer.alloc(size - b.length), b]).toString('base64url');
  const pem = publicPem({ kty: 'EC', crv: curve, x: pad(xBytes), y: pad(yBytes) }, JWKS_STATUS.ecParse);
  return { kty: 'EC', kid, alg, crv: curve, pem };
}

function oct(entry: Json, kid: string, alg: string): JwtKey {
  if (alg && alg !== 'HS256' && alg !== 'HS384' && alg !== 'HS512') throw new KeyError(JWKS_STATUS.hmacBadAlg);
  const k = stringField(entry, 'k', JWKS_STATUS.hmacMissingK, JWKS_STATUS.hmacBadK);
  const bytes = base64url(k);
  if (!bytes) throw new KeyError(JWKS_STATUS.octBase64);
  return { kty: 'oct', kid, alg, k64: bytes.toString('base64') };
}

function okp(entry: Json, kid: string, alg: string): JwtKey {
  if (alg && alg !== 'EdDSA') throw new KeyError(JWKS_STATUS.okpBadAlg);
  const crv = stringField(entry, 'crv', JWKS_STATUS.okpMissingCrv, JWKS_STATUS.okpBadCrv);
  if (crv !== 'Ed25519') throw new KeyError(JWKS_STATUS.okpCrvUnsupported);
  const x = stringField(entry, 'x', JWKS_STATUS.okpMissingX, JWKS_STATUS.okpBadX);
  const bytes = base64url(x);
  if (!bytes) throw new KeyError(JWKS_STATUS.okpXBase64);
  if (bytes.length !== 32) throw new KeyError(JWKS_STATUS.okpXLength);
  const pem = publicPem({ kty: 'OKP', crv: 'Ed25519', x: bytes.toString('base64url') }, JWKS_STATUS.okpXBase64);
  return { kty: 'OKP', kid, alg, crv, pem };
}

/** Google's x509 form: `{kid: "-----BEGIN CERTIFICATE-----…"}`, RSA keys only (jwks.cc). */
const X509_PREFIX = '-----BEGIN CERTIFICATE-----';
const X509_SUFFIX = '-----END CERTIFICATE-----';

function isX509Form(doc: Json): boolean {
  const entries = Object.entries(doc);
  return entries.length > 0 && entries.every(([kid, v]) => kid !== '' && typeof v === 'string' && v.startsWith(X509_PREFIX) && v.trimEnd().endsWith(X509_SUFFIX));
}

function fromX509(doc: Json): ParsedJwks {
  const keys: JwtKey[] = [];
  let dropped = 0;
  for (const [kid, cert] of Object.entries(doc)) {
    let key: KeyObject;
    try {
      key = new X509Certificate(cert as string).publicKey;
    } catch {
      return { keys: [], error: JWKS_STATUS.x509Parse, dropped: 0 };
    }
    if (key.asymmetricKeyType !== 'rsa') return { keys: [], error: JWKS_STATUS.x509Pubkey, dropped: 0 };
    if (keys.length < JWKS_LIMITS.keys) keys.push({ kty: 'RSA', kid, alg: '', pem: key.export({ type: 'spki', format: 'pem' }) as string });
    else dropped++;
  }
  return { keys, dropped };
}

function stringField(entry: Json, name: string, missing: string, wrongType: string): string {
  const v = entry[name];
  if (v === undefined) throw new KeyError(missing);
  if (typeof v !== 'string') throw new KeyError(wrongType);
  return v;
}

/**
 * absl's WebSafeBase64Unescape: the URL-safe alphabet, padding optional; anything else (the
 * standard alphabet's `+` `/`, whitespace, a dangling character) is an error. undefined then.
 */
export function base64url(text: string): Buffer | undefined {
  const m = /^([A-Za-z0-9_-]*)(={0,2})$/.exec(text);
  if (!m) return undefined;
  const body = m[1]!;
  if (body.length % 4 === 1) return undefined;
  if (m[2] && (body.length + m[2].length) % 4 !== 0) return undefined;
  return Buffer.from(body, 'base64url');
}

function publicPem(jwk: JsonWebKey, error: string): string {
  try {
    return createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string;
  } catch {
    throw new KeyError(error);
  }
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
