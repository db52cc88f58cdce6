// What an Istio sidecar (Envoy with istio/proxy's metadata exchange) sends of itself in
// `x-envoy-peer-metadata`: base64 of a serialized google.protobuf.Struct of its node metadata,
// encoded here with protobufjs (independently of the sidecar's Lua), with the fields Istio
// 1.18-1.24 proxies carry beside the ones the metrics read (numbers, booleans, lists, nested structs).
import protobuf from 'protobufjs';

const root = protobuf.Root.fromJSON(protobuf.common.get('google/protobuf/struct.proto')!);
const Struct = root.lookupType('google.protobuf.Struct');

export interface PeerWorkload {
  pod: string;
  namespace: string;
  workload: string;
  cluster: string;
  labels: Record<string, string>;
}

type StructValue = { stringValue: string } | { numberValue: number } | { boolValue: boolean } | { listValue: { values: StructValue[] } } | { structValue: { fields: Record<string, StructValue> } };

const str = (v: string): StructValue => ({ stringValue: v });
const struct = (fields: Record<string, StructValue>): StructValue => ({ structValue: { fields } });

/** The Struct's bytes, as Envoy serializes node metadata. */
export function envoyPeerMetadataBytes(p: PeerWorkload): Buffer {
  const fields: Record<string, StructValue> = {
    NAME: str(p.pod),
    NAMESPACE: str(p.namespace),
    WORKLOAD_NAME: str(p.workload),
    CLUSTER_ID: str(p.cluster),
    OWNER: str(`kubernetes://apis/apps/v1/namespaces/${p.namespace}/deployments/${p.workload}`),
    MESH_ID: str('cluster.local'),
    ISTIO_VERSION: str('1.22.3'),
    SERVICE_ACCOUNT: str('default'),
    APP_CONTAINERS: str('app'),
    INSTANCE_IPS: str('10.244.7.7'),
    INTERCEPTION_MODE: str('REDIRECT'),
    PLATFORM_METADATA: struct({}),
    LABELS: struct(Object.fromEntries(Object.entries(p.labels).map(([k, v]) => [k, str(v)]))),
    ANNOTATIONS: struct({ 'kubectl.kubernetes.io/default-container': str('app'), 'sidecar.istio.io/status': str('{"initContainers":["istio-init"]}') }),
    PROXY_CONFIG: struct({ concurrency: { numberValue: 2 }, holdApplicationUntilProxyStarts: { boolValue: true }, tracing: struct({ zipkin: struct({ address: str('zipkin.istio-system:9411') }) }) }),
    POD_PORTS: { listValue: { values: [struct({ containerPort: { numberValue: 9080 }, protocol: str('TCP') })] } },
  };
  return Buffer.from(Struct.encode(Struct.fromObject({ fields })).finish());
}

/** The header's value: base64 with padding, as Envoy's Base64::encode writes it. */
export function envoyPeerMetadata(p: PeerWorkload): string {
  return envoyPeerMetadataBytes(p).toString('base64');
}

/** A sidecar's node id, `x-envoy-peer-metadata-id`. */
export function envoyPeerId(p: PeerWorkload, ip: string): string {
  return `sidecar~${ip}~${p.pod}.${p.namespace}~${p.namespace}.svc.cluster.local`;
}

/** Decodes what the APISIX sidecar sends (to check it against Envoy's reading). */
export function decodePeerMetadata(value: string): Record<string, unknown> {
  return Struct.toObject(Struct.decode(Buffer.from(value, 'base64'))) as Record<string, unknown>;
}
