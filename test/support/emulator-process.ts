import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface EmulatorProcess {
  url: string;
  pid: number;
  /** The last few kB of the emulator's log, for failure messages. */
  log(): string;
  /** SIGTERM, then wait for the exit (SIGKILL after 5 s). */
  stop(): Promise<void>;
}

/**
 * `node dist/cli/main.js etcd` on a port the kernel picks (`--listen 127.0.0.1:0`: no window in which
 * another suite could take a port we chose), ready once its "etcd API listening" line names the port.
 * The test process is the parent, so the exit is reaped at once: a shell that waits for a pid to vanish
 * after `kill` sees it gone immediately (an orphan becomes a zombie until init reaps it, ~1 s here).
 */
export async function startEmulatorProcess(cli: string, args: string[] = []): Promise<EmulatorProcess> {
  const child = spawn(process.execPath, [cli, 'etcd', '--listen', '127.0.0.1:0', '--log-level', 'info', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`emulator did not start in 20 s: ${log}`)), 20_000);
    child.once('exit', (code) => reject(new Error(`emulator exited (${code}) before listening: ${log}`)));
    createInterface({ input: child.stderr }).on('line', (line) => {
      log = (log + line + '\n').slice(-4000);
      const m = /"httpPort":(\d+).*"msg":"etcd API listening/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
  });
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid!,
    log: () => log,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
