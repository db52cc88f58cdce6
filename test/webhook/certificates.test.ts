import { X509Certificate, createPrivateKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generateCa, generateServingCert } from '../../webhook/certificates/generate.js';

describe('generateCa', () => {
  const ca = generateCa({ commonName: 'test-ca', validity: { days: 10, now: new Date('2030-01-01T00:00:00Z') } });
  const cert = new X509Certificate(ca.certPem);

  it('is a self-signed CA certificate with its key', () => {
    expect(cert.ca).toBe(true);
    expect(cert.subject).toContain('CN=test-ca');
    expect(cert.issuer).toBe(cert.subject);
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(cert.checkPrivateKey(createPrivateKey(ca.keyPem))).toBe(true);
  });

  it('is valid from a little before `now` for the given days', () => {
    expect(new Date(cert.validFrom).getTime()).toBe(new Date('2029-12-31T23:55:00Z').getTime());
    expect(new Date(cert.validTo).getTime()).toBe(new Date('2030-01-11T00:00:00Z').getTime());
  });

  it('uses a fresh key and serial each time', () => {
    const other = new X509Certificate(generateCa().certPem);
    expect(other.serialNumber).not.toBe(cert.serialNumber);
    expect(other.fingerprint256).not.toBe(cert.fingerprint256);
  });
});

describe('generateServingCert', () => {
  const ca = generateCa();
  const caCert = new X509Certificate(ca.certPem);
  const serving = generateServingCert(ca, ['apisix-mesh-webhook.apisix-mesh.svc', 'localhost', '127.0.0.1', '::1'], { days: 30 });
  const cert = new X509Certificate(serving.certPem);

  it('is signed by the CA and is not a CA itself', () => {
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.checkPrivateKey(createPrivateKey(serving.keyPem))).toBe(true);
  });

  it('names every host as a DNS SAN and every address as an IP SAN, for server authentication', () => {
    expect(cert.subjectAltName).toBe(
      'DNS:apisix-mesh-webhook.apisix-mesh.svc, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1',
    );
    expect(cert.checkHost('apisix-mesh-webhook.apisix-mesh.svc')).toBe('apisix-mesh-webhook.apisix-mesh.svc');
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkHost('other.svc')).toBeUndefined();
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(cert.subject).toBe('CN=apisix-mesh-webhook.apisix-mesh.svc');
  });

  it('refuses no names and a non-positive validity', () => {
    expect(() => generateServingCert(ca, [], { days: 1 })).toThrow(/at least one/);
    expect(() => generateServingCert(ca, ['x'], { days: 0 })).toThrow(/positive number of days/);
  });
});
