import type { IstioService } from './cluster-service.js';
import type { HashCookie } from './hash-cookie.js';
import type { ApisixPlugins } from './apisix-types.js';

/**
 * What a route does at the end of APISIX's access phase, once every other plugin has had its say
 * (traffic-split picked the upstream, limit-conn counted the request) and before APISIX connects
 * upstream: on routes to an original destination, the upstream chosen from where the app dialled
 * (original-destination.ts); the mirror (mirror.ts); the hand-over to a retry location
 * (retries.ts) — run in that order by the sidecar's own plugin, apisix-mesh-access
 * (agent/l4/lua/apisix/plugins/apisix-mesh-access.lua, priority -3000, after every other
 * access-phase plugin). The route carries them as data, checked by the plugin's schema (the agent
 * checks the same schema, agent/schema/apisix/plugins/apisix-mesh-access.schema.json): no code is
 * compiled per route, however many routes are busy (APISIX's serverless plugin, which carried this
 * as Lua code before, keeps compiled functions for 8 routes only).
 */
export const ACCESS_PHASE_PLUGIN = 'apisix-mesh-access';

/** The plugin's configuration (its schema's properties). */
export interface AccessPhaseConf {
  original_destination?: { capture_ports: [number, number]; connect_timeout: number; io_timeout: number; scheme?: 'grpc'; service?: IstioService };
  mirror?: { mirrors: MirrorTargetConf[]; timeout_ms: number; max_body: number };
  retry?: { location: string; connect: boolean; reset: boolean; timeout: boolean };
  /** a cookie hash policy's cookie to make when absent (hash-cookie.ts) */
  hash_cookie?: HashCookie;
}

export interface MirrorTargetConf {
  /** the APISIX upstream of the mirror cluster */
  upstream: string;
  /** the cluster's name, for log lines */
  cluster: string;
  /** whether `-shadow` is added to the Host */
  suffix: boolean;
  numerator: number;
  denominator: number;
}

/** The plugins with `parts` added to the route's access-phase configuration (created when needed). */
export function withAccessPhase(plugins: ApisixPlugins, parts: AccessPhaseConf): ApisixPlugins {
  const defined = Object.fromEntries(Object.entries(parts).filter(([, v]) => v !== undefined));
  if (Object.keys(defined).length === 0) return plugins;
  return { ...plugins, [ACCESS_PHASE_PLUGIN]: { ...(plugins[ACCESS_PHASE_PLUGIN] ?? {}), ...defined } };
}
