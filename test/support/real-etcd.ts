import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port.js';


export interface RealEtcd {
  url: string;
  stop(): Promise<void>;
}

/**
 * A single-member etcd (Debian etcd-server) on random loopback ports with a temporary data dir,
 * stopped by pid and its data dir removed by `stop()`.
 */
export async function startRealEtcd(extraFlags: string[] = []): Promise<RealEtcd> {
  const dataDir = mkdtempSync(join(tmpdir(), 'etcd-real-'));
  const client = await freePort();
  const peer = await freePort();
  // etcd reads ETCD_* variables as flags: never pass any through.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD_')));
  const proc: ChildProcess = spawn(
    'etcd',
    [
      '--name', 'diff',
      '--data-dir', dataDir,
      '--listen-client-urls', `http://127.0.0.1:${client}`,
      '--advertise-client-urls', `http://127.0.0.1:${client}`,
      '--listen-peer-urls', `http://127.0.0.1:${peer}`,
      '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
      '--initial-cluster', `diff=http://127.0.0.1:${peer}`,
      '--log-level', 'error',
      ...extraFlags,
    ],
    { env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const url = `http://127.0.0.1:${client}`;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const stop = async () => {
    if (proc.exitCode === null) proc.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (proc.exitCode === null) proc.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const r = await fetch(`${url}/health`);
      if ((await r.text()).includes('"health":"true"')) break;
    } catch {
      /* not up yet */
    }
    if (proc.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`etcd did not start: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, stop };
}
