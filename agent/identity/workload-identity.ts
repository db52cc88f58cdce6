import { jitteredBackoff, type Backoff } from '../backoff.js';
import { generateKeyAndCsr } from './key-and-csr.js';
import type { WorkloadKeyType } from './key-type.js';
import { checkIssuedChain } from './issued-chain.js';
import type { IdentityMetrics } from './identity-metrics.js';
import { renewalDelayMs } from './renewal-time.js';

/** The pod's mesh identity as TLS endpoints use it. Key material lives in this object only. */
export interface WorkloadCertificate {
  /** leaf + intermediates, leaf first, without the root (what a TLS endpoint presents) */
  certChainPem: string;
  /** PKCS#8 PEM private key of the leaf */
  keyPem: string;
  /** the mesh root(s) that issued the chain, to verify peers against */
  rootPem: string;
  spiffeId: string;
  notAfter: Date;
}

/** What the identity needs from a CA (IstioCaClient). */
export interface CertificateAuthority {
  createCertificate(csrPem: string, validitySeconds: number): Promise<string[]>;
  close(): void;
}

export interface IdentityLogger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export interface WorkloadIdentityOptions {
  spiffeId: string;
  ca: CertificateAuthority;
  /** the validity asked for (istiod may shorten it; renewal follows what it grants) */
  certTtlMs: number;
  /** the key of every certificate (default rsa, as Istio's) */
  keyType?: WorkloadKeyType;
  metrics: IdentityMetrics;
  logger: IdentityLogger;
  /** waits between failed requests (default 1 s doubling up to 60 s, jittered) */
  retry?: Backoff;
}

export type CertificateListener = (certificate: WorkloadCertificate) => void;

/**
 * The workload certificate: a new key and CSR per certificate, sent to the CA; renewed at half its
 * lifetime (renewal-time.ts); after a failure retried with back-off while the current certificate
 * stays served. Consumers read `current()` and hear of every new certificate through `onChange`.
 */
export class WorkloadIdentity {
  private certificate: WorkloadCertificate | undefined;
  private readonly listeners = new Set<CertificateListener>();
  private timer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private stopped = true;
  /** stop() closed the CA client: the identity cannot start again */
  private closed = false;

  constructor(private readonly options: WorkloadIdentityOptions) {}

  get spiffeId(): string {
    return this.options.spiffeId;
  }

  /** The certificate being served, or undefined until the CA has issued the first. */
  current(): WorkloadCertificate | undefined {
    return this.certificate;
  }

  /** True once a certificate has arrived. */
  isReady(): boolean {
    return this.certificate !== undefined;
  }

  /** Calls `listener` with every new certificate; returns a function that unsubscribes it. */
  onChange(listener: CertificateListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  start(): void {
    if (!this.stopped || this.closed) return;
    this.stopped = false;
    void this.request();
  }

  stop(): void {
    this.stopped = true;
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.expiryTimer);
    this.options.ca.close();
  }

  private async request(): Promise<void> {
    this.timer = undefined;
    const { spiffeId, logger, metrics } = this.options;
    let certificate: WorkloadCertificate;
    try {
      const { key, keyPem, csrPem } = await generateKeyAndCsr(spiffeId, this.options.keyType ?? 'rsa');
      const chain = await this.options.ca.createCertificate(csrPem, Math.round(this.options.certTtlMs / 1000));
      if (this.stopped) return;
      const issued = checkIssuedChain(chain, { spiffeId, key }, Date.now());
      certificate = { certChainPem: issued.certChainPem, keyPem, rootPem: issued.rootPem, spiffeId, notAfter: issued.notAfter };
    } catch (err) {
      if (this.stopped) return;
      metrics.failures.inc();
      const delay = jitteredBackoff(this.failures++, this.options.retry ?? { initialMs: 1000, maxMs: 60_000 });
      const meanwhile = this.certificate
        ? `the current certificate (valid until ${this.certificate.notAfter.toISOString()}) stays served`
        : 'no workload certificate yet';
      logger.warn(`workload certificate for ${spiffeId} not issued: ${(err as Error).message.slice(0, 300)}; retrying in ${delay} ms, ${meanwhile}`);
      this.timer = setTimeout(() => void this.request(), delay);
      return;
    }
    const receivedAt = Date.now();
    this.failures = 0;
    this.certificate = certificate;
    metrics.issued.inc();
    metrics.expiry.set(certificate.notAfter.getTime() / 1000);
    const delay = renewalDelayMs(receivedAt, certificate.notAfter.getTime());
    logger.info(`workload certificate for ${spiffeId} issued (${this.options.keyType ?? 'rsa'} key), valid until ${certificate.notAfter.toISOString()}; renewal in ${Math.round(delay / 1000)} s`);
    this.timer = setTimeout(() => void this.request(), delay);
    this.watchExpiry(certificate);
    for (const listener of this.listeners) {
      try {
        listener(certificate);
      } catch (err) {
        logger.error(`a consumer of the workload certificate failed: ${(err as Error).message.slice(0, 300)}`);
      }
    }
  }

  /** Says so loudly if renewal keeps failing until the certificate expires (peers then refuse it). */
  private watchExpiry(certificate: WorkloadCertificate): void {
    clearTimeout(this.expiryTimer);
    // setTimeout holds at most 2^31-1 ms (~24.8 days); a longer certificate is renewed long before
    const wait = certificate.notAfter.getTime() - Date.now();
    if (wait > 2 ** 31 - 1) return;
    this.expiryTimer = setTimeout(() => {
      if (!this.stopped && this.certificate === certificate) {
        this.options.logger.error(`the workload certificate for ${certificate.spiffeId} expired at ${certificate.notAfter.toISOString()} and could not be renewed; mesh peers will refuse it`);
      }
    }, wait);
    this.expiryTimer.unref();
  }
}
