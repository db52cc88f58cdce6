import { RE2JS } from 're2js';

/**
 * What Envoy accepts as a `safe_regex`: RE2 syntax (no backreferences, no lookaround, no possessive
 * quantifiers, repeat counts up to 1000), and an RE2 program no larger than the error level of the
 * runtime key `re2.max_program_size.error_level` — Envoy NACKs a configuration holding anything
 * else. Istio's bootstrap raises that key from Envoy's 100 to 32768. re2js is a JavaScript port of
 * RE2 (via RE2/J), so syntax and program size are RE2's; it does not know RE2's `\C` (any byte),
 * which is refused here although RE2 takes it.
 */
export const ISTIO_MAX_PROGRAM_SIZE = 32768;

/** Longest pattern worth compiling: a larger one cannot stay within the program size anyway. */
const MAX_PATTERN_LENGTH = 64 * 1024;

const verdicts = new Map<string, string | null>();
const MAX_REMEMBERED = 4096;

/** Why RE2 (as Envoy runs it under Istio) refuses the pattern, or null when it accepts it. */
export function re2Rejection(pattern: string): string | null {
  const known = verdicts.get(pattern);
  if (known !== undefined) return known;
  const verdict = judge(pattern);
  if (verdicts.size >= MAX_REMEMBERED) verdicts.clear();
  verdicts.set(pattern, verdict);
  return verdict;
}

function judge(pattern: string): string | null {
  if (pattern.length > MAX_PATTERN_LENGTH) return `regex of ${pattern.length} characters is too long`;
  let compiled: RE2JS;
  try {
    compiled = RE2JS.compile(pattern);
  } catch (err) {
    // re2js quotes the offending part after a colon; keep it short
    return `invalid RE2 regex: ${(err as Error).message.replace(/^error parsing regexp: /, '').slice(0, 120)}`;
  }
  const size = compiled.programSize();
  if (size > ISTIO_MAX_PROGRAM_SIZE) return `RE2 program size ${size} exceeds the limit of ${ISTIO_MAX_PROGRAM_SIZE}`;
  return null;
}
