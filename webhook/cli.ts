import type { Command } from 'commander';
import { CliError } from '../cli/errors.js';

/** `apisix-mesh inject` and `apisix-mesh webhook`. */
export function registerWebhookCommands(program: Command): void {
  program
    .command('inject')
    .description('inject the mesh into the pod templates of Kubernetes manifests (like istioctl kube-inject)')
    .action(() => {
      throw new CliError('inject: not built yet', 1);
    });
  program
    .command('webhook')
    .description('run the mutating admission webhook over HTTPS')
    .action(() => {
      throw new CliError('webhook: not built yet', 1);
    });
}
