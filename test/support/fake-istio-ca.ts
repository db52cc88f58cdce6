import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import forge from 'node-forge';
import { issueLeafPem, type TestPki } from './test-pki.js';

/** The proto the agent calls: the fake serves the very same contract. */
const PROTO = fileURLToPath(new URL('../../agent/identity/istio-ca.proto', import.meta.url));

export interface CaRequestRecord {
  /** when the request arrived (ms since the epoch) */
  at: number;
  authorization: string;
  clusterId: string;
  /** the CSR's SAN entries as `type:value` (6 = URI) */
  csrSans: string[];
  validitySeconds: number;
  /** `issued`, or the gRPC status name it was refused with */
  outcome: string;
  /** NotAfter of the certificate issued (ms) */
  notAfter?: number;
}

/**
 * A fake Istio CA for tests: `istio.v1.auth.IstioCertificateService/CreateCertificate` over TLS on
 * loopback, with istiod's checks where a client can tell: the bearer token must be the expected one
 * (else Unauthenticated), the CSR must verify and carry exactly the expected SPIFFE URI SAN (istiod
 * signs the token's identity; a different SAN here means the agent asked for the wrong identity).
 * Certificates are signed by the intermediate, back-dated by two minutes as istiod does (issueLeaf),
 * and the answer is istiod's: one certificate per element, leaf, intermediate, root.
 */
export class FakeIstioCa {
  private server: grpc.Server | undefined;
  readonly requests: CaRequestRecord[] = [];
  /** the token callers must present (`authorization: Bearer <token>`) */
  requiredToken: string | undefined;
  /** the one SAN the CSR must carry */
  expectedSpiffeId: string | undefined;
  /** certificate lifetime in seconds instead of the requested one (short lifetimes on demand) */
  lifetimeSeconds: number | undefined;
  /** sign this URI SAN instead of the CSR's (a CA issuing another identity) */
  issueSpiffeId: string | undefined;
  /** while set, every call fails with this status */
  failure: { code: grpc.status; details: string } | undefined;
  port = 0;

  constructor(private readonly pki: TestPki) {}

  get issued(): CaRequestRecord[] {
    return this.requests.filter((r) => r.outcome === 'issued');
  }

  /** Listens on 127.0.0.1:`port` (0: any), or on `unix:<path>`, with istiod's serving certificate. */
  async start(port: number | string = 0): Promise<number> {
    const definition = protoLoader.loadSync(PROTO, { keepCase: true, longs: String, defaults: true });
    const pkg = grpc.loadPackageDefinition(definition) as unknown as { istio: { v1: { auth: { IstioCertificateService: grpc.ServiceClientConstructor } } } };
    const server = new grpc.Server();
    server.addService(pkg.istio.v1.auth.IstioCertificateService.service, {
      CreateCertificate: (call: grpc.ServerUnaryCall<{ csr: string; validity_duration: string }, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        try {
          callback(null, { cert_chain: this.sign(call) });
        } catch (err) {
          const e = err as { code?: grpc.status; details?: string };
          callback({ code: e.code ?? grpc.status.INTERNAL, details: e.details ?? String(err) });
        }
      },
    });
    const credentials = grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(this.pki.istiodKeyPem), cert_chain: Buffer.from(this.pki.istiodCertChainPem) }], false);
    this.port = await new Promise<number>((resolve, reject) => server.bindAsync(typeof port === 'string' ? port : `127.0.0.1:${port}`, credentials, (err, p) => (err ? reject(err) : resolve(p))));
    this.server = server;
    return this.port;
  }

  async stop(): Promise<void> {
    this.server?.forceShutdown();
    this.server = undefined;
  }

  private sign(call: grpc.ServerUnaryCall<{ csr: string; validity_duration: string }, unknown>): string[] {
    const record: CaRequestRecord = {
      at: Date.now(),
      authorization: String(call.metadata.get('authorization')[0] ?? ''),
      clusterId: String(call.metadata.get('clusterid')[0] ?? ''),
      csrSans: [],
      validitySeconds: Number(call.request.validity_duration),
      outcome: 'issued',
    };
    this.requests.push(record);
    const refuse = (code: grpc.status, details: string): never => {
      record.outcome = grpc.status[code];
      throw { code, details };
    };
    if (this.failure) refuse(this.failure.code, this.failure.details);
    if (this.requiredToken !== undefined && record.authorization !== `Bearer ${this.requiredToken}`) refuse(grpc.status.UNAUTHENTICATED, 'request authenticate failure');
    let csr: ReturnType<typeof readCsr>;
    try {
      csr = readCsr(call.request.csr);
    } catch {
      return refuse(grpc.status.INVALID_ARGUMENT, 'CSR signing error (the CSR is not valid)');
    }
    if (!csr.verified) refuse(grpc.status.INVALID_ARGUMENT, 'CSR signing error (the CSR signature does not verify)');
    record.csrSans = csr.sans;
    if (this.expectedSpiffeId !== undefined && (record.csrSans.length !== 1 || record.csrSans[0] !== `6:${this.expectedSpiffeId}`)) {
      refuse(grpc.status.INVALID_ARGUMENT, `CSR signing error (SANs ${record.csrSans.join(',')} are not the caller's identity)`);
    }
    if (record.csrSans.length === 0) refuse(grpc.status.INVALID_ARGUMENT, 'CSR signing error (no SAN)');
    const lifetime = this.lifetimeSeconds ?? record.validitySeconds;
    const leaf = issueLeafPem(this.pki.intermediate, csr.publicKey, this.issueSpiffeId ?? record.csrSans[0]!.slice(2), lifetime);
    record.notAfter = leaf.notAfter.getTime();
    return [leaf.pem, this.pki.intermediate.pem, this.pki.root.pem];
  }
}

/** forge's reader of CSR attributes, which its type definitions leave out */
interface ForgeCsrAttributes {
  CRIAttributesAsArray(attributes: forge.asn1.Asn1[]): unknown[];
}

/**
 * A PKCS#10 request read with forge's ASN.1 parser, for any key node:crypto reads (forge's own CSR
 * reader takes RSA keys only): the signature checked with node:crypto over the
 * CertificationRequestInfo, the SAN entries from the extension request as forge decodes them.
 */
export function readCsr(pem: string): { publicKey: KeyObject; verified: boolean; sans: string[] } {
  const { asn1 } = forge;
  // bit strings stay bytes: forge would otherwise parse the DER ECDSA signature as nested ASN.1
  const fromDer = asn1.fromDer as unknown as (der: string, options: { decodeBitStrings: boolean }) => forge.asn1.Asn1; // the typings know only `strict`
  const request = fromDer(forge.pem.decode(pem)[0]!.body, { decodeBitStrings: false });
  const [info, , signature] = request.value as forge.asn1.Asn1[];
  const infoFields = info!.value as forge.asn1.Asn1[];
  const publicKey = createPublicKey({ key: Buffer.from(asn1.toDer(infoFields[2]!).getBytes(), 'binary'), format: 'der', type: 'spki' });
  const signatureBytes = Buffer.from((signature!.value as string).slice(1), 'binary'); // BIT STRING: unused-bits octet first
  const verified = verify('sha256', Buffer.from(asn1.toDer(info!).getBytes(), 'binary'), publicKey, signatureBytes);
  const attributes = (forge.pki as unknown as ForgeCsrAttributes).CRIAttributesAsArray((infoFields[3]?.value ?? []) as forge.asn1.Asn1[]) as Array<{ name?: string; extensions?: Array<{ name: string; altNames?: Array<{ type: number; value: string }> }> }>;
  const extensions = attributes.find((a) => a.name === 'extensionRequest')?.extensions ?? [];
  const sans = extensions.filter((e) => e.name === 'subjectAltName').flatMap((e) => (e.altNames ?? []).map((n) => `${n.type}:${n.value}`));
  return { publicKey, verified, sans };
}
