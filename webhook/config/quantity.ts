/** A Kubernetes quantity is short; anything longer is a mistake, refused before it is parsed. */
export const MAX_QUANTITY_LENGTH = 64;

/**
 * Kubernetes' quantity grammar (apimachinery resource.Quantity) without a minus sign: resources
 * cannot be negative. One pass, no nested repetition: linear in the (bounded) input.
 */
const QUANTITY = /^\+?(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d{1,3})?$/;
const SUFFIX_SCALE: Record<string, number> = {
  '': 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

/**
 * The quantity's value (CPUs, bytes), or null when `text` is not a quantity. Approximate beyond
 * 2^53, which only matters for comparing absurd sizes.
 */
export function quantityValue(text: string): number | null {
  const match = text.length <= MAX_QUANTITY_LENGTH ? QUANTITY.exec(text) : null;
  if (!match) return null;
  const suffix = match[2] ?? '';
  const scale = /^[eE]/.test(suffix) ? 10 ** Number(suffix.slice(1)) : SUFFIX_SCALE[suffix]!;
  return Number(match[1]) * scale;
}
