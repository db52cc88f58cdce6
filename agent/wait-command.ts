import { request } from 'node:http';
import type { Command } from 'commander';
import { CliError } from '../cli/errors.js';
import { parseDuration, parseListen } from './etcd/command.js';

interface WaitFlags {
  etcdAddress: string;
  timeout: string;
  interval: string;
}

/** One `GET /version` against the etcd API; true when it answers as etcd does (`etcdcluster`). */
function etcdAnswers(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host, port, path: '/version', method: 'GET', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (body.length < 4096) body += chunk;
      });
      res.on('end', () => resolve(res.statusCode === 200 && body.includes('"etcdcluster"')));
      res.on('error', () => resolve(false));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

/**
 * `apisix-mesh wait`: the agent container's postStart hook. The kubelet starts a pod's ordinary
 * containers one after the other and does not start the next one until the previous one's
 * postStart hook has returned (the mechanism behind Istio's holdApplicationUntilProxyStarts). The
 * APISIX image's entrypoint runs `apisix init_etcd` about 0.3 s after it starts and exits with "all
 * etcd nodes are unavailable" when nothing answers; holding it until the agent's etcd API answers
 * spares the pod a crash and the kubelet's 10 s restart back-off.
 */
export function registerWaitCommand(program: Command): void {
  program
    .command('wait')
    .description(
      'wait until the agent\'s etcd v3 API answers /version, then exit 0 (exit 1 when the timeout ' +
        'passes first). Injected as the agent container\'s postStart hook so that APISIX, the next ' +
        'container, starts only once it can read its configuration.',
    )
    .option('--etcd-address <host:port>', 'the agent\'s etcd v3 API', '127.0.0.1:15379')
    .option('--timeout <duration>', 'give up after this long (the kubelet then restarts the agent container)', '60s')
    .option('--interval <duration>', 'time between attempts', '100ms')
    .action(async (flags: WaitFlags) => {
      const { host, port } = parseListen('--etcd-address', flags.etcdAddress);
      const timeoutMs = parseDuration('--timeout', flags.timeout);
      const intervalMs = parseDuration('--interval', flags.interval);
      const started = Date.now();
      const deadline = started + timeoutMs;
      for (;;) {
        if (await etcdAnswers(host, port, Math.min(1000, timeoutMs))) {
          process.stdout.write(`apisix-mesh wait: the etcd API on ${flags.etcdAddress} answered after ${Date.now() - started} ms\n`);
          return;
        }
        if (Date.now() + intervalMs > deadline) {
          throw new CliError(`wait: the etcd API on ${flags.etcdAddress} did not answer within ${flags.timeout}`, 1);
        }
        await new Promise((resolve) => setTimeout(resolve, intervalMs));
      }
    });
}
