import { join } from 'node:path';
import type { Family } from './rules.js';

/**
 * Which iptables implementation programs the kernel: nf_tables or the legacy x_tables; `plain` is
 * the unsuffixed `iptables-save`/`-restore`, used (like Istio) only when no `-nft` variant exists.
 */
export type Backend = 'nft' | 'legacy' | 'plain';
export type BackendChoice = 'nft' | 'legacy' | 'auto';

export interface Binaries {
  save: string;
  restore: string;
}

/**
 * The save/restore programs of one backend and family, e.g. `ip6tables-nft-restore`. With `binDir`
 * they are taken from that directory instead of PATH (tests put wrappers there).
 */
export function binaries(family: Family, backend: Backend, binDir?: string): Binaries {
  const base = `${family === 4 ? 'iptables' : 'ip6tables'}${backend === 'plain' ? '' : `-${backend}`}`;
  const where = (name: string): string => (binDir ? join(binDir, name) : name);
  return { save: where(`${base}-save`), restore: where(`${base}-restore`) };
}
