/**
 * APISIX's error log is part of every assertion: APISIX logs an object it rejects ("failed to check
 * item data") and keeps serving the rest, so a suite that only looked at responses would pass with
 * half the configuration dropped. These are the lines at `[error]` or above.
 */
const SEVERE = /\[(error|crit|alert|emerg)\]/;

/**
 * Lines this machine causes and a pod would not: APISIX's nginx.conf asks for 20480 open files
 * (`worker_rlimit_nofile`); containerd gives containers a hard limit of 524288 or more, but this
 * sandbox caps every process (root included) at 20000 and cannot raise it, so each worker logs
 * `[alert] setrlimit(RLIMIT_NOFILE, 20480) failed (1: Operation not permitted)` and runs with 20000.
 */
const ENVIRONMENT = [/\[alert\] \d+#\d+: setrlimit\(RLIMIT_NOFILE, \d+\) failed \(1: Operation not permitted\)$/];

export function apisixErrorLines(log: string): string[] {
  return log.split('\n').filter((line) => SEVERE.test(line) && !ENVIRONMENT.some((e) => e.test(line)));
}

/** For a failure message: the lines, each cut to a readable length. */
export function describeLines(lines: string[], max = 10): string {
  return lines
    .slice(0, max)
    .map((l) => `  ${l.slice(0, 400)}`)
    .join('\n');
}
