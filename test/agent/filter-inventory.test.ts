// Fail closed: which filters of a chain the agent does not enforce. Judged by config type, never by
// name; Istio's own telemetry and metadata filters are the only ones skipped.
import { describe, expect, it } from 'vitest';
import { fromCanonical } from '../../agent/xds/codec.js';
import { TYPE_URL } from '../../agent/xds/protos.js';
import type { Listener } from '../../agent/xds/envoy-types.js';
import { inventoryFilters, unenforcedFilters, type NamedFilter } from '../../agent/policy/filter-inventory.js';

const T = 'type.googleapis.com/';
const hcmWith = (httpFilters: object[]) => ({
  name: 'envoy.filters.network.http_connection_manager',
  typed_config: { '@type': `${T}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`, stat_prefix: 's', rds: { route_config_name: '80' }, http_filters: httpFilters },
});
const router = { name: 'envoy.filters.http.router', typed_config: { '@type': `${T}envoy.extensions.filters.http.router.v3.Router` } };
const wasm = (name: string, runtime: string, code: string) => ({
  name,
  typed_config: { '@type': `${T}envoy.extensions.filters.http.wasm.v3.Wasm`, config: { vm_config: { runtime, code: { local: { inline_string: code } } } } },
});

/** The chain's filters as the agent holds them: decoded from bytes, typed configs packed. */
function chainFilters(filters: object[]): NamedFilter[] {
  const listener = fromCanonical<Listener>(TYPE_URL.listener, { name: 'l', address: { socket_address: { address: '0.0.0.0', port_value: 80 } }, filter_chains: [{ filters }] });
  return listener.filter_chains![0]!.filters as NamedFilter[];
}

describe('unenforcedFilters', () => {
  it('Istio\'s ordinary sidecar chain has nothing unenforced', () => {
    const filters = chainFilters([
      { name: 'istio.metadata_exchange', typed_config: { '@type': `${T}envoy.tcp.metadataexchange.config.MetadataExchange` } },
      { name: 'istio_authn', typed_config: { '@type': `${T}udpa.type.v1.TypedStruct`, type_url: `${T}io.istio.network.authn.Config` } },
      hcmWith([
        wasm('istio.metadata_exchange', 'envoy.wasm.runtime.null', 'envoy.wasm.metadata_exchange'),
        { name: 'envoy.filters.http.grpc_stats', typed_config: { '@type': `${T}envoy.extensions.filters.http.grpc_stats.v3.FilterConfig` } },
        { name: 'istio.alpn', typed_config: { '@type': `${T}istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig` } },
        { name: 'envoy.filters.http.fault', typed_config: { '@type': `${T}envoy.extensions.filters.http.fault.v3.HTTPFault` } },
        { name: 'envoy.filters.http.cors', typed_config: { '@type': `${T}envoy.extensions.filters.http.cors.v3.Cors` } },
        { name: 'istio.stats', typed_config: { '@type': `${T}stats.PluginConfig` } },
        router,
      ]),
    ]);
    expect(unenforcedFilters(filters)).toEqual([]);
  });

  it('names every policy filter it does not enforce: JWT it cannot compile, ext_authz, Lua, local rate limit, network RBAC, RBAC it cannot compile', () => {
    const filters = chainFilters([
      { name: 'envoy.filters.network.rbac', typed_config: { '@type': `${T}envoy.extensions.filters.network.rbac.v3.RBAC`, stat_prefix: 'tcp.', rules: {} } },
      hcmWith([
        { name: 'envoy.filters.http.jwt_authn', typed_config: { '@type': `${T}envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`, providers: { p: { local_jwks: { filename: '/etc/jwks.json' } } } } },
        { name: 'envoy.filters.http.rbac', typed_config: { '@type': `${T}envoy.extensions.filters.http.rbac.v3.RBAC`, rules: { action: 'DENY' } } },
        { name: 'matcher-rbac', typed_config: { '@type': `${T}envoy.extensions.filters.http.rbac.v3.RBAC`, matcher: { matcher_list: { matchers: [] } } } },
        { name: 'envoy.filters.http.ext_authz', typed_config: { '@type': `${T}envoy.extensions.filters.http.ext_authz.v3.ExtAuthz` } },
        { name: 'my-lua', typed_config: { '@type': `${T}envoy.extensions.filters.http.lua.v3.Lua` } },
        { name: 'envoy.filters.http.local_ratelimit', typed_config: { '@type': `${T}envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit` } },
        router,
      ]),
    ]);
    expect(unenforcedFilters(filters)).toEqual([
      'envoy.filters.network.rbac (envoy.extensions.filters.network.rbac.v3.RBAC): on an HTTP chain (evaluated on TCP chains only)',
      'envoy.filters.http.jwt_authn (envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication): provider p: local_jwks from a filename is not supported',
      'matcher-rbac (envoy.extensions.filters.http.rbac.v3.RBAC): the xDS matcher form of RBAC is not supported',
      'envoy.filters.http.ext_authz (envoy.extensions.filters.http.ext_authz.v3.ExtAuthz)',
      'my-lua (envoy.extensions.filters.http.lua.v3.Lua)',
      'envoy.filters.http.local_ratelimit (envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit)',
    ]);
  });

  it('judges by type, not name: user Wasm named like Istio\'s, a filter-level fault, no config at all', () => {
    const filters = chainFilters([
      hcmWith([
        wasm('istio.stats', 'envoy.wasm.runtime.v8', 'envoy.wasm.stats'),
        wasm('istio.stats', 'envoy.wasm.runtime.null', 'my.module'),
        { name: 'envoy.filters.http.fault', typed_config: { '@type': `${T}envoy.extensions.filters.http.fault.v3.HTTPFault`, abort: { http_status: 503, percentage: { numerator: 100 } } } },
        { name: 'envoy.filters.http.router' },
        router,
      ]),
    ]);
    expect(unenforcedFilters(filters)).toEqual([
      'istio.stats (envoy.extensions.filters.http.wasm.v3.Wasm)',
      'istio.stats (envoy.extensions.filters.http.wasm.v3.Wasm)',
      'envoy.filters.http.fault (envoy.extensions.filters.http.fault.v3.HTTPFault)',
      'envoy.filters.http.router (no typed_config)',
    ]);
  });

  it('Istio\'s null-VM extensions wrapped in a TypedStruct are recognised', () => {
    const filters = chainFilters([
      {
        name: 'istio.stats',
        typed_config: {
          '@type': `${T}udpa.type.v1.TypedStruct`,
          type_url: `${T}envoy.extensions.filters.network.wasm.v3.Wasm`,
          value: { config: { root_id: 'stats_outbound', vm_config: { runtime: 'envoy.wasm.runtime.null', code: { local: { inline_string: 'envoy.wasm.stats' } } } } },
        },
      },
      {
        name: 'evil',
        typed_config: {
          '@type': `${T}udpa.type.v1.TypedStruct`,
          type_url: `${T}envoy.extensions.filters.network.wasm.v3.Wasm`,
          value: { config: { vm_config: { runtime: 'envoy.wasm.runtime.v8', code: { local: { inline_string: 'envoy.wasm.stats' } } } } },
        },
      },
    ]);
    expect(unenforcedFilters(filters)).toEqual(['evil (envoy.extensions.filters.network.wasm.v3.Wasm)']);
  });

  it('the operator\'s skip list (by name or type) lets a filter through', () => {
    const filters = chainFilters([hcmWith([{ name: 'envoy.filters.http.ext_authz', typed_config: { '@type': `${T}envoy.extensions.filters.http.ext_authz.v3.ExtAuthz` } }, router])]);
    expect(unenforcedFilters(filters, new Set(['envoy.filters.http.ext_authz']))).toEqual([]);
    expect(unenforcedFilters(filters, new Set([`${T}envoy.extensions.filters.http.ext_authz.v3.ExtAuthz`]))).toEqual([]);
    expect(unenforcedFilters(filters, new Set(['other']))).toHaveLength(1);
  });
});

describe('inventoryFilters: HTTP RBAC is enforced', () => {
  const rbac = (name: string, config: object) => ({ name, typed_config: { '@type': `${T}envoy.extensions.filters.http.rbac.v3.RBAC`, ...config } });
  const anyPolicy = { p: { permissions: [{ any: true }], principals: [{ any: true }] } };

  it('compiles Istio\'s DENY then ALLOW filters, in order; a shadow-only filter (CUSTOM\'s) enforces nothing', () => {
    const inventory = inventoryFilters(chainFilters([hcmWith([
      rbac('deny', { rules: { action: 'DENY', policies: anyPolicy } }),
      rbac('allow', { rules: { policies: anyPolicy } }),
      rbac('shadow', { shadow_rules: { action: 'DENY', policies: anyPolicy } }),
      router,
    ])]));
    expect(inventory.unenforced).toEqual([]);
    expect(inventory.rbac.map((f) => [f.name, f.action])).toEqual([['deny', 'DENY'], ['allow', 'ALLOW']]);
  });

  it('an RBAC filter listed as skippable is still enforced when it compiles; one that cannot compile is skipped then', () => {
    const filters = chainFilters([hcmWith([rbac('r', { rules: { policies: anyPolicy } }), rbac('m', { matcher: { matcher_list: { matchers: [] } } }), router])]);
    const inventory = inventoryFilters(filters, new Set(['r', 'm']));
    expect(inventory).toEqual({ unenforced: [], rbac: [expect.objectContaining({ name: 'r' })], jwt: [], networkRbac: [], networkRbacFilters: [] });
  });
});

describe('inventoryFilters: JWT authentication is enforced', () => {
  const jwt = (name: string) => ({ name, typed_config: { '@type': `${T}envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`, providers: { p: { issuer: 'i', local_jwks: { inline_string: '{"keys":[]}' } } }, rules: [{ match: { prefix: '/' }, requires: { provider_name: 'p' } }] } });
  const rbac = { name: 'envoy.filters.http.rbac', typed_config: { '@type': `${T}envoy.extensions.filters.http.rbac.v3.RBAC`, rules: { action: 'DENY', policies: { p: { permissions: [{ any: true }], principals: [{ any: true }] } } } } };

  it('Istio\'s order (jwt_authn, then RBAC) is enforced; jwt_authn after an RBAC filter is refused (the sidecar authenticates first)', () => {
    const istio = inventoryFilters(chainFilters([hcmWith([jwt('envoy.filters.http.jwt_authn'), rbac, router])]));
    expect(istio.unenforced).toEqual([]);
    expect(istio.jwt.map((f) => f.name)).toEqual(['envoy.filters.http.jwt_authn']);
    const reversed = inventoryFilters(chainFilters([hcmWith([rbac, jwt('late'), router])]));
    expect(reversed.unenforced).toEqual(['late (envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication): after an RBAC filter (the sidecar authenticates first)']);
  });
});
