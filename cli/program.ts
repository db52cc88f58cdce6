import { Command } from 'commander';
import { packageVersion } from './version.js';
import { registerWebhookCommands } from '../webhook/cli.js';
import { registerIptablesCommand } from '../iptables-init/cli.js';
import { registerAgentCommands } from '../agent/cli.js';

/** Builds the whole command tree; each part of the project registers its own commands. */
export function buildProgram(): Command {
  const program = new Command('apisix-mesh')
    .description(
      'Apache APISIX as a data plane in an Istio service mesh. One binary for every role: ' +
        'the injection webhook (inject, webhook), the init container that installs the traffic ' +
        'capture rules (iptables), and the per-pod mesh agent that serves istiod\'s configuration ' +
        'to APISIX through an emulated etcd v3 API (agent, etcd).',
    )
    .version(packageVersion(), '-V, --version', 'print the version and exit')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  program
    .command('version')
    .description('print the version of apisix-mesh and the Node.js it runs on')
    .action(() => {
      process.stdout.write(`apisix-mesh ${packageVersion()} (node ${process.version})\n`);
    });

  registerWebhookCommands(program);
  registerIptablesCommand(program);
  registerAgentCommands(program);
  return program;
}
