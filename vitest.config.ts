import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Real-kernel and real-etcd suites share global resources (network namespaces, ports);
    // they serialise themselves, the rest runs in parallel.
    // Vitest's default is one worker per core but one, which on the 2-core CI machine runs every file
    // after the other; most of the suite's time is spent waiting for processes and sockets, not
    // computing, so two files at a time there roughly halves the run.
    maxWorkers: Math.max(2, availableParallelism() - 1),
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
