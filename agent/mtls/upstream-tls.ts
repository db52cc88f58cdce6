import type { Cluster } from '../xds/envoy-types.js';
import type { UpstreamTlsContext } from '@grpc/grpc-js-xds/build/src/generated/envoy/extensions/transport_sockets/tls/v3/UpstreamTlsContext.js';
import type { CertificateValidationContext } from '@grpc/grpc-js-xds/build/src/generated/envoy/extensions/transport_sockets/tls/v3/CertificateValidationContext.js';
import type { StringMatcher } from '@grpc/grpc-js-xds/build/src/generated/envoy/type/matcher/v3/StringMatcher.js';
import type { LbEndpoint } from '../xds/envoy-types.js';
import { unpackAny, type PackedAny } from '../xds/codec.js';

/**
 * How Envoy would connect to an upstream endpoint, from the cluster's `transport_socket` and
 * `transport_socket_matches` (pure: Cluster in, policy out). Only what the sidecar can enforce
 * exactly is accepted: Istio's mutual TLS (SDS secrets `default` and `ROOTCA`, i.e. the workload
 * certificate and the mesh root) and DestinationRule SIMPLE / MUTUAL with files (the server
 * checked against the system roots or a CA file, a client certificate and key from files:
 * `file-root:` / `file-cert:` SDS names as istiod writes them) or with `credentialName` (istiod's
 * own SDS over the ADS stream: `kubernetes://<name>` for the client certificate,
 * `kubernetes://<name>-cacert` for the CA; agent/mtls/sds-secrets.ts), with SAN matchers the relay
 * evaluates, and CRLs (a caCrl file, a credentialName CA secret's ca.crl). Anything else that asks for
 * TLS (inline certificates or CRLs, pinned hashes, regex SAN matchers, SDS from another server) is
 * refused: never plaintext, never an unchecked peer.
 */

const UPSTREAM_TLS = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext';
const RAW_BUFFER = 'type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer';
/** Envoy's endpoint metadata namespace that `transport_socket_matches` compare against */
export const TRANSPORT_SOCKET_MATCH = 'envoy.transport_socket_match';

/** A SAN matcher as the relay evaluates it (agent/l4/lua/apisix_mesh/peer_identity.lua). */
export interface SanMatcher {
  kind: 'exact' | 'prefix' | 'suffix' | 'contains';
  value: string;
  ignore_case?: true;
}

export interface MeshMutualTls {
  kind: 'istio-mutual';
  sni: string;
  /** empty: any certificate issued under the mesh root (Envoy with no matchers does the same) */
  san: SanMatcher[];
  /** the cluster's ALPN (what Envoy offers on TCP proxies; HTTP overrides it, see origination.ts) */
  alpn: string[];
}

/**
 * Where a SIMPLE server's chain is verified against: istiod's `file-root:system`, `file-root:<path>`,
 * an SDS secret from istiod (credentialName's `kubernetes://<name>-cacert`), or nothing (insecureSkipVerify).
 */
export type TrustedRoots = { kind: 'system' } | { kind: 'file'; path: string } | { kind: 'secret'; name: string } | { kind: 'none' };

/** DestinationRule SIMPLE (TLS origination to an external service), or MUTUAL with a client certificate from files. */
export interface SimpleTls {
  kind: 'simple';
  /**
   * MUTUAL: the client certificate chain and key, files in the APISIX container (istiod's
   * `file-cert:<cert>~<key>`), or the SDS secret istiod serves for credentialName (`kubernetes://<name>`)
   */
  client?: { cert: string; key: string } | { secret: string };
  /** the DestinationRule's `sni`; empty: Envoy's auto_sni (the request's host) on HTTP, none on TCP */
  sni: string;
  san: SanMatcher[];
  roots: TrustedRoots;
  alpn: string[];
  /** the DestinationRule's caCrl: a CRL file in the APISIX container (with file or system roots only, as istiod) */
  crlFile?: string;
  /** the cluster's HttpProtocolOptions: SNI, and a DNS SAN check, from the request's host */
  autoSni: boolean;
  autoSanValidation: boolean;
}

export type TransportPolicy = { kind: 'plaintext' } | MeshMutualTls | SimpleTls | { kind: 'refused'; reason: string };

export interface UpstreamTlsPolicy {
  /** `transport_socket_matches` in order: the first whose criteria all equal the endpoint's metadata */
  matches: Array<{ criteria: Record<string, string>; policy: TransportPolicy }>;
  /** the cluster's own `transport_socket` (no match, or no matches at all) */
  fallback: TransportPolicy;
}

const PLAINTEXT: TransportPolicy = { kind: 'plaintext' };

/** The cluster's policy, or undefined when every endpoint is plaintext whatever its metadata. */
export function upstreamTlsPolicy(cluster: Cluster): UpstreamTlsPolicy | undefined {
  const auto = autoHostOptions(cluster);
  const fallback = transportPolicy(cluster.transport_socket?.typed_config as PackedAny | null | undefined, auto);
  const matches: UpstreamTlsPolicy['matches'] = [];
  for (const m of cluster.transport_socket_matches ?? []) {
    const criteria = structStrings(m.match);
    const policy = transportPolicy(m.transport_socket?.typed_config as PackedAny | null | undefined, auto);
    // a criterion that is not a string cannot be compared the way Envoy does: refuse what it selects
    matches.push({ criteria: criteria ?? {}, policy: criteria ? policy : { kind: 'refused', reason: 'a transport_socket_matches criterion is not a string' } });
  }
  if (fallback.kind === 'plaintext' && matches.every((m) => m.policy.kind === 'plaintext')) return undefined;
  return { matches, fallback };
}

/** Envoy's choice for one endpoint: the first match whose criteria are all in its metadata. */
export function endpointPolicy(policy: UpstreamTlsPolicy, metadata: Readonly<Record<string, string>> | undefined): TransportPolicy {
  for (const m of policy.matches) {
    if (Object.entries(m.criteria).every(([k, v]) => metadata?.[k] === v)) return m.policy;
  }
  return policy.fallback;
}

/** The endpoint's `envoy.transport_socket_match` metadata (string values only). */
export function endpointMatchMetadata(endpoint: LbEndpoint): Record<string, string> | undefined {
  const ns = (endpoint.metadata?.filter_metadata as Record<string, unknown> | undefined)?.[TRANSPORT_SOCKET_MATCH];
  return structStrings(ns as StructLike | undefined) ?? undefined;
}

interface StructLike {
  fields?: Record<string, { stringValue?: string; kind?: string } | undefined>;
}

/** A google.protobuf.Struct of strings (protobufjs object form) as a record; null if a value is not a string. */
function structStrings(struct: StructLike | null | undefined): Record<string, string> | null {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(struct?.fields ?? {})) {
    if (typeof value?.stringValue !== 'string') return null;
    out[key] = value.stringValue;
  }
  return out;
}

const HTTP_OPTIONS = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
interface AutoHost {
  autoSni: boolean;
  autoSanValidation: boolean;
}

/** Envoy's auto_sni / auto_san_validation (the cluster's HttpProtocolOptions, set by istiod for SIMPLE without sni / SANs). */
function autoHostOptions(cluster: Cluster): AutoHost {
  const typed = (cluster.typed_extension_protocol_options as Record<string, PackedAny> | undefined)?.[HTTP_OPTIONS];
  const options = unpackAny<{ upstream_http_protocol_options?: { auto_sni?: boolean; auto_san_validation?: boolean } }>(typed)?.upstream_http_protocol_options;
  return { autoSni: options?.auto_sni === true, autoSanValidation: options?.auto_san_validation === true };
}

function transportPolicy(config: PackedAny | null | undefined, auto: AutoHost): TransportPolicy {
  if (!config?.type_url || config.type_url === RAW_BUFFER) return PLAINTEXT;
  if (config.type_url !== UPSTREAM_TLS) return { kind: 'refused', reason: `transport socket ${config.type_url.slice(0, 120)}` };
  const tls = unpackAny<UpstreamTlsContext>(config);
  if (!tls) return { kind: 'refused', reason: 'an UpstreamTlsContext that does not decode' };
  return upstreamTls(tls, auto);
}

function upstreamTls(tls: UpstreamTlsContext, auto: AutoHost): TransportPolicy {
  const common = tls.common_tls_context ?? {};
  const refused = (reason: string): TransportPolicy => ({ kind: 'refused', reason });
  const certSecrets = common.tls_certificate_sds_secret_configs ?? [];
  const combined = common.combined_validation_context;
  const rootConfig = combined?.validation_context_sds_secret_config ?? common.validation_context_sds_secret_config;
  const rootSecret = rootConfig?.name;
  if (common.tls_certificates?.length || common.tls_certificate_provider_instance || common.validation_context_certificate_provider_instance) {
    return refused('inline or provider certificates are not supported');
  }
  const isMeshIdentity = certSecrets.length === 1 && certSecrets[0]!.name === 'default';
  if (isMeshIdentity !== (rootSecret === 'ROOTCA')) return refused('the mesh certificate and the mesh roots appear only together in Istio mutual TLS');
  let client: SimpleTls['client'];
  if (certSecrets.length && !isMeshIdentity) {
    const name = certSecrets[0]!.name ?? '';
    if (certSecrets.length > 1) return refused('more than one client certificate');
    if (isIstiodSecret(name)) {
      const notAds = istiodSecretProblem(certSecrets[0]!);
      if (notAds) return refused(notAds);
      client = { secret: name };
    } else if (name.startsWith('file-cert:')) {
      const files = clientCertFiles(name);
      if (typeof files === 'string') return refused(files);
      client = files;
    } else {
      return refused(`a client certificate from the SDS secret ${JSON.stringify(name.slice(0, 80))}`);
    }
  }
  const validation: CertificateValidationContext = combined?.default_validation_context ?? common.validation_context ?? {};
  if (validation.verify_certificate_hash?.length || validation.verify_certificate_spki?.length) return refused('pinned certificate hashes are not enforced');
  if (validation.match_typed_subject_alt_names?.length) return refused('typed SAN matchers are not enforced');
  if (validation.custom_validator_config || validation.trusted_ca) return refused('a custom validator or an inline trusted CA is not enforced');
  if (validation.only_verify_leaf_cert_crl) return refused('only_verify_leaf_cert_crl is not supported');
  // caCrl: istiod gives the file as the default validation context's `crl` (cluster_tls.go constructUpstreamTLS)
  let crlFile: string | undefined;
  if (validation.crl) {
    const path = validation.crl.specifier === 'filename' ? validation.crl.filename ?? '' : undefined;
    if (path === undefined) return refused('an inline CRL is not enforced');
    const problem = filePathProblem(path, 'CRL');
    if (problem) return refused(problem);
    crlFile = path;
  }
  if (validation.allow_expired_certificate) return refused('allow_expired_certificate is not supported');
  const san: SanMatcher[] = [];
  for (const m of validation.match_subject_alt_names ?? []) {
    const matcher = sanMatcher(m);
    if (!matcher) return refused(`a SAN matcher of kind ${m.match_pattern ?? 'unknown'} is not enforced`);
    san.push(matcher);
  }
  const alpn = [...(common.alpn_protocols ?? [])];
  if (isMeshIdentity) return { kind: 'istio-mutual', sni: tls.sni ?? '', san, alpn };
  const roots = rootConfig && isIstiodSecret(rootSecret ?? '') ? (istiodSecretProblem(rootConfig) ?? { kind: 'secret' as const, name: rootSecret! }) : trustedRoots(rootSecret);
  if (typeof roots === 'string') return refused(roots);
  if (roots.kind === 'none' && san.length) return refused('SAN matchers without a CA to verify the chain against');
  if (crlFile && roots.kind !== 'file' && roots.kind !== 'system') return refused('a CRL file (caCrl) without a CA file or the system roots');
  const simple: SimpleTls = { kind: 'simple', sni: tls.sni ?? '', san, roots, alpn, autoSni: auto.autoSni, autoSanValidation: auto.autoSanValidation && roots.kind !== 'none', ...(crlFile ? { crlFile } : {}) };
  return client ? { ...simple, client } : simple;
}

/** An absolute file path the relay may open, or why not. */
function filePathProblem(path: string, what: string): string | undefined {
  if (!path.startsWith('/') || path.length > 4096 || /[\0\n]/.test(path)) return `a ${what} path that is not an absolute file path (${JSON.stringify(path.slice(0, 80))})`;
  return undefined;
}

/** istiod's `file-cert:<cert>~<key>` (pkg/security SdsCertificateConfig: exactly one separator). */
function clientCertFiles(secret: string): { cert: string; key: string } | string {
  const parts = secret.slice('file-cert:'.length).split('~');
  if (parts.length !== 2) return `a client certificate secret that is not file-cert:<cert>~<key> (${JSON.stringify(secret.slice(0, 80))})`;
  const [cert, key] = parts as [string, string];
  return filePathProblem(cert, 'client certificate') ?? filePathProblem(key, 'private key') ?? { cert, key };
}

/** istiod's SDS name for a SIMPLE cluster's CA (cluster_tls.go): `file-root:system`, `file-root:<path>`; none: no verification. */
function trustedRoots(secret: string | undefined): TrustedRoots | string {
  if (secret === undefined) return { kind: 'none' };
  if (secret === 'file-root:system') return { kind: 'system' };
  const path = secret.startsWith('file-root:') ? secret.slice('file-root:'.length) : undefined;
  if (path !== undefined) return filePathProblem(path, 'CA certificate') ?? { kind: 'file', path };
  return `a validation context from the SDS secret ${JSON.stringify(secret.slice(0, 80))}`;
}

/**
 * The SDS names istiod itself serves over ADS for credentialName (pilot/pkg/model/credentials/
 * resource.go): `kubernetes://` secrets (of the proxy's namespace), and since Istio 1.26
 * `configmap://<namespace>/<name>` CA certificates (BackendTLSPolicy).
 */
export function isIstiodSecret(name: string): boolean {
  return /^(kubernetes|configmap):\/\/[\x21-\x7e]{1,1000}$/.test(name);
}

interface SdsSecretConfigLike {
  name?: string;
  sds_config?: { ads?: unknown; config_source_specifier?: string } | null;
}

/** A credentialName secret not fetched from istiod over the ADS stream (a UDS credential socket, an SDS extension provider): refused. */
function istiodSecretProblem(config: SdsSecretConfigLike): string | undefined {
  if (config.sds_config?.ads) return undefined;
  return `the SDS secret ${(config.name ?? '').slice(0, 80)} from another SDS server than istiod's ADS stream (${config.sds_config?.config_source_specifier ?? 'no sds_config'})`;
}

/** The secrets of a cluster's TLS contexts the agent asks istiod for over ADS (credentialName). */
export function clusterSecretNames(cluster: Cluster): string[] {
  const names: string[] = [];
  const sockets = [cluster.transport_socket, ...(cluster.transport_socket_matches ?? []).map((m) => m.transport_socket)];
  for (const socket of sockets) {
    const config = socket?.typed_config as PackedAny | null | undefined;
    if (config?.type_url !== UPSTREAM_TLS) continue;
    const common = unpackAny<UpstreamTlsContext>(config)?.common_tls_context;
    if (!common) continue;
    const configs = [
      ...(common.tls_certificate_sds_secret_configs ?? []),
      common.combined_validation_context?.validation_context_sds_secret_config,
      common.validation_context_sds_secret_config,
    ];
    for (const c of configs) if (c?.name && isIstiodSecret(c.name) && !istiodSecretProblem(c)) names.push(c.name);
  }
  return [...new Set(names)];
}

function sanMatcher(m: StringMatcher): SanMatcher | undefined {
  const kind = m.match_pattern ?? (['exact', 'prefix', 'suffix', 'contains'] as const).find((k) => typeof m[k] === 'string');
  if (kind !== 'exact' && kind !== 'prefix' && kind !== 'suffix' && kind !== 'contains') return undefined;
  const value = m[kind];
  if (typeof value !== 'string') return undefined;
  return m.ignore_case ? { kind, value, ignore_case: true } : { kind, value };
}
