import type { Command } from 'commander';
import { CliError } from '../cli/errors.js';

/** `apisix-mesh agent` and `apisix-mesh etcd`. */
export function registerAgentCommands(program: Command): void {
  program
    .command('agent')
    .description('run the mesh agent: xDS from istiod, translated to APISIX, served over the etcd v3 API')
    .action(() => {
      throw new CliError('agent: not built yet', 1);
    });
  program
    .command('etcd')
    .description('run the revisioned store and its etcd v3 API (HTTP gateway and gRPC) on its own')
    .action(() => {
      throw new CliError('etcd: not built yet', 1);
    });
}
