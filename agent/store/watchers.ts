import { inInterval, interval, type ByteKey, type KeyInterval } from './keys.js';
import type { StoreEvent } from './types.js';

export interface WatchRequest {
  key: ByteKey;
  rangeEnd?: ByteKey;
  /** First revision to deliver; 0/undefined = from the next revision. */
  startRevision?: number;
  /** Deliver prevKv with events (the events carry it anyway; this tells the encoder). */
  prevKv?: boolean;
  noPut?: boolean;
  noDelete?: boolean;
}

/** Called once per revision with the events of that revision the watcher wants (never empty). */
export type WatchListener = (revision: number, events: readonly StoreEvent[]) => void;

export class Watcher {
  readonly interval: KeyInterval;
  readonly prevKv: boolean;
  private readonly noPut: boolean;
  private readonly noDelete: boolean;
  private active = true;

  constructor(
    request: WatchRequest,
    /** Revisions below this are not delivered live (they came in the catch-up or are not wanted). */
    public nextRevision: number,
    private readonly listener: WatchListener,
    private readonly onCancel: (w: Watcher) => void,
  ) {
    this.interval = interval(request.key, request.rangeEnd);
    this.prevKv = request.prevKv ?? false;
    this.noPut = request.noPut ?? false;
    this.noDelete = request.noDelete ?? false;
  }

  get isActive(): boolean {
    return this.active;
  }

  cancel(): void {
    if (!this.active) return;
    this.active = false;
    this.onCancel(this);
  }

  /** The events this watcher wants; the same array when it wants all of them (no copy). */
  select(events: readonly StoreEvent[]): readonly StoreEvent[] {
    let all = true;
    for (const e of events) {
      if (!this.wants(e)) {
        all = false;
        break;
      }
    }
    return all ? events : events.filter((e) => this.wants(e));
  }

  wants(e: StoreEvent): boolean {
    if (e.type === 'PUT' ? this.noPut : this.noDelete) return false;
    return inInterval(this.interval, e.kv.key);
  }

  deliver(revision: number, events: readonly StoreEvent[]): void {
    if (!this.active || revision < this.nextRevision) return;
    const mine = this.select(events);
    this.nextRevision = revision + 1;
    if (mine.length > 0) this.listener(revision, mine);
  }
}

/** The set of live watchers; fan-out is one pass per revision, values are shared, never copied. */
export class WatcherHub {
  private readonly watchers = new Set<Watcher>();

  get count(): number {
    return this.watchers.size;
  }

  add(request: WatchRequest, nextRevision: number, listener: WatchListener): Watcher {
    const w = new Watcher(request, nextRevision, listener, (x) => this.watchers.delete(x));
    this.watchers.add(w);
    return w;
  }

  notify(revision: number, events: readonly StoreEvent[]): void {
    // A listener may cancel watchers (a client gone away): iterate over a snapshot. Single-key
    // watchers first, then range watchers: the order etcd's watcher groups deliver in.
    const all = [...this.watchers];
    const ordered = all.filter((w) => w.interval.end === undefined).concat(all.filter((w) => w.interval.end !== undefined));
    for (const w of ordered) {
      try {
        w.deliver(revision, events);
      } catch {
        // One broken consumer must not stop the others; it cancels itself when its socket fails.
      }
    }
  }

  cancelAll(): void {
    for (const w of [...this.watchers]) w.cancel();
  }
}
