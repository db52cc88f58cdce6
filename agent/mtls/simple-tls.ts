import type { SimpleTls } from './upstream-tls.js';

/**
 * What the relay needs for a DestinationRule SIMPLE (or MUTUAL with files) cluster besides SNI,
 * SANs and ALPN (pure).
 *
 * Envoy's auto_sni and auto_san_validation (istiod sets them when the DestinationRule names no SNI,
 * and no SANs) take the SNI and the expected DNS SAN from each request's host. The relay is below
 * HTTP — APISIX pools its connections per endpoint alias, across requests — so it uses the
 * destination service's host from the cluster name (`outbound|<port>|<subset>|<host>`), the host
 * the service's virtual host answers for. A wildcard host (a ServiceEntry `*.example.com`) has no
 * such name: refused rather than sent without SNI or checked against nothing.
 */
export interface SimpleTlsFields {
  /**
   * where the server's chain is verified: the system bundle of the APISIX image, a CA file in the
   * APISIX container, an SDS secret from istiod (credentialName), or not at all (insecureSkipVerify)
   */
  verify?: 'system' | 'file' | 'secret' | 'none';
  ca_file?: string;
  /** the DestinationRule's caCrl: a CRL file in the APISIX container, checked with ca_file or the system bundle */
  crl_file?: string;
  /** credentialName: the SDS name of the CA secret (`kubernetes://<name>-cacert`, /apisix/mesh_sds) */
  ca_secret?: string;
  /** DestinationRule MUTUAL: the client certificate chain and its key, files in the APISIX container ... */
  client_cert_file?: string;
  client_key_file?: string;
  /** ... or the SDS name of the secret istiod serves for credentialName (`kubernetes://<name>`) */
  client_secret?: string;
  /** for connections from APISIX's HTTP side only (Envoy applies auto_* to HTTP upstreams only) */
  auto_sni_host?: string;
  auto_san_host?: string;
}

const DNS_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** The service host of an outbound cluster name, or undefined. */
export function clusterHost(cluster: string): string | undefined {
  const parts = cluster.split('|');
  return parts.length === 4 && parts[0] === 'outbound' ? parts[3] : undefined;
}

export function simpleTlsFields(cluster: string, tls: SimpleTls): SimpleTlsFields | { refusal: string } {
  const out: SimpleTlsFields = { verify: tls.roots.kind };
  if (tls.roots.kind === 'file') out.ca_file = tls.roots.path;
  if (tls.crlFile) out.crl_file = tls.crlFile;
  if (tls.roots.kind === 'secret') out.ca_secret = tls.roots.name;
  if (tls.client && 'secret' in tls.client) out.client_secret = tls.client.secret;
  else if (tls.client) {
    out.client_cert_file = tls.client.cert;
    out.client_key_file = tls.client.key;
  }
  const autoSni = tls.autoSni && !tls.sni;
  const autoSan = tls.autoSanValidation && tls.san.length === 0;
  if (!autoSni && !autoSan) return out;
  const host = clusterHost(cluster);
  if (!host || !DNS_NAME.test(host)) {
    return { refusal: `auto_sni/auto_san_validation take the name from each request's host, and the cluster's host ${JSON.stringify((host ?? cluster).slice(0, 80))} is not one DNS name (a wildcard ServiceEntry host needs the DestinationRule's sni and subjectAltNames)` };
  }
  if (autoSni) out.auto_sni_host = host;
  if (autoSan) out.auto_san_host = host;
  return out;
}
