/**
 * Who the agent is to istiod: the node id `sidecar~<podIP>~<pod>.<ns>~<ns>.svc.<domain>` and the
 * node metadata, typed as istiod parses it (pkg/model/proxy.go NodeMetadata: a JSON round trip of
 * the Struct, so a wrong JSON type fails the whole stream). INSTANCE_IPS is a comma-separated
 * string, LABELS a struct of strings, POD_PORTS a JSON *string*, booleans the strings "true"/"false".
 */
export interface NodeIdentity {
  podName: string;
  namespace: string;
  podIp: string;
  serviceAccount?: string;
  clusterId: string;
  dnsDomain: string;
  istioVersion?: string;
  labels: Record<string, string>;
  /** extra string metadata (ISTIO_META_* from the environment, minus the prefix) */
  meta: Record<string, string>;
  /** extra structured metadata (ISTIO_METAJSON_* from the environment) */
  metaJson: Record<string, unknown>;
}

export class NodeIdentityError extends Error {}

/** Reads the identity from the variables the injected pod spec sets (downward API + ISTIO_META_*). */
export function nodeIdentityFromEnv(env: NodeJS.ProcessEnv, overrides: Partial<NodeIdentity> = {}): NodeIdentity {
  const meta: Record<string, string> = {};
  const metaJson: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined) continue;
    if (key.startsWith('ISTIO_METAJSON_')) {
      try {
        metaJson[key.slice('ISTIO_METAJSON_'.length)] = JSON.parse(value);
      } catch {
        throw new NodeIdentityError(`${key} is not valid JSON`);
      }
    } else if (key.startsWith('ISTIO_META_')) {
      meta[key.slice('ISTIO_META_'.length)] = value;
    }
  }
  const labels: Record<string, string> = {};
  const jsonLabels = metaJson['LABELS'];
  if (jsonLabels && typeof jsonLabels === 'object') {
    for (const [k, v] of Object.entries(jsonLabels as Record<string, unknown>)) labels[k] = String(v);
    delete metaJson['LABELS'];
  }
  const identity: NodeIdentity = {
    podName: env['POD_NAME'] ?? '',
    namespace: env['POD_NAMESPACE'] ?? '',
    podIp: env['INSTANCE_IP'] ?? '',
    clusterId: meta['CLUSTER_ID'] ?? 'Kubernetes',
    dnsDomain: '',
    labels,
    meta,
    metaJson,
    ...(env['SERVICE_ACCOUNT'] ? { serviceAccount: env['SERVICE_ACCOUNT'] } : {}),
    ...(meta['ISTIO_VERSION'] ? { istioVersion: meta['ISTIO_VERSION'] } : {}),
    ...overrides,
  };
  if (!identity.dnsDomain) identity.dnsDomain = `${identity.namespace}.svc.cluster.local`;
  const missing = [
    ['POD_NAME', identity.podName],
    ['POD_NAMESPACE', identity.namespace],
    ['INSTANCE_IP', identity.podIp],
  ].filter(([, v]) => !v).map(([k]) => k);
  if (missing.length) throw new NodeIdentityError(`missing ${missing.join(', ')}: istiod needs them to identify the pod (set them with the downward API)`);
  if (!/^[0-9a-fA-F.:]+$/.test(identity.podIp)) throw new NodeIdentityError(`INSTANCE_IP ${JSON.stringify(identity.podIp)} is not an IP address`);
  return identity;
}

/**
 * The pod's labels from a downward-API `metadata.labels` file: one `key="value"` per line, the
 * value quoted the way Go's %q quotes (JSON-compatible for every label value Kubernetes allows).
 * Read from a file rather than the environment because the injected pod spec cannot know the
 * labels other webhooks or controllers add after it.
 */
export function parseDownwardApiLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const raw = line.slice(eq + 1).trim();
    let value: string;
    try {
      value = JSON.parse(raw) as string;
    } catch {
      value = raw.replace(/^"|"$/g, '');
    }
    labels[line.slice(0, eq).trim()] = String(value);
  }
  return labels;
}

export function nodeId(identity: NodeIdentity): string {
  return `sidecar~${identity.podIp}~${identity.podName}.${identity.namespace}~${identity.dnsDomain}`;
}

// protobufjs's built-in google/protobuf/struct.proto names the Value fields in camelCase.
type StructValue = { stringValue: string } | { structValue: { fields: Record<string, StructValue> } } | { numberValue: number } | { boolValue: boolean } | { listValue: { values: StructValue[] } } | { nullValue: 'NULL_VALUE' };

function toValue(v: unknown): StructValue {
  if (v === null || v === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  return { structValue: { fields: Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, toValue(x)])) } };
}

/** The `envoy.config.core.v3.Node` in protobufjs object form, ready to encode. */
export function buildNode(identity: NodeIdentity, userAgentVersion: string): Record<string, unknown> {
  const metadata: Record<string, unknown> = {
    ...identity.metaJson,
    ...identity.meta,
    NAMESPACE: identity.namespace,
    INSTANCE_IPS: identity.meta['INSTANCE_IPS'] ?? identity.podIp,
    NAME: identity.podName,
    CLUSTER_ID: identity.clusterId,
    INTERCEPTION_MODE: identity.meta['INTERCEPTION_MODE'] ?? 'REDIRECT',
    LABELS: identity.labels,
  };
  if (identity.serviceAccount) metadata['SERVICE_ACCOUNT'] = identity.serviceAccount;
  if (identity.istioVersion) metadata['ISTIO_VERSION'] = identity.istioVersion;
  return {
    id: nodeId(identity),
    cluster: identity.labels['app'] ? `${identity.labels['app']}.${identity.namespace}` : `${identity.podName}.${identity.namespace}`,
    metadata: { fields: Object.fromEntries(Object.entries(metadata).map(([k, v]) => [k, toValue(v)])) },
    user_agent_name: 'apisix-mesh-agent',
    user_agent_version: userAgentVersion,
  };
}
