import type { ApisixPlugins } from './apisix-types.js';

/**
 * The Lua a route runs at the end of APISIX's access phase, once every other plugin has had its
 * say (traffic-split picked the upstream, limit-conn counted the request) and before APISIX connects
 * upstream: the mirror (mirror.ts) and the hand-over to a retry location (retries.ts), and, on
 * routes to an original destination, the upstream chosen from where the app dialled
 * (original-destination.ts). They share `serverless-pre-function` (a serverless plugin has one
 * phase; the policy plugin, apisix-mesh-policy, has the rewrite phase), run in the
 * order given, and `_meta.priority` puts the plugin after every other access-phase plugin
 * (limit-conn 1003, traffic-split 966).
 */
export const ACCESS_PHASE_PLUGIN = 'serverless-pre-function';
export const ACCESS_PHASE_PRIORITY = -3000;

/** The plugins with `functions` appended to the route's access-phase Lua (created when needed). */
export function withAccessPhase(plugins: ApisixPlugins, functions: string[], where: 'first' | 'last' = 'last'): ApisixPlugins {
  if (functions.length === 0) return plugins;
  const current = plugins[ACCESS_PHASE_PLUGIN] as { functions?: string[] } | undefined;
  const existing = current?.functions ?? [];
  return {
    ...plugins,
    [ACCESS_PHASE_PLUGIN]: {
      phase: 'access',
      functions: where === 'first' ? [...functions, ...existing] : [...existing, ...functions],
      _meta: { priority: ACCESS_PHASE_PRIORITY },
    },
  };
}
