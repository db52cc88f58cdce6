// What the data-plane benches (bench-dataplane, bench-mtls, bench-tcp-mtls) share — not a bench itself
// (`npm run bench` runs scripts/bench-*.mjs): the pod harness of test/support compiled as it is, a
// load script any uid can read, processes run in network namespaces and followed by their JSON lines,
// and the CPU of APISIX's processes from /proc.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim() || 100);

const HARNESS_FILES = ['test/support/pod/pod-harness.ts', 'test/support/pod/requirements.ts', 'test/support/pod/mesh-ca.ts', 'test/support/istio-xds.ts', 'test/support/test-pki.ts', 'test/support/fake-istio-ca.ts'];

/**
 * The pod harness compiled into node_modules/.cache/<cacheName> (incrementally); returns a loader of
 * its modules by their path relative to the checkout (`test/support/pod/pod-harness.js`).
 */
export function compileHarness(cacheName) {
  const cache = join(root, 'node_modules/.cache', cacheName);
  const out = join(cache, 'out');
  mkdirSync(cache, { recursive: true });
  const tsconfig = join(cache, 'tsconfig.json');
  writeFileSync(tsconfig, JSON.stringify({
    extends: join(root, 'tsconfig.json'),
    compilerOptions: { rootDir: root, outDir: out, sourceMap: false, incremental: true, tsBuildInfoFile: join(cache, 'tsbuildinfo') },
    include: [],
    files: HARNESS_FILES.map((f) => join(root, f)),
  }));
  const tsc = spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', tsconfig], { encoding: 'utf8' });
  if (tsc.status !== 0) throw new Error(`compiling the pod harness failed:\n${tsc.stdout}${tsc.stderr}`);
  copyFileSync(join(root, 'test/support/pod/netns-worker.mjs'), join(out, 'test/support/pod/netns-worker.mjs'));
  // the fake CA serves the agent's own proto, found next to the compiled code
  mkdirSync(join(out, 'agent/identity'), { recursive: true });
  copyFileSync(join(root, 'agent/identity/istio-ca.proto'), join(out, 'agent/identity/istio-ca.proto'));
  return (p) => import(pathToFileURL(join(out, p)).href);
}

/** A directory any uid can read, holding a copy of scripts/dataplane-load.mjs (the checkout may be private to root). */
export function stageLoadScript(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  const script = join(dir, 'dataplane-load.mjs');
  copyFileSync(join(root, 'scripts/dataplane-load.mjs'), script);
  chmodSync(script, 0o644);
  return { dir, script, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** node with `args` in network namespace `ns`, as `uid` when given. */
export function spawnIn(ns, uid, args) {
  const ids = uid === undefined ? [] : ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups'];
  return spawn('ip', ['netns', 'exec', ns, ...ids, process.execPath, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Lines of JSON from a child, to `onMessage`; resolves with the child's exit. */
export function follow(child, onMessage) {
  let stderr = '';
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-2000)));
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      onMessage(JSON.parse(line));
    } catch {
      // not ours
    }
  });
  // 'close', not 'exit': the last lines may still be in the pipe when the process has exited
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stderr })));
}

export function readOr(path, fallback) {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
}

export function pidsIn(ns) {
  return spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
}

/** CPU ticks (user + system) of one process, 0 once it has gone. */
export function cpuTicks(pid) {
  const stat = readOr(`/proc/${pid}/stat`, '');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
}

/** CPU ticks of APISIX's processes (nginx master, workers, privileged agent) in the pod. */
export function apisixTicks(ns) {
  let ticks = 0;
  for (const pid of pidsIn(ns)) if (readOr(`/proc/${pid}/cmdline`, '').startsWith('nginx: ')) ticks += cpuTicks(pid);
  return ticks;
}
