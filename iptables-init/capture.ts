import { CliError } from '../cli/errors.js';
import type { CaptureConfig } from './capture-config.js';
import { binaries, type Backend, type BackendChoice } from './backend.js';
import { dumpHoldsRules, emptyNatState, parseNatState, type NatState } from './nat-state.js';
import { renderApplyDocument, renderCleanupDocument } from './restore-document.js';
import { captureRules, cidrFamily, type Family } from './rules.js';
import type { ProcessRunner } from './run-process.js';

/**
 * Installs, prints or removes the capture rules: per family, pick the backend, read the nat table
 * once, render one document, feed it to one `iptables-restore --noflush`. The kernel work happens
 * only here; everything it decides comes from the pure modules.
 */
export interface CaptureRun {
  config: CaptureConfig;
  action: 'apply' | 'cleanup';
  dryRun: boolean;
  backend: BackendChoice;
  binDir?: string;
  /** Whether the namespace has a global IPv6 address (for `--ipv6=auto`). */
  globalIpv6: boolean;
  run: ProcessRunner;
  /** Progress for the person reading the init container's log (stderr). */
  log: (line: string) => void;
  /** The documents, under --dry-run (stdout). */
  print: (text: string) => void;
}

const familyName = (family: Family): string => (family === 4 ? 'IPv4' : 'IPv6');

export function capturedFamilies(config: CaptureConfig, globalIpv6: boolean): Family[] {
  const v6 = config.ipv6 === 'on' || (config.ipv6 === 'auto' && globalIpv6);
  return v6 ? [4, 6] : [4];
}

function describeFailure(file: string, res: Awaited<ReturnType<ProcessRunner>>): string {
  if (res.startError) {
    return res.startError.code === 'ENOENT'
      ? `${file} was not found (install iptables, or point --iptables-bin-dir at it)`
      : `${file} could not be started: ${res.startError.message}`;
  }
  const detail = res.stderr.trim().split('\n').filter(Boolean).join('; ');
  return `${file} exited with status ${res.code}${detail ? `: ${detail}` : ''}`;
}

interface FamilyTarget {
  backend: Backend;
  /** The nat table as it is now; null when it could not be read. */
  state: NatState | null;
  readError?: string;
}

/**
 * Like Istio: the legacy backend only when it already holds rules, otherwise nft. The legacy dump
 * read for that decision doubles as the state when legacy wins, so no second read is needed.
 */
async function locate(run: CaptureRun, family: Family): Promise<FamilyTarget> {
  let backend: Backend = run.backend === 'legacy' ? 'legacy' : 'nft';
  if (run.backend === 'auto') {
    const legacySave = binaries(family, 'legacy', run.binDir).save;
    const res = await run.run(legacySave, []);
    if (res.code === 0 && dumpHoldsRules(res.stdout)) {
      run.log(`${familyName(family)}: iptables-legacy already holds rules, so the rules go there too`);
      return { backend: 'legacy', state: parseNatState(res.stdout, family) };
    }
    backend = 'nft';
  }
  let save = binaries(family, backend, run.binDir).save;
  let res = await run.run(save, ['-t', 'nat']);
  if (run.backend === 'auto' && res.startError?.code === 'ENOENT') {
    // An image without the -nft variants: the unsuffixed programs are whatever the image chose.
    backend = 'plain';
    save = binaries(family, backend, run.binDir).save;
    res = await run.run(save, ['-t', 'nat']);
  }
  if (res.code !== 0 || res.startError) return { backend, state: null, readError: describeFailure(save, res) };
  return { backend, state: parseNatState(res.stdout, family) };
}

/**
 * The inbound forwarding source for IPv6, `::6`, on lo (as istio-iptables does): IPv6 loopback is
 * `::1/128` alone, so without it APISIX could not bind the source that the rules above let through,
 * and every inbound IPv6 forward would fail. `replace` makes a re-run a no-op.
 */
export const INBOUND_SOURCE_IPV6 = '::6/128';

async function addInboundSourceIpv6(run: CaptureRun): Promise<void> {
  const args = ['-6', 'addr', 'replace', INBOUND_SOURCE_IPV6, 'dev', 'lo'];
  const res = await run.run('ip', args);
  if (res.code !== 0 || res.startError) {
    const why = res.startError?.code === 'ENOENT' ? 'ip was not found (install iproute2)' : describeFailure('ip', res);
    throw new CliError(`IPv6: the rules are in place but ${INBOUND_SOURCE_IPV6} could not be added to lo (${why}): inbound IPv6 forwards would fail`, 1);
  }
  run.log(`IPv6: ${INBOUND_SOURCE_IPV6} on lo, the source of inbound forwards to the app`);
}

export async function runCapture(run: CaptureRun): Promise<void> {
  const families = capturedFamilies(run.config, run.globalIpv6);
  const why =
    run.config.ipv6 === 'auto' ? (run.globalIpv6 ? 'the pod has a global IPv6 address' : 'the pod has no global IPv6 address') : `--ipv6=${run.config.ipv6}`;
  run.log(`${run.action === 'apply' ? 'capture rules' : 'cleanup'} for ${families.map(familyName).join(' and ')} (${why})${run.dryRun ? ', dry run: nothing is changed' : ''}`);
  if (run.action === 'apply' && !families.includes(6)) {
    const v6 = [
      ...(run.config.outboundIpRanges === '*' ? [] : run.config.outboundIpRanges),
      ...run.config.excludeOutboundIpRanges,
    ].filter((c) => cidrFamily(c) === 6);
    if (v6.length > 0) run.log(`IPv6 rules are off (--ipv6=${run.config.ipv6}), so ${v6.join(', ')} ha${v6.length > 1 ? 've' : 's'} no effect`);
  }

  const done: string[] = [];
  for (const family of families) {
    const target = await locate(run, family);
    const { restore } = binaries(family, target.backend, run.binDir);
    let state = target.state;
    if (state === null) {
      if (!run.dryRun) throw new CliError(`${familyName(family)}: cannot read the nat table: ${target.readError}`, 1);
      run.log(`${familyName(family)}: cannot read the nat table (${target.readError}); printing what a clean namespace would get`);
      state = emptyNatState(family);
    }

    const document =
      run.action === 'apply' ? renderApplyDocument(captureRules(run.config, family), state) : renderCleanupDocument(state);
    if (document === null) {
      run.log(`${familyName(family)}: no apisix-mesh rules installed, nothing to remove`);
      continue;
    }
    if (run.dryRun) {
      run.print(document);
      continue;
    }

    const res = await run.run(restore, ['--noflush', '-w'], document);
    if (res.code !== 0 || res.startError) {
      const atomic = res.startError ? '' : '; the restore is atomic, so nothing of this document was applied';
      const earlier = done.length > 0 ? ` (the ${done.join(' and ')} rules are in place; run the command again)` : '';
      throw new CliError(`${familyName(family)}: ${describeFailure(restore, res)}${atomic}${earlier}`, 1);
    }
    done.push(familyName(family));
    if (run.action === 'apply') {
      // what is now in the table, on stdout, as istio-init prints it: `kubectl logs -c <init>` shows it
      run.print(document);
      const count = document.split('\n').filter((l) => l.startsWith('-A ')).length;
      const replaced = state.chains.length > 0 || state.jumps.length > 0 ? ', replacing the ones already there' : '';
      run.log(`${familyName(family)}: installed ${count} nat rules with ${restore}${replaced}`);
      if (family === 6) await addInboundSourceIpv6(run);
    } else {
      run.log(`${familyName(family)}: removed ${state.jumps.length} jump(s) and ${state.chains.length} chain(s) with ${restore}`);
    }
  }
}
