import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../../../', import.meta.url));

/**
 * A world-readable copy of what the pod's processes run (the built CLI with its node_modules, the
 * test worker): the agent runs as the proxy uid and the test apps as another uid, and neither may
 * depend on the checkout's directory permissions (a clone under a 0700 home is not theirs to read).
 * node_modules is hard-linked (same filesystem) so the copy costs about a second; removed at exit.
 */
export interface StagedProject {
  /** stands for the mesh image's /app: dist/, node_modules/, package.json */
  app: string;
  /** netns-worker.mjs */
  worker: string;
}

let staged: StagedProject | undefined;

export function stagedProject(): StagedProject {
  if (staged) return staged;
  const dir = mkdtempSync(join(tmpdir(), 'apisix-mesh-stage-'));
  chmodSync(dir, 0o755);
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const app = join(dir, 'app');
  execFileSync('mkdir', ['-p', app]);
  execFileSync('cp', ['-R', join(repo, 'dist'), join(repo, 'package.json'), app]);
  try {
    execFileSync('cp', ['-al', join(repo, 'node_modules'), app], { stdio: 'pipe' });
  } catch {
    execFileSync('cp', ['-a', join(repo, 'node_modules'), app]); // another filesystem: a real copy
  }
  const worker = join(dir, 'netns-worker.mjs');
  copyFileSync(fileURLToPath(new URL('./netns-worker.mjs', import.meta.url)), worker);
  execFileSync('chmod', ['-R', 'a+rX', dir]);
  staged = { app, worker };
  return staged;
}
