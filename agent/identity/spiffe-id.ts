import { shortQuote } from '../../cli/short-quote.js';

export class SpiffeIdError extends Error {}

/** SPIFFE trust domains: lowercase letters, digits, dots, dashes and underscores (SPIFFE-ID §2.1). */
export const TRUST_DOMAIN_PATTERN = /^[a-z0-9._-]{1,255}$/;
/** Kubernetes namespace and service-account names (RFC 1123 subdomain, at most 253 characters). */
const K8S_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/**
 * The workload's SPIFFE identity as Istio names it: `spiffe://<trust domain>/ns/<namespace>/sa/<service
 * account>` (pkg/spiffe). istiod signs the caller's identity (from its token) whatever the CSR says;
 * the agent checks that the certificate it gets back carries exactly this one, so it is spelled the
 * same way.
 */
export function workloadSpiffeId(trustDomain: string, namespace: string, serviceAccount: string): string {
  if (!TRUST_DOMAIN_PATTERN.test(trustDomain)) throw new SpiffeIdError(`trust domain ${shortQuote(trustDomain)} is not a SPIFFE trust domain (lowercase letters, digits, ".", "-", "_")`);
  if (!K8S_NAME.test(namespace)) throw new SpiffeIdError(`namespace ${shortQuote(namespace)} is not a Kubernetes name`);
  if (!K8S_NAME.test(serviceAccount)) throw new SpiffeIdError(`service account ${shortQuote(serviceAccount)} is not a Kubernetes name`);
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}
