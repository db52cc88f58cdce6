import type { HttpConnectionManager, HttpRbac, JwtAuthentication } from '../xds/envoy-types.js';
import { unpackAny, type PackedAny } from '../xds/codec.js';
import { FAULT_TYPE, HCM_TYPE, JWT_AUTHN_TYPE, TCP_PROXY_TYPE } from '../xds/protos.js';
import { compileNetworkRbacFilter, compileRbacFilter, RbacCompileError, type CompiledRbacFilter, type NetworkRbac } from './rbac.js';
import { compileJwtFilter, JwtCompileError, type CompiledJwtFilter } from './jwt.js';

/**
 * Fail closed: which filters of a filter chain the agent does not enforce. Envoy runs every network
 * filter of a chain and every HTTP filter of its connection manager; the agent turns a chain into
 * APISIX routes and nothing else. A filter that can restrict or change traffic (RBAC, JWT, ext_authz,
 * rate limits, Lua and Wasm from an EnvoyFilter, …) and is not enforced would silently let traffic
 * through, so such a chain's traffic is refused instead (agent/policy/refusal.ts).
 *
 * Filters are judged by what they are (their config's type), never by their name, which an
 * EnvoyFilter author chooses. Known safe to skip, from istiod's real output (test/fixtures/xds):
 * - routing itself: the HTTP router (the routes are the translation);
 * - per-route features whose route-level part is translated: fault (only without a filter-level
 *   fault, which Istio never sets), CORS (browser-enforced: without it browsers are stricter);
 * - telemetry and protocol helpers that never refuse a request: gRPC stats, gRPC-Web, Istio's
 *   stats, peer-metadata exchange and ALPN filters, and Istio's authn filter (it only records the
 *   peer identity, for RBAC to use);
 * - Istio's compiled-in Wasm extensions (null VM, `envoy.wasm.stats` / `envoy.wasm.metadata_exchange`)
 *   of older releases; any other Wasm module is unenforced.
 * Enforced: the HTTP RBAC filter (AuthorizationPolicy ALLOW/DENY, and the shadow-only filter of
 * CUSTOM), compiled (rbac.ts) and evaluated by APISIX on every route of the chain's route
 * configuration; the JWT authentication filter (RequestAuthentication), compiled (jwt.ts) and
 * evaluated in the same plugin before RBAC — Istio puts it before its RBAC filters, and a chain
 * that puts it after one is refused. One that cannot be compiled stays unenforced. The network RBAC
 * filter on a TCP chain (where Istio writes it) is compiled the same way and judged per connection
 * by the L4 front, before anything is forwarded (agent/l4/; behind Istio's mTLS, by its stream TLS
 * listener after the handshake, with the peer's principal); one that cannot be compiled, or one on
 * an HTTP chain, stays unenforced.
 */
const T = 'type.googleapis.com/';
export const HTTP_RBAC_TYPE = `${T}envoy.extensions.filters.http.rbac.v3.RBAC`;
export const NETWORK_RBAC_TYPE = `${T}envoy.extensions.filters.network.rbac.v3.RBAC`;
const TYPED_STRUCTS = new Set([`${T}udpa.type.v1.TypedStruct`, `${T}xds.type.v3.TypedStruct`]);
const WASM_TYPES = new Set([`${T}envoy.extensions.filters.http.wasm.v3.Wasm`, `${T}envoy.extensions.filters.network.wasm.v3.Wasm`]);
const ISTIO_NULL_VM_EXTENSIONS = new Set(['envoy.wasm.stats', 'envoy.wasm.metadata_exchange']);

const SAFE_HTTP_TYPES = new Set([
  `${T}envoy.extensions.filters.http.router.v3.Router`,
  `${T}envoy.extensions.filters.http.cors.v3.Cors`,
  `${T}envoy.extensions.filters.http.grpc_stats.v3.FilterConfig`,
  `${T}envoy.extensions.filters.http.grpc_web.v3.GrpcWeb`,
  `${T}stats.PluginConfig`,
  `${T}istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig`,
  `${T}io.istio.http.peer_metadata.Config`,
  `${T}envoy.tcp.metadataexchange.config.MetadataExchange`,
  `${T}io.istio.network.authn.Config`,
]);

const SAFE_NETWORK_TYPES = new Set([
  `${T}stats.PluginConfig`,
  `${T}envoy.tcp.metadataexchange.config.MetadataExchange`,
  `${T}io.istio.network.authn.Config`,
]);

export interface NamedFilter {
  name?: string;
  typed_config?: PackedAny | null;
}

/** What the operator lets the agent skip anyway (`--insecure-skip-filters`): names or type URLs. */
export type SkipList = ReadonlySet<string>;

/** What a chain's filters ask of the agent. */
export interface FilterInventory {
  /** `name (type)` of every filter the agent neither enforces nor may skip: the chain is refused */
  unenforced: string[];
  /** the HTTP RBAC filters to enforce, in the chain's order (none that enforce nothing) */
  rbac: CompiledRbacFilter[];
  /** the JWT authentication filters to enforce, in the chain's order, all before the RBAC filters */
  jwt: CompiledJwtFilter[];
  /** the network RBAC filters to enforce per connection (the L4 front), in the chain's order */
  networkRbac: CompiledRbacFilter[];
  /** `name (type)` of each of them: what the HTTP side, which cannot judge them, names */
  networkRbacFilters: string[];
}

/**
 * The one place that decides what a chain's filters mean: safe to skip, enforced (RBAC, compiled),
 * or unenforced (the chain is refused). An RBAC filter is enforced when it compiles, whether or
 * not the operator listed it as skippable.
 */
export function inventoryFilters(filters: readonly NamedFilter[], skip: SkipList = new Set()): FilterInventory {
  const out: FilterInventory = { unenforced: [], rbac: [], jwt: [], networkRbac: [], networkRbacFilters: [] };
  const httpChain = filters.some((f) => effectiveType(f.typed_config) === HCM_TYPE);
  for (const filter of filters) {
    const type = effectiveType(filter.typed_config);
    if (type === HCM_TYPE) {
      const hcm = unpackAny<HttpConnectionManager>(filter.typed_config);
      for (const http of (hcm?.http_filters ?? []) as NamedFilter[]) {
        const httpType = effectiveType(http.typed_config);
        if (httpType === HTTP_RBAC_TYPE) {
          const compiled = rbacFilter(http);
          if (typeof compiled === 'string') {
            if (!skipped(http, skip)) out.unenforced.push(`${describe(http)}: ${compiled}`);
          } else if (compiled) out.rbac.push(compiled);
        } else if (httpType === JWT_AUTHN_TYPE) {
          // the sidecar runs JWT authentication before RBAC, as Istio orders them
          const compiled = out.rbac.length ? 'after an RBAC filter (the sidecar authenticates first)' : jwtFilter(http);
          if (typeof compiled === 'string') {
            if (!skipped(http, skip)) out.unenforced.push(`${describe(http)}: ${compiled}`);
          } else out.jwt.push(compiled);
        } else if (!httpFilterIsSafe(http) && !skipped(http, skip)) out.unenforced.push(describe(http));
      }
    } else if (type === TCP_PROXY_TYPE) {
      continue; // translated (or reported) by the listener translation
    } else if (type === NETWORK_RBAC_TYPE) {
      // judged by the L4 front on TCP chains; an HTTP chain's refusal (403) stays as it was
      const compiled = httpChain ? 'on an HTTP chain (evaluated on TCP chains only)' : networkRbacFilter(filter);
      if (typeof compiled === 'string') {
        if (!skipped(filter, skip)) out.unenforced.push(`${describe(filter)}: ${compiled}`);
      } else if (compiled) {
        out.networkRbac.push(compiled);
        out.networkRbacFilters.push(describe(filter));
      }
    } else if (!networkFilterIsSafe(filter) && !skipped(filter, skip)) {
      out.unenforced.push(describe(filter));
    }
  }
  return out;
}

/** `name (type)` of every filter of the chain that the agent neither enforces nor may skip. */
export function unenforcedFilters(filters: readonly NamedFilter[], skip: SkipList = new Set()): string[] {
  return inventoryFilters(filters, skip).unenforced;
}

/** The compiled filter, null when it enforces nothing, or why it cannot be enforced. */
function rbacFilter(filter: NamedFilter): CompiledRbacFilter | null | string {
  const config = unpackAny<HttpRbac>(filter.typed_config, HTTP_RBAC_TYPE);
  if (!config) return 'not readable (a TypedStruct or an unknown form)';
  try {
    return compileRbacFilter(filter.name || '(unnamed)', config);
  } catch (err) {
    if (err instanceof RbacCompileError) return err.message;
    throw err;
  }
}

/** The compiled network filter, null when it enforces nothing, or why it cannot be enforced. */
function networkRbacFilter(filter: NamedFilter): CompiledRbacFilter | null | string {
  const config = unpackAny<NetworkRbac>(filter.typed_config, NETWORK_RBAC_TYPE);
  if (!config) return 'not readable (a TypedStruct or an unknown form)';
  try {
    return compileNetworkRbacFilter(filter.name || '(unnamed)', config);
  } catch (err) {
    if (err instanceof RbacCompileError) return err.message;
    throw err;
  }
}

/** The compiled filter, or why it cannot be enforced. */
function jwtFilter(filter: NamedFilter): CompiledJwtFilter | string {
  const config = unpackAny<JwtAuthentication>(filter.typed_config, JWT_AUTHN_TYPE);
  if (!config) return 'not readable (a TypedStruct or an unknown form)';
  try {
    return compileJwtFilter(filter.name || '(unnamed)', config);
  } catch (err) {
    if (err instanceof JwtCompileError) return err.message;
    throw err;
  }
}

function httpFilterIsSafe(filter: NamedFilter): boolean {
  const type = effectiveType(filter.typed_config);
  if (type === undefined) return false;
  if (SAFE_HTTP_TYPES.has(type)) return true;
  if (type === FAULT_TYPE) return !filterLevelFault(filter.typed_config);
  if (WASM_TYPES.has(type)) return isIstioNullVm(filter.typed_config);
  return false;
}

function networkFilterIsSafe(filter: NamedFilter): boolean {
  const type = effectiveType(filter.typed_config);
  if (type === undefined) return false;
  if (SAFE_NETWORK_TYPES.has(type)) return true;
  if (WASM_TYPES.has(type)) return isIstioNullVm(filter.typed_config);
  return false;
}

function skipped(filter: NamedFilter, skip: SkipList): boolean {
  return (filter.name !== undefined && skip.has(filter.name)) || skip.has(effectiveType(filter.typed_config) ?? '');
}

function describe(filter: NamedFilter): string {
  const type = effectiveType(filter.typed_config) ?? 'no typed_config';
  return `${filter.name || '(unnamed)'} (${type.replace(T, '')})`;
}

interface TypedStruct {
  type_url?: string;
  value?: StructValue;
}
interface StructValue {
  fields?: Record<string, { stringValue?: string; structValue?: StructValue }>;
}

/** The config's type; for a TypedStruct, the type it stands for. */
function effectiveType(config: PackedAny | null | undefined): string | undefined {
  if (!config?.type_url) return undefined;
  if (!TYPED_STRUCTS.has(config.type_url)) return config.type_url;
  return unpackAny<TypedStruct>(config)?.type_url || undefined;
}

/** A fault filter with its own abort or delay applies to every route, translated or not. */
function filterLevelFault(config: PackedAny | null | undefined): boolean {
  const fault = unpackAny<{ abort?: unknown; delay?: unknown }>(config);
  return !!(fault?.abort || fault?.delay);
}

/** Istio's built-in extensions run in the null VM under fixed names; anything else is user code. */
function isIstioNullVm(config: PackedAny | null | undefined): boolean {
  let runtime: string | undefined;
  let code: string | undefined;
  if (config?.type_url && TYPED_STRUCTS.has(config.type_url)) {
    const ts = unpackAny<TypedStruct>(config);
    const text = (path: string[]) => {
      const v = structAt(ts?.value, ['config', 'vm_config', ...path]);
      return typeof v === 'string' ? v : undefined;
    };
    runtime = text(['runtime']);
    code = text(['code', 'local', 'inline_string']);
  } else {
    const wasm = unpackAny<{ config?: { vm_config?: { runtime?: string; code?: { local?: { inline_string?: string } } } } }>(config);
    runtime = wasm?.config?.vm_config?.runtime;
    code = wasm?.config?.vm_config?.code?.local?.inline_string;
  }
  return runtime === 'envoy.wasm.runtime.null' && code !== undefined && ISTIO_NULL_VM_EXTENSIONS.has(code);
}

/** A value inside a google.protobuf.Struct (protobufjs object form), by key path. */
function structAt(value: StructValue | undefined, path: string[]): StructValue | string | undefined {
  let here: StructValue | string | undefined = value;
  for (const key of path) {
    if (here === undefined || typeof here === 'string') return undefined;
    const field: { stringValue?: string; structValue?: StructValue } | undefined = here.fields?.[key];
    here = field?.structValue ?? field?.stringValue;
  }
  return here;
}
