/**
 * The APISIX 3.x objects the agent writes (the subset of the upstream and route schemas it uses;
 * agent/schema validates every object against APISIX's own JSON schemas before it is stored).
 */
export interface ApisixNode {
  host: string;
  port: number;
  weight: number;
  priority?: number;
  /** istiod's telemetry metadata of the endpoint (endpoint-workload.ts), for Istio's metrics */
  metadata?: { istio_workload: string };
}

export interface ApisixTimeout {
  connect: number;
  send: number;
  read: number;
}

export interface ApisixUpstream {
  id: string;
  name: string;
  desc?: string;
  type: 'roundrobin' | 'least_conn' | 'chash';
  hash_on?: 'vars' | 'header' | 'cookie';
  key?: string;
  nodes: ApisixNode[];
  timeout?: ApisixTimeout;
  retries?: number;
  retry_timeout?: number;
  scheme?: 'http' | 'https' | 'grpc' | 'grpcs';
  pass_host?: 'pass' | 'node' | 'rewrite';
  checks?: Record<string, unknown>;
  labels?: Record<string, string>;
}

/** A lua-resty-expr condition as APISIX stores it in `vars`. */
export type ApisixVar =
  | readonly [string, string, unknown]
  | readonly [string, '!', string, unknown]
  /** lua-resty-expr's nested logic: `["OR", expr, expr, …]` */
  | readonly ['OR' | 'AND' | '!OR' | '!AND', ApisixVar, ApisixVar, ...ApisixVar[]];

/**
 * Every plugin a translated route may carry. APISIX refuses a route whose plugin is not enabled in
 * its config.yaml, so the sidecar's config (webhook/injection/apisix-config.ts) must enable all of
 * these; test/contracts checks that it does.
 */
export const APISIX_ROUTE_PLUGINS = ['traffic-split', 'proxy-rewrite', 'fault-injection', 'redirect', 'limit-conn', 'apisix-mesh-access', 'apisix-mesh-policy', 'request-id'] as const;
export type ApisixPluginName = (typeof APISIX_ROUTE_PLUGINS)[number];
export type ApisixPlugins = Partial<Record<ApisixPluginName, Record<string, unknown>>>;

export interface ApisixRoute {
  id: string;
  name: string;
  desc?: string;
  uri: string;
  hosts?: string[];
  vars?: ApisixVar[];
  priority: number;
  upstream_id?: string;
  plugins?: ApisixPlugins;
  timeout?: ApisixTimeout;
  enable_websocket?: boolean;
  status: 1;
}

/** Something that could not be translated (or only partly): logged once, counted by reason. */
export interface TranslationNote {
  /** which xDS resource: "cluster", "route", "listener", ... */
  kind: string;
  /** the resource's name (route: "<route>#<vhost>#<route config>") */
  name: string;
  /** short, stable, low-cardinality: used as a metric label */
  reason: string;
  detail?: string;
  /** true: the whole object was left out; false: it was emitted without the feature */
  skipped: boolean;
}
