import type { Registry } from 'prom-client';
import type { Backoff } from '../backoff.js';
import { serverNameOptions, xdsCredentials, type XdsTlsOptions } from '../istiod-credentials.js';
import type { NodeIdentity } from '../xds/node.js';
import { IstioCaClient } from './ca-client.js';
import { IdentityMetrics } from './identity-metrics.js';
import type { WorkloadKeyType } from './key-type.js';
import { workloadSpiffeId } from './spiffe-id.js';
import { WorkloadIdentity, type IdentityLogger } from './workload-identity.js';

/** The agent's CA settings (`--ca-address`, `--trust-domain`, `--cert-ttl`, `--key-type`, `--root-cert`, `--token-file`). */
export interface WorkloadIdentityConfig {
  /** host:port of Istio's CA (istiod: 15012), always dialled with TLS */
  caAddress: string;
  /** the mesh root the CA's certificate must chain to, the token it authenticates the pod by */
  tls: XdsTlsOptions;
  trustDomain: string;
  certTtlMs: number;
  /** default rsa */
  keyType?: WorkloadKeyType;
  retry?: Backoff;
  timeoutMs?: number;
}

/**
 * Starts requesting the pod's certificate from Istio's CA, authenticated as istiod authenticates
 * pilot-agent (the projected token and ClusterID). Throws when the pod's identity cannot be named.
 */
export function startWorkloadIdentity(config: WorkloadIdentityConfig, node: NodeIdentity, registry: Registry, logger: IdentityLogger): WorkloadIdentity {
  if (!node.serviceAccount) throw new Error('SERVICE_ACCOUNT is not set: the workload certificate names the pod\'s service account');
  const spiffeId = workloadSpiffeId(config.trustDomain, node.namespace, node.serviceAccount);
  const ca = new IstioCaClient({
    address: config.caAddress,
    credentials: xdsCredentials(config.tls, node.clusterId),
    channelOptions: serverNameOptions(config.tls.serverName),
    ...(config.timeoutMs !== undefined ? { timeoutMs: config.timeoutMs } : {}),
  });
  const identity = new WorkloadIdentity({
    spiffeId,
    ca,
    certTtlMs: config.certTtlMs,
    ...(config.keyType ? { keyType: config.keyType } : {}),
    metrics: new IdentityMetrics(registry),
    logger,
    ...(config.retry ? { retry: config.retry } : {}),
  });
  identity.start();
  return identity;
}
