import type { Command } from 'commander';
import { CliError } from '../../cli/errors.js';

/** `apisix-mesh etcd`: the revisioned store and its etcd v3 API on their own. */
export function registerEtcdCommand(program: Command): void {
  program
    .command('etcd')
    .description('run the revisioned store and its etcd v3 API (HTTP gateway and gRPC) on its own')
    .action(() => {
      throw new CliError('etcd: not built yet', 1);
    });
}
