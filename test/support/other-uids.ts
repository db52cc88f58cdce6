import { chmodSync, copyFileSync, mkdtempSync, realpathSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';

/**
 * Tests run some programs as another uid (`setpriv`): a client as the app or proxy uid, nginx as
 * the proxy. Those uids must be able to read the programs and their files, but the checkout may sit
 * under a directory only root can enter (`/root`, a 0700 home), so nothing they run is taken from the
 * checkout: helper programs are copied into one world-readable directory per test file, which the
 * file removes in its afterAll with removeOtherUidsDir() (vitest ends its workers without 'exit').
 */

let shared: string | undefined;
const copies = new Map<string, string>();

/**
 * Why other uids cannot use `path` (a program or directory: it needs o+rx, and every directory on
 * the way o+x), or null. Group and ACL grants do not count: the uids run with no supplementary groups.
 */
export function unreachableByOtherUids(path: string): string | null {
  const real = realpathSync(path);
  if ((statSync(real).mode & 0o005) !== 0o005) return `${real} is not readable and executable by other users`;
  for (let dir = dirname(real); ; dir = dirname(dir)) {
    if ((statSync(dir).mode & 0o001) === 0) return `${dir} (on the way to ${real}) may not be entered by other users`;
    if (dir === dirname(dir)) return null;
  }
}

/** The world-readable directory of this test file (created on first use). */
export function otherUidsDir(): string {
  if (shared === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'apisix-mesh-other-uids-'));
    chmodSync(dir, 0o755);
    const why = unreachableByOtherUids(dir);
    if (why) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`programs run as another uid need a directory they can reach (set TMPDIR): ${why}`);
    }
    shared = dir;
  }
  return shared;
}

/** Removes otherUidsDir() and everything in it (the next use makes a new one). */
export function removeOtherUidsDir(): void {
  if (shared !== undefined) rmSync(shared, { recursive: true, force: true });
  shared = undefined;
  copies.clear();
}

/** A world-readable copy of `file` in otherUidsDir(), made once. */
export function copyForOtherUids(file: string): string {
  const made = copies.get(file);
  if (made) return made;
  const copy = join(otherUidsDir(), basename(file));
  if ([...copies.values()].includes(copy)) throw new Error(`two helper programs are named ${basename(file)}`);
  copyFileSync(file, copy);
  chmodSync(copy, 0o644);
  copies.set(file, copy);
  return copy;
}

/** Node itself, which runs the copied programs: it must not live under a private directory either. */
export function nodeForOtherUids(): string {
  const why = unreachableByOtherUids(process.execPath);
  if (why) throw new Error(`programs run as another uid cannot run node: ${why}`);
  return process.execPath;
}
