// The xDS state an ADS client (without `prepare`) has accepted, rebuilt from its `changes` events
// alone: what a consumer of the client (the translator) can know. Unchanged resources keep their
// decoded object, so a test can tell a resource that was reported again from one that was not.
import type { AdsClient } from '../../agent/xds/ads-client.js';
import type { ChangedResource, XdsChange, XdsResources } from '../../agent/translate/snapshot.js';

export class XdsMirror {
  readonly state = { cluster: new Map(), endpoint: new Map(), listener: new Map(), route: new Map() } as const;
  /** every change reported, in order */
  readonly changes: Array<XdsChange<ChangedResource<unknown>>> = [];

  constructor(client: AdsClient) {
    client.on('changes', (change: XdsChange<ChangedResource<unknown>>) => {
      this.changes.push(change);
      const map = this.state[change.kind] as Map<string, unknown>;
      for (const name of change.removed) map.delete(name);
      for (const [name, { resource }] of change.changed) map.set(name, resource);
    });
  }

  resources(): XdsResources {
    return { clusters: new Map(this.state.cluster), endpoints: new Map(this.state.endpoint), listeners: new Map(this.state.listener), routeConfigs: new Map(this.state.route) };
  }
}
