/**
 * When to renew, as Istio's agents do: at half the certificate's lifetime (SECRET_GRACE_PERIOD_RATIO
 * 0.5) with ±1 % of it as jitter (SECRET_GRACE_PERIOD_RATIO_JITTER 0.01), so that pods started
 * together do not all call the CA together. The lifetime counts from when the certificate was
 * received, not from its NotBefore: istiod back-dates NotBefore by about two minutes, and a 3-minute
 * certificate would otherwise be renewed as soon as it arrived, again and again.
 */
export const RENEWAL_RATIO = 0.5;
export const RENEWAL_JITTER = 0.01;
/** never sooner than this, whatever the certificate (a CA handing out near-expired ones must not spin) */
export const MIN_RENEWAL_DELAY_MS = 1000;
/** Node's timers hold at most 2^31-1 ms (~24.8 days): a longer certificate is renewed early, which is harmless */
export const MAX_RENEWAL_DELAY_MS = 2 ** 31 - 1;

export function renewalDelayMs(receivedAt: number, notAfter: number, random: () => number = Math.random): number {
  const lifetime = Math.max(0, notAfter - receivedAt);
  const ratio = RENEWAL_RATIO + (random() * 2 - 1) * RENEWAL_JITTER;
  return Math.min(MAX_RENEWAL_DELAY_MS, Math.max(MIN_RENEWAL_DELAY_MS, Math.round(lifetime * ratio)));
}
