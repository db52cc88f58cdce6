import type { Command } from 'commander';
import { CliError } from '../cli/errors.js';
import { parseDuration, parseListen } from './etcd/command.js';
import { boundedGet } from './bounded-get.js';
import { formatHostPort, type HostPort } from '../cli/host-port.js';

interface WaitFlags {
  etcdAddress: string;
  timeout: string;
  interval: string;
  statusAddress?: string;
  configTimeout: string;
}

/** One `GET /version` against the etcd API; true when it answers as etcd does (`etcdcluster`). */
async function etcdAnswers(address: HostPort, timeoutMs: number): Promise<boolean> {
  const got = await boundedGet(new URL(`http://${formatHostPort(address)}/version`), { timeoutMs, maxBytes: 4096 });
  return got.ok && got.body.toString('utf8').includes('"etcdcluster"');
}

/** One `GET /healthz/configured` against the agent's status port; true on 200. */
async function agentConfigured(address: HostPort, timeoutMs: number): Promise<boolean> {
  return (await boundedGet(new URL(`http://${formatHostPort(address)}/healthz/configured`), { timeoutMs, maxBytes: 4096 })).ok;
}

/** Polls `check` every `intervalMs` until it is true (→ ms waited) or `timeoutMs` passes (→ undefined). */
async function poll(check: (attemptMs: number) => Promise<boolean>, timeoutMs: number, intervalMs: number): Promise<number | undefined> {
  const started = Date.now();
  const deadline = started + timeoutMs;
  for (;;) {
    if (await check(Math.min(1000, timeoutMs))) return Date.now() - started;
    if (Date.now() + intervalMs > deadline) return undefined;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/**
 * `apisix-mesh wait`: the agent container's postStart hook. The kubelet starts a pod's ordinary
 * containers one after the other and does not start the next one until the previous one's
 * postStart hook has returned (the mechanism behind Istio's holdApplicationUntilProxyStarts). The
 * APISIX image's entrypoint runs `apisix init_etcd` about 0.3 s after it starts and exits with "all
 * etcd nodes are unavailable" when nothing answers; holding it until the agent's etcd API answers
 * spares the pod a crash and the kubelet's 10 s restart back-off.
 *
 * With `--status-address` it then waits, up to `--config-timeout`, for the agent's first complete
 * configuration from istiod to be in the store (`/healthz/configured`; not the workload certificate,
 * which only mTLS needs: native sidecars' startup probe waits for both). APISIX's workers then read
 * each directory whole at start; started earlier, they receive the whole first configuration as
 * one watch response, which every Lua VM reads, copies and splits before decoding it, and whose
 * peak stays in the workers' memory (BENCHMARKS.md: 315-512 against 171 MiB per worker at 10,000
 * services). Past the timeout APISIX starts anyway, as before: the agent not having a configuration
 * yet (istiod unreachable) is no reason to restart it.
 */
export function registerWaitCommand(program: Command): void {
  program
    .command('wait')
    .description(
      'wait until the agent\'s etcd v3 API answers /version (exit 1 when --timeout passes first), then, ' +
        'with --status-address, until the agent has its first configuration (exit 0 anyway once ' +
        '--config-timeout passes). ' +
        'Injected as the agent container\'s postStart hook so that APISIX, the next container, starts ' +
        'only once it can read its configuration, and reads the first one whole.',
    )
    .option('--etcd-address <host:port>', 'the agent\'s etcd v3 API', '127.0.0.1:15379')
    .option('--timeout <duration>', 'give up after this long (the kubelet then restarts the agent container)', '60s')
    .option('--interval <duration>', 'time between attempts', '100ms')
    .option('--status-address <host:port>', 'then wait for the agent\'s /healthz/configured there (its first configuration from istiod)')
    .option('--config-timeout <duration>', 'with --status-address: how long to wait for it before exiting 0 anyway', '30s')
    .action(async (flags: WaitFlags) => {
      const etcd = parseListen('--etcd-address', flags.etcdAddress);
      const timeoutMs = parseDuration('--timeout', flags.timeout);
      const intervalMs = parseDuration('--interval', flags.interval);
      const status = flags.statusAddress === undefined ? undefined : parseListen('--status-address', flags.statusAddress);
      const configTimeoutMs = parseDuration('--config-timeout', flags.configTimeout);
      const answered = await poll((attemptMs) => etcdAnswers(etcd, attemptMs), timeoutMs, intervalMs);
      if (answered === undefined) throw new CliError(`wait: the etcd API on ${flags.etcdAddress} did not answer within ${flags.timeout}`, 1);
      process.stdout.write(`apisix-mesh wait: the etcd API on ${flags.etcdAddress} answered after ${answered} ms\n`);
      if (!status) return;
      const configured = await poll((attemptMs) => agentConfigured(status, attemptMs), configTimeoutMs, intervalMs);
      process.stdout.write(
        configured === undefined
          ? `apisix-mesh wait: the agent on ${flags.statusAddress} had no configuration within ${flags.configTimeout}; APISIX starts without it and receives it when the agent has it\n`
          : `apisix-mesh wait: the agent on ${flags.statusAddress} had its first configuration after ${configured} ms more\n`,
      );
    });
}
