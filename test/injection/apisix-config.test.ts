import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { defaultInjectionConfig } from '../../webhook/config/injection-config.js';
import { parseInjectionConfig } from '../../webhook/config/parse-config.js';
import { renderApisixConfig, requestIdSnippets } from '../../webhook/injection/apisix-config.js';
import { retryLocationsSnippet, retryUpstreamSnippet } from '../../webhook/injection/retry-locations.js';
import { reviewAdmission } from '../../webhook/injection/review.js';
import fjp from 'fast-json-patch';
import { podCreate } from './helpers.js';

describe("APISIX's config.yaml for the sidecar", () => {
  it('is exactly the data-plane configuration the mesh needs', () => {
    const doc = parse(renderApisixConfig(defaultInjectionConfig));
    expect(doc).toEqual({
      apisix: {
        node_listen: [15001, 15006],
        enable_admin: false,
        enable_control: false,
        enable_server_tokens: false,
        ssl: { enable: false },
        status: { ip: '0.0.0.0', port: 15021 },
      },
      deployment: {
        role: 'data_plane',
        role_data_plane: { config_provider: 'etcd' },
        etcd: { host: ['http://127.0.0.1:15379'], prefix: '/apisix', timeout: 30, health_check_timeout: 1 },
      },
      nginx_config: {
        worker_processes: 2,
        error_log: '/dev/stderr',
        http: { access_log: '/dev/stdout' },
        // inbound forwards leave from 127.0.0.6; test/e2e/sidecar-forwarding-kernel runs these in nginx
        // and the literal $ and \ the agent writes where APISIX would expand variables
        http_configuration_snippet: 'map $server_port $apisix_mesh_upstream_bind {\n    15006 127.0.0.6;\n    default "";\n}\n'
          + 'geo $apisix_mesh_dollar {\n    default "$";\n}\ngeo $apisix_mesh_backslash {\n    default "\\\\";\n}\n'
          // x-request-id kept, or generated as a UUID from $request_id (test/dataplane/translation-semantics)
          + requestIdSnippets().http
          // the upstream block and the locations Envoy's retry policies run in (test/dataplane/translation-semantics)
          + retryUpstreamSnippet(),
        http_server_configuration_snippet: 'proxy_bind $apisix_mesh_upstream_bind;\n' + retryLocationsSnippet(requestIdSnippets().location),
        http_server_location_configuration_snippet: 'proxy_set_header X-Request-Id $apisix_mesh_request_id;\n',
      },
      plugins: ['traffic-split', 'proxy-rewrite', 'fault-injection', 'proxy-mirror', 'limit-conn', 'redirect', 'response-rewrite', 'cors', 'request-id', 'prometheus', 'serverless-pre-function', 'serverless-post-function'],
      plugin_attr: { prometheus: { export_addr: { ip: '0.0.0.0', port: 15090 } } },
    });
  });

  it('follows the configured ports and workers', () => {
    const config = parseInjectionConfig('ports: {outbound: 16001, inbound: 16006, etcd: 16379}\napisixWorkerProcesses: 1', 'c.yaml');
    const doc = parse(renderApisixConfig(config));
    expect(doc.apisix.node_listen).toEqual([16001, 16006]);
    expect(doc.deployment.etcd.host).toEqual(['http://127.0.0.1:16379']);
    expect(doc.nginx_config.worker_processes).toBe(1);
    expect(doc.nginx_config.http_configuration_snippet).toContain('16006 127.0.0.6;');
  });

  it('reaches the APISIX container through the pod annotation and a downwardAPI volume', () => {
    const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'shop' }, spec: { containers: [{ name: 'app', image: 'a' }] } };
    const outcome = reviewAdmission(podCreate(pod), defaultInjectionConfig);
    if (outcome.kind !== 'injected') throw new Error(`not injected: ${JSON.stringify(outcome)}`);
    const injected = fjp.applyPatch(structuredClone(pod), outcome.patch).newDocument as any;
    expect(injected.metadata.annotations['apisix-mesh.io/apisix-config']).toBe(renderApisixConfig(defaultInjectionConfig));
    const podinfo = injected.spec.volumes.find((v: any) => v.name === 'apisix-mesh-podinfo');
    expect(podinfo.downwardAPI.items).toContainEqual({ path: 'config.yaml', fieldRef: { fieldPath: "metadata.annotations['apisix-mesh.io/apisix-config']" } });
    const copy = injected.spec.initContainers.find((c: any) => c.name === 'apisix-mesh-config');
    expect(copy.command.join(' ')).toContain('cp /apisix-mesh/pod/config.yaml /apisix-mesh/conf/config.yaml');
    const apisix = injected.spec.containers.find((c: any) => c.name === 'apisix-mesh-apisix');
    expect(apisix.volumeMounts).toContainEqual({ name: 'apisix-mesh-apisix-conf', mountPath: '/usr/local/apisix/conf' });
  });
});
