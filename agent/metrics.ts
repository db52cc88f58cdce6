import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The agent's Prometheus metrics, on their own registry (served at /metrics). */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly xdsResponses = new Counter({ name: 'apisix_mesh_xds_responses_total', help: 'xDS responses received from istiod, by type', labelNames: ['type'], registers: [this.registry] });
  readonly xdsAcks = new Counter({ name: 'apisix_mesh_xds_acks_total', help: 'xDS responses accepted (ACKed), by type', labelNames: ['type'], registers: [this.registry] });
  readonly xdsNacks = new Counter({ name: 'apisix_mesh_xds_nacks_total', help: 'xDS responses rejected (NACKed), by type', labelNames: ['type'], registers: [this.registry] });
  readonly xdsReconnects = new Counter({ name: 'apisix_mesh_xds_reconnects_total', help: 'xDS streams that ended and were re-opened', registers: [this.registry] });
  readonly xdsConnected = new Gauge({ name: 'apisix_mesh_xds_connected', help: '1 while the xDS stream to istiod is up', registers: [this.registry] });
  readonly translationSeconds = new Histogram({ name: 'apisix_mesh_translation_seconds', help: 'time to translate the xDS state and apply it to the store', buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [this.registry] });
  readonly applyFailures = new Counter({ name: 'apisix_mesh_apply_failures_total', help: 'snapshots whose translation or store write failed; the last good configuration stays served', registers: [this.registry] });
  readonly applies = new Counter({ name: 'apisix_mesh_applies_total', help: 'translated snapshots applied to the store (bursts of xDS updates are coalesced into one)', registers: [this.registry] });
  readonly skipped = new Gauge({ name: 'apisix_mesh_skipped_resources', help: 'resources (or features of resources) not translated in the current configuration, by kind and reason', labelNames: ['kind', 'reason'], registers: [this.registry] });
  readonly objects = new Gauge({ name: 'apisix_mesh_apisix_objects', help: 'APISIX objects in the current configuration', labelNames: ['kind'], registers: [this.registry] });
  readonly storeRevision = new Gauge({ name: 'apisix_mesh_store_revision', help: 'current revision of the store APISIX watches', registers: [this.registry] });
  readonly scrapeFailures = new Counter({ name: 'apisix_mesh_scrape_failures_total', help: 'sources of the merged /stats/prometheus answer left out of it (apisix, app), by source', labelNames: ['source'], registers: [this.registry] });
  readonly watchers = new Gauge({ name: 'apisix_mesh_etcd_watchers', help: 'watches open on the etcd API', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'apisix_mesh_agent_' });
  }
}
