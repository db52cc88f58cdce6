// The resource types (agent/xds/resource-types/): strict decoding, the protos' validation rules,
// RE2, names. Real istiod output must all pass (no false NACKs); each kind of defect must not.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import protobuf from 'protobufjs';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { RESOURCE_TYPES } from '../../agent/xds/resource-types/index.js';
import { encodeCanonical } from '../../agent/xds/codec.js';
import { lookupMessage, TYPE_URL, type XdsKind } from '../../agent/xds/protos.js';
import { resourcesFromJson } from '../../agent/xds/config-dump.js';
import { re2Rejection } from '../../agent/xds/re2.js';
import { XDS_FIXTURES } from '../support/xds-fixtures.js';

const KINDS: XdsKind[] = ['cluster', 'endpoint', 'listener', 'route'];

function decode(kind: XdsKind, canonical: Record<string, unknown>) {
  return RESOURCE_TYPES[kind].decode(encodeCanonical(TYPE_URL[kind], canonical));
}

const cluster = (extra: Record<string, unknown> = {}) => ({ name: 'outbound|80||a.ns.svc.cluster.local', type: 'EDS', eds_cluster_config: { eds_config: { ads: {} } }, connect_timeout: '1s', ...extra });
const routeConfig = (route: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ name: '80', virtual_hosts: [{ name: 'a', domains: ['a'], routes: [{ match: { prefix: '/' }, route: { cluster: 'c' }, ...route }] }], ...extra });

describe('resource types accept what istiod sends', () => {
  for (const file of readdirSync(XDS_FIXTURES).filter((f) => /\.(json|yaml)$/.test(f))) {
    it(`every resource of ${file}`, () => {
      const text = readFileSync(join(XDS_FIXTURES, file), 'utf8');
      const resources = resourcesFromJson(file.endsWith('.yaml') ? YAML.parse(text) : JSON.parse(text));
      for (const kind of KINDS) {
        for (const r of resources[kind]) {
          const result = decode(kind, r);
          expect(result.error, `${kind} ${result.name}`).toBeUndefined();
        }
      }
    });
  }
});

describe('strict decoding', () => {
  const good = encodeCanonical(TYPE_URL.cluster, cluster({ metadata: { filter_metadata: { istio: { config: 'x' } } } }));

  it('refuses a string that is not UTF-8, naming the field', () => {
    const bytes = Uint8Array.from(good);
    bytes[2] = 0xff; // first byte of the name
    expect(RESOURCE_TYPES.cluster.decode(bytes).error).toMatch(/name: string is not valid UTF-8/);
  });

  it('refuses a known field with the wrong wire type, and a truncated message', () => {
    const wrongType = protobuf.Writer.create().uint32((1 << 3) | 0).uint32(5).finish(); // name as a varint
    expect(RESOURCE_TYPES.cluster.decode(wrongType).error).toMatch(/wire type 0 for a string/);
    expect(RESOURCE_TYPES.cluster.decode(good.subarray(0, good.length - 3)).error).toMatch(/undecodable/);
    expect(RESOURCE_TYPES.cluster.decode(Uint8Array.of(0x00, 0x01)).error).toMatch(/field number 0/);
  });

  it('refuses nesting deeper than the C++ parser allows', () => {
    // google.protobuf.Struct { fields: { k: Value { struct_value: Struct { … } } } }, 60 times over
    let struct = protobuf.Writer.create().finish();
    for (let i = 0; i < 60; i++) {
      const value = protobuf.Writer.create().uint32((5 << 3) | 2).bytes(struct).finish();
      const mapEntry = protobuf.Writer.create().uint32(10).string('k').uint32(18).bytes(value).finish();
      struct = protobuf.Writer.create().uint32(10).bytes(mapEntry).finish();
    }
    // Cluster.metadata (field 25) → Metadata.filter_metadata (map, field 1) entry {key 1, value 2}
    const entry = protobuf.Writer.create().uint32(10).string('istio').uint32(18).bytes(struct).finish();
    const metadata = protobuf.Writer.create().uint32(10).bytes(entry).finish();
    const bytes = protobuf.Writer.create().uint32(10).string('c').uint32((25 << 3) | 2).bytes(metadata).finish();
    expect(RESOURCE_TYPES.cluster.decode(bytes).error).toMatch(/nested too deeply/);
  });

  it('refuses a corrupt payload of a known Any type, and leaves unknown types opaque', () => {
    const withTls = cluster({ transport_socket: { name: 'tls', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext', sni: 'a' } } });
    expect(decode('cluster', withTls).error).toBeUndefined();
    const bytes = encodeCanonical(TYPE_URL.cluster, withTls);
    const sni = Buffer.from(bytes).indexOf(Buffer.from('a', 'utf8'), bytes.length - 4);
    const corrupt = Uint8Array.from(bytes);
    corrupt[sni] = 0xc3; // a lone UTF-8 lead byte inside the UpstreamTlsContext's sni
    expect(RESOURCE_TYPES.cluster.decode(corrupt).error).toMatch(/<UpstreamTlsContext>\.sni: string is not valid UTF-8/);
    const opaque = cluster({ transport_socket: { name: 'x', typed_config: { '@type': 'type.googleapis.com/istio.private.Config' } } });
    expect(decode('cluster', opaque).error).toBeUndefined();
  });
});

describe('validation rules', () => {
  it('names: printable ASCII, not empty', () => {
    expect(decode('cluster', cluster({ name: '' })).error).toMatch(/no name/);
    expect(decode('cluster', cluster({ name: 'a\u0001' })).error).toMatch(/invalid name/);
    expect(decode('listener', { name: 'l b', address: { socket_address: { address: '0.0.0.0', port_value: 80 } } }).error).toMatch(/invalid name/);
    expect(decode('cluster', cluster({ eds_cluster_config: { service_name: 'x\ny' } })).error).toMatch(/service_name: invalid name/);
  });

  it("the protos' protoc-gen-validate rules, as Envoy checks them", () => {
    expect(decode('cluster', cluster({ connect_timeout: '0s' })).error).toMatch(/connect_timeout: duration too short/);
    expect(decode('route', routeConfig({ request_headers_to_add: [{ header: { key: 'x-a', value: 'b\r\nc' } }] })).error).toMatch(/request_headers_to_add\.0\.header\.value: .* is not a valid header value/);
    expect(decode('route', routeConfig({ request_headers_to_remove: ['x\n'] })).error).toMatch(/is not a valid header name/);
    expect(decode('route', routeConfig({ match: undefined })).error).toMatch(/match: is required/);
    expect(decode('route', routeConfig({ route: undefined })).error).toMatch(/one of route, redirect, direct_response.* is required/);
    expect(decode('route', routeConfig({ route: { cluster: 'c', retry_policy: { num_retries: 1, retry_host_predicate: [{ name: 'x' }] } } })).error).toBeUndefined();
  });

  it('an undefined enum value', () => {
    const type = lookupMessage(TYPE_URL.cluster)!;
    const bytes = type.encode(type.fromObject({ name: 'c', type: 99 })).finish();
    expect(RESOURCE_TYPES.cluster.decode(bytes).error).toMatch(/type: 99 is not a defined value/);
  });

  it('every regex must be RE2 within Istio\'s program size, wherever it is', () => {
    expect(decode('route', routeConfig({ match: { safe_regex: { regex: '/(a)\\1' } } })).error).toMatch(/invalid RE2 regex: invalid escape sequence/);
    expect(decode('route', routeConfig({ match: { prefix: '/', headers: [{ name: 'x', string_match: { safe_regex: { regex: '(?=a)' } } }] } })).error).toMatch(/invalid RE2 regex/);
    expect(decode('route', routeConfig({ match: { safe_regex: { regex: 'a{1000}'.repeat(33) } } })).error).toMatch(/program size \d+ exceeds the limit of 32768/);
    expect(decode('route', routeConfig({ match: { safe_regex: { regex: 'a{1000}'.repeat(300) } } })).error).toMatch(/program size of about 300000 exceeds/); // not even compiled
    expect(decode('route', routeConfig({ match: { safe_regex: { regex: '(a+)+$' } } })).error).toBeUndefined(); // RE2 takes it
    const san = cluster({ transport_socket: { name: 'tls', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext', common_tls_context: { combined_validation_context: { default_validation_context: { match_subject_alt_names: [{ safe_regex: { regex: '[' } }] } } } } } });
    expect(decode('cluster', san).error).toMatch(/<UpstreamTlsContext>.*safe_regex: invalid RE2 regex: missing closing \]/);
  });

  it('two virtual hosts may not claim one domain', () => {
    const rc = { name: '80', virtual_hosts: [{ name: 'a', domains: ['a.com'], routes: [] }, { name: 'b', domains: ['A.com'], routes: [] }] };
    expect(decode('route', rc).error).toMatch(/domain "A.com" appears twice/);
  });
});

describe('RE2 acceptance', () => {
  it('takes RE2 syntax and refuses Perl-only syntax', () => {
    for (const ok of ['/api/v[0-9]+/.*', '(?i)abc', '\\pL+', '(?P<n>x)', '[[:alpha:]]', '\\Qa.b\\E', 'a{2,5}']) expect(re2Rejection(ok), ok).toBeNull();
    for (const bad of ['(a)\\1', '(?=a)', '(?<=a)b', 'a*+', '(?>a)', '\\Z', 'a{1001}', '[']) expect(re2Rejection(bad), bad).toMatch(/invalid RE2 regex|repeat/);
  });
});


describe('what the agent keeps of a resource', () => {
  it('drops the istio metadata of clusters and endpoints (the translation never reads it; memory per service)', () => {
    const istio = { filter_metadata: { istio: { services: [{ host: 'a.ns.svc.cluster.local', name: 'a', namespace: 'ns' }] } } };
    const c = decode('cluster', cluster({ metadata: istio }));
    expect(c.error).toBeUndefined();
    expect(c.value).not.toHaveProperty('metadata');
    expect(c.value).toMatchObject({ name: 'outbound|80||a.ns.svc.cluster.local', type: 'EDS' });
    const lb = { endpoint: { address: { socket_address: { address: '10.0.0.1', port_value: 80 } } }, metadata: istio };
    const e = decode('endpoint', { cluster_name: 'c', endpoints: [{ lb_endpoints: [lb, lb] }] });
    expect(e.error).toBeUndefined();
    const kept = (e.value as { endpoints: Array<{ lb_endpoints: Array<Record<string, unknown>> }> }).endpoints[0]!.lb_endpoints;
    expect(kept).toHaveLength(2);
    for (const l of kept) {
      expect(l).not.toHaveProperty('metadata');
      expect(l).toHaveProperty('endpoint.address.socket_address.address', '10.0.0.1');
    }
  });
});
