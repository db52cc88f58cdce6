import { randomBytes } from 'node:crypto';
import type { ByteKey } from './keys.js';
import { StoreError } from './errors.js';

/** etcd's smallest lease TTL with default raft timing (1.5 election timeouts, rounded up). */
export const MIN_LEASE_TTL = 2;
/** etcd's `lease.MaxLeaseTTL`: longer grants are refused with "too large lease TTL". */
export const MAX_LEASE_TTL = 9_000_000_000;
/** Default bound on live leases (etcd bounds them only through its backend quota). */
export const DEFAULT_MAX_LEASES = 10_000;

interface Lease {
  readonly id: string;
  readonly grantedTtl: number;
  expiresAt: number;
  readonly keys: Set<ByteKey>;
}

/**
 * Lease bookkeeping only: which keys hang on which lease and when it runs out. Deleting the keys
 * of a revoked or expired lease is the store's job (it is a write with its own revision).
 */
export class LeaseTable {
  private readonly leases = new Map<string, Lease>();

  constructor(
    private readonly clock: () => number,
    private readonly maxLeases = DEFAULT_MAX_LEASES,
  ) {}

  /** Normalises an id given as decimal text (etcd's int64); '0' stays '0'. */
  static normaliseId(id: string | number | bigint): string {
    return BigInt(id).toString();
  }

  has(id: string): boolean {
    return this.leases.has(id);
  }

  grant(ttlSeconds: number, requestedId?: string): { id: string; ttl: number } {
    if (ttlSeconds > MAX_LEASE_TTL) throw new StoreError('lease-ttl-too-large');
    if (this.leases.size >= this.maxLeases) throw new StoreError('no-space');
    let id = requestedId && requestedId !== '0' ? LeaseTable.normaliseId(requestedId) : undefined;
    if (id !== undefined && this.leases.has(id)) throw new StoreError('lease-exists');
    while (id === undefined || this.leases.has(id)) id = randomLeaseId();
    const ttl = Math.max(MIN_LEASE_TTL, Math.trunc(ttlSeconds));
    this.leases.set(id, { id, grantedTtl: ttl, expiresAt: this.clock() + ttl * 1000, keys: new Set() });
    return { id, ttl };
  }

  /** Remaining TTL after renewal, or undefined when the lease does not exist. */
  keepAlive(id: string): number | undefined {
    const lease = this.leases.get(id);
    if (!lease) return undefined;
    lease.expiresAt = this.clock() + lease.grantedTtl * 1000;
    return lease.grantedTtl;
  }

  timeToLive(id: string): { ttl: number; grantedTtl: number; keys: ByteKey[] } | undefined {
    const lease = this.leases.get(id);
    if (!lease) return undefined;
    // etcd truncates the remaining time to whole seconds (59 right after a 60 s grant).
    const remaining = Math.max(0, Math.floor((lease.expiresAt - this.clock()) / 1000));
    return { ttl: remaining, grantedTtl: lease.grantedTtl, keys: [...lease.keys].sort() };
  }

  ids(): string[] {
    return [...this.leases.keys()];
  }

  attach(id: string, key: ByteKey): void {
    this.leases.get(id)?.keys.add(key);
  }

  detach(id: string, key: ByteKey): void {
    this.leases.get(id)?.keys.delete(key);
  }

  /** Forgets the lease and returns the keys that were attached to it. */
  remove(id: string): ByteKey[] | undefined {
    const lease = this.leases.get(id);
    if (!lease) return undefined;
    this.leases.delete(id);
    return [...lease.keys].sort();
  }

  expired(): string[] {
    const now = this.clock();
    return [...this.leases.values()].filter((l) => l.expiresAt <= now).map((l) => l.id);
  }

  /** Milliseconds until the next lease runs out, or undefined when there is none. */
  nextExpiryIn(): number | undefined {
    let next: number | undefined;
    for (const l of this.leases.values()) next = next === undefined ? l.expiresAt : Math.min(next, l.expiresAt);
    return next === undefined ? undefined : Math.max(0, next - this.clock());
  }
}

function randomLeaseId(): string {
  // A positive int64, like etcd's generated ids.
  const id = randomBytes(8).readBigUInt64BE() & 0x7fffffffffffffffn;
  return id === 0n ? '1' : id.toString();
}
