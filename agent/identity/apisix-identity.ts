import type { KvStore } from '../store/store.js';
import type { IdentityLogger, WorkloadCertificate, WorkloadIdentity } from './workload-identity.js';

/**
 * The workload identity as APISIX reads it (the sidecar's Lua: `core.config.new("/mesh_identity")`):
 * one object, rewritten on every renewal, shared by every TLS endpoint of the sidecar (inbound
 * termination, outbound origination). Absent when no CA is configured.
 */
export const IDENTITY_DIR = '/apisix/mesh_identity/';
export const IDENTITY_KEY = `${IDENTITY_DIR}workload`;

/** The object's fields (the contract between the agent and the sidecar's Lua). */
export interface ApisixIdentityObject {
  id: 'workload';
  /** PEM leaf then intermediates, no root: what a TLS endpoint presents */
  cert_chain: string;
  /** PEM private key of the leaf */
  key: string;
  /** PEM mesh root bundle: what peers' chains are verified against */
  roots: string;
  spiffe_id: string;
  /** the leaf's NotAfter, unix seconds */
  not_after: number;
}

export function apisixIdentityObject(certificate: WorkloadCertificate): ApisixIdentityObject {
  return {
    id: 'workload',
    cert_chain: certificate.certChainPem,
    key: certificate.keyPem,
    roots: certificate.rootPem,
    spiffe_id: certificate.spiffeId,
    not_after: Math.floor(certificate.notAfter.getTime() / 1000),
  };
}

/**
 * Writes the identity's current certificate into the store and every new one as it arrives, each
 * as one revision with the directory's `init_dir` marker (APISIX's workers then load the directory
 * at start even before it holds the object). The key material goes to the store only, never to the
 * log. Returns a function that stops following renewals.
 */
export function publishIdentity(store: KvStore, identity: WorkloadIdentity, logger: Pick<IdentityLogger, 'info'>): () => void {
  const write = (certificate: WorkloadCertificate) => {
    const revision = store.write([
      { op: 'put', key: IDENTITY_DIR, value: 'init_dir' },
      { op: 'put', key: IDENTITY_KEY, value: JSON.stringify(apisixIdentityObject(certificate)) },
    ]);
    logger.info(`workload certificate for ${certificate.spiffeId} (valid until ${certificate.notAfter.toISOString()}) handed to APISIX at store revision ${revision}`);
  };
  const current = identity.current();
  if (current) write(current);
  return identity.onChange(write);
}
