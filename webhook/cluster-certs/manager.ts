import { X509Certificate } from 'node:crypto';
import { generateCa, generateServingCert } from '../certificates/generate.js';
import { ClusterApiError, WriteConflict, type CertificateSecretStore, type WebhookConfigurationClient } from './kube-api.js';
import {
  assessCertificates,
  caBundleOf,
  certificatesFromSecretData,
  certificatesToSecretData,
  type CertificatePolicy,
  type StoredCertificates,
} from './stored-certificates.js';

/**
 * Keeps the webhook's CA and serving certificate in its Secret and the CA in its
 * MutatingWebhookConfiguration. Every replica runs one; they agree through the Secret's
 * resourceVersion: whoever writes first wins, the others get 409, read again, and use what won.
 */

/** pino's shape (Fastify's logger), so the webhook passes its own. */
export interface CertificateLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface ServingCertificate {
  cert: string;
  key: string;
}

/** Told what happens, for metrics (see metrics.ts); every method optional. */
export interface CertificateObserver {
  checked?(ok: boolean): void;
  issued?(what: 'ca-and-serving' | 'serving'): void;
}

export interface ClusterCertificateManagerOptions {
  secret: CertificateSecretStore;
  webhookConfiguration: WebhookConfigurationClient;
  policy: CertificatePolicy;
  log: CertificateLog;
  observer?: CertificateObserver;
  now?: () => Date;
  /** Read-decide-write rounds before giving up (each lost race costs one). */
  maxAttempts?: number;
}

export class ClusterCertificateManager {
  private readonly now: () => Date;
  private current: StoredCertificates | undefined;
  private timer: NodeJS.Timeout | undefined;
  private renewing = false;

  constructor(private readonly options: ClusterCertificateManagerOptions) {
    this.now = options.now ?? (() => new Date());
  }

  /**
   * Loads the certificates from the Secret, creating or renewing them there as needed, and makes
   * sure the webhook configuration trusts the CA. Returns what to serve.
   */
  async ensure(): Promise<ServingCertificate> {
    try {
      const serving = await this.ensureOnce();
      this.options.observer?.checked?.(true);
      return serving;
    } catch (err) {
      this.options.observer?.checked?.(false);
      throw err;
    }
  }

  /** The CA bundle the webhook configuration trusts; undefined before the first successful `ensure`. */
  caBundle(): string | undefined {
    return this.current ? caBundleOf(this.current, this.now()) : undefined;
  }

  /** When the certificate being served expires; undefined before the first successful `ensure`. */
  servingNotAfter(): Date | undefined {
    return this.current ? new Date(notAfterOf(this.current.servingCert)) : undefined;
  }

  private async ensureOnce(): Promise<ServingCertificate> {
    const certs = await this.converge();
    const changed = await this.options.webhookConfiguration.ensureCaBundle(caBundleOf(certs, this.now()));
    if (changed) this.options.log.info({}, 'patched the caBundle of the MutatingWebhookConfiguration');
    this.current = certs;
    return { cert: certs.servingCert, key: certs.servingKey };
  }

  /**
   * Checks every `intervalMs` (hourly by default: renewal starts with a third of the lifetime left,
   * days ahead) and hands a new serving certificate to `serve` when one was issued — by this
   * replica or another. A failed check (or a `serve` that throws) is logged and retried at the next
   * interval; the current certificate stays in use meanwhile. Assumes the caller already serves
   * what the last `ensure` returned.
   */
  startRenewal(serve: (cert: ServingCertificate) => void, intervalMs = 60 * 60 * 1000): void {
    let served = this.current?.servingCert;
    const tick = async () => {
      try {
        const next = await this.ensure();
        if (next.cert !== served) {
          serve(next);
          served = next.cert;
          this.options.log.info({ notAfter: notAfterOf(next.cert) }, 'now serving the renewed certificate');
        }
      } catch (err) {
        this.options.log.error({ err: (err as Error).message }, 'certificate check failed; keeping the current certificate');
      }
      if (this.renewing) this.schedule(tick, intervalMs);
    };
    this.renewing = true;
    this.schedule(tick, intervalMs);
  }

  stop(): void {
    this.renewing = false;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(tick: () => Promise<void>, intervalMs: number): void {
    this.timer = setTimeout(() => void tick(), intervalMs);
    this.timer.unref();
  }

  private async converge(): Promise<StoredCertificates> {
    const { secret, policy, log } = this.options;
    const maxAttempts = this.options.maxAttempts ?? 8;
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      const stored = await secret.read();
      const found = certificatesFromSecretData(stored?.data);
      const now = this.now();
      const assessment = assessCertificates(found, policy, now);
      if (assessment.action === 'use') return found as StoredCertificates;

      const next = this.issue(found, assessment.action, now);
      try {
        if (stored === null) await secret.create(certificatesToSecretData(next));
        else await secret.replace(certificatesToSecretData(next), stored);
      } catch (err) {
        if (err instanceof WriteConflict) {
          log.info({ attempt }, `another replica wrote the certificates first (${err.message}); reading them again`);
          continue;
        }
        throw err;
      }
      this.options.observer?.issued?.(assessment.action === 'new-ca' ? 'ca-and-serving' : 'serving');
      log.info(
        { action: assessment.action, notAfter: notAfterOf(next.servingCert) },
        assessment.action === 'new-ca'
          ? `issued a new CA and serving certificate: ${assessment.reason}`
          : `issued a new serving certificate: ${assessment.reason}`,
      );
      return next;
    }
    throw new ClusterApiError(`the certificate Secret kept changing under us (${maxAttempts} attempts); giving up`);
  }

  private issue(found: Partial<StoredCertificates>, action: 'new-ca' | 'renew-serving', now: Date): StoredCertificates {
    const { policy } = this.options;
    const ca =
      action === 'new-ca'
        ? generateCa({ validity: { days: policy.caValidityDays, now } })
        : { certPem: found.caCert!, keyPem: found.caKey! };
    const serving = generateServingCert(ca, policy.dnsNames, { days: policy.servingValidityDays, now });
    const previousCaCert = action === 'new-ca' ? found.caCert : found.previousCaCert;
    return {
      caCert: ca.certPem,
      caKey: ca.keyPem,
      servingCert: serving.certPem,
      servingKey: serving.keyPem,
      ...(previousCaCert ? { previousCaCert } : {}),
    };
  }
}

function notAfterOf(pem: string): string {
  return new X509Certificate(pem).validTo;
}
