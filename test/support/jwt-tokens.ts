// JSON Web Tokens for tests, signed with node:crypto: keys of every algorithm Envoy verifies, their
// JWKS, and tokens with any header and payload (so that tests can forge, expire and break them).
import { createHmac, generateKeyPairSync, randomBytes, sign, constants, type KeyObject } from 'node:crypto';

export type JwtAlg = 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512' | 'ES256' | 'ES384' | 'ES512' | 'HS256' | 'HS384' | 'HS512' | 'EdDSA';

export interface SigningKey {
  alg: JwtAlg;
  kid: string;
  /** the public JWK (the secret one for HMAC), with kid and alg */
  jwk: Record<string, unknown>;
  sign(data: Buffer): Buffer;
}

const CURVES: Record<string, string> = { ES256: 'P-256', ES384: 'P-384', ES512: 'P-521' };

function digest(alg: JwtAlg): string {
  return `sha${alg.slice(2)}`;
}

/** A fresh key for `alg`; `withAlg: false` leaves `alg` out of the JWK (Envoy then tries it for any token). */
export function signingKey(alg: JwtAlg, kid: string, options: { withAlg?: boolean } = {}): SigningKey {
  const withAlg = options.withAlg ?? true;
  const meta = { kid, ...(withAlg ? { alg } : {}) };
  if (alg.startsWith('HS')) {
    const secret = randomBytes(32);
    return { alg, kid, jwk: { kty: 'oct', k: secret.toString('base64url'), ...meta }, sign: (data) => createHmac(digest(alg), secret).update(data).digest() };
  }
  let privateKey: KeyObject;
  let publicKey: KeyObject;
  if (alg === 'EdDSA') ({ privateKey, publicKey } = generateKeyPairSync('ed25519'));
  else if (alg.startsWith('ES')) ({ privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: CURVES[alg]! }));
  else ({ privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 }));
  const jwk = { ...publicKey.export({ format: 'jwk' }), ...meta };
  const signer = (data: Buffer): Buffer => {
    if (alg === 'EdDSA') return sign(null, data, privateKey);
    if (alg.startsWith('ES')) return sign(digest(alg), data, { key: privateKey, dsaEncoding: 'ieee-p1363' });
    if (alg.startsWith('PS')) return sign(digest(alg), data, { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST });
    return sign(digest(alg), data, privateKey);
  };
  return { alg, kid, jwk, sign: signer };
}

export function jwksOf(...keys: SigningKey[]): string {
  return JSON.stringify({ keys: keys.map((k) => k.jwk) });
}

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** A signed token; `header` overrides the default `{alg, typ, kid}` fields. */
export function signToken(key: SigningKey, payload: Record<string, unknown>, header: Record<string, unknown> = {}): string {
  const signed = `${b64({ alg: key.alg, typ: 'JWT', kid: key.kid, ...header })}.${b64(payload)}`;
  return `${signed}.${key.sign(Buffer.from(signed)).toString('base64url')}`;
}

/** A token from raw sections (any text, base64url-encoded as given), for malformed cases. */
export function rawToken(header: unknown, payload: unknown, signature = 'c2ln'): string {
  return `${b64(header)}.${b64(payload)}.${signature}`;
}

export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}
