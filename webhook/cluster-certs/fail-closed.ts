import { request } from 'node:https';
import type { WebhookConfigurationClient } from './kube-api.js';
import type { CertificateLog } from './manager.js';

/**
 * An install that cannot block pod creation before the webhook works: the manifests ship every
 * webhook entry with `failurePolicy: Ignore`, and the webhook turns them to `Fail` (Istio's policy:
 * a pod never starts without the mesh it asked for) only once it answers through its own Service
 * with a certificate the caBundle trusts — the path the API server takes. Until then (image not
 * pulled yet, caBundle not patched, endpoints not ready) the API server goes on without it, so pod
 * creation never waits on an install that is not working yet. Checked again at every interval: a
 * re-apply of the manifests, which puts `Ignore` back, is undone at the next check.
 */

export interface FailClosedOptions {
  webhookConfiguration: WebhookConfigurationClient;
  /** resolves when the webhook answers as the API server would reach it; rejects with the reason */
  selfCheck: () => Promise<void>;
  log: CertificateLog;
}

export class FailClosedKeeper {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private armed = false;

  constructor(private readonly options: FailClosedOptions) {}

  /**
   * One round: the self-check, then `Fail` on every entry. Returns whether the entries are `Fail`
   * now. Never throws: what went wrong is logged (once per kind of failure, not every round).
   */
  async checkOnce(): Promise<boolean> {
    const { log } = this.options;
    try {
      await this.options.selfCheck();
    } catch (err) {
      log.warn({ reason: (err as Error).message }, 'the webhook does not answer through its Service yet; failurePolicy stays as it is (Ignore after an install)');
      return false;
    }
    try {
      const changed = await this.options.webhookConfiguration.ensureFailurePolicy('Fail');
      if (changed.length > 0 || !this.armed) {
        log.info({ webhooks: changed }, 'the webhook answers through its Service: failurePolicy is Fail (pods in meshed namespaces wait for the webhook from now on)');
      }
      this.armed = true;
      return true;
    } catch (err) {
      log.error({ reason: (err as Error).message }, 'could not set failurePolicy to Fail');
      return false;
    }
  }

  /** Checks now and then every `intervalMs` (sooner, every `retryMs`, until the first success). */
  start(intervalMs: number, retryMs: number = Math.min(intervalMs, 5000)): void {
    this.running = true;
    const tick = async () => {
      const ok = await this.checkOnce();
      if (this.running) {
        this.timer = setTimeout(() => void tick(), ok ? intervalMs : retryMs);
        this.timer.unref();
      }
    };
    void tick();
  }

  stop(): void {
    this.running = false;
    if (this.timer !== undefined) clearTimeout(this.timer);
  }
}

/**
 * GET `url` (the webhook's `/readyz` through its Service) verifying the certificate against
 * `caPem()` (what the caBundle holds) and the Service's DNS name, as the API server does.
 */
export function serviceSelfCheck(url: string, servername: string, caPem: () => string | undefined, timeoutMs = 5000): () => Promise<void> {
  return () =>
    new Promise((resolve, reject) => {
      const ca = caPem();
      if (ca === undefined) {
        reject(new Error('no CA yet'));
        return;
      }
      const req = request(url, { ca, servername, agent: false, timeout: timeoutMs }, (res) => {
        res.resume();
        if (res.statusCode === 200) resolve();
        else reject(new Error(`${url} answered HTTP ${res.statusCode}`));
      });
      req.on('timeout', () => req.destroy(new Error(`${url}: no answer within ${timeoutMs} ms`)));
      req.on('error', (err) => reject(new Error(`${url}: ${(err as NodeJS.ErrnoException).code ?? err.message}`)));
      req.end();
    });
}
