import type { V1Container, V1SecurityContext, V1Volume } from '@kubernetes/client-node';
import { captureConfigToArgs, type CaptureConfig } from '../../iptables-init/capture-config.js';
import type { InjectionConfig } from '../config/injection-config.js';
import { APISIX_CONFIG_ANNOTATION } from './annotations.js';
import { APISIX_HOME, APISIX_LUA_DIR, APISIX_METRICS_PATH, ipv6ListenCommand, renderApisixConfig } from './apisix-config.js';
import { apisixPreStopCommand } from './apisix-drain.js';
import { apisixHoldCommand } from './apisix-start-hold.js';
import { formatStatus } from './status.js';
import { istiodServerName } from './istiod-server-name.js';
import type { WorkerProcesses } from './worker-processes.js';

/** Names of everything sidecar mode adds; an app may not use them. */
export const NAMES = {
  init: 'apisix-mesh-init',
  configCopy: 'apisix-mesh-config',
  agent: 'apisix-mesh-agent',
  apisix: 'apisix-mesh-apisix',
  podInfoVolume: 'apisix-mesh-podinfo',
  apisixConfVolume: 'apisix-mesh-apisix-conf',
  apisixRunVolume: 'apisix-mesh-apisix-run',
  luaVolume: 'apisix-mesh-lua',
  istioTokenVolume: 'apisix-mesh-istio-token',
  istioRootCertVolume: 'apisix-mesh-istio-ca-root-cert',
} as const;

/**
 * Where Istio's sidecar template mounts the mesh root (ConfigMap istio-ca-root-cert, which istiod
 * writes into every namespace) and the projected token istiod authenticates the pod by; the agent
 * finds them at the same paths as pilot-agent.
 */
const ISTIO_ROOT_CERT_DIR = '/var/run/secrets/istio';
const ISTIO_TOKEN_DIR = '/var/run/secrets/tokens';

/** Where the agent writes the sidecar's Lua modules and APISIX reads them (`extra_lua_path`). */
const AGENT_LUA_DIR = '/apisix-mesh/lua';
/** nginx writes its temp files under its prefix; with a read-only root each needs a writable mount. */
const APISIX_WRITABLE_DIRS = ['logs', 'client_body_temp', 'proxy_temp', 'fastcgi_temp', 'uwsgi_temp', 'scgi_temp'];

/** What sidecar mode adds to every pod with the same configuration, placement and capture. */
export interface SidecarParts {
  /** Init containers before the app's own, and after them. */
  initBefore: readonly V1Container[];
  initAfter: readonly V1Container[];
  /** Containers before the app's (empty with native sidecars). */
  containers: readonly V1Container[];
  volumes: readonly V1Volume[];
  /** The status annotation's text. */
  status: string;
  apisixConfig: string;
}

/**
 * The parts only depend on the configuration, the placement, the capture arguments, APISIX's
 * worker count and whether the app waits for APISIX, which most pods share: they are built once,
 * frozen (an accidental mutation by a caller throws instead of leaking into the next pod) and
 * shared by every injected pod.
 */
const partsCache = new WeakMap<InjectionConfig, Map<string, SidecarParts>>();

export function sidecarParts(config: InjectionConfig, native: boolean, capture: CaptureConfig | null, workers: WorkerProcesses, hold: boolean): SidecarParts {
  let byKey = partsCache.get(config);
  if (byKey === undefined) {
    byKey = new Map();
    partsCache.set(config, byKey);
  }
  const key = `${native}|${workers}|${hold}|${capture === null ? '-' : captureConfigToArgs(capture).join(' ')}`;
  let parts = byKey.get(key);
  if (parts === undefined) {
    if (byKey.size >= 256) byKey.clear(); // pods with unusual annotations must not grow it forever
    parts = deepFreeze(buildParts(config, native, capture, workers, hold));
    byKey.set(key, parts);
  }
  return parts;
}

function buildParts(config: InjectionConfig, native: boolean, capture: CaptureConfig | null, workers: WorkerProcesses, hold: boolean): SidecarParts {
  const captureInit = capture === null ? [] : [initContainer(capture, config)];
  const copy = configCopyContainer(config);
  const agent = agentContainer(config, native);
  const apisix = apisixContainer(config, native, hold);
  const initBefore = native ? [...captureInit, copy, agent, apisix] : [];
  const initAfter = native ? [] : [copy, ...captureInit];
  const containers = native ? [] : [agent, apisix];
  const vols = volumes(config);
  return {
    initBefore,
    initAfter,
    containers,
    volumes: vols,
    status: formatStatus({
      initContainers: [...initBefore, ...initAfter].map((c) => c.name),
      containers: containers.map((c) => c.name),
      volumes: vols.map((v) => v.name),
    }),
    apisixConfig: renderApisixConfig(config, workers),
  };
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
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
 * directory cannot stay on the read-only root filesystem. Where the pod's kernel has IPv6, it also
 * writes the front's `[::]` listeners (apisix-config.ts, `ipv6ListenFile`).
 */
function configCopyContainer(config: InjectionConfig): V1Container {
  return {
    name: NAMES.configCopy,
    image: config.images.apisix,
    imagePullPolicy: config.images.pullPolicy,
    command: [
      'sh',
      '-c',
      `cp -R ${APISIX_HOME}/conf/. /apisix-mesh/conf/ && cp /apisix-mesh/pod/config.yaml /apisix-mesh/conf/config.yaml && ${ipv6ListenCommand(config, '/apisix-mesh/conf')}`,
    ],
    resources: structuredClone(config.resources.init),
    securityContext: proxySecurityContext(config),
    volumeMounts: [
      { name: NAMES.apisixConfVolume, mountPath: '/apisix-mesh/conf' },
      { name: NAMES.podInfoVolume, mountPath: '/apisix-mesh/pod', readOnly: true },
    ],
  };
}

/** The mesh image's ENTRYPOINT (Dockerfile); exec hooks do not go through it, so they spell it out. */
export const MESH_IMAGE_ENTRYPOINT = ['node', '/app/dist/cli/main.js'] as const;
/**
 * V8's defaults let the agent's heap grow far beyond what is live between full collections (each
 * full xDS push turns the previous translations and values into garbage): in a 10,000-service mesh
 * 20 full pushes peaked at 331 MiB RSS; with these flags 187 MiB (with 50 % growth: 217 MiB), full
 * pushes land in ~1.3 s instead of ~0.8 s, one-endpoint updates cost the same (BENCHMARKS.md).
 * Only on the command line: NODE_OPTIONS refuses --heap-growing-percent.
 */
export const AGENT_COMMAND = ['node', '--heap-growing-percent=30', '--max-semi-space-size=2', '/app/dist/cli/main.js'];
/**
 * `agentLiteMode`: V8 without its optimizing compiler. Lite mode turns WebAssembly off, which V8
 * warns about unless it is off already; nothing the agent runs needs it (its JWKS fetcher uses
 * node:https, not fetch, whose HTTP parser is WebAssembly).
 */
const LITE_MODE_FLAGS = ['--lite-mode', '--no-expose-wasm'];

function agentCommand(config: InjectionConfig): string[] {
  if (!config.agentLiteMode) return [...AGENT_COMMAND];
  return [...AGENT_COMMAND.slice(0, -1), ...LITE_MODE_FLAGS, AGENT_COMMAND.at(-1)!];
}
/**
 * glibc's allocator, tuned for a process whose JavaScript runs on one thread but allocates natively
 * (the store's values, xDS messages of several MiB, protobuf buffers):
 * - one malloc arena: the extra per-thread arenas kept their freed pages (~15 MiB of peak RSS at
 *   10,000 services);
 * - a fixed mmap threshold (128 KiB): glibc raises it after the first large block is freed (up to
 *   32 MiB), after which the large messages come from the heap and their pages stay.
 * At 10,000 services the peak went 217 → 178–186 MiB in the same runs, full pushes as fast
 * (BENCHMARKS.md).
 */
export const AGENT_ENV: Array<{ name: string; value: string }> = [
  { name: 'MALLOC_ARENA_MAX', value: '1' },
  { name: 'MALLOC_MMAP_THRESHOLD_', value: '131072' },
];

/** Where the agent sees the pod's downward-API files (labels, APISIX's config.yaml). */
const POD_INFO_DIR = '/etc/apisix-mesh/pod';

/** `--xds-server-name` when istiod's certificate cannot be verified by the host dialled (an IP literal). */
function serverNameArgs(config: InjectionConfig): string[] {
  const name = istiodServerName(config);
  return name ? [`--xds-server-name=${name}`] : [];
}

function agentContainer(config: InjectionConfig, native: boolean): V1Container {
  const fieldEnv = (name: string, fieldPath: string) => ({ name, valueFrom: { fieldRef: { fieldPath } } });
  const ready = { httpGet: { path: '/healthz/ready', port: config.ports.agentStatus } };
  return {
    name: NAMES.agent,
    image: config.images.mesh,
    imagePullPolicy: config.images.pullPolicy,
    command: agentCommand(config),
    args: [
      'agent',
      `--xds-address=${config.istiodAddress}`,
      // Istio's CA answers on istiod's xDS address (pilot-agent: CA_ADDR defaults to discoveryAddress)
      ...(config.istiodTls
        ? ['--xds-tls', `--root-cert=${ISTIO_ROOT_CERT_DIR}/root-cert.pem`, `--token-file=${ISTIO_TOKEN_DIR}/istio-token`, `--ca-address=${config.istiodAddress}`, ...serverNameArgs(config), `--trust-domain=${config.trustDomain}`, `--key-type=${config.workloadKeyType}`]
        : []),
      `--etcd-listen=127.0.0.1:${config.ports.etcd}`,
      `--status-port=${config.ports.agentStatus}`,
      `--outbound-port=${config.ports.outbound}`,
      `--inbound-port=${config.ports.inbound}`,
      `--pod-labels-file=${POD_INFO_DIR}/labels`,
      `--lua-dir=${AGENT_LUA_DIR}`,
      // merged into the status port's /stats/prometheus, where the pod's prometheus.io/* point
      `--apisix-metrics-url=http://127.0.0.1:${config.ports.apisixMetrics}${APISIX_METRICS_PATH}`,
    ],
    env: [
      fieldEnv('POD_NAME', 'metadata.name'),
      fieldEnv('POD_NAMESPACE', 'metadata.namespace'),
      fieldEnv('INSTANCE_IP', 'status.podIP'),
      fieldEnv('SERVICE_ACCOUNT', 'spec.serviceAccountName'),
      ...AGENT_ENV,
    ],
    ports: [{ name: 'mesh-status', containerPort: config.ports.agentStatus, protocol: 'TCP' }],
    readinessProbe: { ...ready, periodSeconds: 5, failureThreshold: 3 },
    // Native sidecars: the startup probe holds APISIX (the next init container) until the agent is
    // ready. Ordinary containers: the kubelet starts the next container only once this postStart
    // hook returns, so APISIX's `init_etcd` finds the etcd API answering, and APISIX reads its first
    // configuration whole rather than as one watch response (see agent/wait-command.ts).
    ...(native
      ? { startupProbe: { ...ready, periodSeconds: 1, failureThreshold: 600 }, restartPolicy: 'Always' }
      : {
          lifecycle: {
            postStart: {
              exec: {
                command: [...MESH_IMAGE_ENTRYPOINT, 'wait', `--etcd-address=127.0.0.1:${config.ports.etcd}`, '--timeout=60s',
                  `--status-address=127.0.0.1:${config.ports.agentStatus}`, '--config-timeout=30s'],
              },
            },
          },
        }),
    resources: structuredClone(config.resources.agent),
    securityContext: proxySecurityContext(config),
    volumeMounts: [
      { name: NAMES.podInfoVolume, mountPath: POD_INFO_DIR, readOnly: true },
      { name: NAMES.luaVolume, mountPath: AGENT_LUA_DIR },
      ...(config.istiodTls
        ? [
            { name: NAMES.istioRootCertVolume, mountPath: ISTIO_ROOT_CERT_DIR, readOnly: true },
            { name: NAMES.istioTokenVolume, mountPath: ISTIO_TOKEN_DIR, readOnly: true },
          ]
        : []),
    ],
  };
}

function apisixContainer(config: InjectionConfig, native: boolean, hold: boolean): V1Container {
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
    lifecycle: {
      // holdApplicationUntilProxyStarts, ordinary containers: the kubelet starts the app once APISIX
      // is ready (native sidecars: the startup probe above holds it already)
      ...(hold && !native ? { postStart: { exec: { command: apisixHoldCommand(config.ports.apisixStatus) } } } : {}),
      preStop: { exec: { command: apisixPreStopCommand(native) } },
    },
    resources: structuredClone(config.resources.apisix),
    securityContext: proxySecurityContext(config),
    volumeMounts: [
      { name: NAMES.apisixConfVolume, mountPath: `${APISIX_HOME}/conf` },
      ...APISIX_WRITABLE_DIRS.map((dir) => ({ name: NAMES.apisixRunVolume, mountPath: `${APISIX_HOME}/${dir}`, subPath: dir })),
      { name: NAMES.apisixRunVolume, mountPath: '/tmp', subPath: 'tmp' },
      { name: NAMES.luaVolume, mountPath: APISIX_LUA_DIR, readOnly: true },
    ],
  };
}

function volumes(config: InjectionConfig): V1Volume[] {
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
    { name: NAMES.luaVolume, emptyDir: { medium: 'Memory', sizeLimit: '1Mi' } },
    ...(config.istiodTls ? istioVolumes() : []),
  ];
}

/** As in Istio's sidecar template: a token for istiod only (audience istio-ca), valid 12 hours. */
function istioVolumes(): V1Volume[] {
  return [
    {
      name: NAMES.istioTokenVolume,
      projected: { sources: [{ serviceAccountToken: { path: 'istio-token', audience: 'istio-ca', expirationSeconds: 43200 } }] },
    },
    { name: NAMES.istioRootCertVolume, configMap: { name: 'istio-ca-root-cert' } },
  ];
}

