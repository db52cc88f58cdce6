// Outbound mTLS in the translation (agent/mtls/): which clusters and endpoints go through the TLS
// relay, with which SNI, SAN matchers and ALPN, and what is refused (never plaintext).
import { describe, expect, it } from 'vitest';
import { translateMesh, type XdsResources } from '../../agent/translate/snapshot.js';
import { RESOURCE_TYPES } from '../../agent/xds/resource-types/index.js';
import { encodeCanonical, fromCanonical } from '../../agent/xds/codec.js';
import { clusterSecretNames } from '../../agent/mtls/upstream-tls.js';
import type { Cluster } from '../../agent/xds/envoy-types.js';
import { TYPE_URL, type XdsKind } from '../../agent/xds/protos.js';
import { resourceName, type CanonicalResources } from '../../agent/xds/config-dump.js';
import { edsCluster, fqdn, istioMutualTransportSocket, MeshResources, outboundCluster, withClientTls, withIstioMutual, type Endpoint } from '../support/istio-xds.js';
import { TLS_RELAY_PORT } from '../../agent/mtls/origination.js';
import { assignAliases, isRelayAlias } from '../../agent/mtls/relay-aliases.js';

const ID = 'spiffe://cluster.local/ns/shop/sa/cart';
const CART = outboundCluster(80, fqdn('cart', 'shop'));
const SNI = `outbound_.80_._.${fqdn('cart', 'shop')}`;
const API_HOST = 'api.example.com';
const API = outboundCluster(80, API_HOST);

/** Resources as the agent holds them from a live stream: decoded, validated, trimmed (retain). */
function asReceived(canonical: CanonicalResources): XdsResources {
  const map = (kind: XdsKind) =>
    new Map(canonical[kind].map((r) => {
      const decoded = RESOURCE_TYPES[kind].decode(encodeCanonical(TYPE_URL[kind], r));
      if (decoded.error) throw new Error(decoded.error);
      return [resourceName(kind, r), decoded.value as never];
    }));
  return { clusters: map('cluster'), endpoints: map('endpoint'), listeners: map('listener'), routeConfigs: map('route') };
}

const CLUSTER_TYPE = TYPE_URL.cluster;
const asCluster = (c: Record<string, unknown>) => fromCanonical<Cluster>(CLUSTER_TYPE, c);

function translate(cluster: Record<string, unknown>, endpoints: Endpoint[]) {
  const m = new MeshResources();
  m.cluster(cluster, endpoints);
  return translateMesh(asReceived(m.resources));
}

describe('TLS origination in the translation', () => {
  it('ISTIO_MUTUAL: every node goes to the relay at its own alias; the relay entry has the endpoint, SNI, SAN and ALPN', () => {
    const out = translate(withIstioMutual(edsCluster(CART), [ID], 'ISTIO_MUTUAL'), [{ ip: '10.1.0.1', port: 8080 }, { ip: '10.1.0.2', port: 8080, weight: 3 }]);
    const upstream = [...out.upstreams.values()][0]!;
    expect(upstream.nodes.map((n) => n.port)).toEqual([TLS_RELAY_PORT, TLS_RELAY_PORT]);
    expect(upstream.nodes.every((n) => isRelayAlias(n.host))).toBe(true);
    expect(upstream.nodes.map((n) => n.weight)).toEqual([1, 3]);
    const relay = [...out.tlsRelay!.values()];
    expect(relay).toHaveLength(1);
    expect(relay[0]).toMatchObject({
      cluster: CART,
      sni: SNI,
      san: [{ kind: 'exact', value: ID }],
      alpn: ['istio-http/1.1', 'istio', 'http/1.1'],
      alpn_tcp: ['istio-peer-exchange', 'istio'],
      connect_timeout_ms: 10000,
      endpoints: [
        { alias: upstream.nodes[0]!.host, host: '10.1.0.1', port: 8080, mode: 'mtls' },
        { alias: upstream.nodes[1]!.host, host: '10.1.0.2', port: 8080, mode: 'mtls' },
      ],
    });
    expect(out.notes.filter((n) => n.reason.includes('plaintext'))).toEqual([]);
  });

  it('auto-mTLS: TLS for endpoints labelled tlsMode istio, plaintext through the relay for the others', () => {
    const out = translate(withIstioMutual(edsCluster(CART), [ID], 'auto'), [{ ip: '10.1.0.1', port: 8080, tlsModeIstio: true }, { ip: '10.1.0.2', port: 8080 }]);
    const relay = [...out.tlsRelay!.values()][0]!;
    expect(relay.endpoints.map((e) => [e.host, e.mode])).toEqual([['10.1.0.1', 'mtls'], ['10.1.0.2', 'plain']]);
  });

  it('auto-mTLS with no endpoint labelled: the upstream is left as it is (no relay hop)', () => {
    const out = translate(withIstioMutual(edsCluster(CART), [ID], 'auto'), [{ ip: '10.1.0.1', port: 8080 }]);
    expect([...out.upstreams.values()][0]!.nodes).toEqual([{ host: '10.1.0.1', port: 8080, weight: 1 }]);
    expect(out.tlsRelay!.size).toBe(0);
  });

  it('gRPC upstreams offer Envoy\'s HTTP/2 ALPN', () => {
    const cluster = { ...withIstioMutual(edsCluster(CART), [ID], 'ISTIO_MUTUAL'), http2_protocol_options: {} };
    const out = translate(cluster, [{ ip: '10.1.0.1', port: 8080 }]);
    expect([...out.tlsRelay!.values()][0]!.alpn).toEqual(['istio-h2', 'istio', 'h2']);
  });

  it('DestinationRule MUTUAL and SIMPLE with credentialName: the relay takes the client certificate and the CA from istiod\'s SDS secrets; their names are subscribed', () => {
    const mutual = withClientTls(edsCluster(API), { mode: 'MUTUAL', credentialName: 'kubernetes://client-cert', sni: API_HOST, subjectAltNames: [API_HOST] });
    let out = translate(mutual, [{ ip: '10.1.0.1', port: 443 }]);
    expect(out.notes).toEqual([]);
    expect([...out.tlsRelay!.values()][0]).toMatchObject({
      endpoints: [{ host: '10.1.0.1', port: 443, mode: 'tls' }], sni: API_HOST, san: [{ kind: 'exact', value: API_HOST }],
      verify: 'secret', ca_secret: 'kubernetes://client-cert-cacert', client_secret: 'kubernetes://client-cert',
    });
    expect(clusterSecretNames(asCluster(mutual))).toEqual(['kubernetes://client-cert', 'kubernetes://client-cert-cacert']);
    const simple = withClientTls(edsCluster(API), { mode: 'SIMPLE', credentialName: 'api-ca', sni: API_HOST });
    out = translate(simple, [{ ip: '10.1.0.1', port: 443 }]);
    const entry = [...out.tlsRelay!.values()][0]!;
    expect(entry).toMatchObject({ verify: 'secret', ca_secret: 'kubernetes://api-ca-cacert' });
    expect(entry.client_secret).toBeUndefined();
    expect(clusterSecretNames(asCluster(simple))).toEqual(['kubernetes://api-ca-cacert']);
    // file secrets and the mesh's own (default, ROOTCA: the agent's CA client) are never asked of istiod's SDS
    expect(clusterSecretNames(asCluster(withClientTls(edsCluster(API), { mode: 'MUTUAL', clientCertificate: '/c.pem', privateKey: '/k.pem', caCertificates: '/ca.pem' })))).toEqual([]);
    expect(clusterSecretNames(asCluster(withIstioMutual(edsCluster(CART), [ID], 'ISTIO_MUTUAL')))).toEqual([]);
  });

  it('DestinationRule caCrl (a CRL file, with a CA file or the system roots) goes to the relay; an inline CRL, or one without a CA, is refused', () => {
    const out = translate(withClientTls(edsCluster(API), { mode: 'SIMPLE', caCertificates: '/etc/api-ca/ca.pem', caCrl: '/etc/api-ca/ca.crl', sni: API_HOST }), [{ ip: '10.1.0.1', port: 443 }]);
    expect(out.notes).toEqual([]);
    expect([...out.tlsRelay!.values()][0]).toMatchObject({ verify: 'file', ca_file: '/etc/api-ca/ca.pem', crl_file: '/etc/api-ca/ca.crl', endpoints: [{ mode: 'tls' }] });
    const inline = withClientTls(edsCluster(API), { mode: 'SIMPLE', caCertificates: '/etc/api-ca/ca.pem', caCrl: '/x.crl', sni: API_HOST });
    const validation = ((inline['transport_socket'] as Record<string, Record<string, Record<string, Record<string, Record<string, unknown>>>>>)['typed_config']!['common_tls_context']!['combined_validation_context']!['default_validation_context'])!;
    validation['crl'] = { inline_string: '-----BEGIN X509 CRL-----' };
    const refusedOut = translate(inline, [{ ip: '10.1.0.1', port: 443 }]);
    expect(refusedOut.notes).toContainEqual(expect.objectContaining({ reason: 'tls-origination-refused', detail: expect.stringMatching(/an inline CRL is not enforced/) }));
  });

  it('credentialName from another SDS server than istiod\'s ADS, malformed file secrets, and regex SAN matchers are refused, never sent in plaintext', () => {
    const regex = istioMutualTransportSocket(SNI, []);
    const ctx = (regex['typed_config'] as Record<string, Record<string, Record<string, Record<string, unknown>>>>)['common_tls_context']!;
    ctx['combined_validation_context']!['default_validation_context'] = { match_subject_alt_names: [{ safe_regex: { regex: 'spiffe://.*' } }] };
    // a gateway's credential socket (sds://, ConstructSdsSecretConfigForCredentialSocket): not istiod's ADS
    const socket = withClientTls(edsCluster(API), { mode: 'MUTUAL', credentialName: 'kubernetes://client-cert', sni: API_HOST });
    const common = ((socket['transport_socket'] as Record<string, Record<string, unknown>>)['typed_config']!['common_tls_context']) as Record<string, Array<Record<string, unknown>>>;
    common['tls_certificate_sds_secret_configs']![0]!['sds_config'] = { api_config_source: { api_type: 'GRPC', grpc_services: [{ envoy_grpc: { cluster_name: 'sds-external' } }], transport_api_version: 'V3' }, resource_api_version: 'V3' };
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [withClientTls(edsCluster(API), { mode: 'MUTUAL', clientCertificate: '/etc/certs/a~b.pem', privateKey: '/etc/certs/key.pem', caCertificates: '/etc/certs/ca.pem', sni: API_HOST }), /not file-cert:<cert>~<key>/],
      [socket, /the SDS secret kubernetes:\/\/client-cert from another SDS server than istiod's ADS stream \(api_config_source\)/],
      [withClientTls(edsCluster(API), { mode: 'SIMPLE', caCertificates: 'relative/ca.pem', sni: API_HOST }), /not an absolute file path/],
      [{ ...edsCluster(API), transport_socket: regex }, /SAN matcher of kind safe_regex/],
    ];
    for (const [cluster, reason] of cases) {
      const out = translate(cluster, [{ ip: '10.1.0.1', port: 443 }]);
      const upstream = [...out.upstreams.values()][0]!;
      expect(isRelayAlias(upstream.nodes[0]!.host)).toBe(true);
      expect([...out.tlsRelay!.values()][0]!.endpoints[0]).toMatchObject({ host: '10.1.0.1', mode: 'refuse' });
      expect(out.notes).toContainEqual(expect.objectContaining({ kind: 'cluster', name: API, reason: 'tls-origination-refused', skipped: true, detail: expect.stringMatching(reason) }));
    }
  });

  it('DestinationRule SIMPLE with a CA file, sni and SANs: TLS through the relay, verified against that file, the cluster\'s own ALPN', () => {
    const cluster = withClientTls(edsCluster(API), { mode: 'SIMPLE', caCertificates: '/etc/api-ca/ca.pem', sni: API_HOST, subjectAltNames: [API_HOST] });
    const out = translate(cluster, [{ ip: '10.1.0.1', port: 443 }]);
    const upstream = [...out.upstreams.values()][0]!;
    expect(isRelayAlias(upstream.nodes[0]!.host)).toBe(true);
    const relay = [...out.tlsRelay!.values()][0]!;
    expect(relay).toMatchObject({ sni: API_HOST, san: [{ kind: 'exact', value: API_HOST }], verify: 'file', ca_file: '/etc/api-ca/ca.pem', alpn: [], alpn_tcp: [] });
    expect(relay.endpoints[0]).toMatchObject({ host: '10.1.0.1', port: 443, mode: 'tls' });
    expect(relay).not.toHaveProperty('auto_sni_host');
    expect(out.notes.filter((n) => n.reason.startsWith('tls-origination'))).toEqual([]);
  });

  it('DestinationRule MUTUAL with files: the relay presents the client certificate and key from those files', () => {
    const cluster = withClientTls(edsCluster(API), { mode: 'MUTUAL', clientCertificate: '/etc/certs/cert.pem', privateKey: '/etc/certs/key.pem', caCertificates: '/etc/certs/ca.pem', sni: API_HOST });
    const out = translate(cluster, [{ ip: '10.1.0.1', port: 443 }]);
    const relay = [...out.tlsRelay!.values()][0]!;
    expect(relay).toMatchObject({ verify: 'file', ca_file: '/etc/certs/ca.pem', client_cert_file: '/etc/certs/cert.pem', client_key_file: '/etc/certs/key.pem', sni: API_HOST });
    expect(relay.endpoints[0]!.mode).toBe('tls');
    expect(out.notes.filter((n) => n.reason.startsWith('tls-origination'))).toEqual([]);
  });

  it('DestinationRule SIMPLE without sni or SANs: the system roots, and Envoy\'s auto_sni / auto_san_validation as the service\'s host', () => {
    const out = translate(withClientTls(edsCluster(API), { mode: 'SIMPLE' }), [{ ip: '10.1.0.1', port: 443 }]);
    const relay = [...out.tlsRelay!.values()][0]!;
    expect(relay).toMatchObject({ sni: '', san: [], verify: 'system', auto_sni_host: API_HOST, auto_san_host: API_HOST });
    expect(relay.endpoints[0]!.mode).toBe('tls');
    // a wildcard ServiceEntry host has no one name to send: refused
    const wildcard = outboundCluster(80, '*.example.com');
    const refused = translate(withClientTls(edsCluster(wildcard), { mode: 'SIMPLE' }), [{ ip: '10.1.0.1', port: 443 }]);
    expect([...refused.tlsRelay!.values()][0]!.endpoints[0]!.mode).toBe('refuse');
    expect(refused.notes).toContainEqual(expect.objectContaining({ name: wildcard, reason: 'tls-origination-refused', detail: expect.stringContaining('auto_sni') }));
  });

  it('DestinationRule SIMPLE with insecureSkipVerify: TLS without a check, as Envoy, and a note saying so', () => {
    const out = translate(withClientTls(edsCluster(API), { mode: 'SIMPLE', insecureSkipVerify: true, sni: API_HOST }), [{ ip: '10.1.0.1', port: 443 }]);
    const relay = [...out.tlsRelay!.values()][0]!;
    expect(relay).toMatchObject({ verify: 'none', sni: API_HOST });
    expect(relay.endpoints[0]!.mode).toBe('tls');
    expect(out.notes).toContainEqual(expect.objectContaining({ name: API, reason: 'tls-origination-unverified', skipped: false }));
  });

  it('aliases depend on the set of keys only, are distinct, and stay in 127.64.0.0/10', () => {
    const keys = Array.from({ length: 5000 }, (_, i) => `c${i % 7}\0 10.0.${i >> 8}.${i & 255}:80`);
    const a = assignAliases(keys);
    const b = assignAliases([...keys].reverse());
    expect(b).toEqual(a);
    expect(new Set(a.values()).size).toBe(keys.length);
    expect([...a.values()].every(isRelayAlias)).toBe(true);
    expect([...a.values()]).not.toContain('127.64.0.0');
  });
});
