import type * as grpc from '@grpc/grpc-js';
import type { KvStore, StoreEvent, Watcher } from '../store/store.js';
import type { Logger } from './gateway.js';
import type { Decoded } from './proto-json.js';
import { int } from './requests.js';
import type { StreamBacklog, WatchBudget } from './watch-budget.js';

export interface GrpcWatchContext {
  store: KvStore;
  header: (revision?: number) => object;
  eventOut: (e: StoreEvent, prevKv: boolean) => object;
  /** A gRPC message → the gateway's decoded shape. */
  decode: (raw: unknown) => Decoded;
  budget: WatchBudget;
  logger: Logger;
}

/** Roughly what an event costs once serialised: its keys and values plus framing. */
function eventBytes(e: StoreEvent, prevKv: boolean): number {
  let n = 48 + e.kv.key.length + e.kv.value.byteLength;
  if (prevKv && e.prevKv) n += e.prevKv.key.length + e.prevKv.value.byteLength + 32;
  return n;
}
const CONTROL_BYTES = 64;

interface OpenWatch {
  watcher: Watcher | undefined;
  /** First revision not sent: where the client resumes if the stream is cut. */
  resumeAt: number;
}

/**
 * etcd's Watch service (bidi stream) with the HTTP side's bound on what a client leaves unread:
 * past it, every watch on the stream is cancelled with `compact_revision` = the first revision it
 * did not send (what etcd does with a watcher that fell behind compaction) and the call ends; a
 * client that still does not read has its queued messages dropped after the grace period.
 */
export function grpcWatch(ctx: GrpcWatchContext): grpc.handleBidiStreamingCall<unknown, object> {
  return (call) => new GrpcWatchStream(ctx, call);
}

class GrpcWatchStream {
  private readonly watches = new Map<string, OpenWatch>();
  private nextId = 0n;
  private ended = false;
  private graceTimer: NodeJS.Timeout | undefined;
  private readonly backlog: StreamBacklog;

  constructor(
    private readonly ctx: GrpcWatchContext,
    private readonly call: grpc.ServerDuplexStream<unknown, object>,
  ) {
    this.backlog = ctx.budget.open(() => this.drop('all watch streams together are over their bound'));
    call.on('data', (raw: unknown) => this.onRequest(ctx.decode(raw)));
    call.on('end', () => {
      this.stopAll();
      if (!this.ended) call.end();
      this.ended = true;
    });
    const gone = () => this.finish();
    call.on('error', gone);
    call.on('cancelled', gone);
    call.on('close', gone);
    call.on('finish', gone);
  }

  private onRequest(msg: Decoded): void {
    if (this.ended) return;
    const { store, header } = this.ctx;
    if (msg.create_request) return this.create(msg.create_request as Decoded);
    if (msg.cancel_request) {
      const id = String((msg.cancel_request as Decoded).watch_id ?? 0n);
      if (!this.watches.has(id)) return;
      this.stop(id);
      this.send({ header: header(), watch_id: id, canceled: true }, CONTROL_BYTES);
    } else if (msg.progress_request) {
      this.send({ header: header(store.revision), watch_id: '-1' }, CONTROL_BYTES);
    }
  }

  private create(c: Decoded): void {
    const { store, header } = this.ctx;
    let id: string;
    const requested = typeof c.watch_id === 'bigint' ? c.watch_id : 0n;
    if (requested > 0n) {
      id = requested.toString();
      if (this.watches.has(id)) {
        this.send({ header: header(), watch_id: '-1', created: true, canceled: true, cancel_reason: 'mvcc: duplicate watch ID provided on the WatchStream' }, CONTROL_BYTES);
        return;
      }
    } else {
      while (this.watches.has(this.nextId.toString())) this.nextId++;
      id = (this.nextId++).toString();
    }
    const filters = Array.isArray(c.filters) ? c.filters : [];
    const prevKv = c.prev_kv === true;
    const key = c.key instanceof Buffer ? c.key.toString('latin1') : '';
    const rangeEnd = c.range_end instanceof Buffer && c.range_end.length ? c.range_end.toString('latin1') : undefined;
    const startRevision = int(c.start_revision);
    const entry: OpenWatch = { watcher: undefined, resumeAt: startRevision > 0 ? startRevision : store.revision + 1 };
    this.watches.set(id, entry);
    const start = store.watch(
      { key, rangeEnd, startRevision, prevKv, noPut: filters.includes('NOPUT'), noDelete: filters.includes('NODELETE') },
      (revision, events) => this.sendEvents(id, revision, events, prevKv),
    );
    if (!this.send({ header: header(), watch_id: id, created: true }, CONTROL_BYTES)) return;
    if (start.kind === 'compacted') {
      this.watches.delete(id);
      this.send({ header: header(0), watch_id: id, canceled: true, compact_revision: String(start.compactRevision) }, CONTROL_BYTES);
      return;
    }
    entry.watcher = start.watcher;
    if (start.catchUp.length) this.sendEvents(id, store.revision, start.catchUp, prevKv);
  }

  private sendEvents(id: string, revision: number, events: readonly StoreEvent[], prevKv: boolean): void {
    let bytes = CONTROL_BYTES;
    for (const e of events) bytes += eventBytes(e, prevKv);
    const message = { header: this.ctx.header(revision), watch_id: id, events: events.map((e) => this.ctx.eventOut(e, prevKv)) };
    if (!this.send(message, bytes)) return;
    const entry = this.watches.get(id);
    if (entry) entry.resumeAt = Math.max(entry.resumeAt, revision + 1);
  }

  private send(message: object, bytes: number): boolean {
    if (this.ended || this.call.writableEnded || this.call.destroyed) return false;
    const admission = this.backlog.admit(bytes);
    if (admission === 'closed') return false;
    if (admission === 'stream-full') {
      this.cutSlowClient();
      return false;
    }
    this.call.write(message, this.backlog.hold(message, bytes));
    return true;
  }

  private cutSlowClient(): void {
    const { header, logger, budget } = this.ctx;
    logger.warn(
      { client: this.call.getPeer(), queuedBytes: this.backlog.queuedBytes, limit: budget.limits.streamBytes },
      'etcd gRPC watch: client does not read its watch stream; its watches are cancelled as compacted',
    );
    const cancels = [...this.watches].map(([id, w]) => ({ header: header(0), watch_id: id, canceled: true, compact_revision: String(w.resumeAt) }));
    this.stopAll();
    this.ended = true;
    for (const m of cancels) this.call.write(m);
    this.call.end();
    this.graceTimer = setTimeout(() => this.drop('it did not read its cancelled stream in time'), budget.limits.drainGraceMs);
    this.graceTimer.unref();
  }

  /** Drops what is queued for the client (grpc-js cannot reset one call from the server side). */
  private drop(why: string): void {
    if (this.call.destroyed) return;
    this.ctx.logger.warn({ client: this.call.getPeer(), why }, 'etcd gRPC watch: queued messages dropped');
    this.stopAll();
    this.ended = true;
    this.backlog.dispose();
    this.call.destroy();
    this.finish();
  }

  private stop(id: string): void {
    this.watches.get(id)?.watcher?.cancel();
    this.watches.delete(id);
  }

  private stopAll(): void {
    for (const id of [...this.watches.keys()]) this.stop(id);
  }

  /** The call is over (finished, cancelled by the client, failed): watches and account go with it. */
  private finish(): void {
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
    this.stopAll();
    this.ended = true;
    // A cancelled call never completes its pending writes (grpc-js drops them): count them as gone.
    this.backlog.dispose();
  }
}
