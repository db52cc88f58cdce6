import { execFileSync } from 'node:child_process';
import { describe, it } from 'vitest';

/**
 * Suites that need root, a network namespace, etcd or etcdctl run only where those exist. Elsewhere
 * they are skipped with the reason in the suite's name — except under APISIX_MESH_REQUIRE_ALL=1
 * (set by CI), where a missing requirement fails the run instead of hiding a gap.
 */
export const requireAll = process.env.APISIX_MESH_REQUIRE_ALL === '1';

/** `null` when the command is on PATH, otherwise a sentence saying what is missing. */
export function missingCommand(command: string, hint: string): string | null {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return null;
  } catch {
    return `\`${command}\` is not on PATH (${hint})`;
  }
}

export function missingRoot(): string | null {
  return process.getuid?.() === 0 ? null : 'needs root (network namespaces and iptables)';
}

/** The first missing requirement, or null. */
export function firstMissing(...checks: Array<string | null>): string | null {
  return checks.find((c) => c !== null) ?? null;
}

/** `describe` that skips (or, under APISIX_MESH_REQUIRE_ALL=1, fails) when something is missing. */
export function describeWhenAvailable(name: string, missing: string | null, body: () => void): void {
  if (missing === null) {
    describe(name, body);
  } else if (requireAll) {
    describe(name, () => {
      it(`has what it needs`, () => {
        throw new Error(`${missing}; APISIX_MESH_REQUIRE_ALL=1 turns this skip into a failure`);
      });
    });
  } else {
    describe.skip(`${name} [skipped: ${missing}]`, body);
  }
}
