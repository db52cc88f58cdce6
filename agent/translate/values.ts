import type { Duration } from '../xds/envoy-types.js';

/** Seconds as a number, keeping sub-second precision ("0.25s" → 0.25); undefined when absent. */
export function durationSeconds(d: Duration | null | undefined): number | undefined {
  if (!d) return undefined;
  const seconds = Number(d.seconds ?? 0) + (d.nanos ?? 0) / 1e9;
  return Math.round(seconds * 1e6) / 1e6;
}

/** A `google.protobuf.*Value` wrapper's value (protobufjs object form `{value}`). */
export function wrapped<T>(w: { value?: T } | null | undefined): T | undefined {
  return w?.value;
}

/** Escapes a literal for a PCRE pattern (what lua-resty-expr's `~~` runs). */
export function regexEscape(literal: string): string {
  return literal.replace(/[\\^$.|?*+()[\]{}\/-]/g, (c) => `\\${c}`);
}

/** Envoy's FractionalPercent → a 0..100 percentage (floating point: 0.5 % stays 0.5). */
export function percentOf(fraction: { numerator?: number; denominator?: string | number } | null | undefined): number {
  if (!fraction) return 100;
  const numerator = fraction.numerator ?? 0;
  const denominator = fraction.denominator ?? 'HUNDRED';
  const scale = denominator === 'MILLION' || denominator === 2 ? 1e6 : denominator === 'TEN_THOUSAND' || denominator === 1 ? 1e4 : 100;
  return Math.min(100, (numerator / scale) * 100);
}
