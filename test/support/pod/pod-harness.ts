import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import YAML from 'yaml';
import { defaultInjectionConfig, type InjectionConfig } from '../../../webhook/config/injection-config.js';
import { injectPod } from '../../../webhook/injection/inject-pod.js';
import { parseStatus } from '../../../webhook/injection/status.js';
import { APISIX_CONFIG_ANNOTATION, STATUS_ANNOTATION } from '../../../webhook/injection/annotations.js';
import type { CanonicalResources } from '../../../agent/xds/config-dump.js';
import type { XdsKind } from '../../../agent/xds/protos.js';
import { parseListen } from '../../../agent/etcd/command.js';
import { FakeIstiod } from '../fake-istiod.js';
import { findApisixRuntime } from './apisix-runtime.js';
import { apisixImage, meshImage } from './images.js';
import { Kubelet } from './kubelet.js';
import { createPodNetwork, POD_IP, POD_IP6, type PodNetwork } from './network.js';
import { stageProject } from './staged-project.js';
import { NetnsWorker } from './worker-client.js';
import { apisixErrorLines } from './apisix-log.js';

/**
 * The injected pod run for real: the injection (the webhook's own function) applied to a pod
 * manifest, then every container of the result run as the kubelet would (kubelet.ts) in a fresh
 * network namespace — the init container's exact `apisix-mesh iptables …`, APISIX 3.x with exactly
 * the injected config.yaml, the agent with exactly its injected arguments and downward-API
 * environment — and the app containers replaced by test programs (netns-worker.mjs) as another uid.
 * Around it, a "cluster" namespace with a fake istiod (its address is the only change to the
 * injected arguments), service addresses and endpoints. Everything derives from the injected pod,
 * so when the injection changes the harness follows. `stop()` ends every process and removes the
 * namespaces, also when a test failed (call it from afterAll).
 */
export const ISTIOD_IP = '10.66.1.10';
/** istiod's address for an `ipv6Only` pod (its Service's ClusterIP in an IPv6-only cluster) */
export const ISTIOD_IP6 = 'fd00:66:1::10';
export const APP_UID = 1000;

/**
 * The injection configuration pods run with by default: the defaults, but plaintext to istiod (15010)
 * and so no workload certificate, since the fake istiod here serves neither TLS nor Istio's CA, and
 * the kubelet here fills no ConfigMap or projected-token volumes.
 */
export const PLAINTEXT_ISTIOD_CONFIG: Readonly<InjectionConfig> = { ...defaultInjectionConfig, istiodTls: false, istiodAddress: 'istiod.istio-system.svc:15010' };

export interface PodHarnessOptions {
  /** a Pod manifest (YAML or object) before injection */
  manifest: string | V1Pod;
  /** default PLAINTEXT_ISTIOD_CONFIG */
  config?: InjectionConfig;
  /** what the fake istiod serves at first */
  xds: CanonicalResources;
  /** addresses that exist in the cluster namespace (service VIPs, endpoints, external hosts) */
  clusterAddresses?: string[];
  /** names the cluster's DNS answers inside the pod (its /etc/hosts): host name → address */
  hosts?: Record<string, string>;
  /** TCP relays in the cluster namespace, up before the pod starts: address:port → a unix socket here */
  clusterRelays?: Array<{ ip: string; port: number; unixPath: string }>;
  /**
   * the pod gets an IPv6 address too (network.ts, POD_IP6): `true` IPv4 first, `'ipv6-first'` with
   * POD_IP6 as its status.podIP (what the kubelet probes and the agent pins as INSTANCE_IP)
   */
  dualStack?: boolean | 'ipv6-first';
  /**
   * the pod of an IPv6-only cluster: POD_IP6 is its only address besides loopback and its
   * status.podIP, the cluster side is reached over IPv6 alone, and istiod's name resolves to
   * ISTIOD_IP6 (the agent dials `[ISTIOD_IP6]:port`). Not with `dualStack`.
   */
  ipv6Only?: boolean;
  /**
   * istiod's host name is resolved by the pod (an entry in its /etc/hosts, as the cluster's DNS
   * would answer) instead of replaced by its address in the agent's arguments
   */
  istiodResolvedInPod?: boolean;
  /** for control experiments only: changes the injected pod before it runs */
  mutateInjected?: (pod: V1Pod) => V1Pod;
  /** for benchmarks' baselines only: another built checkout whose agent the pod runs */
  projectRoot?: string;
}

export interface RunningPod {
  /** the pod as injected (what runs) */
  injected: V1Pod;
  /** how many nginx workers its APISIX runs (`worker_processes` of the injected config.yaml) */
  apisixWorkers: number;
  /** its status.podIP: what the kubelet probes and the agent pins as INSTANCE_IP */
  podIp: string;
  network: PodNetwork;
  kubelet: Kubelet;
  istiod: FakeIstiod;
  /** an app container's test program, in the pod, as APP_UID */
  app(name?: string): NetnsWorker;
  /** the test's hands in the cluster namespace: clients from outside the pod, echo servers */
  cluster: NetnsWorker;
  /** the APISIX container's output (its error log goes to stderr, as injected) */
  apisixLog(): string;
  /** `[error]` and worse lines of APISIX that no pattern in `expected` explains */
  apisixErrors(expected?: RegExp[]): string[];
  /** the store revision the agent serves (its /metrics) */
  agentRevision(): Promise<number>;
  /** how many routes and upstreams the agent serves (its /metrics) */
  agentObjects(): Promise<{ routes: number; upstreams: number }>;
  /**
   * the highest modification revision among the objects APISIX holds (its Prometheus export): the
   * lowest such figure among the workers, i.e. the newest object every worker serves (served_revisions.lua)
   */
  apisixRevision(): Promise<number>;
  /**
   * Until the newest route or upstream APISIX holds is the newest one the agent serves (true), or
   * the timeout passes (false). That is all APISIX shows of its state (its Prometheus export):
   * a change that only deletes objects cannot be seen this way.
   */
  waitSynced(timeoutMs?: number): Promise<boolean>;
  /** istiod pushes `kinds`; resolves once the agent has applied them and APISIX caught up (see waitSynced). */
  push(kinds: XdsKind[], options?: { timeoutMs?: number }): Promise<void>;
  stop(): Promise<void>;
}

/** One gauge value out of a Prometheus text page. */
function gauge(page: string, name: string, labels = ''): number {
  const line = page.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : NaN;
}

export async function startPod(options: PodHarnessOptions): Promise<RunningPod> {
  const runtime = findApisixRuntime();
  if (typeof runtime === 'string') throw new Error(runtime);
  if (options.ipv6Only && options.dualStack) throw new Error('startPod: ipv6Only and dualStack exclude each other');
  const config = options.config ?? PLAINTEXT_ISTIOD_CONFIG;
  const { host: istiodHost, port: istiodPort } = parseListen('istiodAddress', config.istiodAddress);
  const manifest = typeof options.manifest === 'string' ? (YAML.parse(options.manifest) as V1Pod) : options.manifest;
  const injection = injectPod(manifest, 'sidecar', config);
  if (injection.kind === 'rejected') throw new Error(`the injection refused the pod: ${injection.message}`);
  const injected = options.mutateInjected ? options.mutateInjected(structuredClone(injection.pod)) : injection.pod;
  const status = parseStatus(injected.metadata?.annotations?.[STATUS_ANNOTATION]);
  const meshContainers = new Set([...(status?.containers ?? []), ...(status?.initContainers ?? [])]);
  const appNames = injected.spec!.containers.map((c) => c.name).filter((n) => !meshContainers.has(n));

  const dir = mkdtempSync(join(tmpdir(), 'apisix-mesh-pod-'));
  chmodSync(dir, 0o755);
  let project;
  try {
    project = stageProject(dir, options.projectRoot);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const istiodIp = options.ipv6Only ? ISTIOD_IP6 : ISTIOD_IP;
  const hosts = options.istiodResolvedInPod ? { ...options.hosts, [istiodHost]: istiodIp } : options.hosts;
  const network = createPodNetwork(hosts, { dualStack: (options.dualStack ?? false) !== false, ipv6Only: options.ipv6Only ?? false });
  const podIp = options.dualStack === 'ipv6-first' || options.ipv6Only ? POD_IP6 : POD_IP;
  const podUrl = (port: number, path: string) => `http://${podIp.includes(':') ? `[${podIp}]` : podIp}:${port}${path}`;
  const workers: NetnsWorker[] = [];
  const apps = new Map<string, NetnsWorker>();
  const istiod = new FakeIstiod(options.xds);
  let kubelet: Kubelet | undefined;
  const stop = async (): Promise<void> => {
    await kubelet?.stop().catch(() => undefined);
    for (const w of workers) w.stop();
    await istiod.stop();
    network.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await istiod.start(`unix:${join(dir, 'istiod.sock')}`);
    network.addClusterAddresses(istiodIp, ...(options.clusterAddresses ?? []));
    const cluster = await NetnsWorker.start('cluster', network.cluster, project.worker);
    workers.push(cluster);
    await cluster.relay(istiodIp, istiodPort, join(dir, 'istiod.sock'));
    for (const r of options.clusterRelays ?? []) await cluster.relay(r.ip, r.port, r.unixPath);

    kubelet = new Kubelet({
      pod: injected,
      podIp,
      netns: network.pod,
      dir,
      images: { [config.images.mesh]: meshImage(project), [config.images.apisix]: apisixImage(runtime, dir) },
      dns: options.istiodResolvedInPod ? {} : { [istiodHost]: istiodIp },
      prober: cluster,
      replace: Object.fromEntries(
        appNames.map((name) => [
          name,
          async () => {
            const w = await NetnsWorker.start(name, network.pod, project.worker, { uid: APP_UID, gid: APP_UID });
            workers.push(w);
            apps.set(name, w);
            return w;
          },
        ]),
      ),
    });
    await kubelet.start();
    const apisixName = injected.spec!.containers.concat(injected.spec!.initContainers ?? []).find((c) => c.image === config.images.apisix && !c.command)!.name;
    const agentMetrics = async (): Promise<string> => {
      const res = await cluster.http({ url: podUrl(config.ports.agentStatus, '/metrics') });
      return 'status' in res ? res.body : '';
    };
    /** the highest mod_revision among the routes and upstreams in the agent's etcd API (loopback: asked from the app) */
    const newestObject = async (): Promise<number> => {
      const b64 = (t: string) => Buffer.from(t).toString('base64');
      const app = apps.get(appNames[0]!)!;
      const res = await app.http({
        url: `http://127.0.0.1:${config.ports.etcd}/v3/kv/range`,
        method: 'POST',
        body: JSON.stringify({ key: b64('/apisix/'), range_end: b64('/apisix0'), keys_only: true }),
      });
      if (!('status' in res) || res.status !== 200) return NaN;
      const kvs = (JSON.parse(res.body) as { kvs?: Array<{ key: string; mod_revision: string }> }).kvs ?? [];
      return kvs
        .filter((kv) => /^\/apisix\/(routes|upstreams)\/./.test(Buffer.from(kv.key, 'base64').toString()))
        .reduce((max, kv) => Math.max(max, Number(kv.mod_revision)), 0);
    };
    const running: RunningPod = {
      injected,
      apisixWorkers: injectedWorkerProcesses(injected),
      podIp,
      network,
      kubelet,
      istiod,
      app: (name = appNames[0]!) => {
        const w = apps.get(name);
        if (!w) throw new Error(`no app container ${name}`);
        return w;
      },
      cluster,
      apisixLog: () => kubelet!.logs(apisixName),
      apisixErrors: (expected = []) => apisixErrorLines(kubelet!.logs(apisixName)).filter((l) => !expected.some((e) => e.test(l))),
      agentRevision: async () => gauge(await agentMetrics(), 'apisix_mesh_store_revision'),
      agentObjects: async () => {
        const page = await agentMetrics();
        return { routes: gauge(page, 'apisix_mesh_apisix_objects', '{kind="route"}'), upstreams: gauge(page, 'apisix_mesh_apisix_objects', '{kind="upstream"}') };
      },
      apisixRevision: async () => {
        const res = await cluster.http({ url: podUrl(config.ports.apisixMetrics, '/apisix/prometheus/metrics') });
        return 'status' in res ? gauge(res.body, 'apisix_etcd_modify_indexes', '{key="max_modify_index"}') : NaN;
      },
      waitSynced: async (timeoutMs = 10_000) => {
        const deadline = Date.now() + timeoutMs;
        while (Date.now() < deadline) {
          const [agent, apisix] = await Promise.all([newestObject(), running.apisixRevision()]);
          if (apisix === agent) return true;
          await new Promise((r) => setTimeout(r, 100));
        }
        return false;
      },
      push: async (kinds, { timeoutMs = 10_000 } = {}) => {
        const deadline = Date.now() + timeoutMs;
        const sentBefore = istiod.responses.length;
        istiod.push(kinds);
        // An apply may come between two of the push's responses (a burst is coalesced for 100 ms
        // only): wait until the served configuration was translated from every version just sent.
        const sent = new Map(istiod.responses.slice(sentBefore).map((r) => [r.kind, r.version] as const));
        const applied = async (): Promise<Record<string, string>> => {
          const res = await apps.get(appNames[0]!)!.http({ url: `http://127.0.0.1:${config.ports.agentStatus}/debug/xds` });
          return 'status' in res && res.status === 200 ? ((JSON.parse(res.body) as { appliedXdsVersions?: Record<string, string> }).appliedXdsVersions ?? {}) : {};
        };
        for (;;) {
          const versions = await applied();
          // the fake's versions count up across types; a later answer (new EDS names) supersedes
          const counter = (v: string | undefined) => Number((v ?? '').slice((v ?? '').lastIndexOf('/') + 1) || -1);
          if ([...sent].every(([kind, version]) => counter(versions[kind]) >= counter(version))) break;
          if (Date.now() > deadline) throw new Error(`the agent did not apply the ${kinds.join('/')} push (sent ${JSON.stringify(Object.fromEntries(sent))}, applied ${JSON.stringify(versions)})`);
          await new Promise((r) => setTimeout(r, 50));
        }
        if (!(await running.waitSynced(Math.max(0, deadline - Date.now())))) {
          throw new Error(`APISIX did not catch up with the agent within ${timeoutMs} ms (newest object: agent ${await newestObject()}, APISIX ${await running.apisixRevision()})`);
        }
      },
      stop,
    };
    return running;
  } catch (err) {
    const logs = kubelet ? kubelet.events.join('\n') : '';
    await stop();
    throw new Error(`${(err as Error).message}${logs ? `\nkubelet events:\n${logs}` : ''}`);
  }
}

function injectedWorkerProcesses(pod: V1Pod): number {
  const workers = (YAML.parse(pod.metadata?.annotations?.[APISIX_CONFIG_ANNOTATION] ?? '') as { nginx_config?: { worker_processes?: unknown } } | null)?.nginx_config?.worker_processes;
  // nginx's `auto`: one per online CPU (sysconf), which is what os.cpus() lists
  if (workers === 'auto') return cpus().length;
  if (typeof workers !== 'number') throw new Error(`the injected pod's APISIX config.yaml has no worker count: ${String(workers)}`);
  return workers;
}
