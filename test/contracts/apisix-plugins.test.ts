import { describe, expect, it } from 'vitest';
import { APISIX_ROUTE_PLUGINS } from '../../agent/translate/apisix-types.js';
import { APISIX_PLUGINS } from '../../webhook/injection/apisix-config.js';

// APISIX skips a route whose plugin its config.yaml does not enable, so every plugin the agent's
// translation can put on a route must be enabled in the config the webhook gives the sidecar.
describe('plugins the agent emits and the sidecar APISIX enables', () => {
  it('every route plugin of the translation is enabled in the sidecar config.yaml', () => {
    const missing = APISIX_ROUTE_PLUGINS.filter((p) => !APISIX_PLUGINS.includes(p));
    expect(missing).toEqual([]);
  });
});
