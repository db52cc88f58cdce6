import { generateKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import forge from 'node-forge';

const generateRsa = promisify(generateKeyPair);

export interface KeyAndCsr {
  /** the new private key; it stays in this process's memory (never written, never logged) */
  key: KeyObject;
  /** PKCS#8 PEM of `key`, the form APISIX and Node's TLS take */
  keyPem: string;
  csrPem: string;
}

/**
 * A fresh key pair and a CSR for `spiffeId`, as pilot-agent makes them for each certificate: an empty
 * subject and one URI SAN, marked critical because the subject is empty (RFC 5280 §4.2.1.6; Istio
 * does the same). RSA 2048 is Istio's default key (ECDSA only with ECC_SIGNATURE_ALGORITHM): node-forge,
 * the X.509 library the project already has, builds and signs CSRs for RSA keys only. Node's crypto
 * generates the key (natively, off the event loop); forge only builds and signs the request.
 */
export async function generateKeyAndCsr(spiffeId: string): Promise<KeyAndCsr> {
  const { privateKey } = await generateRsa('rsa', { modulusLength: 2048 });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const forgeKey = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e);
  csr.setSubject([]);
  csr.setAttributes([
    { name: 'extensionRequest', extensions: [{ name: 'subjectAltName', critical: true, altNames: [{ type: 6, value: spiffeId }] }] },
  ]);
  csr.sign(forgeKey, forge.md.sha256.create());
  return { key: privateKey, keyPem, csrPem: forge.pki.certificationRequestToPem(csr) };
}
