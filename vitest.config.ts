import { availableParallelism } from 'node:os';
import { relative } from 'node:path';
import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

/**
 * Files that take far longer than the rest start first, so that no worker is left alone with one of
 * them at the end. Vitest orders by the durations it cached from the last run, but CI runs a clean
 * clone without that cache, and then starts the larger files first, whatever they cost.
 */
const startFirst = ['test/etcd/replay-recordings.test.ts', 'test/e2e/etcd-differential.test.ts', 'test/install/cluster-certs.test.ts'];

class LongFilesFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification) => {
      const i = startFirst.indexOf(relative(f.project.config.root, f.moduleId));
      return i < 0 ? startFirst.length : i;
    };
    return (await super.sort(files)).map((f, i) => ({ f, i })).sort((a, b) => rank(a.f) - rank(b.f) || a.i - b.i).map(({ f }) => f);
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Real-kernel and real-etcd suites share global resources (network namespaces, ports);
    // they serialise themselves, the rest runs in parallel.
    // Vitest's default is one worker per core but one, which on the 2-core CI machine runs every file
    // after the other; most of the suite's time is spent waiting for processes and sockets, not
    // computing, so two files at a time there roughly halves the run.
    maxWorkers: Math.max(2, availableParallelism() - 1),
    sequence: { sequencer: LongFilesFirst },
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
