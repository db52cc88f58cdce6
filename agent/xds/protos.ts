import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import protobuf from 'protobufjs';

/**
 * The Envoy v3 protos, as shipped by @grpc/grpc-js-xds in its `deps/` folder, loaded once into one
 * protobufjs Root. Only the files the agent reads are listed; their imports pull in the rest. The
 * extension protos below matter because a resource's typed configs can only be unpacked when their
 * type is in the Root; Istio-private types (alpn, stats, metadata exchange) are not and stay opaque.
 */
const FILES = [
  'envoy/service/discovery/v3/ads.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto',
  'envoy/extensions/filters/http/fault/v3/fault.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/http/cors/v3/cors.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
  'envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto',
  'envoy/extensions/filters/listener/original_dst/v3/original_dst.proto',
  'envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto',
  'envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto',
  'udpa/type/v1/typed_struct.proto',
  'xds/type/v3/typed_struct.proto',
  // filters the agent must recognise to enforce them or to refuse their traffic (agent/policy/)
  'envoy/extensions/filters/http/wasm/v3/wasm.proto',
  'envoy/extensions/filters/network/wasm/v3/wasm.proto',
  'envoy/extensions/filters/http/rbac/v3/rbac.proto',
  'envoy/extensions/filters/network/rbac/v3/rbac.proto',
  'envoy/extensions/filters/http/jwt_authn/v3/config.proto',
];

export const TYPE_URL = {
  cluster: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  endpoint: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  listener: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  route: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
} as const;

export type XdsKind = keyof typeof TYPE_URL;

/**
 * SDS over the same ADS stream (istiod: pilot/pkg/xds/sds.go): the secrets a DestinationRule's
 * `credentialName` names (`kubernetes://<name>`, `kubernetes://<name>-cacert`). Not an XdsKind:
 * secrets are not translated into APISIX objects but handed to the TLS relay (agent/mtls/sds-secrets.ts).
 */
export const SECRET_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
/** Every type the agent's ADS stream carries. */
export type StreamKind = XdsKind | 'secret';
export const STREAM_TYPE_URL: Readonly<Record<StreamKind, string>> = { ...TYPE_URL, secret: SECRET_TYPE_URL };

/** Typed configs the agent reads inside resources (one spelling for every reader). */
export const HCM_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
export const TCP_PROXY_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy';
export const FAULT_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault';
export const JWT_AUTHN_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication';

let root: protobuf.Root | undefined;

function depsDir(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
}

/** The shared Root (loaded on first use: ~600 .proto files, a few hundred milliseconds). */
export function envoyRoot(): protobuf.Root {
  if (root) return root;
  const deps = depsDir();
  const protobufDir = dirname(createRequire(import.meta.url).resolve('protobufjs/package.json'));
  const includeDirs = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => join(deps, d));
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => {
    if (target.startsWith('google/protobuf/')) {
      // The well-known types come with protobufjs (as proto-loader does it).
      const own = join(protobufDir, target);
      if (existsSync(own)) return own;
    }
    for (const dir of includeDirs) {
      const candidate = join(dir, target);
      if (existsSync(candidate)) return candidate;
    }
    return target;
  };
  r.loadSync(FILES, { keepCase: true });
  r.resolveAll();
  root = r;
  return r;
}

const types = new Map<string, protobuf.Type | undefined>();

/** The message type for a full name or a type URL (`type.googleapis.com/<name>`), or undefined. */
export function lookupMessage(nameOrUrl: string): protobuf.Type | undefined {
  if (types.has(nameOrUrl)) return types.get(nameOrUrl);
  const name = nameOrUrl.slice(nameOrUrl.lastIndexOf('/') + 1);
  let type: protobuf.Type | undefined;
  try {
    type = envoyRoot().lookupType(name);
  } catch {
    type = undefined;
  }
  types.set(nameOrUrl, type);
  return type;
}
