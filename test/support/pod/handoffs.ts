// The L4 front's hand-offs as the kernel sees them in the pod's network namespace (`ss`): for each
// connection from the front (a 127.128.0.0/9 source address) to a loopback listener, the process
// holding the front's end and the one holding the accepted end. handoff_steering.lua means to keep
// both in one nginx worker.
import { spawnSync } from 'node:child_process';

/** A TCP socket of the namespace: its two ends and the process holding it. */
interface Socket { local: string; peer: string; pid: number }

function establishedSockets(netns: string): Socket[] {
  const out = spawnSync('ip', ['netns', 'exec', netns, 'ss', '-tnpH', 'state', 'established'], { encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`ss failed: ${out.stderr}`);
  return out.stdout.split('\n').flatMap((line) => {
    const m = /^\s*\d+\s+\d+\s+(\S+)\s+(\S+)\s+users:\(\("[^"]*",pid=(\d+)/.exec(line);
    return m ? [{ local: m[1]!, peer: m[2]!, pid: Number(m[3]) }] : [];
  });
}

export interface Handoff {
  /** the front's source address and port */
  address: string;
  /** the process holding the front's end */
  front: number;
  /** the process that accepted it */
  listener: number;
}

/** The live hand-offs to 127.0.0.1:`port` in namespace `netns`. */
export function handoffs(netns: string, port: number): Handoff[] {
  const listener = `127.0.0.1:${port}`;
  const sockets = establishedSockets(netns);
  const accepted = new Map(sockets.filter((s) => s.local === listener).map((s) => [s.peer, s.pid]));
  return sockets
    .filter((s) => s.peer === listener && s.local.startsWith('127.'))
    .flatMap((s) => (accepted.has(s.local) ? [{ address: s.local, front: s.pid, listener: accepted.get(s.local)! }] : []));
}

/** Until `count` hand-offs to `port` are live (polled for up to 2 s): what was seen last. */
export async function waitForHandoffs(netns: string, port: number, count: number): Promise<Handoff[]> {
  let seen: Handoff[] = [];
  for (let i = 0; i < 20 && seen.length < count; i++) {
    await new Promise((r) => setTimeout(r, 100));
    seen = handoffs(netns, port);
  }
  return seen;
}
