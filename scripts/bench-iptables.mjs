#!/usr/bin/env node
// `npm run bench -- iptables`: how long `apisix-mesh iptables` takes to install the default rules in
// a fresh network namespace, and how many programs it starts. Baselines from the same run: the
// bare start-up of the same CLI (`version`), and the same rules installed the way earlier projects
// did it, one `iptables` process per rule. Then its peak RSS (what the init container's memory
// limit must hold), with the default rules and at the rule budget, against bare `node -e 0`.
// Needs root (network namespaces); the memory figures need GNU time (/usr/bin/time).
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultCaptureConfig } from '../dist/iptables-init/capture-config.js';
import { renderApplyDocument } from '../dist/iptables-init/restore-document.js';
import { emptyNatState } from '../dist/iptables-init/nat-state.js';
import { captureRules, MAX_RULES_PER_FAMILY } from '../dist/iptables-init/rules.js';
import { existsSync } from 'node:fs';

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli', 'main.js');
const runs = Number(process.env.BENCH_RUNS ?? 15);

if (process.getuid?.() !== 0) {
  console.log('bench-iptables: needs root (it creates network namespaces and installs rules in them); skipped');
  process.exit(0);
}
for (const cmd of ['ip', 'iptables-nft-restore', 'iptables-nft']) {
  if (spawnSync('sh', ['-c', `command -v ${cmd}`]).status !== 0) {
    console.log(`bench-iptables: \`${cmd}\` is not on PATH (install iproute2 and iptables); skipped`);
    process.exit(0);
  }
}
const hasStrace = spawnSync('sh', ['-c', 'command -v strace']).status === 0;

/** Runs `body(ns)` in a fresh namespace `runs` times and returns the wall times in ms. */
function timeInFreshNetns(body) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    const ns = `iptbench-${randomBytes(3).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', ns]);
    try {
      const start = process.hrtime.bigint();
      body(ns);
      times.push(Number(process.hrtime.bigint() - start) / 1e6);
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
    }
  }
  return times.sort((a, b) => a - b);
}

const median = (t) => t[Math.floor(t.length / 2)];
const p90 = (t) => t[Math.min(t.length - 1, Math.ceil(t.length * 0.9) - 1)];
const fmt = (t) => `median ${median(t).toFixed(1)} ms, p90 ${p90(t).toFixed(1)} ms`;

function must(res, what) {
  if (res.status !== 0) throw new Error(`${what} failed: ${res.stderr}`);
  return res;
}

const startup = timeInFreshNetns((ns) => must(spawnSync('ip', ['netns', 'exec', ns, process.execPath, cli, 'version']), 'version'));
const applyV4 = timeInFreshNetns((ns) => must(spawnSync('ip', ['netns', 'exec', ns, process.execPath, cli, 'iptables', '--ipv6=off'], { encoding: 'utf8' }), 'iptables'));
const applyBoth = timeInFreshNetns((ns) => must(spawnSync('ip', ['netns', 'exec', ns, process.execPath, cli, 'iptables', '--ipv6=on'], { encoding: 'utf8' }), 'iptables'));

// The same IPv4 rules, one process per chain and rule (the mesh-agent / linkerd-init way).
const doc = renderApplyDocument(captureRules({ ...defaultCaptureConfig }, 4), emptyNatState(4));
const commands = doc
  .split('\n')
  .filter((l) => l.startsWith(':') || l.startsWith('-A '))
  .map((l) => (l.startsWith(':') ? ['-t', 'nat', '-N', l.slice(1).split(' ')[0]] : ['-t', 'nat', ...l.split(' ')]));
const quote = (a) => `'${a}'`;
const perRuleScript = commands.map((args) => ['iptables-nft', '-w', ...args].map(quote).join(' ')).join(' && ');
const perRule = timeInFreshNetns((ns) => must(spawnSync('ip', ['netns', 'exec', ns, 'sh', '-c', perRuleScript], { encoding: 'utf8' }), 'iptables-nft per rule'));
// The floor: the same document through one iptables-nft-restore, without node.
const oneRestore = timeInFreshNetns((ns) => must(spawnSync('ip', ['netns', 'exec', ns, 'iptables-nft-restore', '--noflush', '-w'], { input: doc, encoding: 'utf8' }), 'restore'));

// Processes the command starts: its own log line, and (when present) strace's count of execve.
const ns = `iptbench-${randomBytes(3).toString('hex')}`;
execFileSync('ip', ['netns', 'add', ns]);
let logged = '';
let straced = 'strace not installed';
try {
  const res = must(spawnSync('ip', ['netns', 'exec', ns, process.execPath, cli, 'iptables', '--ipv6=on'], { encoding: 'utf8' }), 'iptables');
  logged = res.stderr.match(/started (\d+) process\(es\): (.*)/)?.slice(1).join(': ') ?? '?';
  execFileSync('ip', ['netns', 'exec', ns, process.execPath, cli, 'iptables', '--cleanup', '--ipv6=on'], { stdio: 'ignore' });
  if (hasStrace) {
    const traced = spawnSync('ip', ['netns', 'exec', ns, 'strace', '-f', '-qq', '-e', 'trace=execve', '-e', 'signal=none', process.execPath, cli, 'iptables', '--ipv6=on'], { encoding: 'utf8' });
    must(traced, 'strace');
    const execs = traced.stderr.split('\n').filter((l) => /execve\(/.test(l) && !/= -1 /.test(l));
    straced = `${execs.length - 1} (execve calls after node's own)`;
  }
} finally {
  execFileSync('ip', ['netns', 'del', ns]);
}

console.log(`runs per figure: ${runs}, each in a fresh network namespace (machine shared with other work)`);
console.log(`node start-up (apisix-mesh version):            ${fmt(startup)}`);
console.log(`apisix-mesh iptables, IPv4 (default rules):      ${fmt(applyV4)}`);
console.log(`apisix-mesh iptables, IPv4 + IPv6:              ${fmt(applyBoth)}`);
console.log(`baseline: one iptables-nft per rule (${commands.length} processes, IPv4): ${fmt(perRule)}`);
console.log(`baseline: the IPv4 document through one iptables-nft-restore, no node: ${fmt(oneRestore)}`);
console.log(`processes started, IPv4 + IPv6 (own log): ${logged}`);
console.log(`processes started, IPv4 + IPv6 (strace):  ${straced}`);

// --- Peak RSS -------------------------------------------------------------------------------------
// GNU time's %M: the largest resident set of the process it waited for and of that process's own
// waited-for children, i.e. node's (iptables-restore, node's child, is measured on its own below).
if (!existsSync('/usr/bin/time')) {
  console.log('peak RSS: /usr/bin/time (GNU time) is not installed; skipped');
  process.exit(0);
}
const memRuns = Math.max(3, Math.min(runs, 7));
/** Median peak RSS in MiB of `argv` run `memRuns` times, each in a fresh namespace (`rerun`: twice in it, the second measured). */
function peakRss(argv, { input, rerun = false } = {}) {
  const peaks = [];
  for (let i = 0; i < memRuns; i++) {
    const ns = `iptbench-${randomBytes(3).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', ns]);
    try {
      const run = () => must(spawnSync('/usr/bin/time', ['-f', 'maxrss %M', 'ip', 'netns', 'exec', ns, ...argv], { input, encoding: 'utf8', maxBuffer: 1 << 26 }), argv.join(' ').slice(0, 80));
      if (rerun) run();
      peaks.push(Number(run().stderr.match(/maxrss (\d+)/)[1]) / 1024);
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
    }
  }
  return peaks.sort((a, b) => a - b)[Math.floor(peaks.length / 2)];
}
// At the budget: outbound ports fill each family up to MAX_RULES_PER_FAMILY rules.
const fixedRules = captureRules({ ...defaultCaptureConfig }, 4).rules.length + captureRules({ ...defaultCaptureConfig }, 4).jumps.length;
const budgetPorts = Array.from({ length: MAX_RULES_PER_FAMILY - fixedRules }, (_, i) => i + 1).join(',');
const budgetArgs = ['iptables', '--ipv6=on', `--outbound-ports=${budgetPorts}`];
const budgetDoc = must(spawnSync(process.execPath, [cli, ...budgetArgs, '--dry-run'], { encoding: 'utf8' }), 'dry run').stdout;
const budgetV4Doc = budgetDoc.slice(0, budgetDoc.indexOf('COMMIT\n') + 'COMMIT\n'.length);
const mem = {
  bare: peakRss([process.execPath, '-e', '0']),
  version: peakRss([process.execPath, cli, 'version']),
  defaults: peakRss([process.execPath, cli, 'iptables', '--ipv6=on']),
  budget: peakRss([process.execPath, cli, ...budgetArgs], { rerun: true }),
  restoreDefault: peakRss(['iptables-nft-restore', '--noflush', '-w'], { input: doc }),
  restoreBudget: peakRss(['iptables-nft-restore', '--noflush', '-w'], { input: budgetV4Doc }),
};
const mib = (v) => `${v.toFixed(1)} MiB`;
console.log(`peak RSS, median of ${memRuns} (GNU time %M):`);
console.log(`  baseline: node -e 0                                            ${mib(mem.bare)}`);
console.log(`  apisix-mesh version                                            ${mib(mem.version)}`);
console.log(`  apisix-mesh iptables --ipv6=on (default rules)                 ${mib(mem.defaults)}`);
console.log(`  apisix-mesh iptables --ipv6=on, ${MAX_RULES_PER_FAMILY} rules a family (re-run)    ${mib(mem.budget)}`);
console.log(`  iptables-nft-restore of the default IPv4 document              ${mib(mem.restoreDefault)}`);
console.log(`  iptables-nft-restore of the IPv4 document at the budget        ${mib(mem.restoreBudget)}`);
