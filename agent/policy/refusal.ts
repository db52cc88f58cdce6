import type { ApisixRoute } from '../translate/apisix-types.js';
import { stableId } from '../translate/ids.js';
import { scopeKey, type RefusedScope } from '../translate/listener.js';
import { scopeCeiling, scopeConditions, type TranslatedRoute } from '../translate/route-configuration.js';

/** What a refused request gets. It names no filter: the client learns nothing of the policy. */
export const REFUSAL_STATUS = 403;
export const REFUSAL_BODY = 'apisix-mesh: refused: this destination\'s policy is not enforced by the sidecar\n';

/**
 * The route that refuses a scope's traffic (agent/policy/filter-inventory.ts): every request captured
 * for that destination gets 403 before any upstream is picked (fault-injection's abort at 100 %).
 * It sits at the top of the scope's priority band; the scope's own routes are not generated at all.
 */
export function refusalRoute(refused: RefusedScope, listenerName: string): TranslatedRoute {
  const route: ApisixRoute = {
    id: stableId('route', scopeKey(refused.scope), '\0refused'),
    name: `refused#${listenerName}#${scopeKey(refused.scope)}`.slice(0, 256),
    desc: `not enforced: ${refused.filters.join(', ')}`.slice(0, 256),
    uri: '/*',
    priority: scopeCeiling(refused.scope),
    vars: scopeConditions(refused.scope),
    plugins: { 'fault-injection': { abort: { http_status: REFUSAL_STATUS, body: REFUSAL_BODY } } },
    status: 1,
  };
  return { route, clusters: [], upstreamSettings: {} };
}
