/** How many characters of a value an error message quotes at most. */
export const QUOTE_PREFIX_LENGTH = 64;

/**
 * A value for an error message: JSON-quoted when short, otherwise its first characters and its
 * length. Values come from pods, flags and the environment, and can be megabytes long; a message
 * that echoed them whole would make a log line (and an API answer) just as long.
 */
export function shortQuote(value: string, max: number = QUOTE_PREFIX_LENGTH): string {
  if (value.length <= max) return JSON.stringify(value);
  return `${JSON.stringify(value.slice(0, max))}… (${value.length} characters)`;
}
