import { Counter, Gauge, type Registry } from 'prom-client';

/** The workload certificate's metrics, on the agent's registry (served at /metrics). */
export class IdentityMetrics {
  readonly expiry: Gauge;
  readonly issued: Counter;
  readonly failures: Counter;

  constructor(registry: Registry) {
    this.expiry = new Gauge({
      name: 'apisix_mesh_workload_cert_expiry_timestamp_seconds',
      help: 'NotAfter of the workload certificate currently served, in seconds since the epoch (0 until the first arrives)',
      registers: [registry],
    });
    this.issued = new Counter({ name: 'apisix_mesh_workload_certs_issued_total', help: 'workload certificates received from the CA (the first and every renewal)', registers: [registry] });
    this.failures = new Counter({
      name: 'apisix_mesh_workload_cert_request_failures_total',
      help: 'certificate requests that failed (CA unreachable or refusing, or an answer the agent refused); the current certificate stays served',
      registers: [registry],
    });
  }
}
