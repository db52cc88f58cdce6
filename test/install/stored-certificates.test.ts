import { X509Certificate } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { generateCa, generateServingCert, type CertificateAuthority } from '../../webhook/certificates/generate.js';
import {
  assessCertificates,
  caBundleOf,
  certificatesFromSecretData,
  certificatesToSecretData,
  defaultCertificatePolicy,
  type StoredCertificates,
} from '../../webhook/cluster-certs/stored-certificates.js';

const DAY = 24 * 60 * 60 * 1000;
const names = ['apisix-mesh-webhook', 'apisix-mesh-webhook.apisix-mesh-system', 'apisix-mesh-webhook.apisix-mesh-system.svc'];
const policy = defaultCertificatePolicy(names);
const t0 = new Date('2026-01-01T00:00:00Z');
const at = (days: number) => new Date(t0.getTime() + days * DAY);

describe('assessCertificates: what to do with what the Secret holds', () => {
  let ca: CertificateAuthority;
  let otherCa: CertificateAuthority;
  let good: StoredCertificates;

  beforeAll(() => {
    ca = generateCa({ validity: { days: policy.caValidityDays, now: t0 } });
    otherCa = generateCa({ validity: { days: policy.caValidityDays, now: t0 } });
    const serving = generateServingCert(ca, names, { days: policy.servingValidityDays, now: t0 });
    good = { caCert: ca.certPem, caKey: ca.keyPem, servingCert: serving.certPem, servingKey: serving.keyPem };
  });

  it('uses a valid CA and serving certificate as they are', () => {
    expect(assessCertificates(good, policy, at(1))).toEqual({ action: 'use' });
  });

  it('starts a CA when there is none, the CA is unreadable, or its key does not match', () => {
    expect(assessCertificates({}, policy, t0).action).toBe('new-ca');
    expect(assessCertificates({ ...good, caCert: 'not a pem' }, policy, t0).action).toBe('new-ca');
    expect(assessCertificates({ ...good, caKey: otherCa.keyPem }, policy, t0)).toEqual({
      action: 'new-ca',
      reason: 'stored CA key does not match the CA certificate',
    });
    // A serving certificate is not a CA.
    expect(assessCertificates({ ...good, caCert: good.servingCert, caKey: good.servingKey }, policy, t0).action).toBe('new-ca');
  });

  it('starts a new CA before the old one expires', () => {
    expect(assessCertificates(good, policy, at(policy.caValidityDays - policy.caRenewBeforeDays - 1)).action).not.toBe('new-ca');
    expect(assessCertificates(good, policy, at(policy.caValidityDays - policy.caRenewBeforeDays + 1)).action).toBe('new-ca');
  });

  it('issues a new serving certificate when it is missing, foreign, mismatched or for other names', () => {
    expect(assessCertificates({ caCert: good.caCert, caKey: good.caKey }, policy, t0).action).toBe('renew-serving');
    const foreign = generateServingCert(otherCa, names, { days: 30, now: t0 });
    expect(assessCertificates({ ...good, servingCert: foreign.certPem, servingKey: foreign.keyPem }, policy, t0)).toEqual({
      action: 'renew-serving',
      reason: 'serving certificate is not signed by the stored CA',
    });
    expect(assessCertificates({ ...good, servingKey: foreign.keyPem }, policy, t0).action).toBe('renew-serving');
    const elsewhere = generateServingCert(ca, ['other.example'], { days: 30, now: t0 });
    const assessed = assessCertificates({ ...good, servingCert: elsewhere.certPem, servingKey: elsewhere.keyPem }, policy, t0);
    expect(assessed).toEqual({ action: 'renew-serving', reason: `serving certificate lacks ${names.join(', ')}` });
  });

  it('renews the serving certificate with a third of its lifetime left', () => {
    const lifetime = policy.servingValidityDays;
    expect(assessCertificates(good, policy, at(lifetime * (2 / 3) - 1)).action).toBe('use');
    expect(assessCertificates(good, policy, at(lifetime * (2 / 3) + 1)).action).toBe('renew-serving');
    expect(assessCertificates(good, policy, at(lifetime + 1)).action).toBe('renew-serving');
  });

  it('round-trips through Secret data (base64, the keys of a TLS Secret plus the CA)', () => {
    const data = certificatesToSecretData(good);
    expect(Object.keys(data).sort()).toEqual(['ca.crt', 'ca.key', 'tls.crt', 'tls.key']);
    expect(Buffer.from(data['tls.crt']!, 'base64').toString()).toBe(good.servingCert);
    expect(certificatesFromSecretData(data)).toEqual(good);
    expect(certificatesFromSecretData(undefined)).toEqual({});
    expect(certificatesFromSecretData({ 'ca.crt': '' })).toEqual({});
  });

  it('bundles the previous CA while it is still valid, so a rotation never breaks trust', () => {
    const withPrevious = { ...good, caCert: otherCa.certPem, previousCaCert: ca.certPem };
    const bundle = caBundleOf(withPrevious, at(1));
    const pems = bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!;
    expect(pems.map((p) => new X509Certificate(p).fingerprint256)).toEqual([
      new X509Certificate(otherCa.certPem).fingerprint256,
      new X509Certificate(ca.certPem).fingerprint256,
    ]);
    expect(caBundleOf(withPrevious, at(policy.caValidityDays + 1)).match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
  });
});
