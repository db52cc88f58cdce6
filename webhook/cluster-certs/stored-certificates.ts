import { X509Certificate, createPrivateKey } from 'node:crypto';

/**
 * What the webhook keeps in its Secret, and the pure decision of what to do about it. No I/O and
 * no clock of its own: the manager reads the Secret, asks `assessCertificates`, writes back.
 */

/** The PEM texts kept in the Secret. `previousCaCert` bridges a CA rotation in the caBundle. */
export interface StoredCertificates {
  caCert: string;
  caKey: string;
  servingCert: string;
  servingKey: string;
  previousCaCert?: string;
}

/** Secret data keys; `tls.crt`/`tls.key` as in a kubernetes.io/tls Secret so tools recognise them. */
export const SECRET_KEYS = {
  caCert: 'ca.crt',
  caKey: 'ca.key',
  servingCert: 'tls.crt',
  servingKey: 'tls.key',
  previousCaCert: 'ca-previous.crt',
} as const satisfies Record<keyof StoredCertificates, string>;

export interface CertificatePolicy {
  /** Names the serving certificate must carry: the Service's DNS names. */
  dnsNames: readonly string[];
  /** Lifetime of a new serving certificate. Short: it is renewed automatically. */
  servingValidityDays: number;
  /** Renew the serving certificate when less than this fraction of its lifetime is left. */
  renewWhenRemaining: number;
  caValidityDays: number;
  /** Start a new CA this long before the current one expires. */
  caRenewBeforeDays: number;
}

export const defaultCertificatePolicy = (dnsNames: readonly string[]): CertificatePolicy => ({
  dnsNames,
  servingValidityDays: 30,
  renewWhenRemaining: 1 / 3,
  caValidityDays: 3650,
  caRenewBeforeDays: 90,
});

export type Assessment =
  | { action: 'use' }
  | { action: 'renew-serving'; reason: string }
  | { action: 'new-ca'; reason: string };

const DAY_MS = 24 * 60 * 60 * 1000;

/** Reads the Secret's data (base64 values, as the API returns them); missing or empty keys → null. */
export function certificatesFromSecretData(data: Record<string, string> | undefined): Partial<StoredCertificates> {
  const out: Partial<StoredCertificates> = {};
  for (const [field, key] of Object.entries(SECRET_KEYS) as Array<[keyof StoredCertificates, string]>) {
    const value = data?.[key];
    if (value) out[field] = Buffer.from(value, 'base64').toString('utf8');
  }
  return out;
}

export function certificatesToSecretData(certs: StoredCertificates): Record<string, string> {
  const data: Record<string, string> = {};
  for (const [field, key] of Object.entries(SECRET_KEYS) as Array<[keyof StoredCertificates, string]>) {
    const value = certs[field];
    if (value) data[key] = Buffer.from(value, 'utf8').toString('base64');
  }
  return data;
}

/** The PEM bundle for the MutatingWebhookConfiguration: the CA, plus the previous one while valid. */
export function caBundleOf(certs: StoredCertificates, now: Date): string {
  const bundle = [certs.caCert.trim()];
  if (certs.previousCaCert && remainingMs(certs.previousCaCert, now) > 0) bundle.push(certs.previousCaCert.trim());
  return `${bundle.join('\n')}\n`;
}

/** Decides whether stored certificates can be served as they are, need a new leaf, or a new CA. */
export function assessCertificates(
  stored: Partial<StoredCertificates>,
  policy: CertificatePolicy,
  now: Date,
): Assessment {
  if (!stored.caCert || !stored.caKey) return { action: 'new-ca', reason: 'no CA stored yet' };
  let ca: X509Certificate;
  try {
    ca = new X509Certificate(stored.caCert);
    if (!ca.ca) return { action: 'new-ca', reason: 'stored CA certificate is not a CA' };
    if (!ca.checkPrivateKey(createPrivateKey(stored.caKey))) {
      return { action: 'new-ca', reason: 'stored CA key does not match the CA certificate' };
    }
  } catch (err) {
    return { action: 'new-ca', reason: `stored CA is unreadable: ${(err as Error).message}` };
  }
  const caLeft = Date.parse(ca.validTo) - now.getTime();
  if (caLeft < policy.caRenewBeforeDays * DAY_MS) {
    return { action: 'new-ca', reason: `CA expires ${ca.validTo}` };
  }

  if (!stored.servingCert || !stored.servingKey) return { action: 'renew-serving', reason: 'no serving certificate stored yet' };
  let serving: X509Certificate;
  try {
    serving = new X509Certificate(stored.servingCert);
    if (!serving.checkPrivateKey(createPrivateKey(stored.servingKey))) {
      return { action: 'renew-serving', reason: 'serving key does not match the serving certificate' };
    }
  } catch (err) {
    return { action: 'renew-serving', reason: `serving certificate is unreadable: ${(err as Error).message}` };
  }
  if (!serving.verify(ca.publicKey)) return { action: 'renew-serving', reason: 'serving certificate is not signed by the stored CA' };
  const missing = policy.dnsNames.filter((name) => serving.checkHost(name, { wildcards: false }) !== name);
  if (missing.length > 0) return { action: 'renew-serving', reason: `serving certificate lacks ${missing.join(', ')}` };
  const lifetime = Date.parse(serving.validTo) - Date.parse(serving.validFrom);
  const left = Date.parse(serving.validTo) - now.getTime();
  if (left < lifetime * policy.renewWhenRemaining) {
    return { action: 'renew-serving', reason: `serving certificate expires ${serving.validTo}` };
  }
  return { action: 'use' };
}

function remainingMs(pem: string, now: Date): number {
  try {
    return Date.parse(new X509Certificate(pem).validTo) - now.getTime();
  } catch {
    return -1;
  }
}
