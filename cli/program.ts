import { Command } from 'commander';
import { packageVersion } from './version.js';

type RegisterCommands = (program: Command) => void;

/**
 * The parts of the project, each registering its own commands, and the commands each registers.
 * A part is imported only when the command line names one of its commands (or when it names none
 * of them, e.g. `--help`): the init container runs `apisix-mesh iptables` under a 64 Mi memory
 * limit, and must not pay for the webhook's or the agent's modules and libraries.
 */
export const PARTS: readonly { commands: readonly string[]; load: () => Promise<RegisterCommands> }[] = [
  { commands: ['inject', 'webhook'], load: async () => (await import('../webhook/cli.js')).registerWebhookCommands },
  { commands: ['iptables'], load: async () => (await import('../iptables-init/cli.js')).registerIptablesCommand },
  { commands: ['agent', 'etcd', 'wait'], load: async () => (await import('../agent/cli.js')).registerAgentCommands },
];

/** Commands defined here, which need no part. */
const OWN_COMMANDS = ['version'];

/**
 * Builds the command tree for `argv` (as `process.argv`): only the part owning the command it
 * names; every part when it names no known command (help, a typo, no command). Without `argv`,
 * the whole tree.
 */
export async function buildProgram(argv: readonly string[] = []): Promise<Command> {
  const program = new Command('apisix-mesh')
    .description(
      'Apache APISIX as a data plane in an Istio service mesh. One binary for every role: ' +
        'the injection webhook (inject, webhook), the init container that installs the traffic ' +
        'capture rules (iptables), and the per-pod mesh agent that serves istiod\'s configuration ' +
        'to APISIX through an emulated etcd v3 API (agent, etcd).',
    )
    .version(packageVersion(), '-V, --version', 'print the version and exit')
    .showHelpAfterError('(run with --help for usage)')
    // long option names (`--watch-buffer-total-bytes`) leave under 40 columns for the text, where
    // commander stops wrapping it by default; wrapped narrow text reads better than 300-column lines
    .configureHelp({ minWidthToWrap: 24 })
    .exitOverride();

  program
    .command('version')
    .description('print the version of apisix-mesh and the Node.js it runs on')
    .action(() => {
      process.stdout.write(`apisix-mesh ${packageVersion()} (node ${process.version})\n`);
    });

  const named = argv[2];
  const owner = PARTS.find((part) => named !== undefined && part.commands.includes(named));
  const parts = owner ? [owner] : named !== undefined && OWN_COMMANDS.includes(named) ? [] : PARTS;
  for (const register of await Promise.all(parts.map((part) => part.load()))) register(program);
  return program;
}
