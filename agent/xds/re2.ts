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

/** verdicts on short patterns, remembered (a route configuration repeats its regexes on every push) */
const verdicts = new Map<string, string | null>();
const MAX_REMEMBERED = 4096;
const MAX_REMEMBERED_LENGTH = 1024;

/** Why RE2 (as Envoy runs it under Istio) refuses the pattern, or null when it accepts it. */
export function re2Rejection(pattern: string): string | null {
  const known = verdicts.get(pattern);
  if (known !== undefined) return known;
  const verdict = judge(pattern);
  if (pattern.length <= MAX_REMEMBERED_LENGTH) {
    if (verdicts.size >= MAX_REMEMBERED) verdicts.clear();
    verdicts.set(pattern, verdict);
  }
  return verdict;
}

function judge(pattern: string): string | null {
  if (pattern.length > MAX_PATTERN_LENGTH) return `regex of ${pattern.length} characters is too long`;
  // compiling costs time and memory in proportion to the program (300 000 instructions: 1.5 s,
  // 150 MB): a pattern whose repeats expand far past the limit is refused before it is compiled
  const estimate = programSizeEstimate(pattern);
  if (estimate > 2 * ISTIO_MAX_PROGRAM_SIZE) return `RE2 program size of about ${estimate} exceeds the limit of ${ISTIO_MAX_PROGRAM_SIZE}`;
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

/**
 * Roughly RE2's program size, from the pattern text: every atom costs one, a repeat `{n,m}` copies
 * its atom (a group with all it holds) m times, as RE2 expands it. Escapes and classes count as one
 * atom; the syntax is not checked here (the compile that follows does).
 */
export function programSizeEstimate(pattern: string): number {
  const outer: number[] = [];
  let current = 0;
  let last = 0; // cost of the atom a quantifier would apply to
  for (let i = 0; i < pattern.length; ) {
    const c = pattern[i]!;
    if (c === '\\') {
      i += pattern[i + 1] === 'Q' ? Math.max(2, pattern.indexOf('\\E', i) + 2 - i) : 2;
      last = 1;
      current += 1;
    } else if (c === '[') {
      let j = i + 1;
      if (pattern[j] === '^') j++;
      if (pattern[j] === ']') j++;
      while (j < pattern.length && pattern[j] !== ']') j += pattern[j] === '\\' ? 2 : pattern.startsWith('[:', j) ? Math.max(1, pattern.indexOf(':]', j) + 2 - j) : 1;
      i = j + 1;
      last = 1;
      current += 1;
    } else if (c === '(') {
      outer.push(current);
      current = 0;
      i++;
    } else if (c === ')') {
      last = current + 1;
      current = (outer.pop() ?? 0) + last;
      i++;
    } else if (c === '{') {
      const repeat = /^\{(\d+)(,(\d*))?\}/.exec(pattern.slice(i, i + 16));
      if (repeat) {
        const max = repeat[2] === undefined ? Number(repeat[1]) : repeat[3] ? Number(repeat[3]) : Number(repeat[1]) + 1;
        current += Math.max(0, max - 1) * last;
        last *= Math.max(1, max);
        i += repeat[0].length;
      } else {
        last = 1;
        current += 1;
        i++;
      }
    } else {
      last = 1;
      current += 1;
      i++;
    }
  }
  while (outer.length) current += outer.pop()!;
  return current;
}
