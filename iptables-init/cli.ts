import type { Command } from 'commander';
import { CliError } from '../cli/errors.js';

/** `apisix-mesh iptables`: the init container's rule installer. */
export function registerIptablesCommand(program: Command): void {
  program
    .command('iptables')
    .description('install (or print, or remove) the nat rules that send the pod\'s TCP traffic through APISIX')
    .action(() => {
      throw new CliError('iptables: not built yet', 1);
    });
}
