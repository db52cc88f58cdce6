import type { V1Container, V1Pod, V1SecurityContext, V1Volume } from '@kubernetes/client-node';
import { captureConfigToArgs, type CaptureConfig } from '../../iptables-init/capture-config.js';
import type { InjectionConfig } from '../config/injection-config.js';
import {
  APISIX_CONFIG_ANNOTATION,
  DEFAULT_CONTAINER_ANNOTATION,
  ISTIO_INJECT,
  ISTIO_NATIVE_SIDECAR_ANNOTATION,
  STATUS_ANNOTATION,
} from './annotations.js';
import { renderApisixConfig } from './apisix-config.js';
import { captureConfigFor, interceptionMode, PodRejection, reservedPorts } from './capture.js';
import { formatStatus, parseStatus, type InjectionStatus } from './status.js';

/** Names of everything sidecar mode adds; an app may not use them. */
export const NAMES = {
  init: 'apisix-mesh-init',
  configCopy: 'apisix-mesh-config',
  agent: 'apisix-mesh-agent',
  apisix: 'apisix-mesh-apisix',
  podInfoVolume: 'apisix-mesh-podinfo',
  apisixConfVolume: 'apisix-mesh-apisix-conf',
  apisixRunVolume: 'apisix-mesh-apisix-run',
} as const;

const APISIX_HOME = '/usr/local/apisix';
/** nginx writes its temp files under its prefix; with a read-only root each needs a writable mount. */
const APISIX_WRITABLE_DIRS = ['logs', 'client_body_temp', 'proxy_temp', 'fastcgi_temp', 'uwsgi_temp', 'scgi_temp'];

const configTextCache = new WeakMap<InjectionConfig, string>();
function apisixConfigText(config: InjectionConfig): string {
  let text = configTextCache.get(config);
  if (text === undefined) {
    text = renderApisixConfig(config);
    configTextCache.set(config, text);
  }
  return text;
}

/** The mesh containers' identity: the proxy uid/gid, nothing to escalate, nothing to write. */
function proxySecurityContext(config: InjectionConfig): V1SecurityContext {
  return {
    runAsUser: config.proxyUid,
    runAsGroup: config.proxyGid,
    runAsNonRoot: true,
    readOnlyRootFilesystem: true,
    allowPrivilegeEscalation: false,
    privileged: false,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' },
  };
}

/**
 * The init container that installs the capture rules. iptables needs uid 0 (runAsNonRoot false) with
 * NET_ADMIN and NET_RAW and nothing else; its root filesystem stays writable because iptables-legacy
 * takes its lock in /run/xtables.lock.
 */
function initContainer(capture: CaptureConfig, config: InjectionConfig): V1Container {
  return {
    name: NAMES.init,
    image: config.images.mesh,
    imagePullPolicy: config.images.pullPolicy,
    args: ['iptables', ...captureConfigToArgs(capture)],
    resources: structuredClone(config.resources.init),
    securityContext: {
      runAsUser: 0,
      runAsGroup: 0,
      runAsNonRoot: false,
      readOnlyRootFilesystem: false,
      allowPrivilegeEscalation: false,
      privileged: false,
      capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
  };
}

/**
 * Copies the APISIX image's `conf/` into a writable emptyDir and puts the generated config.yaml
 * (from the downwardAPI volume) in it: APISIX writes `conf/nginx.conf` at start, so its conf
 * directory cannot stay on the read-only root filesystem.
 */
function configCopyContainer(config: InjectionConfig): V1Container {
  return {
    name: NAMES.configCopy,
    image: config.images.apisix,
    imagePullPolicy: config.images.pullPolicy,
    command: ['sh', '-c', `cp -R ${APISIX_HOME}/conf/. /apisix-mesh/conf/ && cp /apisix-mesh/pod/config.yaml /apisix-mesh/conf/config.yaml`],
    resources: structuredClone(config.resources.init),
    securityContext: proxySecurityContext(config),
    volumeMounts: [
      { name: NAMES.apisixConfVolume, mountPath: '/apisix-mesh/conf' },
      { name: NAMES.podInfoVolume, mountPath: '/apisix-mesh/pod', readOnly: true },
    ],
  };
}

function agentContainer(config: InjectionConfig, native: boolean): V1Container {
  const fieldEnv = (name: string, fieldPath: string) => ({ name, valueFrom: { fieldRef: { fieldPath } } });
  const ready = { httpGet: { path: '/healthz/ready', port: config.ports.agentStatus } };
  return {
    name: NAMES.agent,
    image: config.images.mesh,
    imagePullPolicy: config.images.pullPolicy,
    args: [
      'agent',
      `--istiod-address=${config.istiodAddress}`,
      `--etcd-listen=127.0.0.1:${config.ports.etcd}`,
      `--status-port=${config.ports.agentStatus}`,
    ],
    env: [
      fieldEnv('POD_NAME', 'metadata.name'),
      fieldEnv('POD_NAMESPACE', 'metadata.namespace'),
      fieldEnv('INSTANCE_IP', 'status.podIP'),
      fieldEnv('SERVICE_ACCOUNT', 'spec.serviceAccountName'),
    ],
    ports: [{ name: 'mesh-status', containerPort: config.ports.agentStatus, protocol: 'TCP' }],
    readinessProbe: { ...ready, periodSeconds: 5, failureThreshold: 3 },
    ...(native ? { startupProbe: { ...ready, periodSeconds: 1, failureThreshold: 600 }, restartPolicy: 'Always' } : {}),
    resources: structuredClone(config.resources.agent),
    securityContext: proxySecurityContext(config),
    volumeMounts: [{ name: NAMES.podInfoVolume, mountPath: '/etc/apisix-mesh/pod', readOnly: true }],
  };
}

function apisixContainer(config: InjectionConfig, native: boolean): V1Container {
  const ready = { httpGet: { path: '/status/ready', port: config.ports.apisixStatus } };
  return {
    name: NAMES.apisix,
    image: config.images.apisix,
    imagePullPolicy: config.images.pullPolicy,
    ports: [
      { name: 'mesh-outbound', containerPort: config.ports.outbound, protocol: 'TCP' },
      { name: 'mesh-inbound', containerPort: config.ports.inbound, protocol: 'TCP' },
      { name: 'apisix-status', containerPort: config.ports.apisixStatus, protocol: 'TCP' },
      { name: 'apisix-metrics', containerPort: config.ports.apisixMetrics, protocol: 'TCP' },
    ],
    readinessProbe: { ...ready, periodSeconds: 5, failureThreshold: 3 },
    ...(native ? { startupProbe: { ...ready, periodSeconds: 1, failureThreshold: 600 }, restartPolicy: 'Always' } : {}),
    resources: structuredClone(config.resources.apisix),
    securityContext: proxySecurityContext(config),
    volumeMounts: [
      { name: NAMES.apisixConfVolume, mountPath: `${APISIX_HOME}/conf` },
      ...APISIX_WRITABLE_DIRS.map((dir) => ({ name: NAMES.apisixRunVolume, mountPath: `${APISIX_HOME}/${dir}`, subPath: dir })),
      { name: NAMES.apisixRunVolume, mountPath: '/tmp', subPath: 'tmp' },
    ],
  };
}

function volumes(): V1Volume[] {
  return [
    {
      name: NAMES.podInfoVolume,
      downwardAPI: {
        items: [
          { path: 'config.yaml', fieldRef: { fieldPath: `metadata.annotations['${APISIX_CONFIG_ANNOTATION}']` } },
          { path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } },
        ],
      },
    },
    { name: NAMES.apisixConfVolume, emptyDir: {} },
    { name: NAMES.apisixRunVolume, emptyDir: {} },
  ];
}

function nativeSidecars(annotations: Record<string, string>, config: InjectionConfig): boolean {
  const value = annotations[ISTIO_NATIVE_SIDECAR_ANNOTATION];
  if (value === undefined) return config.nativeSidecars;
  if (value === 'true' || value === 'false') return value === 'true';
  throw new PodRejection(`annotation ${ISTIO_NATIVE_SIDECAR_ANNOTATION}: ${JSON.stringify(value)} must be "true" or "false"`);
}

const without = <T extends { name: string }>(list: readonly T[] | undefined, names: readonly string[]): T[] =>
  (list ?? []).filter((x) => !names.includes(x.name));

function checkNoCollision(kind: string, list: readonly { name: string }[], ours: readonly string[]): void {
  for (const item of list) {
    if (ours.includes(item.name)) {
      throw new PodRejection(`${kind} ${JSON.stringify(item.name)} uses a name apisix-mesh reserves for its sidecar`);
    }
  }
}

/**
 * The pod with APISIX as its sidecar (DESIGN.md §3). Objects the injection does not change are shared
 * with `pod`, not copied: the caller diffs only what changed. A pod that carries a valid status
 * annotation first loses what that annotation lists, so injecting twice gives the same pod.
 * Throws `PodRejection` when the pod cannot be injected as it is.
 */
export function injectSidecar(pod: V1Pod, config: InjectionConfig): V1Pod {
  const metadata = pod.metadata ?? {};
  const spec = pod.spec ?? { containers: [] };
  const annotations = metadata.annotations ?? {};
  const previous: InjectionStatus = parseStatus(annotations[STATUS_ANNOTATION]) ?? { initContainers: [], containers: [], volumes: [] };

  const appInits = without(spec.initContainers, previous.initContainers);
  const appContainers = without(spec.containers, previous.containers);
  const appVolumes = without(spec.volumes, previous.volumes);
  const ourContainers = [NAMES.init, NAMES.configCopy, NAMES.agent, NAMES.apisix];
  checkNoCollision('init container', appInits, ourContainers);
  checkNoCollision('container', appContainers, ourContainers);
  checkNoCollision('volume', appVolumes, [NAMES.podInfoVolume, NAMES.apisixConfVolume, NAMES.apisixRunVolume]);

  const reserved = reservedPorts(config);
  for (const c of appContainers) {
    for (const p of c.ports ?? []) {
      if (reserved.includes(p.containerPort)) {
        throw new PodRejection(`container ${JSON.stringify(c.name)} declares port ${p.containerPort}, which the apisix-mesh sidecar uses`);
      }
    }
  }

  const interception = interceptionMode(annotations);
  const capture = captureConfigFor(pod, appContainers, config);
  const native = nativeSidecars(annotations, config);

  const captureInit = interception === 'REDIRECT' ? [initContainer(capture, config)] : [];
  const agent = agentContainer(config, native);
  const apisix = apisixContainer(config, native);
  const copy = configCopyContainer(config);
  // Native: the rules first, then the mesh (started and ready before anything else), then the app's
  // init containers inside the mesh. Classic: the app's init containers keep an uncaptured network,
  // the rules come last; the mesh containers go first among the containers.
  const initContainers = native ? [...captureInit, copy, agent, apisix, ...appInits] : [...appInits, copy, ...captureInit];
  const containers = native ? appContainers : [agent, apisix, ...appContainers];
  const status: InjectionStatus = {
    initContainers: native ? [...captureInit.map((c) => c.name), copy.name, agent.name, apisix.name] : [copy.name, ...captureInit.map((c) => c.name)],
    containers: native ? [] : [agent.name, apisix.name],
    volumes: volumes().map((v) => v.name),
  };

  const newAnnotations: Record<string, string> = {
    ...annotations,
    [STATUS_ANNOTATION]: formatStatus(status),
    [APISIX_CONFIG_ANNOTATION]: apisixConfigText(config),
  };
  const firstApp = appContainers[0];
  if (newAnnotations[DEFAULT_CONTAINER_ANNOTATION] === undefined && firstApp !== undefined) {
    newAnnotations[DEFAULT_CONTAINER_ANNOTATION] = firstApp.name;
  }

  return {
    ...pod,
    metadata: {
      ...metadata,
      labels: { ...metadata.labels, [ISTIO_INJECT]: 'false' },
      annotations: newAnnotations,
    },
    spec: {
      ...spec,
      initContainers,
      containers,
      volumes: [...appVolumes, ...volumes()],
    },
  };
}
