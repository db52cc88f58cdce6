import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { CliError } from '../cli/errors.js';
import type { InjectionConfig } from './config/injection-config.js';
import type { InjectionMode } from './injection/outcome.js';

interface InjectOptions {
  filename: string;
  mode?: InjectionMode;
  config?: string;
  verbose?: boolean;
}

async function readInput(filename: string): Promise<string> {
  if (filename === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }
  try {
    return await readFile(filename, 'utf8');
  } catch (err) {
    throw new CliError(`inject: cannot read ${filename} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, 2);
  }
}

/** `apisix-mesh inject`: the injection applied to manifests on disk, like `istioctl kube-inject`. */
export function registerInjectCommand(program: Command): void {
  program
    .command('inject')
    .description(
      'inject the mesh into the pods and pod templates of Kubernetes manifests and print the result ' +
        '(like istioctl kube-inject). Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, ' +
        'CronJobs and Lists are injected; every other object is printed unchanged. Exit status: 0 done, ' +
        '1 a pod was refused (reason on stderr), 2 unreadable input or configuration.',
    )
    .requiredOption('-f, --filename <file>', 'the manifest file (one or many YAML documents); "-" reads standard input')
    .addOption(
      new Option('--mode <mode>', 'force the mode of every pod instead of the apisix-mesh.io/mode annotation and the default').choices([
        'sidecar',
        'gateway',
        'none',
      ]),
    )
    .option('--config <file>', 'the injection configuration file (YAML); default: the built-in defaults (see docs/injection.md)')
    .option('-v, --verbose', 'say on stderr what was done with each pod')
    .action(async (opts: InjectOptions) => {
      // The injection loads with the command, not with the CLI: other roles start without it.
      const [{ defaultInjectionConfig }, { InjectionConfigError, loadInjectionConfig }, { injectManifests, ManifestParseError, ManifestRejection }] =
        await Promise.all([import('./config/injection-config.js'), import('./config/parse-config.js'), import('./injection/manifests.js')]);
      let config: InjectionConfig = defaultInjectionConfig;
      if (opts.config !== undefined) {
        try {
          config = await loadInjectionConfig(opts.config);
        } catch (err) {
          if (err instanceof InjectionConfigError) throw new CliError(`inject: ${err.message}`, 2);
          throw err;
        }
      }
      const text = await readInput(opts.filename);
      const source = opts.filename === '-' ? 'stdin' : opts.filename;
      try {
        const result = injectManifests(text, { config, ...(opts.mode ? { mode: opts.mode } : {}) });
        process.stdout.write(result.yaml);
        if (opts.verbose) for (const line of result.report) process.stderr.write(`${line}\n`);
        for (const line of result.warnings) process.stderr.write(`apisix-mesh inject: warning: ${line}\n`);
      } catch (err) {
        if (err instanceof ManifestParseError) throw new CliError(`inject: ${source}: ${err.message}`, 2);
        if (err instanceof ManifestRejection) throw new CliError(`inject: ${source}: pod refused: ${err.message}`, 1);
        throw err;
      }
    });
}
