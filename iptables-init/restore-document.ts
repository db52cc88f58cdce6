import type { NatState } from './nat-state.js';
import { ownChains, type Family, type FamilyRules, type Rule } from './rules.js';

/**
 * One `iptables-restore --noflush` document per address family. Applying it is atomic: the kernel
 * takes all of it or none of it. The documents carry a comment header, so `--dry-run` prints
 * exactly what would be fed to the restore command.
 */

const familyName = (family: Family): string => (family === 4 ? 'IPv4' : 'IPv6');
const ruleLine = (verb: '-A' | '-D', rule: Rule): string => [verb, rule.chain, ...rule.spec].join(' ');
const deleteOf = (appendLine: string): string => `-D${appendLine.slice(2)}`;

/**
 * Installs `rules`, replacing whatever `state` says is there: declaring a chain that exists flushes
 * it under --noflush, our old jumps are deleted before the new ones are appended (so a re-run never
 * doubles them), and chains of ours that this configuration no longer uses are removed.
 */
export function renderApplyDocument(rules: FamilyRules, state: NatState): string {
  const stale = state.chains.filter((c) => !ownChains.includes(c));
  const lines = [
    `# apisix-mesh iptables: ${familyName(rules.family)} capture rules`,
    '*nat',
    ...[...ownChains, ...stale].map((c) => `:${c} - [0:0]`),
    ...state.jumps.map(deleteOf),
    ...stale.map((c) => `-X ${c}`),
    ...rules.rules.map((r) => ruleLine('-A', r)),
    ...rules.jumps.map((r) => ruleLine('-A', r)),
    'COMMIT',
  ];
  return `${lines.join('\n')}\n`;
}

/**
 * Removes our jumps from the built-in chains, then empties and deletes our chains (all flushed
 * before any is deleted, since they jump to each other). `null` when nothing of ours is there.
 */
export function renderCleanupDocument(state: NatState): string | null {
  if (state.chains.length === 0 && state.jumps.length === 0) return null;
  const lines = [
    `# apisix-mesh iptables: remove ${familyName(state.family)} capture rules`,
    '*nat',
    ...state.jumps.map(deleteOf),
    ...state.chains.map((c) => `-F ${c}`),
    ...state.chains.map((c) => `-X ${c}`),
    'COMMIT',
  ];
  return `${lines.join('\n')}\n`;
}
