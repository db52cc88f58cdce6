/**
 * The Envoy resource types the agent reads, as @grpc/grpc-js-xds generates them from the same protos
 * (proto-loader-gen-types, snake_case field names). The agent decodes with `defaults: false`, so the
 * input-side interfaces (every field optional) are the ones that describe what it holds.
 */
export type { Cluster } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/cluster/v3/Cluster.js';
export type { ClusterLoadAssignment } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/endpoint/v3/ClusterLoadAssignment.js';
export type { LocalityLbEndpoints } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/endpoint/v3/LocalityLbEndpoints.js';
export type { LbEndpoint } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/endpoint/v3/LbEndpoint.js';
export type { Listener } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/listener/v3/Listener.js';
export type { FilterChain } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/listener/v3/FilterChain.js';
export type { RouteConfiguration } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/route/v3/RouteConfiguration.js';
export type { VirtualHost } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/route/v3/VirtualHost.js';
export type { Route } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/route/v3/Route.js';
export type { RouteMatch } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/route/v3/RouteMatch.js';
export type { RouteAction } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/route/v3/RouteAction.js';
export type { RetryPolicy } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/route/v3/RetryPolicy.js';
export type { HeaderMatcher } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/route/v3/HeaderMatcher.js';
export type { QueryParameterMatcher } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/route/v3/QueryParameterMatcher.js';
export type { StringMatcher } from '@grpc/grpc-js-xds/build/src/generated/envoy/type/matcher/v3/StringMatcher.js';
export type { CorsPolicy } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/route/v3/CorsPolicy.js';
export type { HttpConnectionManager } from '@grpc/grpc-js-xds/build/src/generated/envoy/extensions/filters/network/http_connection_manager/v3/HttpConnectionManager.js';
export type { HTTPFault } from '@grpc/grpc-js-xds/build/src/generated/envoy/extensions/filters/http/fault/v3/HTTPFault.js';
export type { FractionalPercent } from '@grpc/grpc-js-xds/build/src/generated/envoy/type/v3/FractionalPercent.js';
export type { Duration } from '@grpc/grpc-js-xds/build/src/generated/google/protobuf/Duration.js';
export type { DiscoveryRequest } from '@grpc/grpc-js-xds/build/src/generated/envoy/service/discovery/v3/DiscoveryRequest.js';
export type { DiscoveryResponse } from '@grpc/grpc-js-xds/build/src/generated/envoy/service/discovery/v3/DiscoveryResponse.js';
export type { Node } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/core/v3/Node.js';
export type { RBAC as HttpRbac } from '@grpc/grpc-js-xds/build/src/generated/envoy/extensions/filters/http/rbac/v3/RBAC.js';
export type { Permission } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/rbac/v3/Permission.js';
export type { Principal } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/rbac/v3/Principal.js';
export type { Policy as RbacPolicy } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/rbac/v3/Policy.js';
export type { CidrRange } from '@grpc/grpc-js-xds/build/src/generated/envoy/config/core/v3/CidrRange.js';
// jwt_authn is not among grpc-js-xds's generated types: generated the same way (scripts/gen-jwt-authn-types.mjs)
export type { JwtAuthentication } from './generated/jwt_authn/JwtAuthentication.js';
export type { JwtProvider } from './generated/jwt_authn/JwtProvider.js';
export type { JwtRequirement } from './generated/jwt_authn/JwtRequirement.js';
export type { MetadataMatcher } from '@grpc/grpc-js-xds/build/src/generated/envoy/type/matcher/v3/MetadataMatcher.js';
export type { ValueMatcher } from '@grpc/grpc-js-xds/build/src/generated/envoy/type/matcher/v3/ValueMatcher.js';
