import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { RunningPod } from './pod-harness.js';

/** APISIX's processes in the pod (its network namespace) by role, from their nginx titles */
export function apisixProcesses(pod: RunningPod): { workers: number[]; privileged: number[] } {
  const out = { workers: [] as number[], privileged: [] as number[] };
  const pids = spawnSync('ip', ['netns', 'pids', pod.network.pod], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
  for (const pid of pids) {
    let title = '';
    try {
      title = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] ?? '';
    } catch {
      continue; // gone meanwhile
    }
    if (title.startsWith('nginx: worker process')) out.workers.push(pid);
    else if (title.startsWith('nginx: privileged agent process')) out.privileged.push(pid);
  }
  return out;
}
