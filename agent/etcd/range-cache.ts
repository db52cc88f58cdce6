import type { RangeRequest } from '../store/store.js';

/** Default bound on the encoded range answers kept for the current revision. */
export const DEFAULT_RANGE_CACHE_BYTES = 64 * 1024 * 1024;

/**
 * One cache key per distinct request, however its JSON was written: whitespace, field order,
 * camelCase or defaults spelled out all decode to the same request and share one entry.
 */
export function rangeCacheKey(token: string | undefined, r: RangeRequest): string {
  return JSON.stringify([
    token ?? '',
    r.key,
    r.rangeEnd ?? null,
    r.limit ?? 0,
    r.revision ?? 0,
    r.sortOrder ?? 'NONE',
    r.sortTarget ?? 'KEY',
    r.keysOnly ?? false,
    r.countOnly ?? false,
    r.minModRevision ?? 0,
    r.maxModRevision ?? 0,
    r.minCreateRevision ?? 0,
    r.maxCreateRevision ?? 0,
  ]);
}

/**
 * Encoded range answers for the current revision (APISIX's workers all read the same prefixes),
 * bounded in bytes (keys and answers): the least recently used entries go first, and an answer
 * larger than the whole bound is not kept. The owner clears it when the revision changes.
 */
export class RangeCache {
  private readonly entries = new Map<string, Buffer>();
  private total = 0;

  constructor(private readonly maxBytes: number) {}

  get bytes(): number {
    return this.total;
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: string): Buffer | undefined {
    const hit = this.entries.get(key);
    if (hit) {
      this.entries.delete(key);
      this.entries.set(key, hit);
    }
    return hit;
  }

  set(key: string, answer: Buffer): void {
    const cost = key.length + answer.length;
    if (cost > this.maxBytes) return;
    const old = this.entries.get(key);
    if (old) {
      this.entries.delete(key);
      this.total -= key.length + old.length;
    }
    for (const [k, v] of this.entries) {
      if (this.total + cost <= this.maxBytes) break;
      this.entries.delete(k);
      this.total -= k.length + v.length;
    }
    this.entries.set(key, answer);
    this.total += cost;
  }

  clear(): void {
    this.entries.clear();
    this.total = 0;
  }
}
