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
    const doc = parse(renderApisixConfig(defaultInjectionConfig, 2));
    expect(doc).toEqual({
      apisix: {
        // the L4 front on the capture ports hands HTTP to this loopback listener (agent/l4/lua/)
        node_listen: [{ ip: '127.0.0.1', port: 15081 }],
        proxy_mode: 'http&stream',
        stream_proxy: { tcp: [{ addr: '127.0.0.1:15002' }] },
        extra_lua_path: '$prefix/mesh-lua/?.lua',
        lua_module_hook: 'apisix_mesh.hook',
        enable_http2: true,
        enable_admin: false,
        enable_control: false,
        enable_server_tokens: false,
        // inbound mTLS: the front hands Istio's mTLS chains to this loopback TLS listener (mesh_tls.lua)
        ssl: { enable: true, listen: [{ ip: '127.0.0.1', port: 15082 }] },
        status: { ip: '0.0.0.0', port: 15021 },
        disable_sync_configuration_during_start: true,
      },
      deployment: {
        role: 'data_plane',
        role_data_plane: { config_provider: 'etcd' },
        etcd: { host: ['http://127.0.0.1:15379'], prefix: '/apisix', timeout: 30, health_check_timeout: 1 },
      },
      nginx_config: {
        worker_processes: 2,
        error_log: '/dev/stderr',
        // Istio's standard metrics (istio_metrics.lua); outlier detection's state (outlier.lua)
        // no line per request, as Istio's default meshConfig.accessLogFile (errors go to stderr)
        http: { enable_access_log: false, custom_lua_shared_dict: { 'apisix-mesh-istio-metrics': '32m', apisix_mesh_outlier: '2m', 'apisix_mesh_served_revisions': '1m' } },
        stream_configuration_snippet: expect.stringContaining('require("apisix_mesh.l4").preread("inbound", 15081, 15001, 15006, 15082, 15084, 15085)'),
        // the literal $ and \ the agent writes where APISIX would expand variables
        http_configuration_snippet: 'geo $apisix_mesh_dollar {\n    default "$";\n}\ngeo $apisix_mesh_backslash {\n    default "\\\\";\n}\n'
          // x-request-id kept, or generated as a UUID from $request_id (test/dataplane/translation-semantics)
          + requestIdSnippets().http
          // the upstream block and the locations Envoy's retry policies run in (test/dataplane/translation-semantics)
          + retryUpstreamSnippet()
          // APISIX's status API and Prometheus export on IPv6, where the config-copy container wrote them (test/dataplane/ipv6-first)
          + 'include apisix-mesh-ipv6-http.con[f];\n',
        // inbound forwards leave from 127.0.0.6 (the hook sets the variable per request)
        http_server_configuration_snippet: 'set $apisix_mesh_upstream_bind "";\nproxy_bind $apisix_mesh_upstream_bind;\ngrpc_bind $apisix_mesh_upstream_bind;\n'
          // the hand-off listeners close after the client's end (no reset for the front to log)
          + 'lingering_close always;\n'
          // a handed-off request of up to 4 KiB read in one piece
          + 'client_header_buffer_size 4k;\n' + retryLocationsSnippet(requestIdSnippets().location),
        http_server_location_configuration_snippet: 'proxy_set_header X-Request-Id $apisix_mesh_request_id;\n',
      },
      plugins: ['traffic-split', 'proxy-rewrite', 'fault-injection', 'proxy-mirror', 'limit-conn', 'redirect', 'response-rewrite', 'cors', 'request-id', 'prometheus', 'apisix-mesh-policy', 'apisix-mesh-access'],
      plugin_attr: { prometheus: { export_addr: { ip: '0.0.0.0', port: 15090 } } },
      apisix_mesh: { lua_gc: { pause: 150, stepmul: 400 } },
    });
  });

  it('follows the configured ports and the pod\'s workers', () => {
    const config = parseInjectionConfig('ports: {outbound: 16001, inbound: 16006, etcd: 16379}\napisixLuaGc: {pause: 150, stepmul: 800}', 'c.yaml');
    const doc = parse(renderApisixConfig(config, 1));
    expect(doc.apisix_mesh).toEqual({ lua_gc: { pause: 150, stepmul: 800 } });
    expect(doc.nginx_config.stream_configuration_snippet).toContain('listen 16001;');
    expect(doc.nginx_config.stream_configuration_snippet).toContain('listen 16006;');
    expect(doc.nginx_config.stream_configuration_snippet).toContain('preread("outbound", 15081, 16001, 16006, 15082, 15084, 15085)');
    // the TLS relay (docs/mtls.md) on its two fixed ports
    expect(doc.nginx_config.stream_configuration_snippet).toContain('listen 15083;\n    listen 15084;\n    content_by_lua_block {\n        require("apisix_mesh.tls_origin").relay(15084)');
    // the stream TLS listener for TCP proxies behind Istio's mTLS, on loopback only, judging in preread (after the handshake)
    expect(doc.nginx_config.stream_configuration_snippet).toContain('listen 127.0.0.1:15085 ssl reuseport;\n');
    expect(doc.nginx_config.stream_configuration_snippet).toContain('ssl_certificate_by_lua_block {\n        require("apisix_mesh.tcp_mtls").ssl_certificate()\n    }\n    preread_by_lua_block {\n        require("apisix_mesh.tcp_mtls").preread()');
    expect(doc.deployment.etcd.host).toEqual(['http://127.0.0.1:16379']);
    expect(doc.nginx_config.worker_processes).toBe(1);
  });

  it('writes the access log only where accessLogFile names a file, as Istio meshConfig.accessLogFile', () => {
    const on = parse(renderApisixConfig(parseInjectionConfig('accessLogFile: /dev/stdout', 'c.yaml'), 2));
    expect(on.nginx_config.http.access_log).toBe('/dev/stdout');
    expect(on.nginx_config.http.enable_access_log).toBeUndefined();
    const off = parse(renderApisixConfig(parseInjectionConfig('accessLogFile: ""', 'c.yaml'), 2));
    expect(off.nginx_config.http.enable_access_log).toBe(false);
    expect(off.nginx_config.error_log).toBe('/dev/stderr');
    // written unquoted into nginx.conf: nothing that could end or extend the directive
    for (const bad of ['/dev/stdout; include /etc/passwd', 'relative.log', '/var/log/$host', 42]) {
      expect(() => parseInjectionConfig(`accessLogFile: ${JSON.stringify(bad)}`, 'c.yaml')).toThrow(/accessLogFile: must be empty \(no access log\) or an absolute path/);
    }
  });

  it('reaches the APISIX container through the pod annotation and a downwardAPI volume', () => {
    const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'shop' }, spec: { containers: [{ name: 'app', image: 'a' }] } };
    const outcome = reviewAdmission(podCreate(pod), defaultInjectionConfig);
    if (outcome.kind !== 'injected') throw new Error(`not injected: ${JSON.stringify(outcome)}`);
    const injected = fjp.applyPatch(structuredClone(pod), outcome.patch).newDocument as any;
    // the default configuration's APISIX limit is 2 CPUs: 2 workers
    expect(injected.metadata.annotations['apisix-mesh.io/apisix-config']).toBe(renderApisixConfig(defaultInjectionConfig, 2));
    const podinfo = injected.spec.volumes.find((v: any) => v.name === 'apisix-mesh-podinfo');
    expect(podinfo.downwardAPI.items).toContainEqual({ path: 'config.yaml', fieldRef: { fieldPath: "metadata.annotations['apisix-mesh.io/apisix-config']" } });
    const copy = injected.spec.initContainers.find((c: any) => c.name === 'apisix-mesh-config');
    expect(copy.command.join(' ')).toContain('cp /apisix-mesh/pod/config.yaml /apisix-mesh/conf/config.yaml');
    const apisix = injected.spec.containers.find((c: any) => c.name === 'apisix-mesh-apisix');
    expect(apisix.volumeMounts).toContainEqual({ name: 'apisix-mesh-apisix-conf', mountPath: '/usr/local/apisix/conf' });
  });
});
