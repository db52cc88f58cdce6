import type { Command } from 'commander';
import { CliError } from '../cli/errors.js';

/** `apisix-mesh agent`: xDS from istiod → APISIX objects → the store → the etcd v3 API. */
export function registerAgentCommand(program: Command): void {
  program
    .command('agent')
    .description('run the mesh agent: xDS from istiod, translated to APISIX, served over the etcd v3 API')
    .action(() => {
      throw new CliError('agent: not built yet', 1);
    });
}
