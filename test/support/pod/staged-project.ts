import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { unreachableByOtherUids } from '../other-uids.js';

/**
 * The checkout: the nearest directory above this module that holds package.json. Not a fixed
 * `../../../`: the dataplane bench runs a compiled copy of this harness from a cache directory
 * inside the checkout (scripts/bench-dataplane.mjs), and it must stage the same project.
 */
function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
  return dir;
}
const repo = projectRoot();

/**
 * A world-readable copy of what the pod's processes run (the built CLI with its node_modules, the
 * test worker), inside the pod's own directory: the agent runs as the proxy uid and the test apps as
 * another uid, and neither may depend on the checkout's directory permissions (a clone under a 0700
 * home is not theirs to read). node_modules is hard-linked where the filesystem allows (about a
 * second); it goes when the pod's directory is removed.
 */
export interface StagedProject {
  /** stands for the mesh image's /app: dist/, node_modules/, package.json */
  app: string;
  /** netns-worker.mjs */
  worker: string;
}

/** `root`: the checkout whose build the pod runs (a benchmark's baseline may run an older one). */
export function stageProject(podDir: string, root: string = repo): StagedProject {
  const why = unreachableByOtherUids(podDir);
  if (why) throw new Error(`the pod's programs run as other uids and need a directory they can reach (set TMPDIR): ${why}`);
  const app = join(podDir, 'app');
  mkdirSync(app);
  execFileSync('cp', ['-R', join(root, 'dist'), join(root, 'package.json'), app]);
  try {
    execFileSync('cp', ['-al', join(root, 'node_modules'), app], { stdio: 'pipe' });
  } catch {
    execFileSync('cp', ['-a', join(root, 'node_modules'), app]); // another filesystem: a real copy
  }
  const worker = join(podDir, 'netns-worker.mjs');
  copyFileSync(fileURLToPath(new URL('./netns-worker.mjs', import.meta.url)), worker);
  execFileSync('chmod', ['-R', 'a+rX', app, worker]);
  return { app, worker };
}
