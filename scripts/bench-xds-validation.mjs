#!/usr/bin/env node
// `npm run bench -- xds-validation`: what validating every xDS resource when it arrives costs
// (agent/xds/resource-types/: strict wire check, protoc-gen-validate rules with known Any payloads,
// RE2 for regexes, names) next to the baseline measured in the same run: protobufjs's plain decode,
// which is what the agent did before. Resources in istiod's shapes, from a real istiod 1.18 config
// dump (506 resources, TLS contexts, HCMs with filters, EDS) and a synthetic mesh of N services.
// Plain ESM over dist/ (npm run bench builds first).
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { encodeCanonical, decodeMessage } from '../dist/agent/xds/codec.js';
import { TYPE_URL } from '../dist/agent/xds/protos.js';
import { resourcesFromJson } from '../dist/agent/xds/config-dump.js';
import { RESOURCE_TYPES } from '../dist/agent/xds/resource-types/index.js';

const KINDS = ['cluster', 'endpoint', 'listener', 'route'];
const ms = (t) => `${t.toFixed(1)} ms`;

function encodeAll(resources) {
  return KINDS.flatMap((kind) => resources[kind].map((r) => ({ kind, bytes: encodeCanonical(TYPE_URL[kind], r) })));
}

function median(xs) {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}

function time(fn, rounds = 7) {
  const out = [];
  for (let i = 0; i < rounds; i++) {
    const t = performance.now();
    fn();
    out.push(performance.now() - t);
  }
  return median(out);
}

function synthetic(n) {
  const cluster = [], endpoint = [], vhosts = [];
  for (let i = 0; i < n; i++) {
    const host = `svc-${i}.ns-${i % 50}.svc.cluster.local`;
    const name = `outbound|80||${host}`;
    cluster.push({ name, type: 'EDS', eds_cluster_config: { eds_config: { ads: {} }, service_name: name }, connect_timeout: '10s', lb_policy: 'LEAST_REQUEST',
      transport_socket: { name: 'tls', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext', sni: `outbound_.80_._.${host}`, common_tls_context: { alpn_protocols: ['istio-peer-exchange', 'istio'], combined_validation_context: { default_validation_context: { match_subject_alt_names: [{ exact: `spiffe://cluster.local/ns/ns-${i % 50}/sa/default` }] }, validation_context_sds_secret_config: { name: 'ROOTCA', sds_config: { ads: {} } } } } } } });
    endpoint.push({ cluster_name: name, endpoints: [{ lb_endpoints: [1, 2, 3].map((k) => ({ endpoint: { address: { socket_address: { address: `10.${(i >> 8) & 255}.${i & 255}.${k}`, port_value: 8080 } } } })) }] });
    vhosts.push({ name: `${host}:80`, domains: [host, `svc-${i}.ns-${i % 50}`], routes: [{ name: 'default', match: { prefix: '/', headers: [{ name: 'x-version', string_match: { safe_regex: { regex: `v${i % 7}(\\.[0-9]+)*` } } }] }, route: { cluster: name, retry_policy: { num_retries: 2 } }, request_headers_to_add: [{ header: { key: 'x-mesh', value: 'apisix' } }] }] });
  }
  const listener = [{ name: '0.0.0.0_80', address: { socket_address: { address: '0.0.0.0', port_value: 80 } }, filter_chains: [{ filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager', stat_prefix: 'outbound_0.0.0.0_80', rds: { config_source: { ads: {} }, route_config_name: '80' }, http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } }] } }] }] }];
  return { cluster, endpoint, listener, route: [{ name: '80', virtual_hosts: vhosts }] };
}

const inputs = [
  ['istio 1.18 config dump', resourcesFromJson(JSON.parse(readFileSync(new URL('../test/fixtures/xds/deathstarbench-geo-istio1.18-configdump.json', import.meta.url), 'utf8')))],
  ...(process.env.BENCH_SIZES ?? '1000,5000').split(',').map((n) => [`synthetic, ${n} services`, synthetic(Number(n))]),
];

console.log('xDS receive path: decode + validate every resource (the agent) vs plain protobufjs decode (baseline, before); medians of 7 rounds');
console.log('input | resources | bytes | plain decode (baseline) | decode + validate | factor');
for (const [label, resources] of inputs) {
  const all = encodeAll(resources);
  const bytes = all.reduce((s, r) => s + r.bytes.length, 0);
  // warm-up, and a check that everything is valid (the bench measures the accepting path)
  for (const r of all) {
    const result = RESOURCE_TYPES[r.kind].decode(r.bytes);
    if (result.error) throw new Error(`${r.kind} ${result.name}: ${result.error}`);
    decodeMessage(TYPE_URL[r.kind], r.bytes);
  }
  const plain = time(() => { for (const r of all) decodeMessage(TYPE_URL[r.kind], r.bytes); });
  const validated = time(() => { for (const r of all) RESOURCE_TYPES[r.kind].decode(r.bytes); });
  console.log(`${label} | ${all.length} | ${(bytes / 1024).toFixed(0)} KiB | ${ms(plain)} | ${ms(validated)} | ${(validated / plain).toFixed(1)}x`);
}
