import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { defaultInjectionConfig } from '../../webhook/config/injection-config.js';
import { parseInjectionConfig } from '../../webhook/config/parse-config.js';
import { injectManifests } from '../../webhook/injection/manifests.js';

describe('examples/', () => {
  it('injection-config.yaml spells out exactly the defaults', () => {
    expect(parseInjectionConfig(readFileSync('examples/injection-config.yaml', 'utf8'), 'examples/injection-config.yaml')).toEqual(defaultInjectionConfig);
  });

  it('deployment.yaml gets the sidecar and gateway.yaml the gateway annotations', () => {
    const sidecar = injectManifests(readFileSync('examples/deployment.yaml', 'utf8'), { config: defaultInjectionConfig });
    expect(sidecar.report).toEqual(['Deployment bookinfo/reviews: sidecar']);
    const gateway = injectManifests(readFileSync('examples/gateway.yaml', 'utf8'), { config: defaultInjectionConfig });
    expect(gateway.report).toEqual(['Deployment ingress-apisix/apisix: gateway']);
  });
});
