import type {
  V1ClusterRole,
  V1ClusterRoleBinding,
  V1Container,
  V1Deployment,
  V1MutatingWebhookConfiguration,
  V1PodDisruptionBudget,
  V1PolicyRule,
  V1Role,
  V1RoleBinding,
  V1Service,
} from '@kubernetes/client-node';
import { beforeAll, expect, it } from 'vitest';
import { buildProgram } from '../../cli/program.js';
import { parseInjectionConfig } from '../../webhook/config/index.js';
import { describeWhenAvailable, missingCommand } from '../support/requirements.js';
import { selectorMatches } from './label-selector.js';
import { findObject, renderKustomization, type KubeObject } from './render.js';
import { unknownFieldsOf, validateAgainstSchema } from './schema.js';

/**
 * The manifests as `kubectl apply -k` would send them: rendered by the kustomize inside kubectl
 * (Debian's kubernetes-client in CI), every object checked against the Kubernetes / cert-manager
 * OpenAPI schema, then against the install rules of issue 6.
 */
const NAMESPACE = 'apisix-mesh-system';
const missingKubectl = missingCommand('kubectl', 'install Debian package kubernetes-client; .ci/run does');

function webhookContainer(deployment: V1Deployment): V1Container {
  const containers = deployment.spec!.template.spec!.containers;
  expect(containers).toHaveLength(1);
  return containers[0]!;
}

function argValue(container: V1Container, flag: string): string | undefined {
  const prefix = `--${flag}=`;
  return container.args?.find((a) => a.startsWith(prefix))?.slice(prefix.length);
}

function allRules(objects: KubeObject[]): Array<{ owner: string; rule: V1PolicyRule }> {
  return objects
    .filter((o) => o.kind === 'Role' || o.kind === 'ClusterRole')
    .flatMap((o) => ((o as V1Role).rules ?? []).map((rule) => ({ owner: `${o.kind}/${o.metadata.name}`, rule })));
}

/** Rules every rendering shares, whichever way the certificates come. */
function checkCommonRules(render: () => KubeObject[]): void {
  let objects: KubeObject[];
  beforeAll(() => {
    objects = render();
  });

  it('renders objects that all pass the Kubernetes (and cert-manager) schema', () => {
    expect(objects.length).toBeGreaterThan(5);
    for (const object of objects) {
      expect(() => validateAgainstSchema(object), `${object.kind}/${object.metadata.name}`).not.toThrow();
      expect(unknownFieldsOf(object), `${object.kind}/${object.metadata.name}: a field Kubernetes does not know`).toBeNull();
    }
  });

  it('puts every namespaced object in apisix-mesh-system, which is not itself meshed', () => {
    const clusterScoped = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'MutatingWebhookConfiguration']);
    for (const object of objects) {
      if (clusterScoped.has(object.kind)) expect(object.metadata.namespace).toBeUndefined();
      else expect(object.metadata.namespace, `${object.kind}/${object.metadata.name}`).toBe(NAMESPACE);
    }
    const ns = findObject(objects, 'Namespace', NAMESPACE);
    expect(ns.metadata.labels?.['istio-injection']).toBeUndefined();
    // The Deployment below meets Pod Security "restricted", so the namespace enforces it.
    expect(ns.metadata.labels?.['pod-security.kubernetes.io/enforce']).toBe('restricted');
  });

  it('grants no wildcard and names every resource it grants', () => {
    for (const { owner, rule } of allRules(objects)) {
      for (const list of [rule.apiGroups, rule.resources, rule.verbs, rule.resourceNames]) {
        expect(list ?? [], owner).not.toContain('*');
      }
      expect(rule.nonResourceURLs, owner).toBeUndefined();
      expect(rule.resourceNames?.length ?? 0, `${owner} must pin resourceNames`).toBeGreaterThan(0);
      for (const verb of rule.verbs) expect(['get', 'update', 'patch'], owner).toContain(verb);
    }
  });

  it('binds roles only to the webhook service account', () => {
    const deployment = findObject<V1Deployment>(objects, 'Deployment');
    const serviceAccount = deployment.spec!.template.spec!.serviceAccountName;
    findObject(objects, 'ServiceAccount', serviceAccount);
    for (const binding of objects.filter((o) => o.kind === 'RoleBinding' || o.kind === 'ClusterRoleBinding')) {
      const b = binding as unknown as V1RoleBinding | V1ClusterRoleBinding;
      expect(b.subjects).toEqual([{ kind: 'ServiceAccount', name: serviceAccount, namespace: NAMESPACE }]);
      findObject(objects, b.roleRef.kind, b.roleRef.name);
    }
  });

  it('runs two hardened replicas spread over nodes', () => {
    const deployment = findObject<V1Deployment>(objects, 'Deployment');
    const spec = deployment.spec!;
    expect(spec.replicas).toBe(2);
    expect(spec.strategy?.rollingUpdate?.maxUnavailable).toBe(0);
    const podLabels = spec.template.metadata!.labels!;
    expect(selectorMatches(spec.selector, podLabels)).toBe(true);
    expect(podLabels['sidecar.istio.io/inject']).toBe('false');

    const pod = spec.template.spec!;
    const antiAffinity = pod.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution ?? [];
    expect(antiAffinity.length).toBe(1);
    expect(antiAffinity[0]!.podAffinityTerm.topologyKey).toBe('kubernetes.io/hostname');
    expect(selectorMatches(antiAffinity[0]!.podAffinityTerm.labelSelector, podLabels)).toBe(true);

    expect(pod.securityContext?.runAsNonRoot).toBe(true);
    expect(pod.securityContext?.seccompProfile?.type).toBe('RuntimeDefault');
    const uid = pod.securityContext?.runAsUser;
    expect(uid).toBeGreaterThan(0);
    expect(uid, 'the webhook must not run as the proxy uid, whose traffic is never captured').not.toBe(1337);
    expect(pod.hostNetwork ?? false).toBe(false);
    // Pod Security "restricted" allows only these volume types.
    const allowedVolumes = ['configMap', 'secret', 'emptyDir', 'projected', 'downwardAPI', 'csi', 'ephemeral', 'persistentVolumeClaim'];
    for (const volume of pod.volumes ?? []) {
      const types = Object.keys(volume).filter((k) => k !== 'name');
      expect(types.every((t) => allowedVolumes.includes(t)), `volume ${volume.name}: ${types.join(', ')}`).toBe(true);
    }
    for (const c of pod.containers) expect(c.ports?.every((p) => p.hostPort === undefined) ?? true).toBe(true);

    const container = webhookContainer(deployment);
    const sc = container.securityContext!;
    expect(sc.runAsNonRoot).toBe(true);
    expect(sc.readOnlyRootFilesystem).toBe(true);
    expect(sc.allowPrivilegeEscalation).toBe(false);
    expect(sc.privileged ?? false).toBe(false);
    expect(sc.capabilities?.drop).toEqual(['ALL']);
    expect(sc.capabilities?.add).toBeUndefined();

    for (const kind of ['requests', 'limits'] as const) {
      expect(container.resources?.[kind]?.cpu, kind).toBeDefined();
      expect(container.resources?.[kind]?.memory, kind).toBeDefined();
    }
    expect(container.args?.[0]).toBe('webhook');
  });

  it('probes readiness and liveness over HTTPS on the webhook port', () => {
    const container = webhookContainer(findObject<V1Deployment>(objects, 'Deployment'));
    const httpsPort = container.ports!.find((p) => p.name === 'https')!;
    expect(String(httpsPort.containerPort)).toBe(argValue(container, 'port'));
    expect(argValue(container, 'host')).toBe('0.0.0.0');
    for (const [probe, path] of [
      [container.readinessProbe, '/readyz'],
      [container.livenessProbe, '/healthz'],
    ] as const) {
      expect(probe?.httpGet?.scheme).toBe('HTTPS');
      expect(probe?.httpGet?.path).toBe(path);
      expect([httpsPort.name, httpsPort.containerPort]).toContain(probe?.httpGet?.port);
      expect(probe?.timeoutSeconds).toBeLessThanOrEqual(5);
    }
  });

  it('mounts the configuration ConfigMap where --config points', () => {
    const deployment = findObject<V1Deployment>(objects, 'Deployment');
    const container = webhookContainer(deployment);
    const configPath = argValue(container, 'config')!;
    const mount = container.volumeMounts!.find((m) => configPath.startsWith(`${m.mountPath}/`))!;
    expect(mount.readOnly).toBe(true);
    const volume = deployment.spec!.template.spec!.volumes!.find((v) => v.name === mount.name)!;
    const configMap = findObject(objects, 'ConfigMap', volume.configMap!.name) as unknown as { data: Record<string, string> };
    expect(Object.keys(configMap.data)).toContain(configPath.slice(mount.mountPath.length + 1));
  });

  it('passes the webhook only flags that `apisix-mesh webhook` has', async () => {
    const container = webhookContainer(findObject<V1Deployment>(objects, 'Deployment'));
    const webhook = (await buildProgram()).commands.find((c) => c.name() === 'webhook')!;
    const known = new Set(webhook.options.map((o) => o.long));
    for (const arg of container.args!.slice(1)) {
      expect(known, arg).toContain(arg.split('=')[0]);
    }
  });

  it('ships an injection configuration the webhook accepts, naming its own namespace and image', () => {
    const deployment = findObject<V1Deployment>(objects, 'Deployment');
    const configMap = findObject(objects, 'ConfigMap') as unknown as { data: Record<string, string> };
    const config = parseInjectionConfig(configMap.data['config.yaml']!, 'config.yaml');
    expect(config.webhookNamespace).toBe(NAMESPACE);
    expect(config.images.mesh).toBe(webhookContainer(deployment).image);
  });

  it('exposes 443 on a Service that reaches the webhook pods', () => {
    const deployment = findObject<V1Deployment>(objects, 'Deployment');
    const container = webhookContainer(deployment);
    const service = findObject<V1Service>(objects, 'Service');
    expect(selectorMatches({ matchLabels: service.spec!.selector! }, deployment.spec!.template.metadata!.labels!)).toBe(true);
    expect(service.spec!.ports).toHaveLength(1);
    const port = service.spec!.ports![0]!;
    expect(port.port).toBe(443);
    const target = container.ports!.find((p) => p.name === port.targetPort || p.containerPort === port.targetPort);
    expect(target?.containerPort).toBe(9443);
  });

  it('keeps one replica through voluntary disruptions', () => {
    const deployment = findObject<V1Deployment>(objects, 'Deployment');
    const pdb = findObject<V1PodDisruptionBudget>(objects, 'PodDisruptionBudget');
    expect(pdb.spec!.minAvailable).toBe(1);
    expect(selectorMatches(pdb.spec!.selector, deployment.spec!.template.metadata!.labels!)).toBe(true);
  });

  it('registers webhook entries that run before Istio\'s injector, for pod CREATE only, that cannot block pod creation before the webhook works', () => {
    const mwc = findObject<V1MutatingWebhookConfiguration>(objects, 'MutatingWebhookConfiguration');
    const name = mwc.metadata!.name!;
    // The API server orders configurations by name (byte order).
    for (const istio of ['istio-sidecar-injector', 'istio-revision-tag-default', 'istio-sidecar-injector-canary']) {
      expect([name, istio].sort()[0], `${name} before ${istio}`).toBe(name);
    }
    const service = findObject<V1Service>(objects, 'Service');
    expect(mwc.webhooks!.map((w) => [w.name, w.clientConfig.service?.path])).toEqual([
      ['namespace.sidecar-injector.apisix-mesh.io', '/inject/sidecar'],
      ['istio.sidecar-injector.apisix-mesh.io', '/inject'],
      ['rev.sidecar-injector.apisix-mesh.io', '/inject'],
      ['object.sidecar-injector.apisix-mesh.io', '/inject/sidecar'],
    ]);
    for (const webhook of mwc.webhooks!) {
      expect(webhook.sideEffects).toBe('None');
      expect(webhook.admissionReviewVersions).toEqual(['v1']);
      expect(webhook.reinvocationPolicy).toBe('IfNeeded');
      expect(webhook.timeoutSeconds).toBeGreaterThan(0);
      expect(webhook.timeoutSeconds).toBeLessThanOrEqual(10);
      // Ignore until the webhook answers (it sets Fail itself, or the overlay's docs say when)
      expect(webhook.failurePolicy, webhook.name).toBe('Ignore');
      expect(webhook.rules).toEqual([
        { operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' },
      ]);
      expect(webhook.clientConfig.url).toBeUndefined();
      expect({ ...webhook.clientConfig.service, path: undefined }).toEqual({ name: service.metadata!.name, namespace: NAMESPACE, path: undefined, port: 443 });
      // never the system namespaces or its own
      for (const ns of ['kube-system', 'kube-public', 'kube-node-lease', NAMESPACE]) {
        const labels = { 'kubernetes.io/metadata.name': ns, 'istio-injection': 'enabled', 'apisix-mesh.io/mode': 'sidecar' };
        expect(selectorMatches(webhook.namespaceSelector, labels), `${webhook.name} in ${ns}`).toBe(false);
      }
      // never a pod labelled sidecar.istio.io/inject=false (including the ones it injected)
      expect(selectorMatches(webhook.objectSelector, { app: 'x', 'apisix-mesh.io/mode': 'sidecar', 'sidecar.istio.io/inject': 'false' })).toBe(false);
    }
  });
}

describeWhenAvailable('manifests/ (base: certificates managed by the webhook)', missingKubectl, () => {
  const render = () => renderKustomization('manifests');
  checkCommonRules(render);

  it('lets the webhook read and write only its own Secret, and patch only its own webhook configuration', () => {
    const objects = render();
    const deployment = findObject<V1Deployment>(objects, 'Deployment');
    const container = webhookContainer(deployment);
    const secretName = argValue(container, 'cert-secret')!;
    const mwcName = argValue(container, 'webhook-config')!;
    expect(argValue(container, 'service')).toBe(findObject<V1Service>(objects, 'Service').metadata!.name);
    // the entries ship Ignore; the webhook sets Fail once it answers through its Service
    expect(container.args).toContain('--fail-closed-when-ready');
    findObject(objects, 'Secret', secretName);
    findObject(objects, 'MutatingWebhookConfiguration', mwcName);
    expect(deployment.spec!.template.spec!.automountServiceAccountToken).toBe(true);
    expect(container.env?.find((e) => e.name === 'POD_NAMESPACE')?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.namespace');

    const role = findObject<V1Role>(objects, 'Role');
    expect(role.rules).toEqual([{ apiGroups: [''], resources: ['secrets'], resourceNames: [secretName], verbs: ['get', 'update'] }]);
    const clusterRole = findObject<V1ClusterRole>(objects, 'ClusterRole');
    expect(clusterRole.rules).toEqual([
      {
        apiGroups: ['admissionregistration.k8s.io'],
        resources: ['mutatingwebhookconfigurations'],
        resourceNames: [mwcName],
        verbs: ['get', 'patch'],
      },
    ]);
    // No cluster-wide access to secrets, whatever the rule looks like.
    for (const { owner, rule } of allRules(objects)) {
      if (rule.resources?.includes('secrets')) expect(owner.startsWith('Role/')).toBe(true);
    }
  });

  it('ships the certificate Secret empty, so the webhook fills it without a create permission', () => {
    const secret = findObject(renderKustomization('manifests'), 'Secret') as KubeObject & { data?: unknown; type?: string };
    expect(secret.data).toBeUndefined();
    expect(secret.type).toBe('Opaque');
  });

  it('is the shared base plus the certificate Secret and its RBAC, nothing else', () => {
    const key = (o: KubeObject) => `${o.kind}/${o.metadata.name}`;
    const full = renderKustomization('manifests').map(key).sort();
    const base = renderKustomization('manifests/base').map(key);
    expect(full.filter((k) => !base.includes(k))).toEqual(
      [
        'ClusterRole/apisix-mesh-webhook-cabundle',
        'ClusterRoleBinding/apisix-mesh-webhook-cabundle',
        'Role/apisix-mesh-webhook-certs',
        'RoleBinding/apisix-mesh-webhook-certs',
        'Secret/apisix-mesh-webhook-certs',
      ].sort(),
    );
    expect(base.filter((k) => !full.includes(k))).toEqual([]);
  });
});

describeWhenAvailable('manifests/overlays/cert-manager', missingKubectl, () => {
  const render = () => renderKustomization('manifests/overlays/cert-manager');
  checkCommonRules(render);

  it('serves the files of a cert-manager Certificate for every name of the Service', () => {
    const objects = render();
    const deployment = findObject<V1Deployment>(objects, 'Deployment');
    const container = webhookContainer(deployment);
    const service = findObject<V1Service>(objects, 'Service');
    const serving = findObject(objects, 'Certificate', 'apisix-mesh-webhook-serving') as KubeObject & {
      spec: { secretName: string; dnsNames: string[]; issuerRef: { kind: string; name: string }; isCA?: boolean };
    };
    const svc = `${service.metadata!.name}.${NAMESPACE}`;
    expect(serving.spec.dnsNames).toEqual(expect.arrayContaining([service.metadata!.name, svc, `${svc}.svc`]));
    expect(serving.spec.isCA ?? false).toBe(false);

    // The issuer chain resolves: serving ← CA issuer ← CA certificate ← self-signed issuer.
    const caIssuer = findObject(objects, serving.spec.issuerRef.kind, serving.spec.issuerRef.name) as KubeObject & {
      spec: { ca: { secretName: string } };
    };
    const ca = objects.find(
      (o) => o.kind === 'Certificate' && (o as unknown as { spec: { secretName: string } }).spec.secretName === caIssuer.spec.ca.secretName,
    ) as KubeObject & { spec: { isCA: boolean; issuerRef: { kind: string; name: string } } };
    expect(ca.spec.isCA).toBe(true);
    const root = findObject(objects, ca.spec.issuerRef.kind, ca.spec.issuerRef.name) as KubeObject & { spec: { selfSigned?: object } };
    expect(root.spec.selfSigned).toEqual({});

    // The Deployment mounts that Secret and points --tls-cert/--tls-key into the mount.
    const volume = deployment.spec!.template.spec!.volumes!.find((v) => v.secret?.secretName === serving.spec.secretName)!;
    const mount = container.volumeMounts!.find((m) => m.name === volume.name)!;
    expect(mount.readOnly).toBe(true);
    expect(argValue(container, 'tls-cert')).toBe(`${mount.mountPath}/tls.crt`);
    expect(argValue(container, 'tls-key')).toBe(`${mount.mountPath}/tls.key`);
    expect(argValue(container, 'cert-secret')).toBeUndefined();
    expect(argValue(container, 'webhook-config')).toBeUndefined();
    // Secret files are root-owned; the non-root webhook reads them through its fsGroup.
    expect(deployment.spec!.template.spec!.securityContext?.fsGroup).toBeDefined();

    const mwc = findObject<V1MutatingWebhookConfiguration>(objects, 'MutatingWebhookConfiguration');
    expect(mwc.metadata!.annotations?.['cert-manager.io/inject-ca-from']).toBe(`${NAMESPACE}/${serving.metadata.name}`);
  });

  it('drops every API permission, the Secret and the service-account token the webhook no longer needs', () => {
    const objects = render();
    for (const kind of ['Role', 'RoleBinding', 'ClusterRole', 'ClusterRoleBinding', 'Secret']) {
      expect(objects.filter((o) => o.kind === kind), kind).toEqual([]);
    }
    const deployment = findObject<V1Deployment>(objects, 'Deployment');
    expect(deployment.spec!.template.spec!.automountServiceAccountToken).toBe(false);
  });
});
