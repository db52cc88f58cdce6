import type { Cluster } from '../xds/envoy-types.js';
import { durationSeconds, wrapped } from './values.js';

type Note = (reason: string, detail: string, skipped?: boolean) => void;

/**
 * Envoy's outlier detection, carried to the sidecar's Lua (agent/l4/lua/apisix_mesh/outlier.lua) as
 * one label of the cluster's upstream. APISIX's own health checks cannot say it: lua-resty-healthcheck
 * has no ejection time — a node marked down by passive checks comes back only through an active
 * check (APISIX refuses passive checks without one), so a TCP check re-admitted an ejected host
 * after its `interval` — nor a cap on how many hosts are down, nor two counters at once. The Lua
 * counts each try's answer per host (5xx and gateway errors: 502, 503, 504 and failed connections,
 * as Envoy counts a local-origin failure when `split_external_local_origin_errors` is off), ejects
 * a host at `consecutive_5xx` / `consecutive_gateway_failure` consecutive failures (each with its
 * enforcing percentage), never more than `max_ejection_percent` of the hosts at once, for
 * `base_ejection_time` × the times it was ejected (at most `max_ejection_time`), and the picker
 * skips ejected hosts.
 */
export const OUTLIER_LABEL = 'apisix-mesh-outlier';

export interface OutlierPolicy {
  /** consecutive 5xx before ejection, and the % of such ejections enforced (0: counter off) */
  consecutive5xx: number;
  enforcing5xx: number;
  consecutiveGateway: number;
  enforcingGateway: number;
  /** seconds */
  baseEjection: number;
  maxEjection: number;
  interval: number;
  maxEjectionPercent: number;
  alwaysEjectOne: boolean;
  /** Envoy's healthy_panic_threshold: below this % of hosts not ejected, all hosts are used */
  panicThreshold: number;
}

/** The policy, or undefined when nothing would ever be ejected. */
export function outlierPolicy(cluster: Cluster, note: Note): OutlierPolicy | undefined {
  const od = cluster.outlier_detection;
  if (!od) return undefined;
  refuseUnenforceable(cluster, note);
  const policy: OutlierPolicy = {
    consecutive5xx: wrapped(od.consecutive_5xx) ?? 5,
    enforcing5xx: percent(wrapped(od.enforcing_consecutive_5xx) ?? 100),
    consecutiveGateway: wrapped(od.consecutive_gateway_failure) ?? 5,
    enforcingGateway: percent(wrapped(od.enforcing_consecutive_gateway_failure) ?? 0),
    baseEjection: positive(durationSeconds(od.base_ejection_time), 30),
    maxEjection: 0,
    interval: positive(durationSeconds(od.interval), 10),
    maxEjectionPercent: percent(wrapped(od.max_ejection_percent) ?? 10),
    alwaysEjectOne: wrapped(od.always_eject_one_host) ?? false,
    panicThreshold: panicThreshold(cluster),
  };
  // Envoy: max_ejection_time defaults to 300 s, and is never below base_ejection_time
  policy.maxEjection = Math.max(positive(durationSeconds(od.max_ejection_time), 300), policy.baseEjection);
  const counts5xx = policy.consecutive5xx > 0 && policy.enforcing5xx > 0;
  const countsGateway = policy.consecutiveGateway > 0 && policy.enforcingGateway > 0;
  return counts5xx || countsGateway ? policy : undefined;
}

/** The label value: `key=number` pairs (APISIX's label values are non-blank, at most 256 bytes). */
export function outlierLabel(p: OutlierPolicy): string {
  return [
    `c5=${p.consecutive5xx}`, `e5=${p.enforcing5xx}`, `cg=${p.consecutiveGateway}`, `eg=${p.enforcingGateway}`,
    `base=${p.baseEjection}`, `max=${p.maxEjection}`, `int=${p.interval}`, `pct=${p.maxEjectionPercent}`,
    `one=${p.alwaysEjectOne ? 1 : 0}`, `panic=${p.panicThreshold}`,
  ].join(',');
}

/**
 * What the Lua does not do, said (the cluster still gets what it does): success-rate and
 * failure-percentage ejection need per-interval statistics over all hosts; local-origin errors
 * counted apart; ejection jitter.
 */
function refuseUnenforceable(cluster: Cluster, note: Note): void {
  const od = cluster.outlier_detection!;
  // Envoy's defaults: enforcing_success_rate 100 (Istio writes 0), enforcing_failure_percentage 0
  if ((wrapped(od.enforcing_success_rate) ?? 100) > 0) note('outlier-success-rate', 'success-rate ejection is not enforced');
  if ((wrapped(od.enforcing_failure_percentage) ?? 0) > 0 || (wrapped(od.enforcing_failure_percentage_local_origin) ?? 0) > 0) {
    note('outlier-failure-percentage', 'failure-percentage ejection is not enforced');
  }
  if (od.split_external_local_origin_errors) note('outlier-local-origin', 'local-origin errors are counted as gateway errors, not apart');
  if ((durationSeconds(od.max_ejection_time_jitter) ?? 0) > 0) note('outlier-jitter', 'ejections have no jitter');
}

/** Envoy's default is 50 %; Istio writes 0 (an empty Percent: minHealthPercent's default). */
function panicThreshold(cluster: Cluster): number {
  const threshold = cluster.common_lb_config?.healthy_panic_threshold;
  if (!threshold) return 50;
  return percent(Number(threshold.value ?? 0) || 0);
}

function percent(n: number): number {
  return Math.max(0, Math.min(100, n));
}

function positive(seconds: number | undefined, fallback: number): number {
  return seconds !== undefined && seconds > 0 ? seconds : fallback;
}
