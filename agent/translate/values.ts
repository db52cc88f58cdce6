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
  const { numerator, scale } = fractionParts(fraction);
  return Math.min(100, (numerator / scale) * 100);
}

/** A FractionalPercent's numerator and its denominator as a number (100, 10 000 or 1 000 000). */
export function fractionParts(fraction: { numerator?: number; denominator?: string | number }): { numerator: number; scale: number } {
  const denominator = fraction.denominator ?? 'HUNDRED';
  const scale = denominator === 'MILLION' || denominator === 2 ? 1e6 : denominator === 'TEN_THOUSAND' || denominator === 1 ? 1e4 : 100;
  return { numerator: Math.min(fraction.numerator ?? 0, scale), scale };
}

/**
 * nginx variables that hold a literal `$` and `\`, defined by the sidecar's APISIX config with
 * `geo` (whose values are never expanded): webhook/injection/apisix-config.ts. APISIX expands
 * `$name` / `${name}` in the values its plugins resolve (core.utils.resolve_var: proxy-rewrite
 * headers, fault-injection bodies; the redirect plugin's `uri`), and offers no escape that leaves the
 * value as it was (`\$` stays in the output with its backslash; the redirect plugin drops a lone
 * `\`). A literal `$` is therefore written as `${apisix_mesh_dollar}`, which the same expansion turns
 * back into `$`, and a `\` before it as `${apisix_mesh_backslash}`.
 */
export const DOLLAR_VARIABLE = 'apisix_mesh_dollar';
export const BACKSLASH_VARIABLE = 'apisix_mesh_backslash';

/**
 * A literal for a value APISIX passes through resolve_var: every `$` (and the backslashes right
 * before one, which would stop the expansion) become the variables above.
 */
export function resolveVarLiteral(text: string): string {
  return text.replace(/\\*\$/g, (run) => `\${${BACKSLASH_VARIABLE}}`.repeat(run.length - 1) + `\${${DOLLAR_VARIABLE}}`);
}

/** A literal for the redirect plugin's `uri`, whose parser also drops a backslash not before `$`. */
export function redirectUriLiteral(text: string): string {
  return text.replace(/[\\$]/g, (c) => `\${${c === '$' ? DOLLAR_VARIABLE : BACKSLASH_VARIABLE}}`);
}

/** A literal inside an ngx.re.sub replacement template (proxy-rewrite / redirect `regex_uri`). */
export function substitutionLiteral(text: string): string {
  return text.replace(/\$/g, '$$$$');
}

/**
 * Characters that must never reach a header or a request line: CR and LF would split it, NUL ends
 * it early. Envoy refuses them in header names and values (and redirect targets) of a configuration.
 */
export function hasControlBreak(text: string): boolean {
  return /[\0\r\n]/.test(text);
}
