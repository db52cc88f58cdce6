import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { resourcesFromJson, resourceName, type CanonicalResources } from '../../agent/xds/config-dump.js';
import { fromCanonical } from '../../agent/xds/codec.js';
import { TYPE_URL, type XdsKind } from '../../agent/xds/protos.js';
import type { XdsResources } from '../../agent/translate/snapshot.js';

export const XDS_FIXTURES = fileURLToPath(new URL('../fixtures/xds/', import.meta.url));

/** A fixture file (config dump, DiscoveryResponses JSON, or YAML) as canonical JSON resources. */
export function loadCanonical(file: string): CanonicalResources {
  const text = readFileSync(join(XDS_FIXTURES, file), 'utf8');
  return resourcesFromJson(file.endsWith('.yaml') ? YAML.parse(text) : JSON.parse(text));
}

/** Canonical resources → the agent's decoded form, through protobuf bytes like a live stream. */
export function decodeAll(canonical: CanonicalResources): XdsResources {
  const map = (kind: XdsKind) => new Map(canonical[kind].map((r) => [resourceName(kind, r), fromCanonical<never>(TYPE_URL[kind], r)]));
  return { clusters: map('cluster'), endpoints: map('endpoint'), listeners: map('listener'), routeConfigs: map('route') };
}

export function loadXds(file: string): XdsResources {
  return decodeAll(loadCanonical(file));
}

const CLUSTER_TYPE = 'type.googleapis.com/envoy.config.cluster.v3.Cluster';

/** An original-destination cluster as istiod writes `inbound|P||` and the pass-through clusters. */
export function originalDstCluster(name: string): Record<string, unknown> {
  return { '@type': CLUSTER_TYPE, name, type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '10s' };
}

/**
 * The canary mesh (`synthetic-canary-xds-responses.json`: checkout at 10.96.44.7:8080, stable and
 * canary endpoints) with Istio's real `virtualInbound` for an app on port 80, its policy filters
 * (the fixture's RBAC and ext_authz, which the agent refuses) taken out.
 */
export function canaryWithInbound(): CanonicalResources {
  const canary = loadCanonical('synthetic-canary-xds-responses.json');
  const inbound = loadCanonical('istio-sidecar-listeners-configdump.yaml').listener.find((l) => l['name'] === 'virtualInbound')!;
  const stripped = JSON.parse(JSON.stringify(inbound, (k, v) => (k === 'filters' || k === 'http_filters') && Array.isArray(v) ? v.filter((f: { name?: string }) => !/rbac|ext_authz/.test(f.name ?? '')) : v)) as Record<string, unknown>;
  return {
    ...canary,
    cluster: [...canary.cluster, originalDstCluster('inbound|80||'), originalDstCluster('InboundPassthroughClusterIpv4')],
    listener: [...canary.listener, stripped],
  };
}
