import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** Istio's CA service (istio-ca.proto), loaded once. */
let service: grpc.ServiceClientConstructor | undefined;

function caService(): grpc.ServiceClientConstructor {
  if (!service) {
    const definition = protoLoader.loadSync(join(dirname(fileURLToPath(import.meta.url)), 'istio-ca.proto'), { keepCase: true, longs: String, defaults: true });
    const pkg = grpc.loadPackageDefinition(definition) as unknown as { istio: { v1: { auth: { IstioCertificateService: grpc.ServiceClientConstructor } } } };
    service = pkg.istio.v1.auth.IstioCertificateService;
  }
  return service;
}

export interface CaClientOptions {
  /** host:port of the CA (istiod: 15012) */
  address: string;
  /** TLS verified against the mesh root, with the token and ClusterID per call (see istiod-credentials.ts) */
  credentials: grpc.ChannelCredentials;
  channelOptions?: grpc.ChannelOptions;
  /** deadline of one CreateCertificate call */
  timeoutMs?: number;
}

/** A certificate chain is a few KiB; istiod's answers are bounded well below this. */
const MAX_RESPONSE_BYTES = 1024 * 1024;

export class CaCallError extends Error {}

/** The client side of `istio.v1.auth.IstioCertificateService/CreateCertificate`. */
export class IstioCaClient {
  private readonly client: grpc.Client & Record<string, unknown>;
  private readonly timeoutMs: number;
  private readonly calls = new Set<grpc.ClientUnaryCall>();

  constructor(private readonly options: CaClientOptions) {
    const Service = caService();
    this.client = new Service(options.address, options.credentials, {
      'grpc.max_receive_message_length': MAX_RESPONSE_BYTES,
      ...options.channelOptions,
    }) as grpc.Client & Record<string, unknown>;
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  /** Sends the CSR; resolves with istiod's `cert_chain` (unchecked: see issued-chain.ts). */
  createCertificate(csrPem: string, validitySeconds: number): Promise<string[]> {
    const request = { csr: csrPem, validity_duration: String(Math.round(validitySeconds)) };
    return new Promise((resolve, reject) => {
      const method = this.client['CreateCertificate'] as (
        req: unknown,
        options: grpc.CallOptions,
        callback: (err: grpc.ServiceError | null, res?: { cert_chain?: unknown }) => void,
      ) => grpc.ClientUnaryCall;
      const call = method.call(this.client, request, { deadline: Date.now() + this.timeoutMs }, (err, res) => {
        this.calls.delete(call);
        if (err) {
          const code = grpc.status[err.code] ?? String(err.code);
          reject(new CaCallError(`CA ${this.options.address}: ${code}: ${(err.details || err.message).slice(0, 200)}`));
          return;
        }
        const chain = res?.cert_chain;
        if (!Array.isArray(chain) || !chain.every((c): c is string => typeof c === 'string')) {
          reject(new CaCallError(`CA ${this.options.address}: the answer has no certificate chain`));
          return;
        }
        resolve(chain);
      });
      this.calls.add(call);
    });
  }

  /** Cancels a call in flight and closes the channel. */
  close(): void {
    for (const call of this.calls) call.cancel();
    this.calls.clear();
    this.client.close();
  }
}
