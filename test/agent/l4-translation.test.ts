// The L4 front's view of istiod's listeners (agent/l4/listener-chains.ts) and its resolution against
// the translated clusters (agent/l4/assemble.ts), on resources written in canonical JSON as istiod
// sends them and decoded through protobuf bytes like a live stream. What the front does with the
// result on the real APISIX: test/dataplane/l4.test.ts.
import { describe, expect, it } from 'vitest';
import { fromCanonical } from '../../agent/xds/codec.js';
import { TYPE_URL } from '../../agent/xds/protos.js';
import type { Cluster, Listener } from '../../agent/xds/envoy-types.js';
import { canonicalIp, l4Listener, type L4ListenerDraft } from '../../agent/l4/listener-chains.js';
import { assembleL4Listener } from '../../agent/l4/assemble.js';
import { translateCluster, type ClusterTranslation } from '../../agent/translate/cluster.js';
import { upstreamId } from '../../agent/translate/ids.js';
import type { ApisixUpstream, TranslationNote } from '../../agent/translate/apisix-types.js';
import { translateMesh } from '../../agent/translate/snapshot.js';
import {
  blackHoleCluster, edsCluster, inboundCluster, inboundPassthroughCluster, loadAssignment, outboundHttpListener, outboundTcpListener,
  outboundTlsListener, passthroughCluster, rbacHttpFilter, rbacNetworkFilter, tcpProxyFilter, virtualInbound, virtualOutbound, withHttpFilters,
  hcm, istioMtlsTransportSocket,
} from '../support/istio-xds.js';
import { loadCanonical } from '../support/xds-fixtures.js';

type Json = Record<string, unknown>;
const listener = (json: object) => fromCanonical<Listener>(TYPE_URL.listener, json);
const draftOf = (json: object): L4ListenerDraft => {
  const d = l4Listener(listener(json));
  if (!d) throw new Error('no L4 view');
  return d;
};

/** A listener with these chains (filter_chain_match, filters), as istiod shapes one. */
function withChains(name: string, port: number, chains: Array<{ match?: Json; filters: Json[] }>, address = '0.0.0.0'): Json {
  return {
    name,
    address: { socket_address: { address, port_value: port } },
    filter_chains: chains.map((c, i) => ({ ...(c.match ? { filter_chain_match: c.match } : {}), filters: c.filters, name: `chain-${i}` })),
    traffic_direction: 'OUTBOUND',
  };
}

/** Translated clusters and the upstreams APISIX would get for them (each with one node). */
function world(clusters: Json[]): { clusters: Map<string, ClusterTranslation>; upstreams: Map<string, ApisixUpstream> } {
  const translated = new Map<string, ClusterTranslation>();
  const upstreams = new Map<string, ApisixUpstream>();
  for (const json of clusters) {
    const t = translateCluster(fromCanonical<Cluster>(TYPE_URL.cluster, json));
    translated.set(t.clusterName, t);
    if (t.upstream) upstreams.set(t.clusterName, { ...t.upstream, nodes: t.inlineNodes ?? [{ host: '10.1.0.1', port: 80, weight: 1 }] });
  }
  return { clusters: translated, upstreams };
}

describe('Listener → L4 draft: where it is bound and what its chains match', () => {
  it('binds the capture listeners, wildcard ports and service addresses as the front looks them up', () => {
    expect(draftOf(virtualOutbound())).toMatchObject({ listenerName: 'virtualOutbound', direction: 'outbound', bind: { virtual: true } });
    expect(draftOf(virtualInbound([]))).toMatchObject({ listenerName: 'virtualInbound', direction: 'inbound', bind: { virtual: true } });
    expect(draftOf(outboundHttpListener(8080)).bind).toEqual({ port: 8080, families: ['ipv4'] });
    expect(draftOf(outboundTcpListener('10.96.0.10', 53, 'outbound|53||kube-dns.kube-system.svc.cluster.local')).bind).toEqual({ address: '10.96.0.10', port: 53 });
  });

  it('binds a dual-stack service listener to its additional address too, in the kernel\'s IPv6 text (what the front compares)', () => {
    const dual = outboundTcpListener('10.96.0.10', 5432, 'outbound|5432||pg.data.svc.cluster.local', ['FD00:96:0:0:0:0:0:A']);
    expect(draftOf(dual).bind).toEqual({ address: '10.96.0.10', port: 5432, also: [{ address: 'fd00:96::a', port: 5432 }] });
    expect(draftOf(outboundTcpListener('2001:db8:0:0:1:0:0:1', 80, 'x')).bind).toEqual({ address: '2001:db8::1:0:0:1', port: 80 });
    expect(canonicalIp('0:0:0:0:0:0:0:1')).toBe('::1');
    expect(canonicalIp('fd00:0:0:1::')).toBe('fd00:0:0:1::');
    expect(canonicalIp('10.0.0.1')).toBe('10.0.0.1');
    expect(canonicalIp('not:an:address:zz')).toBe('not:an:address:zz');
  });

  // The shapes istiod sends for the capture ports and the per-port wildcard listeners by the proxy's
  // IP mode (istio/istio 86c9f01fd735fb01d8192f5bcaf0d424afb7f14c, pilot/pkg/networking/core/:
  // listener_address.go wildCards, listener_builder.go buildVirtualOutboundListener,
  // listener_inbound.go buildInboundListener, listener.go buildListenerFromEntry). Envoy hands a
  // captured connection to the listener on the wildcard of the destination's family only
  // (connection_handler_impl.cc getBalancedHandlerByAddress): the front is told which families.
  it('binds a wildcard listener for the families of its wildcard addresses, as Envoy looks them up; the capture listeners whatever their addresses', () => {
    const at = (address: string, port: number, extra: string[] = [], compat = false) => ({
      address: { socket_address: { address, port_value: port, ...(compat ? { ipv4_compat: true } : {}) } },
      ...(extra.length ? { additional_addresses: extra.map((a) => ({ address: { socket_address: { address: a, port_value: port } } })) } : {}),
    });
    // IPv4 proxy: 0.0.0.0_8080; IPv6-only: ::_8080; dual-stack: 0.0.0.0_8080 + [::]:8080
    expect(draftOf({ ...outboundHttpListener(8080), ...at('0.0.0.0', 8080) }).bind).toEqual({ port: 8080, families: ['ipv4'] });
    expect(draftOf(outboundHttpListener(8080, 'ALLOW_ANY', '::')).bind).toEqual({ port: 8080, families: ['ipv6'] });
    expect(draftOf(outboundHttpListener(8080, 'ALLOW_ANY', 'dual')).bind).toEqual({ port: 8080, families: ['ipv4', 'ipv6'] });
    // `::` with ipv4_compat takes IPv4 too (Envoy maps it to 0.0.0.0 as well); istiod never sets it
    expect(draftOf({ ...outboundHttpListener(8080), ...at('::', 8080, [], true) }).bind).toEqual({ port: 8080, families: ['ipv4', 'ipv6'] });
    // virtualOutbound: `::` (IPv6-only), plus 0.0.0.0:15001 with ISTIO_ENABLE_IPV4_OUTBOUND_LISTENER_FOR_IPV6_CLUSTERS
    // (an additional address on the same listener, not a listener of its own); 0.0.0.0 + [::] dual-stack with ISTIO_DUAL_STACK
    expect(draftOf({ ...virtualOutbound('ALLOW_ANY', '::'), ...at('::', 15001, ['0.0.0.0']) }).bind).toEqual({ virtual: true });
    expect(draftOf({ ...virtualOutbound(), ...at('0.0.0.0', 15001, ['::']) }).bind).toEqual({ virtual: true });
    expect(draftOf({ ...virtualInbound([]), ...at('0.0.0.0', 15006, ['::']) })).toMatchObject({ direction: 'inbound', bind: { virtual: true } });
  });

  it('keeps every match field the front evaluates: port, prefixes (default length), server names (lower-cased), transport, ALPN', () => {
    const d = draftOf(
      withChains('0.0.0.0_443', 443, [
        { match: { destination_port: 443, prefix_ranges: [{ address_prefix: '10.96.0.0', prefix_len: 12 }, { address_prefix: '10.1.2.3' }, { address_prefix: 'fd00::1' }] }, filters: [tcpProxyFilter('a')] },
        { match: { server_names: ['API.Example.com', '*.example.org'], transport_protocol: 'tls', application_protocols: ['h2', 'http/1.1'] }, filters: [tcpProxyFilter('b')] },
        { match: { transport_protocol: 'raw_buffer' }, filters: [tcpProxyFilter('c')] },
      ]),
    );
    expect(d.chains.map((c) => c.match)).toEqual([
      { port: 443, prefixes: [{ address: '10.96.0.0', length: 12 }, { address: '10.1.2.3', length: 32 }, { address: 'fd00::1', length: 128 }] },
      { server_names: ['api.example.com', '*.example.org'], transport: 'tls', alpn: ['h2', 'http/1.1'] },
      { transport: 'raw_buffer' },
    ]);
    expect(d.notes).toEqual([]);
  });

  it('an HTTP connection manager chain goes to the HTTP listener; a TCP proxy to its cluster or weighted clusters', () => {
    const http = draftOf(outboundHttpListener(8080));
    expect(http.chains[0]!.target).toEqual({ kind: 'http' });
    expect(http.default).toMatchObject({ name: 'PassthroughFilterChain', target: { kind: 'tcp', clusters: [{ name: 'PassthroughCluster', weight: 1 }] } });
    const split = draftOf(outboundTcpListener('10.96.50.10', 9000, [{ name: 'outbound|9000|v1|db', weight: 80 }, { name: 'outbound|9000|v2|db', weight: 20 }]));
    expect(split.chains[0]!.target).toEqual({ kind: 'tcp', clusters: [{ name: 'outbound|9000|v1|db', weight: 80 }, { name: 'outbound|9000|v2|db', weight: 20 }] });
    expect(split.notes).toEqual([]); // istio.stats in front of the TCP proxy is telemetry
  });

  it('fail closed: a TCP chain with a filter the agent does not enforce (a network RBAC it cannot compile) is refused; an HTTP chain goes to its scope\'s refusal route', () => {
    const rbac = { name: 'envoy.filters.network.rbac', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC', stat_prefix: 'tcp.', matcher: { matcher_list: { matchers: [] } } } };
    const tcp = draftOf(virtualInbound([{ port: 5432, service: 'pg', protocol: 'tcp', filters: [rbac] }]));
    const chain = tcp.chains.find((c) => c.match.port === 5432)!;
    expect(chain.target).toEqual({ kind: 'refuse', reason: expect.stringMatching(/^filters not enforced: envoy\.filters\.network\.rbac .*matcher form/) });
    // an HTTP chain with an unenforced HTTP filter: the HTTP listener answers 403 for its scope
    const limited = withHttpFilters(outboundHttpListener(8080), [{ name: 'envoy.filters.http.local_ratelimit', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit', stat_prefix: 'rl' } }], () => true);
    expect(draftOf(limited).chains[0]!.target).toEqual({ kind: 'http' });
    // an enforced one (HTTP RBAC that compiles) changes nothing here either
    const enforced = withHttpFilters(outboundHttpListener(8080), [rbacHttpFilter('DENY', { p: { permissions: [{ any: true }], principals: [{ any: true }] } })], () => true);
    expect(draftOf(enforced).chains[0]!.target).toEqual({ kind: 'http' });
  });

  it('fail closed: match criteria the front does not evaluate refuse the chain, with a note (it must never match by mistake)', () => {
    const d = draftOf(
      withChains('0.0.0.0_9000', 9000, [
        { match: { source_prefix_ranges: [{ address_prefix: '10.0.0.0', prefix_len: 8 }] }, filters: [tcpProxyFilter('a')] },
        { match: { source_ports: [1234] }, filters: [tcpProxyFilter('a')] },
        { match: { source_type: 'SAME_IP_OR_LOOPBACK' }, filters: [tcpProxyFilter('a')] },
        { match: { transport_protocol: 'quic' }, filters: [tcpProxyFilter('a')] },
        { filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 'none' } }] },
        { filters: [] },
      ]),
    );
    expect(d.chains.map((c) => c.target.kind)).toEqual(['refuse', 'refuse', 'refuse', 'refuse', 'refuse', 'refuse']);
    expect(d.chains.map((c) => (c.target as { reason: string }).reason)).toEqual([
      'source prefix ranges are not evaluated',
      'source ports are not evaluated',
      'source type is not evaluated',
      'transport protocol quic',
      'tcp_proxy without a cluster',
      'no terminal filter',
    ]);
    expect(d.notes.map((n) => [n.reason, n.skipped])).toEqual([
      ['unsupported-chain-match', true],
      ['unsupported-chain-match', true],
      ['unsupported-chain-match', true],
      ['unsupported-chain-match', true],
      ['no-terminal-filter', true],
    ]);
  });

  it('Istio\'s inbound mTLS chains: HTTP goes to APISIX\'s mTLS listener; a TCP proxy behind mTLS keeps its cluster, with the chain\'s TLS for the front\'s stream TLS listener', () => {
    // the fixture's inbound listener (PERMISSIVE) without its policy filters, so that only the transport socket can refuse
    const inbound = loadCanonical('istio-sidecar-listeners-configdump.yaml').listener.find((l) => l['name'] === 'virtualInbound')!;
    const stripped = JSON.parse(JSON.stringify(inbound, (k, v: unknown) => (k === 'filters' || k === 'http_filters') && Array.isArray(v) ? v.filter((f: { name?: string }) => !/rbac|ext_authz/.test(f.name ?? '')) : v)) as Json;
    const raw = stripped['filter_chains'] as Json[];
    const d = draftOf(stripped);
    const terminating = raw.flatMap((c, i) => (c['transport_socket'] ? [i] : []));
    expect(terminating.length).toBeGreaterThan(2);
    const isHttp = (c: Json) => JSON.stringify(c['filters']).includes('HttpConnectionManager');
    const httpTls = terminating.filter((i) => isHttp(raw[i]!));
    const tcpTls = terminating.filter((i) => !isHttp(raw[i]!));
    expect(httpTls.length).toBeGreaterThan(0);
    expect(tcpTls.length).toBeGreaterThan(0);
    for (const i of httpTls) expect(d.chains[i]!.target, d.chains[i]!.name).toEqual({ kind: 'http', tls: true, peer_sans: [{ k: 'prefix', v: 'spiffe://cluster.local/' }] });
    for (const i of tcpTls) {
      expect(d.chains[i]!.target, d.chains[i]!.name).toMatchObject({ kind: 'tcp', tls: true, peer_sans: [{ k: 'prefix', v: 'spiffe://cluster.local/' }] });
      expect((d.chains[i]!.target as { clusters: unknown[] }).clusters.length).toBeGreaterThan(0);
    }
    expect(d.notes.filter((n) => n.reason === 'tls-termination-unsupported')).toEqual([]);
    // the other chains of the same listener, TLS passed through among them, are not refused for it
    const others = d.chains.filter((_, i) => !terminating.includes(i));
    expect(others.map((c) => [c.match.transport, c.target.kind])).toEqual([
      [undefined, 'tcp'], // the capture port's black hole
      ['raw_buffer', 'http'],
      ['raw_buffer', 'tcp'],
      ['tls', 'tcp'],
      ['raw_buffer', 'http'],
    ]);
  });
});

describe('which TLS termination the front does: Istio\'s mTLS and nothing else (mesh-tls-context.ts)', () => {
  const tlsChain = (change: (ctx: Json) => void): Json => {
    const socket = istioMtlsTransportSocket();
    change(socket['typed_config'] as Json);
    return { filter_chain_match: { destination_port: 8080, transport_protocol: 'tls' }, filters: [hcm('inbound_0.0.0.0_8080', { route_config: { name: 'r', virtual_hosts: [] } })], transport_socket: socket, name: 'c' };
  };
  const inboundWith = (chain: Json): Json => ({ ...withChains('virtualInbound', 15006, []), filter_chains: [chain], traffic_direction: 'INBOUND' });
  const common = (ctx: Json) => ctx['common_tls_context'] as Json;

  it('Istio\'s shape (SDS default + ROOTCA, client certificate required) on inbound HTTP → the mTLS listener; any deviation → refused with a note', () => {
    expect(draftOf(inboundWith(tlsChain(() => undefined))).chains[0]!.target).toEqual({ kind: 'http', tls: true, peer_sans: [{ k: 'prefix', v: 'spiffe://cluster.local/' }] });
    // trust domain aliases: several matchers, exact ones too; none: any peer of the roots
    const sans = (list: Json[]) => (ctx: Json) => (((common(ctx)['combined_validation_context'] as Json)['default_validation_context'] as Json)['match_subject_alt_names'] = list);
    expect(draftOf(inboundWith(tlsChain(sans([{ prefix: 'spiffe://td-a/' }, { exact: 'spiffe://td-b/ns/x/sa/y' }])))).chains[0]!.target).toEqual({
      kind: 'http', tls: true, peer_sans: [{ k: 'prefix', v: 'spiffe://td-a/' }, { k: 'exact', v: 'spiffe://td-b/ns/x/sa/y' }],
    });
    expect(draftOf(inboundWith(tlsChain(sans([])))).chains[0]!.target).toEqual({ kind: 'http', tls: true });
    const deviations: Array<(ctx: Json) => void> = [
      (ctx) => delete ctx['require_client_certificate'],
      (ctx) => ((ctx['require_client_certificate'] as unknown) = false),
      (ctx) => ((common(ctx)['tls_certificate_sds_secret_configs'] as Json[])[0]!['name'] = 'file-cert'),
      (ctx) => (((common(ctx)['combined_validation_context'] as Json)['validation_context_sds_secret_config'] as Json)['name'] = 'file-root:/etc/certs/ca.pem'),
      (ctx) => (common(ctx)['tls_certificates'] = [{ certificate_chain: { filename: '/etc/certs/cert.pem' }, private_key: { filename: '/etc/certs/key.pem' } }]),
      // SAN matchers the sidecar does not check: never left unchecked
      sans([{ safe_regex: { regex: 'spiffe://.*' } }]),
      sans([{ prefix: 'SPIFFE://cluster.local/', ignore_case: true }]),
      sans([{ prefix: 'spiffe://a b/' }]),
      sans([{ prefix: 'spiffe://a|b/' }]),
    ];
    for (const change of deviations) {
      const d = draftOf(inboundWith(tlsChain(change)));
      expect(d.chains[0]!.target).toEqual({ kind: 'refuse', reason: "terminates TLS (envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext other than Istio's mTLS)" });
      expect(d.notes.map((n) => n.reason)).toEqual(['tls-termination-unsupported']);
    }
    // the same chain on an outbound listener: the front never terminates outbound TLS
    const outbound = draftOf({ ...withChains('0.0.0.0_8080', 8080, []), filter_chains: [tlsChain(() => undefined)] });
    expect(outbound.chains[0]!.target).toEqual({ kind: 'refuse', reason: "terminates TLS (Istio's mTLS for outbound HTTP)" });
  });

  it('Istio\'s shape in front of a TCP proxy on inbound → the proxy\'s cluster with the chain\'s TLS, its network RBAC kept; any deviation, or outbound → refused with a note', () => {
    const allow = rbacNetworkFilter('ALLOW', { p: { permissions: [{ any: true }], principals: [{ authenticated: { principal_name: { exact: 'spiffe://cluster.local/ns/a/sa/b' } } }] } });
    const tcpChain = (change: (ctx: Json) => void): Json => ({ ...tlsChain(change), filters: [allow, tcpProxyFilter('inbound|5432||')] });
    const d = draftOf(inboundWith(tcpChain(() => undefined)));
    expect(d.chains[0]!.target).toEqual({ kind: 'tcp', clusters: [{ name: 'inbound|5432||', weight: 1 }], tls: true, peer_sans: [{ k: 'prefix', v: 'spiffe://cluster.local/' }] });
    // the principal is compiled for the TLS listener to judge (no longer always absent on a TCP chain)
    expect(JSON.stringify(d.chains[0]!.rbac)).toContain('spiffe://cluster.local/ns/a/sa/b');
    expect(d.notes).toEqual([]);
    // no SAN matchers: any peer of the roots, as on HTTP
    const noSans = draftOf(inboundWith(tcpChain((ctx) => (((common(ctx)['combined_validation_context'] as Json)['default_validation_context'] as Json)['match_subject_alt_names'] = []))));
    expect(noSans.chains[0]!.target).toEqual({ kind: 'tcp', clusters: [{ name: 'inbound|5432||', weight: 1 }], tls: true });
    // a TLS context of another shape stays refused, with its note
    const files = draftOf(inboundWith(tcpChain((ctx) => (common(ctx)['tls_certificates'] = [{ certificate_chain: { filename: '/etc/certs/cert.pem' }, private_key: { filename: '/etc/certs/key.pem' } }]))));
    expect(files.chains[0]!.target).toEqual({ kind: 'refuse', reason: "terminates TLS (envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext other than Istio's mTLS)" });
    expect(files.notes.map((n) => n.reason)).toEqual(['tls-termination-unsupported']);
    const noClientCert = draftOf(inboundWith(tcpChain((ctx) => delete ctx['require_client_certificate'])));
    expect(noClientCert.chains[0]!.target.kind).toBe('refuse');
    // outbound: never terminated by the front
    const outbound = draftOf({ ...withChains('0.0.0.0_5432', 5432, []), filter_chains: [tcpChain(() => undefined)] });
    expect(outbound.chains[0]!.target).toEqual({ kind: 'refuse', reason: "terminates TLS (Istio's mTLS for outbound TCP)" });
    expect(outbound.notes.map((n) => n.reason)).toEqual(['tls-termination-unsupported']);
  });
});

describe('L4 draft → what APISIX gets: chains resolved against the clusters', () => {
  const assemble = (draft: L4ListenerDraft, clusters: Json[]) => {
    const { clusters: translated, upstreams } = world(clusters);
    const notes: TranslationNote[] = [];
    return { listener: assembleL4Listener(draft, translated, (c) => upstreams.get(c)?.id, notes), notes };
  };

  it('a weighted split goes to the upstreams of its clusters, weights kept', () => {
    const v1 = 'outbound|9000|v1|db.data.svc.cluster.local';
    const v2 = 'outbound|9000|v2|db.data.svc.cluster.local';
    const { listener: l, notes } = assemble(draftOf(outboundTcpListener('10.96.50.10', 9000, [{ name: v1, weight: 80 }, { name: v2, weight: 20 }])), [edsCluster(v1), edsCluster(v2)]);
    expect(l.chains[0]!.action).toEqual({ kind: 'cluster', clusters: [{ upstream_id: upstreamId(v1), weight: 80 }, { upstream_id: upstreamId(v2), weight: 20 }] });
    expect(notes).toEqual([]);
  });

  it('the original destination passes through with its connect timeout; the black hole refuses without a note', () => {
    const { listener: l, notes } = assemble(draftOf(virtualOutbound()), [passthroughCluster(), blackHoleCluster()]);
    expect(l.chains.map((c) => [c.name, c.action])).toEqual([
      ['virtualOutbound-blackhole', { kind: 'refuse', reason: 'BlackHoleCluster' }],
      ['virtualOutbound-catchall-tcp', { kind: 'passthrough', connect_timeout: 10 }],
    ]);
    const registryOnly = assemble(draftOf(virtualOutbound('REGISTRY_ONLY')), [passthroughCluster(), blackHoleCluster()]);
    expect(registryOnly.listener.chains[1]!.action).toEqual({ kind: 'refuse', reason: 'BlackHoleCluster' });
    expect([...notes, ...registryOnly.notes]).toEqual([]);
  });

  it('inbound: a TCP port goes to the app at the address the client dialled (Envoy\'s original-destination inbound cluster), as the catch-all does', () => {
    const { listener: l } = assemble(draftOf(virtualInbound([{ port: 5432, service: 'pg', protocol: 'tcp' }])), [inboundCluster(5432), inboundPassthroughCluster(), blackHoleCluster()]);
    expect(l.direction).toBe('inbound');
    expect(l.chains.find((c) => c.match.port === 5432)!.action).toEqual({ kind: 'passthrough', connect_timeout: 10 });
    expect(l.chains.find((c) => c.name === 'virtualInbound')!.action).toEqual({ kind: 'passthrough', connect_timeout: 10 });
  });

  it('inbound TCP ports under STRICT and PERMISSIVE: the mTLS chain passes through with the chain\'s TLS and network RBAC; PERMISSIVE\'s plaintext chain without TLS', () => {
    const deny = rbacNetworkFilter('DENY', { p: { permissions: [{ any: true }], principals: [{ authenticated: { principal_name: { exact: 'spiffe://cluster.local/ns/a/sa/evil' } } }] } });
    const draft = draftOf(virtualInbound([
      { port: 5432, service: 'pg', protocol: 'tcp', mtls: 'STRICT', filters: [deny] },
      { port: 5433, service: 'pg', protocol: 'tcp', mtls: 'PERMISSIVE' },
    ]));
    const { listener: l, notes } = assemble(draft, [inboundCluster(5432), inboundCluster(5433), inboundPassthroughCluster(), blackHoleCluster()]);
    const mtls = { kind: 'passthrough', connect_timeout: 10, tls: true, peer_sans: [{ k: 'prefix', v: 'spiffe://cluster.local/' }] };
    const strict = l.chains.filter((c) => c.match.port === 5432);
    expect(strict.map((c) => [c.match.transport, c.action])).toEqual([['tls', mtls]]);
    expect(strict[0]!.rbac).toHaveLength(1);
    const permissive = l.chains.filter((c) => c.match.port === 5433);
    expect(permissive.map((c) => [c.match.transport, c.action])).toEqual([
      ['tls', mtls],
      ['raw_buffer', { kind: 'passthrough', connect_timeout: 10 }],
    ]);
    expect(notes).toEqual([]);
  });

  it('a TCP proxy behind Istio\'s mTLS to a cluster with endpoints keeps the TLS; to an unknown cluster it is refused, never forwarded without it', () => {
    const db = 'outbound|9000||db.data.svc.cluster.local';
    const chain = (cluster: string): Json => ({ filter_chain_match: { destination_port: 9000, transport_protocol: 'tls' }, filters: [tcpProxyFilter(cluster)], transport_socket: istioMtlsTransportSocket(), name: cluster });
    const inbound = { name: 'virtualInbound', address: { socket_address: { address: '0.0.0.0', port_value: 15006 } }, filter_chains: [chain(db), chain('nowhere')], traffic_direction: 'INBOUND' };
    const { listener: l, notes } = assemble(draftOf(inbound), [edsCluster(db)]);
    expect(l.chains.map((c) => c.action)).toEqual([
      { kind: 'cluster', clusters: [{ upstream_id: upstreamId(db), weight: 1 }], tls: true, peer_sans: [{ k: 'prefix', v: 'spiffe://cluster.local/' }] },
      { kind: 'refuse', reason: 'unknown cluster nowhere' },
    ]);
    expect(notes.map((n) => n.reason)).toEqual(['tcp-proxy-refused']);
  });

  it('SNI chains of a TLS ServiceEntry go to its cluster; the default chain follows the outbound traffic policy', () => {
    const api = 'outbound|443||api.example.com';
    const { listener: l } = assemble(draftOf(outboundTlsListener(443, [{ serverNames: ['api.example.com'], cluster: api }])), [edsCluster(api), passthroughCluster(), blackHoleCluster()]);
    expect(l.chains).toEqual([{ name: 'chain-0', match: { server_names: ['api.example.com'] }, action: { kind: 'cluster', clusters: [{ upstream_id: upstreamId(api), weight: 1 }] } }].map((c) => ({ ...c, name: expect.any(String) })));
    expect(l.default?.action).toEqual({ kind: 'passthrough', connect_timeout: 10 });
  });

  it('fail closed: an unknown cluster, one without endpoints, and a split mixing the original destination with a cluster are refused, each with a note', () => {
    const known = 'outbound|9000||known';
    const pending = 'outbound|9000||pending';
    const chains = [
      { filters: [tcpProxyFilter('outbound|9000||nowhere')] },
      { filters: [tcpProxyFilter(pending)] },
      { filters: [tcpProxyFilter([{ name: known, weight: 50 }, { name: 'PassthroughCluster', weight: 50 }])] },
      { filters: [tcpProxyFilter([{ name: known, weight: 50 }, { name: 'outbound|9000||nowhere', weight: 50 }])] },
    ];
    const { clusters, upstreams } = world([edsCluster(known), edsCluster(pending), passthroughCluster()]);
    upstreams.delete(pending); // its ClusterLoadAssignment has not arrived
    const notes: TranslationNote[] = [];
    const l = assembleL4Listener(draftOf(withChains('0.0.0.0_9000', 9000, chains)), clusters, (c) => upstreams.get(c)?.id, notes);
    expect(l.chains.map((c) => c.action)).toEqual([
      { kind: 'refuse', reason: 'unknown cluster outbound|9000||nowhere' },
      { kind: 'refuse', reason: `cluster ${pending} is not translatable or has no endpoints yet` },
      { kind: 'refuse', reason: 'a weighted split mixing the original destination and clusters' },
      { kind: 'refuse', reason: 'unknown cluster outbound|9000||nowhere' },
    ]);
    expect(notes.map((n) => [n.reason, n.skipped])).toEqual(Array.from({ length: 4 }, () => ['tcp-proxy-refused', true]));
  });

  it('through the whole translation: every listener of a mesh is published, resolved against the same translation\'s upstreams', () => {
    const db = 'outbound|9000||db.data.svc.cluster.local';
    const xds = {
      clusters: new Map([[db, fromCanonical<Cluster>(TYPE_URL.cluster, edsCluster(db))], ['PassthroughCluster', fromCanonical<Cluster>(TYPE_URL.cluster, passthroughCluster())]]),
      endpoints: new Map([[db, fromCanonical(TYPE_URL.endpoint, loadAssignment(db, [{ ip: '10.244.7.11', port: 9000 }]))]]),
      listeners: new Map([
        ['10.96.50.10_9000', listener(outboundTcpListener('10.96.50.10', 9000, db))],
        ['virtualOutbound', listener(virtualOutbound())],
      ]),
      routeConfigs: new Map(),
    };
    const out = translateMesh(xds as Parameters<typeof translateMesh>[0]);
    const byName = new Map([...out.l4.values()].map((l) => [l.name, l]));
    expect(byName.get('10.96.50.10_9000')!.chains[0]!.action).toEqual({ kind: 'cluster', clusters: [{ upstream_id: upstreamId(db), weight: 1 }] });
    expect(out.upstreams.get(upstreamId(db))!.nodes).toEqual([{ host: '10.244.7.11', port: 9000, weight: 1 }]);
    // the BlackHoleCluster chain needs no cluster: refused by name
    expect(byName.get('virtualOutbound')!.chains[0]!.action).toEqual({ kind: 'refuse', reason: 'BlackHoleCluster' });
  });
});
