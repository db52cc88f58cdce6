import type { Command } from 'commander';
import { CliError } from '../cli/errors.js';

/** `apisix-mesh inject`: the injection applied to manifests on disk, like `istioctl kube-inject`. */
export function registerInjectCommand(program: Command): void {
  program
    .command('inject')
    .description('inject the mesh into the pod templates of Kubernetes manifests (like istioctl kube-inject)')
    .action(() => {
      throw new CliError('inject: not built yet', 1);
    });
}
