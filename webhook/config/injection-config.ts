import type { V1ResourceRequirements } from '@kubernetes/client-node';
import type { WorkloadKeyType } from '../../agent/identity/key-type.js';

/**
 * The injection configuration: everything an operator may change about what the webhook (and
 * `apisix-mesh inject`) puts into a pod. One YAML file, every field optional; a missing field takes
 * the default below (documented in docs/injection.md, "The configuration file").
 */
export interface InjectionConfig {
  images: {
    /** The apisix-mesh image: runs the init container (`iptables`) and the agent. */
    mesh: string;
    /** The stock Apache APISIX image (3.x, Debian flavour) that runs as the sidecar proxy. */
    apisix: string;
    pullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  };
  ports: {
    /** APISIX's listener for captured outbound TCP. */
    outbound: number;
    /** APISIX's listener for captured inbound TCP. */
    inbound: number;
    /** The agent's status server (`/healthz/ready`, `/metrics`); always excluded from inbound capture. */
    agentStatus: number;
    /** APISIX's status API (`/status/ready`); always excluded from inbound capture. */
    apisixStatus: number;
    /** APISIX's Prometheus export server; always excluded from inbound capture. */
    apisixMetrics: number;
    /** The etcd v3 API the agent serves to APISIX, on 127.0.0.1 only. */
    etcd: number;
  };
  /** uid and gid of the agent and APISIX; the capture rules never capture this uid/gid's traffic. */
  proxyUid: number;
  proxyGid: number;
  resources: {
    init: V1ResourceRequirements;
    agent: V1ResourceRequirements;
    apisix: V1ResourceRequirements;
  };
  /**
   * The mode of a pod that names none (no `apisix-mesh.io/mode`) and is not an APISIX gateway pod:
   * `sidecar` (APISIX replaces Envoy) or `none` (the pod is left to Istio's own injector, so that
   * installing apisix-mesh on a live Istio cluster changes nothing until a workload opts in with
   * `apisix-mesh.io/mode: sidecar`).
   */
  defaultMode: 'sidecar' | 'none';
  /**
   * Istio's metrics merge (meshConfig.enablePrometheusMerge): the pod's `prometheus.io/*`
   * annotations point at the agent's merged endpoint (the agent's, APISIX's and the app's metrics),
   * the app's own settings move into the agent's environment. The pod annotation
   * `prometheus.istio.io/merge-metrics` overrides it per pod.
   */
  enablePrometheusMerge: boolean;
  /**
   * istiod's address for xDS and, with `istiodTls`, its CA (Istio's discoveryAddress and CA_ADDR):
   * `istiod.istio-system.svc:15012`, or `:15010` when a file sets `istiodTls: false` without an address.
   */
  istiodAddress: string;
  /**
   * TLS to istiod as Istio's own sidecars: verified with the mesh root (ConfigMap istio-ca-root-cert),
   * authenticated with a projected service-account token (audience istio-ca), and the workload
   * certificate from istiod's CA. `false`: plaintext xDS (15010) and no workload certificate, for
   * test setups without Istio's CA.
   */
  istiodTls: boolean;
  /**
   * With `istiodTls`: the name istiod's certificate must carry (pilot-agent's ISTIOD_SAN; the
   * agent's `--xds-server-name`, for xDS and the CA). Empty: the host of `istiodAddress` when it is
   * a name; `istiod.istio-system.svc` when it is an IP address, which istiod's certificate (DNS
   * names of its Service) never carries.
   */
  istiodServerName: string;
  /** The mesh's trust domain (Istio's meshConfig.trustDomain): the workload certificate names it. */
  trustDomain: string;
  /**
   * The workload certificate's key (agent `--key-type`): `rsa` (2048, Istio's default) or `ecdsa`
   * (P-256, pilot-agent's ECC_SIGNATURE_ALGORITHM=ECDSA): cheaper TLS handshakes for mesh mTLS.
   */
  workloadKeyType: WorkloadKeyType;
  /**
   * The agent's node runs V8 without its optimizing compiler (`--lite-mode`): less memory, slower
   * full pushes (BENCHMARKS.md, "V8's lite mode"): RSS 103 → 79 MiB at 1,000 services, peak 205 →
   * 161 MiB at 10,000; a full push lands in 282 instead of 153 ms at 1,000 services and in 2.0
   * instead of 0.64 s at 10,000; one-endpoint updates as fast. Off by default.
   */
  agentLiteMode: boolean;
  /**
   * nginx worker processes of the APISIX sidecar, mesh-wide (Istio's
   * `meshConfig.defaultConfig.concurrency`): a number, or `cpu-limit` (the default), Istio's rule:
   * the APISIX container's CPU limit rounded up, 2 without one. A pod's `proxy.istio.io/config`
   * `concurrency` overrides either (webhook/injection/worker-processes.ts).
   */
  apisixWorkerProcesses: number | 'cpu-limit';
  /**
   * Istio's `meshConfig.defaultConfig.holdApplicationUntilProxyStarts`: the app's containers start
   * only once APISIX is ready (webhook/injection/apisix-start-hold.ts). A pod's `proxy.istio.io/config`
   * overrides it. False by default, as Istio's.
   */
  holdApplicationUntilProxyStarts: boolean;
  /**
   * LuaJIT's collector in APISIX (agent/l4/lua/apisix_mesh/lua_gc.lua): `pause` (%, when the next
   * cycle starts: at `pause`/100 times the heap the last one left) and `stepmul` (%, how much a step
   * collects per unit allocated). LuaJIT's allocator keeps its largest heap's pages, so a worker's
   * memory is the peak the collector allows. The defaults (LuaJIT's: 200 and 200) halve a worker's
   * largest Lua heap under traffic and cut APISIX's memory after traffic by about a quarter, for a
   * CPU cost within the benchmark's noise (BENCHMARKS.md, "LuaJIT's collector in the sidecar").
   */
  apisixLuaGc: { pause: number; stepmul: number };
  /**
   * Where APISIX writes a line per request, as Istio's `meshConfig.accessLogFile`: empty (the
   * default, as Istio's) writes none; `/dev/stdout` the container's log. Errors are logged either
   * way (stderr). Measured: a few µs of the sidecar's CPU per request (BENCHMARKS.md), plus what the
   * node's log pipeline spends on the line.
   */
  accessLogFile: string;
  /**
   * Native sidecars (Kubernetes >= 1.29): agent and APISIX become `restartPolicy: Always` init
   * containers. The pod annotation `sidecar.istio.io/nativeSidecar` overrides it per pod.
   */
  nativeSidecars: boolean;
  /**
   * App probes (httpGet, tcpSocket, grpc) rewritten to the agent's status port, which runs them
   * against the app from outside the capture (Istio's `sidecarInjectorWebhook.rewriteAppHTTPProbe`).
   * The pod annotation `sidecar.istio.io/rewriteAppHTTPProbers` overrides it per pod.
   */
  rewriteAppProbes: boolean;
  /**
   * Which inbound ports are captured when the pod does not say (`includeInboundPorts`): `all`
   * (Istio's default, `*`) or `declared` (only the ports the pod's containers declare).
   */
  inboundCapture: 'all' | 'declared';
  /**
   * Mesh-wide outbound capture of sidecar pods, for pods that do not set the matching
   * `traffic.sidecar.istio.io/*` annotation (the annotation replaces the default, as Istio's
   * `global.proxy.includeIPRanges|excludeIPRanges|excludeOutboundPorts` do).
   */
  outboundCapture: {
    /** `*` or CIDRs: destinations captured (`includeOutboundIPRanges`). */
    includeIpRanges: '*' | string[];
    /** destinations never captured (`excludeOutboundIPRanges`). */
    excludeIpRanges: string[];
    /** destination ports never captured (`excludeOutboundPorts`), e.g. non-HTTP protocols. */
    excludePorts: number[];
  };
  gateway: {
    /** The gateway's own listeners, kept out of Envoy's inbound capture. */
    inboundPorts: number[];
    /** Telemetry export (OTLP) kept out of Envoy's outbound capture. */
    excludeOutboundPorts: number[];
    excludeOutboundIpRanges: string[];
  };
  /** Pods in these namespaces are never injected (besides `webhookNamespace`). */
  excludedNamespaces: string[];
  /** The webhook's own namespace, never injected (it would wait on itself). */
  webhookNamespace: string;
}

/** The most APISIX workers a pod gets: each holds its own copy of the mesh's configuration. */
export const MAX_WORKER_PROCESSES = 64;

export const defaultInjectionConfig: Readonly<InjectionConfig> = deepFreeze({
  images: {
    mesh: 'ghcr.io/apisix-mesh/apisix-mesh:0.1.0',
    apisix: 'apache/apisix:3.13.0-debian',
    pullPolicy: 'IfNotPresent',
  },
  ports: {
    outbound: 15001,
    inbound: 15006,
    agentStatus: 15020,
    apisixStatus: 15021,
    apisixMetrics: 15090,
    etcd: 15379,
  },
  proxyUid: 1337,
  proxyGid: 1337,
  resources: {
    // `apisix-mesh iptables` peaks at ~52 MiB RSS (mostly the node binary's pages) plus ~3 MiB for
    // iptables-restore, and at ~70 MiB with the most rules a pod may have (BENCHMARKS.md); 64Mi
    // left no margin. A limit only caps: init containers' requests decide scheduling.
    init: { requests: { cpu: '10m', memory: '16Mi' }, limits: { cpu: '100m', memory: '128Mi' } },
    // The agent's peak RSS (first snapshot, a reconnect to a changed mesh, 20 pushes changing every
    // endpoint) is 125 MiB at 2,000 services, 147 MiB at 5,000, 209 MiB at 10,000 (the supported
    // size, docs/agent.md; BENCHMARKS.md): the limit keeps 1.5x over 10,000 services' peak.
    agent: { requests: { cpu: '50m', memory: '64Mi' }, limits: { cpu: '1', memory: '320Mi' } },
    apisix: { requests: { cpu: '100m', memory: '128Mi' }, limits: { cpu: '2', memory: '512Mi' } },
  },
  defaultMode: 'sidecar',
  enablePrometheusMerge: true,
  istiodAddress: 'istiod.istio-system.svc:15012',
  istiodTls: true,
  istiodServerName: '',
  trustDomain: 'cluster.local',
  workloadKeyType: 'rsa',
  agentLiteMode: false,
  apisixWorkerProcesses: 'cpu-limit',
  holdApplicationUntilProxyStarts: false,
  apisixLuaGc: { pause: 150, stepmul: 400 },
  accessLogFile: '',
  nativeSidecars: false,
  rewriteAppProbes: true,
  inboundCapture: 'all',
  outboundCapture: { includeIpRanges: '*', excludeIpRanges: [], excludePorts: [] },
  gateway: {
    inboundPorts: [80, 443],
    excludeOutboundPorts: [4317, 4318],
    excludeOutboundIpRanges: [],
  },
  excludedNamespaces: ['kube-system', 'kube-public', 'kube-node-lease', 'local-path-storage'],
  webhookNamespace: 'apisix-mesh-system',
});

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
