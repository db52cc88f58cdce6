import { networkInterfaces } from 'node:os';
import { Option, type Command } from 'commander';
import { CliError } from '../cli/errors.js';
import { CaptureConfigError } from './capture-config.js';
import { runCapture } from './capture.js';
import { hasGlobalIpv6 } from './ipv6.js';
import { envVarOf, parseIptablesOptions, resolveRaw, switchFlags, valueFlags, type FlagSpec } from './options.js';
import { ruleBudgetExcess } from './rules.js';
import { countingRunner, runProcess } from './run-process.js';

function helpText(spec: FlagSpec): string {
  const extras = [
    ...(spec.defaultText !== undefined ? [`default: ${spec.defaultText === '' ? 'none' : JSON.stringify(spec.defaultText)}`] : []),
    `env: ${envVarOf(spec.name)}${spec.arg ? '' : '=true'}`,
  ];
  return `${spec.description} (${extras.join('; ')})`;
}

/** `apisix-mesh iptables`: the init container's rule installer. */
export function registerIptablesCommand(program: Command): void {
  const command = program
    .command('iptables')
    .description(
      "install (or print, or remove) the nat rules that send the pod's TCP traffic through APISIX: " +
        'outbound TCP to --outbound-port, inbound TCP to --inbound-port, never the proxy uid/gid\'s own traffic. ' +
        'One iptables-restore --noflush per address family; running it again replaces the rules, never doubles them. ' +
        'Every flag can also be set by its APISIX_MESH_* environment variable; the flag wins.',
    );
  const optionOf = new Map<string, Option>();
  for (const spec of [...valueFlags, ...switchFlags]) {
    const option = new Option(`--${spec.name}${spec.arg ? ` ${spec.arg}` : ''}`, helpText(spec));
    optionOf.set(spec.name, option);
    command.addOption(option);
  }

  command.action(async (opts: Record<string, string | true | undefined>) => {
    const cli = new Map<string, string | true>();
    for (const [name, option] of optionOf) {
      const value = opts[option.attributeName()];
      if (value !== undefined) cli.set(name, value);
    }
    let options;
    try {
      options = parseIptablesOptions(resolveRaw(cli, process.env));
    } catch (err) {
      if (err instanceof CaptureConfigError) throw new CliError(`iptables: ${err.message}; nothing was changed`, 2);
      throw err;
    }
    const excess = options.cleanup ? null : ruleBudgetExcess(options.config);
    if (excess !== null) throw new CliError(`iptables: the configuration makes ${excess}; nothing was changed`, 2);

    const counter = countingRunner(runProcess);
    const log = (line: string): void => {
      process.stderr.write(`apisix-mesh iptables: ${line}\n`);
    };
    await runCapture({
      config: options.config,
      action: options.cleanup ? 'cleanup' : 'apply',
      dryRun: options.dryRun,
      backend: options.backend,
      ...(options.binDir ? { binDir: options.binDir } : {}),
      globalIpv6: hasGlobalIpv6(networkInterfaces()),
      run: counter.run,
      log,
      print: (text) => process.stdout.write(text),
    });
    log(`done; started ${counter.started.length} process(es): ${counter.started.map((c) => c.split(' ')[0]).join(', ') || 'none'}`);
  });
}
