#!/usr/bin/env node
// `npm run bench [-- NAME...]`: runs every scripts/bench-NAME.mjs (or the ones named), one after
// the other so that they do not compete for the machine's two cores. Each prints its own
// comparison against a baseline measured in the same run; BENCHMARKS.md keeps the latest results.
import { readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const wanted = process.argv.slice(2);
const benches = readdirSync(here)
  .filter((f) => /^bench-.+\.mjs$/.test(f))
  .map((f) => f.slice('bench-'.length, -'.mjs'.length))
  .filter((name) => wanted.length === 0 || wanted.includes(name))
  .sort();
if (benches.length === 0) {
  console.error(`no benchmark matches ${wanted.join(', ') || '(none exist yet)'}`);
  process.exit(2);
}
let failed = 0;
for (const name of benches) {
  console.log(`\n=== bench: ${name} ===`);
  const res = spawnSync(process.execPath, ['--expose-gc', join(here, `bench-${name}.mjs`)], { stdio: 'inherit' });
  if (res.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
