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
