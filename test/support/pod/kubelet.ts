import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, constants, mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { join } from 'node:path';
import type { V1Container, V1EnvVar, V1Pod, V1Probe, V1Volume } from '@kubernetes/client-node';
import { asUser } from '../../iptables/support/netns.js';
import { ContainerFs } from './container-fs.js';
import type { LocalImage } from './images.js';
import type { NetnsWorker } from './worker-client.js';

/**
 * Runs a pod's containers as a kubelet would, as processes in the pod's network namespace:
 * - init containers one after the other, each to a successful exit; native sidecars (init
 *   containers with `restartPolicy: Always`) are started and the next one waits for their startup
 *   probe;
 * - then the containers in order, each one's postStart hook run to its end before the next starts
 *   (a failing hook kills the container, which is then restarted);
 * - a container that exits is restarted, at once the first time, then after the kubelet's back-off
 *   (10 s, doubling, at most 300 s), and counted in `restarts`;
 * - readiness: every container's readinessProbe answers 200–399, or for a tcpSocket probe accepts a
 *   connection (probed from the cluster side);
 * - deletion (`terminate`): preStop hooks, SIGTERM, SIGKILL at the grace period's end; native
 *   sidecars after the ordinary containers, in reverse order;
 * Each container runs its image's entrypoint (or its `command`) with its `args`, its environment
 * (downward-API fields resolved), as its securityContext's uid/gid, with its volumes mounted.
 * Deviations, all at the edges: paths are those of a per-container filesystem view
 * (container-fs.ts); `dns` names are replaced by addresses in the arguments (there is no cluster
 * DNS here); app containers may be replaced by test programs; probes are polled every 200 ms instead
 * of every periodSeconds; capabilities are not dropped (the processes run with setpriv's uid/gid).
 */
export interface KubeletOptions {
  pod: V1Pod;
  podIp: string;
  netns: string;
  /** per pod run: volumes, container filesystems, logs */
  dir: string;
  images: Record<string, LocalImage>;
  /** host names in arguments → addresses (stands for the cluster's DNS) */
  dns?: Record<string, string>;
  /** containers replaced by a test program: name → how it is started */
  replace?: Record<string, (ctx: { uid: number; gid: number }) => Promise<{ stop(): void }>>;
  /** probes run from the cluster side */
  prober: NetnsWorker;
}

interface Running {
  container: V1Container;
  child?: ChildProcess;
  replaced?: { stop(): void };
  restarts: number;
  log: string[];
  startedAt: number;
  restartTimer?: NodeJS.Timeout;
  exited?: Promise<void>;
  /** stopped on purpose: its exit is not a crash to restart */
  killing?: boolean;
}

const LOG_LIMIT = 20_000; // lines kept per container


export class Kubelet {
  private readonly running = new Map<string, Running>();
  private stopping = false;
  private readonly volumeDirs = new Map<string, string>();
  private fifos = 0;
  private readonly filesystems = new Map<string, { fs: ContainerFs; image: LocalImage }>();
  /** test programs standing in for app containers, being started */
  private readonly replacements: Array<Promise<void>> = [];
  readonly events: string[] = [];

  constructor(private readonly opts: KubeletOptions) {}

  /** Runs the pod up to its last container started (not necessarily ready). */
  async start(): Promise<void> {
    const spec = this.opts.pod.spec!;
    this.prepareVolumes(spec.volumes ?? []);
    for (const init of spec.initContainers ?? []) {
      if (init.restartPolicy === 'Always') {
        this.launch(init);
        if (init.startupProbe) await this.waitFor(init.name, init.startupProbe, 'startup');
      } else {
        await this.runToCompletion(init);
      }
    }
    for (const c of spec.containers) {
      this.launch(c);
      await this.postStart(c);
    }
    await Promise.all(this.replacements); // a test program that cannot start fails the pod's start
  }

  restarts(name: string): number {
    return this.running.get(name)?.restarts ?? 0;
  }

  /** stdout and stderr of a container, every start of it, in order. */
  logs(name: string): string {
    return (this.running.get(name)?.log ?? []).join('');
  }

  /** Every container's readiness probe passes. */
  async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const c of this.allContainers()) {
      if (!c.readinessProbe) continue;
      await this.waitFor(c.name, c.readinessProbe, 'readiness', deadline - Date.now());
    }
  }

  async isReady(): Promise<boolean> {
    for (const c of this.allContainers()) {
      if (c.readinessProbe && !(await this.probe(c.readinessProbe))) return false;
    }
    return true;
  }

  /** Stops a container (SIGTERM, then SIGKILL after 5 s) and starts it again at once, as after `kill 1`. */
  async restartNow(name: string): Promise<void> {
    const r = this.running.get(name);
    if (!r) throw new Error(`no container ${name}`);
    await this.kill(r);
    r.restarts += 1;
    this.launch(r.container, r);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const all = [...this.running.values()].reverse();
    await Promise.all(all.map((r) => this.kill(r)));
  }

  /**
   * Deletes the pod as the kubelet does (kuberuntime killContainer): each container's preStop hook
   * runs to its end, then SIGTERM; what still runs when the grace period ends
   * (terminationGracePeriodSeconds, default 30 s, counted from the start) gets SIGKILL. Ordinary
   * containers stop together; native sidecars only after every ordinary container has exited, in
   * the reverse order of their start. A test program standing for an app stops `appShutdownMs` after
   * its SIGTERM (an app that finishes its requests before it exits).
   */
  async terminate(options: { appShutdownMs?: number } = {}): Promise<void> {
    this.stopping = true;
    const spec = this.opts.pod.spec!;
    const deadline = Date.now() + (spec.terminationGracePeriodSeconds ?? 30) * 1000;
    const stopOne = async (c: V1Container): Promise<void> => {
      const r = this.running.get(c.name);
      if (!r) return;
      if (r.replaced) {
        this.events.push(`container ${c.name} sent SIGTERM (test program: stops in ${options.appShutdownMs ?? 0} ms)`);
        await new Promise((resolve) => setTimeout(resolve, options.appShutdownMs ?? 0));
        r.replaced.stop();
        this.events.push(`container ${c.name} exited (test program)`);
        return;
      }
      await this.preStop(c, deadline);
      this.events.push(`container ${c.name} sent SIGTERM`);
      await this.kill(r, Math.max(0, deadline - Date.now()));
    };
    await Promise.all(spec.containers.map(stopOne));
    for (const c of (spec.initContainers ?? []).filter((i) => i.restartPolicy === 'Always').reverse()) await stopOne(c);
  }

  private allContainers(): V1Container[] {
    const spec = this.opts.pod.spec!;
    return [...(spec.initContainers ?? []).filter((c) => c.restartPolicy === 'Always'), ...spec.containers];
  }

  private prepareVolumes(volumes: V1Volume[]): void {
    const pod = this.opts.pod;
    for (const v of volumes) {
      const dir = join(this.opts.dir, 'volumes', v.name);
      mkdirSync(dir, { recursive: true, mode: 0o777 });
      if (v.emptyDir) {
        // the kubelet makes emptyDirs world-writable
      } else if (v.downwardAPI) {
        for (const item of v.downwardAPI.items ?? []) {
          writeFileSync(join(dir, item.path), downwardValue(pod, item.fieldRef?.fieldPath ?? '', this.opts.podIp));
        }
      } else {
        throw new Error(`volume ${v.name}: only emptyDir and downwardAPI volumes are run here`);
      }
      this.volumeDirs.set(v.name, dir);
      chmodSync(dir, 0o777);
    }
  }

  /** A container's filesystem view, laid out once: a restart or a hook must not relink it under a running process. */
  private containerFs(c: V1Container): { fs: ContainerFs; image: LocalImage } {
    const made = this.filesystems.get(c.name);
    if (made) return made;
    const image = this.opts.images[c.image ?? ''];
    if (!image) throw new Error(`container ${c.name}: no local stand-in for image ${c.image}`);
    const fs = new ContainerFs(join(this.opts.dir, 'containers', c.name));
    for (const [path, host] of Object.entries(image.files)) fs.place(path, host);
    for (const m of c.volumeMounts ?? []) {
      const vol = this.volumeDirs.get(m.name);
      if (!vol) throw new Error(`container ${c.name}: volume ${m.name} is not in the pod`);
      const host = m.subPath ? join(vol, m.subPath) : vol;
      mkdirSync(host, { recursive: true, mode: 0o777 });
      chmodSync(host, 0o777);
      fs.place(m.mountPath, host);
    }
    this.filesystems.set(c.name, { fs, image });
    return { fs, image };
  }

  /** argv, environment, cwd and identity of a container as it would run. */
  private command(c: V1Container): { argv: string[]; env: NodeJS.ProcessEnv; cwd: string; uid: number; gid: number; fs: ContainerFs } {
    const { fs, image } = this.containerFs(c);
    const raw = [...(c.command ?? image.entrypoint), ...(c.args ?? (c.command ? [] : image.cmd))];
    const argv = raw.map((a) => fs.translate(this.resolveDns(a)));
    if (argv[0] === 'node') argv[0] = process.execPath;
    const env: NodeJS.ProcessEnv = { PATH: image.path.join(':'), HOME: '/nonexistent', TMPDIR: fs.hostPath('/tmp') };
    for (const e of c.env ?? []) env[e.name] = envValue(this.opts.pod, e, this.opts.podIp);
    const sc = { ...this.opts.pod.spec?.securityContext, ...c.securityContext };
    return { argv, env, cwd: fs.hostPath(c.workingDir ?? image.workdir), uid: sc.runAsUser ?? 0, gid: sc.runAsGroup ?? sc.runAsUser ?? 0, fs };
  }

  private resolveDns(arg: string): string {
    let out = arg;
    // HOST:PORT arguments: an IPv6 address in brackets, as a client writes it (the agent's --xds-address)
    for (const [name, ip] of Object.entries(this.opts.dns ?? {})) out = out.split(`${name}:`).join(`${ip.includes(':') ? `[${ip}]` : ip}:`);
    return out;
  }

  /**
   * Starts a process in the pod. Its stdout and stderr are one FIFO, as a container runtime gives
   * them: APISIX reopens `/dev/stderr` (its injected error_log), which fails on the socket pair that
   * Node's 'pipe' stdio would be.
   */
  private spawnIn(cmd: { argv: string[]; env: NodeJS.ProcessEnv; cwd: string; uid: number; gid: number }): { child: ChildProcess; output: Readable } {
    const fifo = join(this.opts.dir, `fifo-${++this.fifos}`);
    execFileSync('mkfifo', ['-m', '0666', fifo]);
    const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const writeFd = openSync(fifo, constants.O_WRONLY);
    rmSync(fifo);
    try {
      const argv = ['netns', 'exec', this.opts.netns, ...asUser({ uid: cmd.uid, gid: cmd.gid }), ...cmd.argv];
      const child = spawn('ip', argv, {
        env: cmd.env,
        cwd: cmd.cwd,
        detached: true, // its own process group: APISIX's workers go with it
        stdio: ['ignore', writeFd, writeFd],
      });
      return { child, output: new Socket({ fd: readFd, readable: true, writable: false }) };
    } finally {
      closeSync(writeFd);
    }
  }

  private async runToCompletion(c: V1Container): Promise<void> {
    const cmd = this.command(c);
    const r: Running = { container: c, restarts: 0, log: [], startedAt: Date.now() };
    this.running.set(c.name, r);
    const { child, output } = this.spawnIn(cmd);
    this.collect(r, output);
    const code = await new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    this.events.push(`init container ${c.name} exited ${code}`);
    if (code !== 0) throw new Error(`init container ${c.name} exited with ${code}:\n${this.logs(c.name).slice(-3000)}`);
  }

  private launch(c: V1Container, existing?: Running): void {
    const r: Running = existing ?? { container: c, restarts: 0, log: [], startedAt: 0 };
    this.running.set(c.name, r);
    r.startedAt = Date.now();
    const replacement = this.opts.replace?.[c.name];
    if (replacement) {
      const sc = { ...this.opts.pod.spec?.securityContext, ...c.securityContext };
      const uid = sc.runAsUser ?? 1000;
      this.replacements.push(replacement({ uid, gid: sc.runAsGroup ?? uid }).then((p) => void (r.replaced = p)));
      this.events.push(`container ${c.name} replaced by a test program`);
      return;
    }
    const { child, output } = this.spawnIn(this.command(c));
    r.child = child;
    this.collect(r, output);
    this.events.push(`container ${c.name} started (pid ${child.pid})`);
    r.exited = new Promise<void>((resolve) =>
      child.once('exit', (code, signal) => {
        this.events.push(`container ${c.name} exited ${code ?? signal}`);
        if (r.child === child) r.child = undefined;
        resolve();
        if (!this.stopping && !r.killing) this.scheduleRestart(r);
      }),
    );
  }

  private scheduleRestart(r: Running): void {
    r.restarts += 1;
    // the kubelet restarts a container at once the first time (no back-off entry yet), then after
    // 10 s, 20 s, … at most 5 min (pkg/kubelet/kuberuntime doBackOff with flowcontrol.Backoff)
    const backoff = r.restarts === 1 ? 0 : Math.min(300_000, 10_000 * 2 ** (r.restarts - 2));
    this.events.push(`container ${r.container.name} restarts in ${backoff / 1000} s (back-off)`);
    r.restartTimer = setTimeout(() => {
      if (!this.stopping) this.launch(r.container, r);
    }, backoff);
  }

  private async postStart(c: V1Container): Promise<void> {
    const hook = c.lifecycle?.postStart?.exec?.command;
    if (!hook || this.opts.replace?.[c.name]) return;
    const code = await this.runExecHook(c, 'postStart', hook);
    if (code !== 0) {
      // FailedPostStartHook: the kubelet kills the container; it restarts under the back-off
      const r = this.running.get(c.name)!;
      await this.kill(r);
      this.scheduleRestart(r);
    }
  }

  /** Runs a container's preStop exec hook to its end, or until the grace period's end. */
  private async preStop(c: V1Container, deadline: number): Promise<void> {
    const hook = c.lifecycle?.preStop?.exec?.command;
    if (hook) await this.runExecHook(c, 'preStop', hook, deadline);
  }

  /**
   * An exec hook in the container's view (its filesystem, identity, environment), run to its end
   * or killed at `deadline`; logged as an event with its output. Returns its exit code or signal.
   */
  private async runExecHook(c: V1Container, kind: 'postStart' | 'preStop', command: string[], deadline?: number): Promise<number | string | null> {
    const base = this.command(c);
    const argv = command.map((a) => base.fs.translate(this.resolveDns(a)));
    if (argv[0] === 'node') argv[0] = process.execPath;
    const { child, output } = this.spawnIn({ ...base, argv });
    const out: string[] = [];
    output.on('data', (d) => out.push(String(d)));
    const timer = deadline === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), Math.max(0, deadline - Date.now()));
    const code = await new Promise<number | string | null>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));
    clearTimeout(timer);
    this.events.push(`container ${c.name} ${kind} hook exited ${code}: ${out.join('').trim()}`);
    return code;
  }

  private collect(r: Running, output: Readable): void {
    output.on('data', (d: Buffer) => {
      r.log.push(String(d));
      if (r.log.length > LOG_LIMIT) r.log.splice(0, r.log.length - LOG_LIMIT);
    });
    output.on('error', () => undefined);
  }

  private async kill(r: Running, graceMs = 5000): Promise<void> {
    if (r.restartTimer) clearTimeout(r.restartTimer);
    r.replaced?.stop();
    const child = r.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    r.killing = true;
    const group = -child.pid!;
    try {
      process.kill(group, 'SIGTERM');
    } catch {
      // gone
    }
    const killer = setTimeout(() => {
      try {
        process.kill(group, 'SIGKILL');
      } catch {
        // gone
      }
    }, graceMs);
    await r.exited;
    clearTimeout(killer);
    r.killing = false;
  }

  /** One run of a container's probe, as the kubelet's prober runs it (false when it has none). */
  async probeOnce(name: string, kind: 'readiness' | 'liveness' | 'startup'): Promise<boolean> {
    const c = [...(this.opts.pod.spec!.initContainers ?? []), ...this.opts.pod.spec!.containers].find((x) => x.name === name);
    if (!c) throw new Error(`no container ${name}`);
    const p = c[`${kind}Probe`];
    return p ? this.probe(p) : false;
  }

  private async probe(p: V1Probe): Promise<boolean> {
    if (p.tcpSocket) {
      // the kubelet's tcpSocket probe: a connection to the pod IP opens (then is closed)
      const res = await this.opts.prober.tcp(this.opts.podIp, Number(p.tcpSocket.port), [], 1000);
      return res.error === undefined;
    }
    const get = p.httpGet;
    if (!get) throw new Error('only httpGet and tcpSocket probes are run here');
    const port = typeof get.port === 'number' ? get.port : Number(get.port);
    const host = this.opts.podIp.includes(':') ? `[${this.opts.podIp}]` : this.opts.podIp;
    const res = await this.opts.prober.http({ url: `http://${host}:${port}${get.path ?? '/'}`, timeoutMs: 1000 });
    return 'status' in res && res.status >= 200 && res.status < 400;
  }

  private async waitFor(name: string, p: V1Probe, what: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await this.probe(p))) {
      if (Date.now() > deadline) {
        throw new Error(`${name}: ${what} probe did not pass within ${timeoutMs} ms; its log:\n${this.logs(name).slice(-3000)}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** A downward-API field as the kubelet renders it (labels/annotations: sorted `k="v"` lines, Go %q). */
function downwardValue(pod: V1Pod, fieldPath: string, podIp: string): string {
  const map = (m: Record<string, string> | undefined) =>
    Object.keys(m ?? {})
      .sort()
      .map((k) => `${k}=${JSON.stringify(m![k])}`)
      .join('\n');
  if (fieldPath === 'metadata.labels') return map(pod.metadata?.labels);
  if (fieldPath === 'metadata.annotations') return map(pod.metadata?.annotations);
  const annotation = /^metadata\.annotations\['(.+)'\]$/.exec(fieldPath);
  if (annotation) return pod.metadata?.annotations?.[annotation[1]!] ?? '';
  const label = /^metadata\.labels\['(.+)'\]$/.exec(fieldPath);
  if (label) return pod.metadata?.labels?.[label[1]!] ?? '';
  return fieldValue(pod, fieldPath, podIp);
}

function fieldValue(pod: V1Pod, fieldPath: string, podIp: string): string {
  switch (fieldPath) {
    case 'metadata.name':
      return pod.metadata?.name ?? '';
    case 'metadata.namespace':
      return pod.metadata?.namespace ?? 'default';
    case 'status.podIP':
      return podIp;
    case 'spec.serviceAccountName':
      return pod.spec?.serviceAccountName ?? 'default';
    case 'spec.nodeName':
      return 'node-1';
    default:
      throw new Error(`downward API field ${fieldPath} is not run here`);
  }
}

function envValue(pod: V1Pod, e: V1EnvVar, podIp: string): string {
  if (e.value !== undefined) return e.value;
  const path = e.valueFrom?.fieldRef?.fieldPath;
  if (path) return downwardValue(pod, path, podIp);
  throw new Error(`env ${e.name}: only values and fieldRefs are run here`);
}
