import { chainPrefix, type Family } from './rules.js';

/**
 * What an `iptables-save` dump says about this tool's footprint in the nat table: which of our
 * chains exist and which rules of the built-in chains jump into them. Re-runs and cleanup work from
 * this, so they remove exactly what is ours — never a built-in chain wholesale.
 */
export interface NatState {
  family: Family;
  /** Our chains (`APISIX_MESH_*`) that exist, in dump order. */
  chains: string[];
  /** Rules of built-in chains whose target is one of our chains, verbatim as `-A CHAIN ...` text. */
  jumps: string[];
}

export const builtinNatChains: readonly string[] = ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'];

export function emptyNatState(family: Family): NatState {
  return { family, chains: [], jumps: [] };
}

/** The lines of one table's section (`*<table>` up to `COMMIT`) of an iptables-save dump. */
function tableLines(dump: string, table: string): string[] {
  const lines: string[] = [];
  let inside = false;
  for (const raw of dump.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) inside = line === `*${table}`;
    else if (line === 'COMMIT') inside = false;
    else if (inside) lines.push(line);
  }
  return lines;
}

const targetIsOurs = (rule: string): boolean => new RegExp(`\\s-[jg] ${chainPrefix}\\S*(\\s|$)`).test(rule);

export function parseNatState(dump: string, family: Family): NatState {
  const state = emptyNatState(family);
  for (const line of tableLines(dump, 'nat')) {
    if (line.startsWith(`:${chainPrefix}`)) {
      state.chains.push(line.slice(1).split(/\s/)[0]!);
    } else if (line.startsWith('-A ')) {
      const chain = line.split(/\s+/)[1]!;
      if (builtinNatChains.includes(chain) && targetIsOurs(line)) state.jumps.push(line);
    }
  }
  return state;
}

/**
 * Whether a dump holds any rule or user chain at all. Like Istio, the legacy backend is used only
 * when it already holds rules (someone on this host still programs legacy); otherwise nft.
 */
export function dumpHoldsRules(dump: string): boolean {
  return dump.split('\n').some((raw) => {
    const line = raw.trim();
    if (line.startsWith('-A ')) return true;
    if (!line.startsWith(':')) return false;
    const chain = line.slice(1).split(/\s/)[0]!;
    return !['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'].includes(chain);
  });
}
