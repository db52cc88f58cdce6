import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { copyForOtherUids, nodeForOtherUids } from '../../support/other-uids.js';

/**
 * A pod and a remote host: two network namespaces joined by a veth pair, with addresses only
 * inside them (10.77.0.0/24 and fd00:77::/64 on the link; 10.88.0.1 and fd00:88::1 on the remote as
 * a second, routed destination). Names start with `ipt` and carry a random suffix.
 */
export const podIp = '10.77.0.2';
export const remoteIp = '10.77.0.1';
export const remoteOtherIp = '10.88.0.1';
export const podIp6 = 'fd00:77::2';
export const remoteIp6 = 'fd00:77::1';
export const remoteOtherIp6 = 'fd00:88::1';
/** The pod's interface towards the remote host. */
export const podIf = 'veth-pod';

export const cliPath = new URL('../../../dist/cli/main.js', import.meta.url).pathname;
const listenerPath = new URL('./capture-listener.py', import.meta.url).pathname;
const clientPath = new URL('./connect-client.mjs', import.meta.url).pathname;
const httpEchoPath = new URL('./http-echo.mjs', import.meta.url).pathname;
/** The system python3 (a pyenv shim under /root would not run for other uids). */
const python = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', '0']).status === 0) ?? 'python3';

export function sh(args: string[], input?: string): string {
  return execFileSync(args[0]!, args.slice(1), { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
}

export interface NetnsPair {
  pod: string;
  remote: string;
  destroy(): void;
}

export function newNetnsName(role: string): string {
  return `ipt${role}-${randomBytes(3).toString('hex')}`;
}

export function createPair(): NetnsPair {
  const pod = newNetnsName('pod');
  const remote = newNetnsName('rem');
  const destroy = (): void => {
    for (const ns of [pod, remote]) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  };
  try {
    sh(['ip', 'netns', 'add', pod]);
    sh(['ip', 'netns', 'add', remote]);
    sh(['ip', '-n', pod, 'link', 'add', podIf, 'type', 'veth', 'peer', 'name', 'veth-rem', 'netns', remote]);
    for (const [ns, dev, v4, v6, extra] of [
      [pod, podIf, `${podIp}/24`, `${podIp6}/64`, []],
      [remote, 'veth-rem', `${remoteIp}/24`, `${remoteIp6}/64`, [`${remoteOtherIp}/32`, `${remoteOtherIp6}/128`]],
    ] as const) {
      sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      sh(['ip', '-n', ns, 'addr', 'add', v4, 'dev', dev]);
      sh(['ip', '-n', ns, 'addr', 'add', v6, 'dev', dev, 'nodad']);
      for (const a of extra) sh(['ip', '-n', ns, 'addr', 'add', a, 'dev', dev, ...(a.includes(':') ? ['nodad'] : [])]);
      sh(['ip', '-n', ns, 'link', 'set', dev, 'up']);
    }
    sh(['ip', '-n', pod, 'route', 'add', `${remoteOtherIp}/32`, 'via', remoteIp]);
    sh(['ip', '-n', pod, '-6', 'route', 'add', `${remoteOtherIp6}/128`, 'via', remoteIp6]);
  } catch (err) {
    destroy();
    throw err;
  }
  return { pod, remote, destroy };
}

/** Runs the built `apisix-mesh iptables` inside `ns`. */
export function runIptables(ns: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync('ip', ['netns', 'exec', ns, process.execPath, cliPath, 'iptables', ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
}

/** The nat table of one family as iptables-save prints it, without the timestamped comments. */
export function natDump(ns: string, family: 4 | 6, backend: 'nft' | 'legacy' = 'nft'): string {
  const save = `${family === 4 ? 'iptables' : 'ip6tables'}-${backend}-save`;
  return sh(['ip', 'netns', 'exec', ns, save, '-t', 'nat'])
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .join('\n');
}

export interface Listener {
  stop(): void;
}

/** Starts capture-listener.py in `ns` on `ports` and waits for it to be ready. */
export function startListener(ns: string, role: string, ports: number[]): Promise<Listener> {
  return startInNetns(ns, [python, listenerPath, role, ...ports.map(String)]);
}

/** Starts http-echo.mjs (an HTTP app that reports the peer of each request) in `ns` on `port`. */
export function startHttpEcho(ns: string, role: string, port: number): Promise<Listener> {
  return startInNetns(ns, [process.execPath, httpEchoPath, role, String(port)]);
}

/** Runs `command` in `ns` until stopped; resolves once it prints READY (it runs until its stdin closes). */
async function startInNetns(ns: string, command: string[]): Promise<Listener> {
  const child: ChildProcess = spawn('ip', ['netns', 'exec', ns, ...command], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const lines = createInterface({ input: child.stdout! });
  await new Promise<void>((resolve, reject) => {
    lines.once('line', (line) => (line === 'READY' ? resolve() : reject(new Error(`${command[1]} said ${line}`))));
    child.once('exit', (code) => reject(new Error(`${command[1]} in ${ns} exited with ${code}: ${stderr}`)));
  });
  return {
    stop: () => {
      child.stdin!.end();
      child.kill();
    },
  };
}

export interface Connection {
  tag: string;
  host: string;
  port: number;
  localAddress?: string;
  /** A UDP datagram instead of a TCP connection. */
  udp?: boolean;
}

export interface Answer {
  role: string;
  port: number;
  tag: string;
  peer: string;
  origDst: string | null;
}

export interface Outcome {
  tag: string;
  answer?: Answer;
  error?: string;
}

/** The command prefix that runs what follows as uid:gid with no supplementary groups. */
export function asUser(ids: { uid: number; gid: number }): string[] {
  return ['setpriv', `--reuid=${ids.uid}`, `--regid=${ids.gid}`, '--clear-groups'];
}

/** Opens `connections` from `ns` as uid:gid (root when omitted); one process for all of them. */
export function connectFrom(ns: string, connections: Connection[], ids?: { uid: number; gid: number }): Map<string, Outcome> {
  // Another uid runs a copy outside the checkout, which may be private to root (see other-uids.ts).
  const command = ids ? [...asUser(ids), nodeForOtherUids(), copyForOtherUids(clientPath)] : [process.execPath, clientPath];
  const out = sh(['ip', 'netns', 'exec', ns, ...command, JSON.stringify(connections)]);
  return new Map((JSON.parse(out) as Outcome[]).map((o) => [o.tag, o]));
}
