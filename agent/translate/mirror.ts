import type { RouteAction } from '../xds/envoy-types.js';
import type { AccessPhaseConf, MirrorTargetConf } from './access-phase.js';
import { upstreamId } from './ids.js';
import { fractionParts } from './values.js';

type Note = (reason: string, detail: string, skipped?: boolean) => void;

/** A request body larger than this is not copied to the mirror (it is held in memory to send). */
export const MIRROR_MAX_BODY = 8 * 1024 * 1024;

/**
 * `request_mirror_policies` → the mirror part of the access-phase plugin (access-phase.ts; its Lua:
 * agent/l4/lua/apisix_mesh/http_mirror.lua), which sends a
 * copy of the request, as Envoy's router shadows it: to the mirror *cluster* (the APISIX upstream
 * of that cluster, subset included — an endpoint picked by weight among the most preferred
 * priority), with `-shadow` added to the Host (before its port; not when
 * `disable_shadow_host_suffix_append`), after the route's rewrites and header operations, with the
 * same method, path, query and body; each policy sampled on its own by its `runtime_fraction`. The
 * copy leaves from a timer: the request goes on at once and the mirror's answer is dropped, as
 * Envoy drops a shadow's. APISIX's `proxy-mirror` cannot do this: it sends to one host name (not
 * the cluster's endpoints) and with the request's own Host.
 */
export function mirrorConf(action: RouteAction, timeoutSeconds: number, note: Note): AccessPhaseConf['mirror'] {
  const targets: MirrorTargetConf[] = [];
  for (const policy of action.request_mirror_policies ?? []) {
    if (!policy.cluster) {
      note('mirror-target', 'a mirror chosen by request header (cluster_header) is not translated');
      continue;
    }
    const fraction = policy.runtime_fraction?.default_value;
    const { numerator, scale } = fraction ? fractionParts(fraction) : { numerator: 1, scale: 1 };
    if (numerator <= 0) continue;
    targets.push({ upstream: upstreamId(policy.cluster), cluster: policy.cluster, suffix: !policy.disable_shadow_host_suffix_append, numerator, denominator: scale });
  }
  if (targets.length === 0) return undefined;
  return { mirrors: targets, timeout_ms: Math.round(timeoutSeconds * 1000), max_body: MIRROR_MAX_BODY };
}
