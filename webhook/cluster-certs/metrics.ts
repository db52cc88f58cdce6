import { Counter, Gauge, type Registry } from 'prom-client';
import type { CertificateObserver } from './manager.js';

/**
 * Prometheus metrics of the in-cluster certificates, in the webhook's own registry: when the
 * served certificate expires (alert well before), how checks go, what this replica issued.
 */
export function certificateMetrics(registry: Registry, servingNotAfter: () => Date | undefined): CertificateObserver {
  const registers = [registry];
  new Gauge({
    name: 'apisix_mesh_webhook_certificate_not_after_seconds',
    help: 'Expiry of the serving certificate in use, as a Unix time (in-cluster certificates).',
    registers,
    collect() {
      const notAfter = servingNotAfter();
      if (notAfter) this.set(notAfter.getTime() / 1000);
    },
  });
  const checks = new Counter({
    name: 'apisix_mesh_webhook_certificate_checks_total',
    help: 'Checks of the certificate Secret and caBundle, by result (ok, failed).',
    labelNames: ['result'],
    registers,
  });
  const issued = new Counter({
    name: 'apisix_mesh_webhook_certificates_issued_total',
    help: 'Certificates this replica issued and stored, by what (ca-and-serving, serving).',
    labelNames: ['what'],
    registers,
  });
  return {
    checked: (ok) => checks.inc({ result: ok ? 'ok' : 'failed' }),
    issued: (what) => issued.inc({ what }),
  };
}
