/**
 * Keys inside the store are byte strings: every character is one byte (latin1). JavaScript compares
 * such strings exactly as etcd compares keys (bytewise), so a plain sorted array of them is the
 * store's index. Text keys (what the agent writes, UTF-8) and wire keys (base64) convert here.
 */
export type ByteKey = string;

export function keyFromText(text: string): ByteKey {
  // ASCII is its own UTF-8 (the agent's keys are): no conversion, no Buffer per lookup
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0x7f) return Buffer.from(text, 'utf8').toString('latin1');
  return text;
}

export function keyToText(key: ByteKey): string {
  return Buffer.from(key, 'latin1').toString('utf8');
}

export function keyFromBytes(bytes: Uint8Array): ByteKey {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

export function keyToBytes(key: ByteKey): Buffer {
  return Buffer.from(key, 'latin1');
}

/** etcd's prefix end: the key with its last byte incremented ("\0" for an empty key = everything). */
export function prefixEnd(key: ByteKey): ByteKey {
  for (let i = key.length - 1; i >= 0; i--) {
    const c = key.charCodeAt(i);
    if (c < 0xff) return key.slice(0, i) + String.fromCharCode(c + 1);
  }
  return '\0';
}

/**
 * The interval a request names, as etcd reads it: no range_end = the key alone; range_end "\0" =
 * every key ≥ key; otherwise [key, range_end).
 */
export interface KeyInterval {
  readonly start: ByteKey;
  /** undefined: single key; '' : unbounded above; otherwise exclusive end. */
  readonly end: ByteKey | undefined;
}

export function interval(key: ByteKey, rangeEnd?: ByteKey): KeyInterval {
  if (rangeEnd === undefined || rangeEnd.length === 0) return { start: key, end: undefined };
  if (rangeEnd === '\0') return { start: key, end: '' };
  return { start: key, end: rangeEnd };
}

export function inInterval(iv: KeyInterval, key: ByteKey): boolean {
  if (iv.end === undefined) return key === iv.start;
  if (key < iv.start) return false;
  return iv.end === '' || key < iv.end;
}

/** Do two intervals share a key? (etcd refuses txns whose writes overlap.) */
export function intervalsOverlap(a: KeyInterval, b: KeyInterval): boolean {
  const aEnd = a.end === undefined ? a.start + '\0' : a.end;
  const bEnd = b.end === undefined ? b.start + '\0' : b.end;
  const aBelowB = aEnd !== '' && aEnd <= b.start;
  const bBelowA = bEnd !== '' && bEnd <= a.start;
  return !aBelowB && !bBelowA;
}
