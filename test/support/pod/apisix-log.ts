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

/** The request line's upstream when APISIX went through the sidecar's TLS relay (a loopback alias, port 15083). */
const RELAY_UPSTREAM = String.raw`upstream: "http://127\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.\d+\.\d+:15083/`;

/**
 * nginx's report of an upstream connection the TLS relay closed (it refused the server: APISIX
 * answers 502), in the request itself and in Istio's retries (which log no request line): expected
 * wherever a test makes the relay refuse.
 */
export const RELAY_CLOSED_LINES: readonly RegExp[] = [
  new RegExp(String.raw`\[error\] .*upstream prematurely closed connection while reading response header from upstream, .*${RELAY_UPSTREAM}`),
  new RegExp(String.raw`\[error\] .*recv\(\) failed \(104: Connection reset by peer\) while reading response header from upstream, .*${RELAY_UPSTREAM}`),
  /\[error\] .*upstream prematurely closed connection while reading response header from upstream, client: [\d.]+$/,
  /\[error\] .*recv\(\) failed \(104: Connection reset by peer\) while reading response header from upstream, client: [\d.]+$/,
];
