import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { defaultInjectionConfig, type InjectionConfig } from '../../webhook/config/injection-config.js';
import { injectSidecar } from '../../webhook/injection/sidecar.js';
import { injectGateway, mergeList } from '../../webhook/injection/gateway.js';
import { parseStatus } from '../../webhook/injection/status.js';

const app: V1Pod = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'p', namespace: 'shop', labels: { app: 'x' } },
  spec: {
    initContainers: [{ name: 'setup', image: 'setup:1' }],
    containers: [{ name: 'app', image: 'app:1', ports: [{ containerPort: 8080 }] }],
  },
};

const byName = (list: V1Container[] | undefined, name: string): V1Container => {
  const c = (list ?? []).find((x) => x.name === name);
  if (!c) throw new Error(`no ${name} in ${JSON.stringify(list?.map((x) => x.name))}`);
  return c;
};
const names = (list: { name: string }[] | undefined) => (list ?? []).map((x) => x.name);
const native: InjectionConfig = { ...defaultInjectionConfig, nativeSidecars: true };

describe('sidecar mode', () => {
  const pod = injectSidecar(app, defaultInjectionConfig);

  it('labels the pod security.istio.io/tlsMode: istio (Envoy clients with auto-mTLS then use mTLS to it) when the CA gives it an identity; a value of the pod\'s own is kept', () => {
    expect(pod.metadata!.labels).toMatchObject({ app: 'x', 'sidecar.istio.io/inject': 'false', 'security.istio.io/tlsMode': 'istio' });
    const own = injectSidecar({ ...app, metadata: { ...app.metadata, labels: { app: 'x', 'security.istio.io/tlsMode': 'disabled' } } }, defaultInjectionConfig);
    expect(own.metadata!.labels!['security.istio.io/tlsMode']).toBe('disabled');
    // plaintext to istiod: no CA, no workload certificate, so no mTLS to offer
    const plaintext = injectSidecar(app, { ...defaultInjectionConfig, istiodTls: false, istiodAddress: 'istiod.istio-system.svc:15010' });
    expect(plaintext.metadata!.labels!['security.istio.io/tlsMode']).toBeUndefined();
  });

  it('places the mesh first and the capture rules after the app init containers (classic)', () => {
    expect(names(pod.spec!.initContainers)).toEqual(['setup', 'apisix-mesh-config', 'apisix-mesh-init']);
    expect(names(pod.spec!.containers)).toEqual(['apisix-mesh-agent', 'apisix-mesh-apisix', 'app']);
    expect(pod.metadata!.annotations!['kubectl.kubernetes.io/default-container']).toBe('app');
  });

  it('places rules, then the mesh as restartable init containers with startup probes, then app inits (native)', () => {
    const n = injectSidecar(app, native);
    expect(names(n.spec!.initContainers)).toEqual(['apisix-mesh-init', 'apisix-mesh-config', 'apisix-mesh-agent', 'apisix-mesh-apisix', 'setup']);
    expect(names(n.spec!.containers)).toEqual(['app']);
    for (const name of ['apisix-mesh-agent', 'apisix-mesh-apisix']) {
      const c = byName(n.spec!.initContainers, name);
      expect(c.restartPolicy).toBe('Always');
      expect(c.startupProbe?.httpGet).toBeDefined();
    }
    expect(byName(n.spec!.initContainers, 'apisix-mesh-init').restartPolicy).toBeUndefined();
    expect(byName(pod.spec!.containers, 'apisix-mesh-agent').restartPolicy).toBeUndefined();
    expect(byName(pod.spec!.containers, 'apisix-mesh-agent').startupProbe).toBeUndefined();
  });

  it('gives the init container root with NET_ADMIN and NET_RAW only, and the capture flags', () => {
    const init = byName(pod.spec!.initContainers, 'apisix-mesh-init');
    expect(init.securityContext).toMatchObject({
      runAsUser: 0,
      runAsNonRoot: false,
      allowPrivilegeEscalation: false,
      privileged: false,
      capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
    });
    expect(init.args![0]).toBe('iptables');
    expect(init.args).toContain('--proxy-uid=1337');
    expect(init.args).toContain('--exclude-inbound-ports=15020,15021,15090');
  });

  it('runs the agent and APISIX as 1337, non-root, read-only, without capabilities', () => {
    for (const name of ['apisix-mesh-agent', 'apisix-mesh-apisix']) {
      expect(byName(pod.spec!.containers, name).securityContext).toMatchObject({
        runAsUser: 1337,
        runAsGroup: 1337,
        runAsNonRoot: true,
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ['ALL'] },
      });
    }
  });

  it('starts the agent against istiod with the etcd API on loopback and its identity from the downward API', () => {
    const agent = byName(pod.spec!.containers, 'apisix-mesh-agent');
    expect(agent.args).toEqual([
      'agent',
      '--xds-address=istiod.istio-system.svc:15012',
      '--xds-tls',
      '--root-cert=/var/run/secrets/istio/root-cert.pem',
      '--token-file=/var/run/secrets/tokens/istio-token',
      '--ca-address=istiod.istio-system.svc:15012',
      '--trust-domain=cluster.local',
      '--key-type=rsa',
      '--etcd-listen=127.0.0.1:15379',
      '--status-port=15020',
      '--outbound-port=15001',
      '--inbound-port=15006',
      '--pod-labels-file=/etc/apisix-mesh/pod/labels',
      '--lua-dir=/apisix-mesh/lua',
      '--apisix-metrics-url=http://127.0.0.1:15090/apisix/prometheus/metrics',
    ]);
    expect(Object.fromEntries(agent.env!.map((e) => [e.name, e.valueFrom?.fieldRef?.fieldPath]))).toEqual({
      POD_NAME: 'metadata.name',
      POD_NAMESPACE: 'metadata.namespace',
      INSTANCE_IP: 'status.podIP',
      SERVICE_ACCOUNT: 'spec.serviceAccountName',
    });
    expect(agent.readinessProbe?.httpGet).toEqual({ path: '/healthz/ready', port: 15020 });
    // the mesh's key type (injection config workloadKeyType) reaches the agent
    const ecdsa = byName(injectSidecar(app, { ...defaultInjectionConfig, workloadKeyType: 'ecdsa' }).spec!.containers, 'apisix-mesh-agent');
    expect(ecdsa.args).toContain('--key-type=ecdsa');
    expect(ecdsa.args).not.toContain('--key-type=rsa');
  });

  it('runs the agent\'s node with its memory flags, and in V8\'s lite mode only when agentLiteMode says so; this node takes the flags', () => {
    const command = byName(pod.spec!.containers, 'apisix-mesh-agent').command!;
    expect(command).toEqual(['node', '--heap-growing-percent=30', '--max-semi-space-size=2', '/app/dist/cli/main.js']);
    const lite = byName(injectSidecar(app, { ...defaultInjectionConfig, agentLiteMode: true }).spec!.containers, 'apisix-mesh-agent').command!;
    expect(lite).toEqual(['node', '--heap-growing-percent=30', '--max-semi-space-size=2', '--lite-mode', '--no-expose-wasm', '/app/dist/cli/main.js']);
    // the same command with this checkout's node and build: V8 takes the flags without a warning
    const cli = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
    const res = spawnSync(process.execPath, [...lite.slice(1, -1), cli, 'agent', '--help'], { encoding: 'utf8', timeout: 20_000 });
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    expect(res.stdout).toContain('--xds-address');
  });

  it('gives the agent what Istio gives pilot-agent: the mesh root and a projected token for istiod only, at Istio\'s paths', () => {
    const volumes = Object.fromEntries(pod.spec!.volumes!.map((v) => [v.name, v]));
    expect(volumes['apisix-mesh-istio-token']).toEqual({
      name: 'apisix-mesh-istio-token',
      projected: { sources: [{ serviceAccountToken: { path: 'istio-token', audience: 'istio-ca', expirationSeconds: 43200 } }] },
    });
    expect(volumes['apisix-mesh-istio-ca-root-cert']).toEqual({ name: 'apisix-mesh-istio-ca-root-cert', configMap: { name: 'istio-ca-root-cert' } });
    expect(byName(pod.spec!.containers, 'apisix-mesh-agent').volumeMounts).toEqual(
      expect.arrayContaining([
        { name: 'apisix-mesh-istio-ca-root-cert', mountPath: '/var/run/secrets/istio', readOnly: true },
        { name: 'apisix-mesh-istio-token', mountPath: '/var/run/secrets/tokens', readOnly: true },
      ]),
    );
    // the token authenticates the pod to istiod: only the agent mounts it
    const others = [...pod.spec!.initContainers!, ...pod.spec!.containers].filter((c) => c.name !== 'apisix-mesh-agent');
    for (const c of others) expect((c.volumeMounts ?? []).map((m) => m.name)).not.toContain('apisix-mesh-istio-token');
  });

  it('names istiod\'s certificate for the agent when istiodAddress is an IP literal (its certificate carries DNS names only), else verifies the host it dials', () => {
    const istiodArgs = (config: InjectionConfig) => byName(injectSidecar(app, config).spec!.containers, 'apisix-mesh-agent').args!.filter((a) => /^--(xds-address|ca-address|xds-server-name)=/.test(a));
    // an IPv6-only cluster: istiod's ClusterIP, bracketed
    expect(istiodArgs({ ...defaultInjectionConfig, istiodAddress: '[fd00:96::10]:15012' })).toEqual(['--xds-address=[fd00:96::10]:15012', '--ca-address=[fd00:96::10]:15012', '--xds-server-name=istiod.istio-system.svc']);
    expect(istiodArgs({ ...defaultInjectionConfig, istiodAddress: '10.96.0.10:15012' })).toContain('--xds-server-name=istiod.istio-system.svc');
    // configured: wins, also for a name
    expect(istiodArgs({ ...defaultInjectionConfig, istiodAddress: '[fd00:96::10]:15012', istiodServerName: 'istiod-canary.istio-system.svc' })).toContain('--xds-server-name=istiod-canary.istio-system.svc');
    expect(istiodArgs({ ...defaultInjectionConfig, istiodAddress: 'istiod.mesh.svc:15012', istiodServerName: 'istiod.istio-system.svc' })).toContain('--xds-server-name=istiod.istio-system.svc');
    // a name is what the certificate carries: nothing to add (pilot-agent verifies the same way)
    expect(istiodArgs(defaultInjectionConfig)).toEqual(['--xds-address=istiod.istio-system.svc:15012', '--ca-address=istiod.istio-system.svc:15012']);
    // plaintext: no TLS, no name
    expect(istiodArgs({ ...defaultInjectionConfig, istiodTls: false, istiodAddress: '[fd00:96::10]:15010' })).toEqual(['--xds-address=[fd00:96::10]:15010']);
  });

  it('speaks plaintext to istiod (15010), without token, root or workload certificate, only when the configuration says so', () => {
    const plain = injectSidecar(app, { ...defaultInjectionConfig, istiodTls: false, istiodAddress: 'istiod.istio-system.svc:15010' });
    const agent = byName(plain.spec!.containers, 'apisix-mesh-agent');
    expect(agent.args!.filter((a) => /^--(xds-address|xds-tls|root-cert|token-file|ca-address|trust-domain)/.test(a))).toEqual(['--xds-address=istiod.istio-system.svc:15010']);
    expect(names(plain.spec!.volumes)).toEqual(['apisix-mesh-podinfo', 'apisix-mesh-apisix-conf', 'apisix-mesh-apisix-run', 'apisix-mesh-lua']);
    expect(agent.volumeMounts!.map((m) => m.name)).toEqual(['apisix-mesh-podinfo', 'apisix-mesh-lua']);
    // switching a pod from one to the other leaves nothing behind
    expect(injectSidecar(plain, defaultInjectionConfig)).toEqual(pod);
  });

  it('refuses app volumes named like the identity volumes', () => {
    for (const name of ['apisix-mesh-istio-token', 'apisix-mesh-istio-ca-root-cert']) {
      expect(() => injectSidecar({ ...app, spec: { ...app.spec!, volumes: [{ name, emptyDir: {} }] } }, defaultInjectionConfig)).toThrow(`volume "${name}" uses a name apisix-mesh reserves`);
    }
  });

  it('gives APISIX writable conf, logs, temp dirs and /tmp on emptyDirs', () => {
    const apisix = byName(pod.spec!.containers, 'apisix-mesh-apisix');
    const mounts = apisix.volumeMounts!.map((m) => m.mountPath);
    expect(mounts).toEqual(expect.arrayContaining(['/usr/local/apisix/conf', '/usr/local/apisix/logs', '/usr/local/apisix/proxy_temp', '/tmp']));
    const volumes = Object.fromEntries(pod.spec!.volumes!.map((v) => [v.name, v]));
    expect(volumes['apisix-mesh-apisix-conf']!.emptyDir).toEqual({});
    expect(volumes['apisix-mesh-apisix-run']!.emptyDir).toEqual({});
    expect(apisix.readinessProbe?.httpGet).toEqual({ path: '/status/ready', port: 15021 });
  });

  it('labels the pod so that Istio leaves it alone and records what it added', () => {
    expect(pod.metadata!.labels).toEqual({
      app: 'x',
      'sidecar.istio.io/inject': 'false',
      // Istio's canonical service (telemetry-metadata.test.ts tests the derivation)
      'service.istio.io/canonical-name': 'x',
      'service.istio.io/canonical-revision': 'latest',
      'security.istio.io/tlsMode': 'istio',
    });
    expect(parseStatus(pod.metadata!.annotations!['apisix-mesh.io/status'])).toEqual({
      initContainers: ['apisix-mesh-config', 'apisix-mesh-init'],
      containers: ['apisix-mesh-agent', 'apisix-mesh-apisix'],
      volumes: ['apisix-mesh-podinfo', 'apisix-mesh-apisix-conf', 'apisix-mesh-apisix-run', 'apisix-mesh-lua', 'apisix-mesh-istio-token', 'apisix-mesh-istio-ca-root-cert'],
    });
  });

  it('adds no capture rules with interceptionMode NONE', () => {
    const none = injectSidecar({ ...app, metadata: { ...app.metadata, annotations: { 'sidecar.istio.io/interceptionMode': 'NONE' } } }, defaultInjectionConfig);
    expect(names(none.spec!.initContainers)).toEqual(['setup', 'apisix-mesh-config']);
  });

  it('switches between classic and native on re-injection without leftovers', () => {
    const n = injectSidecar(pod, native);
    expect(n).toEqual(injectSidecar(app, native));
    expect(injectSidecar(n, defaultInjectionConfig)).toEqual(pod);
  });

  it('does not modify the pod it is given and shares what it did not change', () => {
    const before = structuredClone(app);
    const out = injectSidecar(app, defaultInjectionConfig);
    expect(app).toEqual(before);
    expect(out.spec!.containers[2]).toBe(app.spec!.containers[0]);
  });

  it('treats a malformed status annotation as not injected', () => {
    const odd = { ...app, metadata: { ...app.metadata, annotations: { 'apisix-mesh.io/status': '{"containers":"app"}' } } };
    expect(names(injectSidecar(odd, defaultInjectionConfig).spec!.containers)).toEqual(['apisix-mesh-agent', 'apisix-mesh-apisix', 'app']);
  });
});

describe('gateway mode', () => {
  it('merges as a set union, keeping order and the existing text', () => {
    expect(mergeList(undefined, ['80', '443'])).toBe('80,443');
    expect(mergeList('', ['80'])).toBe('80');
    expect(mergeList('443, 9180', ['80', '443'])).toBe('443,9180,80');
    expect(mergeList('80,443', ['80', '443'])).toBe('80,443');
  });

  it('adds no containers, sets the Istio label and keeps unrelated annotations', () => {
    const pod = injectGateway(
      { ...app, metadata: { ...app.metadata, labels: { 'sidecar.istio.io/inject': 'false' }, annotations: { keep: 'me' } } },
      defaultInjectionConfig,
    );
    expect(pod.spec).toBe(app.spec);
    expect(pod.metadata!.labels).toEqual({ 'sidecar.istio.io/inject': 'true' });
    expect(pod.metadata!.annotations).toEqual({
      keep: 'me',
      'traffic.sidecar.istio.io/excludeInboundPorts': '80,443',
      'traffic.sidecar.istio.io/excludeOutboundPorts': '4317,4318',
    });
  });

  it('adds excluded outbound ranges from the configuration', () => {
    const config = { ...defaultInjectionConfig, gateway: { ...defaultInjectionConfig.gateway, excludeOutboundIpRanges: ['169.254.169.254/32'] } };
    const pod = injectGateway(app, config);
    expect(pod.metadata!.annotations!['traffic.sidecar.istio.io/excludeOutboundIPRanges']).toBe('169.254.169.254/32');
  });
});
