import type { Command } from 'commander';
import { CliError } from '../../cli/errors.js';

/** `apisix-mesh webhook`: the mutating admission webhook over HTTPS. */
export function registerWebhookCommand(program: Command): void {
  program
    .command('webhook')
    .description('run the mutating admission webhook over HTTPS')
    .action(() => {
      throw new CliError('webhook: not built yet', 1);
    });
}
