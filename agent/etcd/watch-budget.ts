/**
 * Bytes queued towards watch clients (HTTP and gRPC): what a client has not read yet stays in the
 * server's memory, so it is bounded per stream and over all streams together. etcd itself never
 * queues more than a bounded number of responses per watcher; one that falls behind stops getting
 * events and, once its next revision is compacted away, is cancelled with `compact_revision` — which
 * is what the streams answer when their own bound is reached (see watch-stream.ts, grpc.ts).
 */
export interface WatchBufferLimits {
  /** Queued bytes of one stream past which its watches are cancelled. */
  streamBytes: number;
  /** Queued bytes of all streams together past which the stream with the largest backlog is closed. */
  totalBytes: number;
  /** How long a cancelled stream may take to take its queued bytes before its connection is closed. */
  drainGraceMs: number;
}

export const DEFAULT_WATCH_BUFFER_LIMITS: WatchBufferLimits = {
  streamBytes: 16 * 1024 * 1024,
  totalBytes: 64 * 1024 * 1024,
  drainGraceMs: 10_000,
};

export type Admission = 'ok' | 'stream-full' | 'closed';

interface Payload {
  readonly bytes: number;
  holders: number;
}

/**
 * The shared account. A payload (an encoded message) written to several streams is counted once
 * in the total: APISIX's workers all watch the same prefix with the same watch id and get the very
 * same Buffer.
 */
export class WatchBudget {
  private totalBytes = 0;
  private readonly payloads = new Map<object, Payload>();
  private readonly streams = new Set<StreamBacklog>();

  constructor(readonly limits: WatchBufferLimits) {}

  get total(): number {
    return this.totalBytes;
  }

  /** A new stream's account; `closeNow` drops its connection (the all-streams bound was reached). */
  open(closeNow: () => void): StreamBacklog {
    const s = new StreamBacklog(this, closeNow);
    this.streams.add(s);
    return s;
  }

  /** @internal */
  hold(payload: object, bytes: number): void {
    const p = this.payloads.get(payload);
    if (p) p.holders++;
    else {
      this.payloads.set(payload, { bytes, holders: 1 });
      this.totalBytes += bytes;
    }
  }

  /** @internal */
  release(payload: object): void {
    const p = this.payloads.get(payload);
    if (!p) return;
    if (--p.holders === 0) {
      this.payloads.delete(payload);
      this.totalBytes -= p.bytes;
    }
  }

  /** @internal */
  forget(stream: StreamBacklog): void {
    this.streams.delete(stream);
  }

  /**
   * Makes room for `bytes` more: while the total would pass its bound, the stream with the largest
   * backlog is closed (a client that reads has next to nothing queued). False when `asking` itself
   * was closed.
   */
  makeRoom(asking: StreamBacklog, bytes: number): boolean {
    while (this.totalBytes + bytes > this.limits.totalBytes) {
      let largest: StreamBacklog | undefined;
      for (const s of this.streams) if (s.queuedBytes > 0 && (!largest || s.queuedBytes > largest.queuedBytes)) largest = s;
      if (!largest) break;
      largest.close();
      if (largest === asking) return false;
    }
    return true;
  }
}

/** One stream's account: what it has queued and not yet handed to the kernel. */
export class StreamBacklog {
  private queued = 0;
  private disposed = false;
  private readonly held = new Map<object, { bytes: number; count: number }>();

  constructor(
    private readonly budget: WatchBudget,
    private readonly closeNow: () => void,
  ) {}

  get queuedBytes(): number {
    return this.queued;
  }

  /** May `bytes` more be queued? Checked before each message, so a reader that keeps up always gets the next one. */
  admit(bytes: number): Admission {
    if (this.disposed) return 'closed';
    if (this.queued > this.budget.limits.streamBytes) return 'stream-full';
    return this.budget.makeRoom(this, bytes) ? 'ok' : 'closed';
  }

  /** Counts `payload` as queued; the returned function (a write callback) counts it as gone. */
  hold(payload: object, bytes: number): () => void {
    if (this.disposed) return () => {};
    this.queued += bytes;
    const h = this.held.get(payload);
    if (h) h.count++;
    else this.held.set(payload, { bytes, count: 1 });
    this.budget.hold(payload, bytes);
    let released = false;
    return () => {
      if (released || this.disposed) return;
      released = true;
      this.queued -= bytes;
      const mine = this.held.get(payload)!;
      if (--mine.count === 0) this.held.delete(payload);
      this.budget.release(payload);
    };
  }

  /** Drops the connection now (and the account with it). */
  close(): void {
    if (this.disposed) return;
    this.dispose();
    this.closeNow();
  }

  /** The stream is gone: whatever it still held no longer counts. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const [payload, h] of this.held) for (let i = 0; i < h.count; i++) this.budget.release(payload);
    this.held.clear();
    this.queued = 0;
    this.budget.forget(this);
  }
}
