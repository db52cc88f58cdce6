import type { ApisixVar } from './apisix-types.js';

/**
 * A random fraction of requests, exactly, as a lua-resty-expr condition. APISIX's own sampling is
 * coarser than Envoy's: fault-injection's `percentage` is an integer percent, so 0.1 % (Istio
 * writes `FractionalPercent` per million) cannot be said. nginx's `$request_id` is 32 hex digits
 * from the system's random source, fresh for every request; its digits `[offset, offset + 8)` read
 * as a number are uniform over [0, 16⁸), and "that number is below T" is a regex over those digits.
 * With T = round(fraction × 16⁸) the sampled share is the fraction to within 1.2 × 10⁻¹⁰, far
 * below anything Envoy's own `FractionalPercent` (per million at best) can say. Conditions that
 * use different digit windows are independent, as Envoy's separate random draws for a fault's delay
 * and its abort are.
 */
export const SAMPLE_DIGITS = 8;
const SCALE = 16 ** SAMPLE_DIGITS;

/** Which eight digits of `$request_id` a decision reads: one window per independent decision. */
export const SAMPLE_WINDOW = { faultAbort: 0, faultDelay: 8, cors: 16 } as const;

/**
 * The condition for "sampled" (`fraction` in [0, 1]); undefined when every request is (fraction
 * 1). A fraction of 0 samples nothing: a regex that never matches.
 */
export function sampleCondition(fraction: number, offset: number): ApisixVar | undefined {
  const threshold = Math.round(Math.min(1, Math.max(0, fraction)) * SCALE);
  if (threshold >= SCALE) return undefined;
  return ['request_id', '~~', `^.{${offset}}${belowRegex(threshold)}`.replace('^.{0}', '^')];
}

/**
 * A regex matching the SAMPLE_DIGITS-digit lower-case hex strings whose value is below
 * `threshold`: for each digit of the threshold that is not 0, "the digits before it equal, this one
 * smaller". `(?!)` (never) for 0, the empty regex (always) from 16⁸ up.
 */
export function belowRegex(threshold: number): string {
  if (threshold <= 0) return '(?!)';
  if (threshold >= SCALE) return '';
  const digits = threshold.toString(16).padStart(SAMPLE_DIGITS, '0');
  const branches: string[] = [];
  for (let i = 0; i < SAMPLE_DIGITS; i++) {
    const d = parseInt(digits[i]!, 16);
    if (d > 0) branches.push(`${digits.slice(0, i)}${digitsBelow(d)}`);
  }
  return `(?:${branches.join('|')})`;
}

/** A class of the hex digits 0 … d-1 (d in 1 … 15). */
function digitsBelow(d: number): string {
  const top = d - 1;
  if (top === 0) return '0';
  if (top <= 9) return `[0-${top}]`;
  return `[0-9a-${top.toString(16)}]`;
}
