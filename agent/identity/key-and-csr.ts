import { generateKeyPair, sign, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import forge from 'node-forge';
import type { WorkloadKeyType } from './key-type.js';

const generateKeys = promisify(generateKeyPair);

export interface KeyAndCsr {
  /** the new private key; it stays in this process's memory (never written, never logged) */
  key: KeyObject;
  /** PKCS#8 PEM of `key`, the form APISIX and Node's TLS take */
  keyPem: string;
  csrPem: string;
}

/** ecdsa-with-SHA256 (RFC 5758 §3.2; forge's OID table has no ECDSA entries) */
const ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';

/**
 * A fresh key pair and a CSR for `spiffeId`, as pilot-agent makes them for each certificate: an empty
 * subject and one URI SAN, marked critical because the subject is empty (RFC 5280 §4.2.1.6; Istio
 * does the same). RSA 2048 is Istio's default key; ECDSA P-256 is pilot-agent's
 * ECC_SIGNATURE_ALGORITHM=ECDSA (key-type.ts). Node's crypto generates the key (natively, off the
 * event loop); node-forge, the project's X.509 library, builds the request.
 */
export async function generateKeyAndCsr(spiffeId: string, keyType: WorkloadKeyType = 'rsa'): Promise<KeyAndCsr> {
  return keyType === 'ecdsa' ? ecdsaKeyAndCsr(spiffeId) : rsaKeyAndCsr(spiffeId);
}

/** The request's subject and attributes as forge fills them in (extension encoding included). */
function csrTemplate(spiffeId: string): forge.pki.CertificateSigningRequest {
  const csr = forge.pki.createCertificationRequest();
  csr.setSubject([]);
  csr.setAttributes([
    { name: 'extensionRequest', extensions: [{ name: 'subjectAltName', critical: true, altNames: [{ type: 6, value: spiffeId }] }] },
  ]);
  return csr;
}

async function rsaKeyAndCsr(spiffeId: string): Promise<KeyAndCsr> {
  const { privateKey } = await generateKeys('rsa', { modulusLength: 2048 });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const forgeKey = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
  const csr = csrTemplate(spiffeId);
  csr.publicKey = forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e);
  csr.sign(forgeKey, forge.md.sha256.create());
  return { key: privateKey, keyPem, csrPem: forge.pki.certificationRequestToPem(csr) };
}

/**
 * forge reads and writes RSA keys only, so for P-256 the PKCS#10 structure (RFC 2986 §4) is put
 * together from forge's pieces: the subject and the extension request exactly as the RSA path encodes
 * them, the SubjectPublicKeyInfo as node:crypto exports it, and node:crypto's DER ECDSA signature.
 */
async function ecdsaKeyAndCsr(spiffeId: string): Promise<KeyAndCsr> {
  const { asn1 } = forge;
  const { privateKey, publicKey } = await generateKeys('ec', { namedCurve: 'prime256v1' });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const spki = asn1.fromDer(forge.util.createBuffer(publicKey.export({ type: 'spki', format: 'der' }).toString('binary')));
  const template = csrTemplate(spiffeId);
  const attributes = template.attributes as Array<{ type: string; value: forge.asn1.Asn1[] }>;
  const seq = (items: forge.asn1.Asn1[]) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, items);
  const oid = (dotted: string) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(dotted).getBytes());
  const info = seq([
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(0).getBytes()),
    forge.pki.distinguishedNameToAsn1(template.subject),
    spki,
    // attributes [0] IMPLICIT SET OF Attribute; extensionRequest's one value is the Extensions SEQUENCE
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, attributes.map((a) => seq([oid(a.type), asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SET, true, [seq(a.value)])]))),
  ]);
  const infoDer = asn1.toDer(info).getBytes();
  const signature = sign('sha256', Buffer.from(infoDer, 'binary'), privateKey); // DER Ecdsa-Sig-Value
  const request = seq([
    info,
    seq([oid(ECDSA_WITH_SHA256)]), // parameters absent for ECDSA (RFC 5758 §3.2)
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, `\0${signature.toString('binary')}`),
  ]);
  const csrPem = forge.pem.encode({ type: 'CERTIFICATE REQUEST', body: asn1.toDer(request).getBytes() });
  return { key: privateKey, keyPem, csrPem };
}
