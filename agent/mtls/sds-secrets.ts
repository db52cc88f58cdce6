import type { Secret__Output as Secret } from '@grpc/grpc-js-xds/build/src/generated/envoy/extensions/transport_sockets/tls/v3/Secret.js';
import type { KvStore } from '../store/store.js';
import type { SecretChange } from '../xds/ads-client.js';
import type { TranslationNote } from '../translate/apisix-types.js';
import { stableId } from '../translate/ids.js';
import { decodeSecret, type SecretMaterial } from './sds-secret.js';

/**
 * The secrets istiod serves for DestinationRule `credentialName` (SDS over the ADS stream), as the
 * TLS relay reads them: one object per SDS name under /apisix/mesh_sds/ (tls_sds.lua), rewritten
 * when istiod sends a new version (rotation: the relay uses it for new connections), deleted when
 * no cluster names it any more. Key material goes to the store only (which APISIX reads over the
 * loopback), never to the log. Until a secret has arrived — istiod leaves out one that does not
 * exist or that this proxy may not read — the relay refuses the clusters that need it, and each of
 * them carries the note `tls-origination-refused` saying which secret is missing.
 */
export const SDS_DIR = '/apisix/mesh_sds/';

/** The object's fields (the contract with agent/l4/lua/apisix_mesh/tls_sds.lua). */
export interface ApisixSdsSecret {
  id: string;
  /** the SDS name (`kubernetes://<name>`, `kubernetes://<name>-cacert`) */
  name: string;
  kind: SecretMaterial['kind'];
  cert_chain?: string;
  key?: string;
  not_after?: number;
  trusted_ca?: string;
  /** PEM CRLs (the secret's `ca.crl`): the relay checks every certificate of the server's chain against them, as Envoy */
  crl?: string;
  /** kind `unusable`: why the relay refuses what needs it */
  reason?: string;
}

export function apisixSdsSecret(name: string, material: SecretMaterial): ApisixSdsSecret {
  const base = { id: stableId('mesh_sds', name), name, kind: material.kind };
  if (material.kind === 'certificate') return { ...base, cert_chain: material.certChain, key: material.key, not_after: material.notAfter };
  if (material.kind === 'ca') return { ...base, trusted_ca: material.trustedCa, ...(material.crl ? { crl: material.crl } : {}) };
  return { ...base, reason: material.reason };
}

/** What one secret is, for the log (never its content). */
function describe(material: SecretMaterial): string {
  if (material.kind === 'certificate') return `client certificate valid until ${new Date(material.notAfter * 1000).toISOString()}`;
  if (material.kind === 'ca') return material.crl ? 'CA certificates and CRLs' : 'CA certificates';
  return `unusable: ${material.reason}`;
}

export interface SdsLogger {
  info(msg: string): void;
  warn(msg: string): void;
}

export class SdsSecrets {
  /** SDS name → the object's JSON (what the store holds) */
  private readonly objects = new Map<string, string>();
  /** SDS name → why the relay cannot use it */
  private readonly unusableReasons = new Map<string, string>();

  constructor(
    private readonly store: KvStore,
    private readonly logger: SdsLogger,
  ) {}

  /** Takes an SDS response (or the names no cluster needs any more) and writes the store. */
  ingest(change: SecretChange): void {
    const logged: string[] = [];
    for (const [name, value] of change.changed) {
      const decoded = decodeSecret(value as Secret);
      // the ADS client NACKed what has a problem; nothing of it may reach the relay
      if (!decoded.material) continue;
      this.objects.set(name, JSON.stringify(apisixSdsSecret(name, decoded.material)));
      logged.push(`${name} (${describe(decoded.material)})`);
      if (decoded.material.kind === 'unusable') this.unusableReasons.set(name, decoded.material.reason);
      else this.unusableReasons.delete(name);
    }
    for (const name of change.removed) {
      this.objects.delete(name);
      this.unusableReasons.delete(name);
    }
    const desired = new Map<string, string>([[SDS_DIR, 'init_dir']]);
    for (const [name, json] of this.objects) desired.set(`${SDS_DIR}${stableId('mesh_sds', name)}`, json);
    const revision = this.store.applySnapshot(SDS_DIR, desired);
    if (logged.length) this.logger.info(`SDS secrets from istiod handed to APISIX at store revision ${revision}: ${logged.join(', ').slice(0, 1000)}`);
  }

  /** The names held now. */
  names(): string[] {
    return [...this.objects.keys()];
  }

  /** The secrets held that the relay cannot use, with why. */
  unusable(): Map<string, string> {
    return new Map(this.unusableReasons);
  }
}

/** One refusal note per cluster of each secret in `users` (secret → the clusters naming it). */
function secretNotes(users: ReadonlyMap<string, readonly string[]>, why: (secret: string) => string): TranslationNote[] {
  const notes: TranslationNote[] = [];
  for (const [secret, clusters] of users) {
    const detail = `the SDS secret ${secret.slice(0, 200)} (DestinationRule credentialName) ${why(secret)}`;
    for (const cluster of clusters) notes.push({ kind: 'cluster', name: cluster, reason: 'tls-origination-refused', detail, skipped: true });
  }
  return notes;
}

/** The note of each cluster that names a secret the relay cannot use (SdsSecrets.unusable). */
export function unusableSecretNotes(users: ReadonlyMap<string, readonly string[]>, reasons: ReadonlyMap<string, string>): TranslationNote[] {
  return secretNotes(users, (secret) => `cannot be used: ${(reasons.get(secret) ?? '').slice(0, 300)}; connections to its TLS endpoints are refused`);
}

/** The note of each cluster that waits for a secret istiod has not sent (ads-client.ts pendingSecrets). */
export function pendingSecretNotes(pending: ReadonlyMap<string, readonly string[]>): TranslationNote[] {
  return secretNotes(
    pending,
    () =>
      "has not come from istiod — no such secret in the proxy's namespace, the proxy may not list secrets there, or it reaches istiod without TLS (istiod serves secrets only on 15012): connections to its TLS endpoints are refused until it does",
  );
}
