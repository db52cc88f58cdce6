import type { IncomingMessage, ServerResponse } from 'node:http';
import type { KvStore, StoreEvent, Watcher } from '../store/store.js';
import { ApiError, toApiError } from './api-error.js';
import type { Auth } from './auth.js';
import type { ResponseEncoder } from './encode.js';
import type { Logger } from './gateway.js';
import { JsonValueSplitter, ValueTooLargeError } from './json-values.js';
import { corsHeaders, sendApiError } from './http-framing.js';
import { WatchRequest as WatchRequestSchema, decodeMessageText, type Decoded } from './proto-json.js';
import type { StreamBacklog, WatchBudget } from './watch-budget.js';

const GRPC_CODE_NAMES: Record<number, string> = {
  3: 'InvalidArgument',
  7: 'PermissionDenied',
  16: 'Unauthenticated',
};
const GO_BUFFER = 2048;
const NEWLINE = Buffer.from('\n');

/**
 * The last event message encoded, shared by every stream: APISIX's workers all watch `/apisix/`
 * with watch id 0, so one revision's message is the same bytes for all of them (one Buffer, which
 * every socket queues by reference), and the store hands every watcher that wants all events the
 * very same array.
 */
let lastMessage: { events: readonly StoreEvent[]; id: string; revision: number; prevKv: boolean; encoder: ResponseEncoder; line: Buffer } | undefined;

function eventLine(encoder: ResponseEncoder, id: string, revision: number, events: readonly StoreEvent[], prevKv: boolean): Buffer {
  const m = lastMessage;
  if (m && m.events === events && m.id === id && m.revision === revision && m.prevKv === prevKv && m.encoder === encoder) return m.line;
  const line = Buffer.from(`{"result":${encoder.watchResponse({ revision, watchId: id, events, prevKv })}}\n`);
  lastMessage = { events, id, revision, prevKv, encoder, line };
  return line;
}

/** An in-stream error object, as etcd's gateway writes one (no newline) before it ends a stream. */
function streamError(grpcCode: number, httpCode: number, message: string, httpStatus: string): string {
  return `{"error":{"grpc_code":${grpcCode},"http_code":${httpCode},"message":${JSON.stringify(message)},"http_status":"${httpStatus}"}}`;
}

export interface WatchStreamOptions {
  store: KvStore;
  encoder: ResponseEncoder;
  auth: Auth;
  /** Interval of progress notifications for watches that ask for them (etcd: 10 minutes). */
  progressNotifyIntervalMs: number;
  /** What clients have not read yet, bounded (shared with the gRPC side). */
  budget: WatchBudget;
  /** Longest a request message in the body may take to arrive whole. */
  requestTimeoutMs: number;
  /** Largest request message in the body (JSON text). */
  maxRequestBytes: number;
  logger: Logger;
}

interface OpenWatch {
  watcher: Watcher | undefined;
  timer: NodeJS.Timeout | undefined;
  /** First revision this watch has not sent: where its client resumes if the stream is cut. */
  resumeAt: number;
}

/**
 * `POST /v3/watch`: one HTTP response per client stream, one JSON object per line. Requests in the
 * body (create, cancel, progress) are handled in order as they arrive. Nothing at all is sent
 * until there is a message, as etcd does, and a client that closes the connection takes its
 * watchers with it.
 */
export class WatchStreams {
  private readonly open = new Set<WatchStream>();

  constructor(private readonly options: WatchStreamOptions) {}

  get streamCount(): number {
    return this.open.size;
  }

  handle(req: IncomingMessage, res: ServerResponse, token: string | undefined): void {
    const s = new WatchStream(this.options, req, res, token, () => this.open.delete(s));
    this.open.add(s);
  }

  /** Server going away: etcd's gateway writes an in-stream error object (no newline) and ends. */
  shutdown(): void {
    for (const s of [...this.open]) s.shutdown();
  }
}

class WatchStream {
  private readonly watches = new Map<string, OpenWatch>();
  private nextId = 0n;
  private readonly requests: JsonValueSplitter;
  private requestTimer: NodeJS.Timeout | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private started = false;
  private ended = false;
  private broken = false;
  private requestDone = false;
  /** Go's net/http without Expect: 100-continue holds the response until the request body ends. */
  private readonly holdUntilRequestEnds: boolean;
  private held: Array<{ line: Buffer; written: () => void }> = [];
  private readonly backlog: StreamBacklog;

  constructor(
    private readonly o: WatchStreamOptions,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly token: string | undefined,
    private readonly onDone: () => void,
  ) {
    this.requests = new JsonValueSplitter(o.maxRequestBytes);
    this.backlog = o.budget.open(() => this.dropConnection('all watch streams together are over their bound'));
    const chunkedBody = /chunked/i.test(String(req.headers['transfer-encoding'] ?? ''));
    const expectContinue = /100-continue/i.test(String(req.headers.expect ?? ''));
    this.holdUntilRequestEnds = chunkedBody && !expectContinue;
    if (chunkedBody && expectContinue) res.setHeader('Connection', 'close');
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => this.onRequestData(chunk));
    req.on('end', () => this.onRequestEnd());
    res.on('close', () => this.finish());
    req.on('error', () => this.finish());
    // What the socket still holds counts until the socket is gone (a response "finishes" as soon
    // as its bytes are handed to the socket, read or not).
    req.socket.once('close', this.release);
  }

  /** Nothing of this stream is queued any more: its account and timers go. */
  private readonly release = (): void => {
    this.req.socket.off('close', this.release);
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
    this.backlog.dispose();
  };

  // ------------------------------------------------------------------ requests

  private onRequestData(chunk: string): void {
    if (this.broken || this.ended) return;
    const split = this.requests.push(chunk);
    this.handleRequests(split.values);
    if (split.error) return this.failRequest(split.error);
    // A message begun must arrive whole in time: a body that trickles forever holds nothing long.
    if (split.values.length > 0 || !this.requests.pending) this.clearRequestTimer();
    if (this.requests.pending && !this.requestTimer && !this.ended) {
      this.requestTimer = setTimeout(() => this.requestTimedOut(), this.o.requestTimeoutMs);
      this.requestTimer.unref();
    }
  }

  private onRequestEnd(): void {
    this.requestDone = true;
    this.clearRequestTimer();
    if (!this.broken && !this.ended) {
      const split = this.requests.end();
      this.handleRequests(split.values);
      if (split.error) this.failRequest(split.error);
    }
    if (this.held.length && !this.ended) {
      const held = this.held;
      this.held = [];
      for (const m of held) this.writeLine(m.line, m.written);
    }
  }

  private handleRequests(texts: string[]): void {
    for (const text of texts) {
      if (this.broken || this.ended) return;
      let msg: Decoded;
      try {
        msg = decodeMessageText(text, WatchRequestSchema);
      } catch (err) {
        this.failRequest(err);
        return;
      }
      this.handleRequest(msg);
    }
  }

  private requestTimedOut(): void {
    this.requestTimer = undefined;
    if (!this.requests.pending || this.ended) return;
    this.o.logger.warn({ client: this.client() }, 'etcd watch: a request message did not arrive whole in time; stream closed');
    this.abort(streamError(4, 504, 'context deadline exceeded', 'Gateway Timeout'), 504);
  }

  /**
   * A body that does not decode: a 500 if nothing was sent yet, else the rest is ignored. A
   * message over the size bound is etcd's "received message larger than max" (429), in-stream.
   */
  private failRequest(err: unknown): void {
    this.broken = true;
    this.clearRequestTimer();
    if (err instanceof ValueTooLargeError) {
      this.o.logger.warn({ client: this.client(), bytes: err.size }, 'etcd watch: request message over the size bound; stream closed');
      this.abort(streamError(8, 429, err.message, 'Too Many Requests'), 429);
      return;
    }
    if (this.started) return;
    let apiErr: ApiError;
    try {
      apiErr = toApiError(err);
    } catch {
      apiErr = new ApiError(String(err), 2, 500, 'decode');
    }
    this.ended = true;
    sendApiError(this.res, new ApiError(apiErr.message, 2, 500, 'decode'), 2);
    this.finish();
  }

  private handleRequest(msg: Decoded): void {
    const { store, encoder } = this.o;
    if (msg.create_request) return this.create(msg.create_request as Decoded);
    if (msg.cancel_request) {
      const id = BigInt((msg.cancel_request as Decoded).watch_id as bigint | undefined ?? 0n).toString();
      const w = this.watches.get(id);
      if (!w) return;
      this.stop(id);
      this.send(encoder.watchResponse({ revision: store.revision, watchId: id, canceled: true }));
      return;
    }
    if (msg.progress_request) {
      this.send(encoder.watchResponse({ revision: store.revision, watchId: '-1' }));
    }
  }

  private create(c: Decoded): void {
    const { store, encoder, auth } = this.o;
    const key = c.key instanceof Buffer ? c.key.toString('latin1') : '';
    const rangeEnd = c.range_end instanceof Buffer && c.range_end.length ? c.range_end.toString('latin1') : undefined;
    try {
      auth.check(this.token, 'READ', key, rangeEnd);
    } catch (err) {
      const e = toApiError(err);
      const reason = `rpc error: code = ${GRPC_CODE_NAMES[e.grpcCode] ?? 'Unknown'} desc = ${e.message}`;
      this.send(encoder.watchResponse({ revision: store.revision, watchId: '-1', created: true, canceled: true, cancelReason: reason }));
      return;
    }
    let id: string;
    const requested = typeof c.watch_id === 'bigint' ? c.watch_id : 0n;
    if (requested > 0n) {
      id = requested.toString();
      if (this.watches.has(id)) {
        this.send(
          encoder.watchResponse({
            revision: store.revision,
            watchId: '-1',
            created: true,
            canceled: true,
            cancelReason: 'mvcc: duplicate watch ID provided on the WatchStream',
          }),
        );
        return;
      }
    } else {
      while (this.watches.has(this.nextId.toString())) this.nextId++;
      id = this.nextId.toString();
      this.nextId++;
    }
    const filters = Array.isArray(c.filters) ? c.filters : [];
    const prevKv = c.prev_kv === true;
    const startRevision = typeof c.start_revision === 'bigint' ? Number(c.start_revision) : 0;
    const entry: OpenWatch = { watcher: undefined, timer: undefined, resumeAt: startRevision > 0 ? startRevision : store.revision + 1 };
    this.watches.set(id, entry);
    const start = store.watch(
      {
        key,
        rangeEnd,
        startRevision,
        prevKv,
        noPut: filters.includes('NOPUT') || filters.includes(0),
        noDelete: filters.includes('NODELETE') || filters.includes(1),
      },
      (revision, events) => this.sendEvents(id, revision, events, prevKv),
    );
    if (!this.send(encoder.watchResponse({ revision: store.revision, watchId: id, created: true }))) return;
    if (start.kind === 'compacted') {
      this.watches.delete(id);
      this.send(encoder.watchResponse({ revision: 0, watchId: id, canceled: true, compactRevision: start.compactRevision }));
      return;
    }
    entry.watcher = start.watcher;
    if (start.catchUp.length > 0) this.sendEvents(id, store.revision, start.catchUp, prevKv);
    if (c.progress_notify === true) {
      entry.timer = setInterval(() => {
        this.send(encoder.watchResponse({ revision: store.revision, watchId: id }));
      }, this.o.progressNotifyIntervalMs);
      entry.timer.unref();
    }
  }

  // ------------------------------------------------------------------ answers

  /** Events up to `revision` (a catch-up carries the current one): the watch resumes after it. */
  private sendEvents(id: string, revision: number, events: readonly StoreEvent[], prevKv: boolean): void {
    if (!this.send(eventLine(this.o.encoder, id, revision, events, prevKv))) return;
    const entry = this.watches.get(id);
    if (entry) entry.resumeAt = Math.max(entry.resumeAt, revision + 1);
  }

  /** Queues one message, unless the stream's backlog is over its bound (then it is cut). */
  private send(result: string | Buffer): boolean {
    if (this.ended) return false;
    const line = typeof result === 'string' ? Buffer.from(`{"result":${result}}\n`) : result;
    const admission = this.backlog.admit(line.length);
    if (admission === 'closed') return false;
    if (admission === 'stream-full') {
      this.cutSlowClient();
      return false;
    }
    const written = this.backlog.hold(line, line.length);
    if (this.holdUntilRequestEnds && !this.requestDone) {
      this.held.push({ line, written });
      return true;
    }
    this.writeLine(line, written);
    return true;
  }

  /**
   * The client has not read what it was sent, past the per-stream bound. etcd stops sending to a
   * watcher that falls behind and, once its next revision is compacted, cancels it with
   * `compact_revision`; so do we, at once, naming the first revision each watch did not send: a
   * client resuming there misses nothing (APISIX reloads everything and rewatches from it). The
   * stream ends; a client that still does not read is disconnected after the grace period.
   */
  private cutSlowClient(): void {
    const { encoder, logger, budget } = this.o;
    logger.warn(
      { client: this.client(), queuedBytes: this.backlog.queuedBytes, limit: budget.limits.streamBytes },
      'etcd watch: client does not read its watch stream; its watches are cancelled as compacted',
    );
    if (this.holdUntilRequestEnds && !this.requestDone) {
      this.dropConnection('its request body never ended and its held answers are over the bound');
      return;
    }
    const cancels = [...this.watches].map(([id, w]) => encoder.watchResponse({ revision: 0, watchId: id, canceled: true, compactRevision: w.resumeAt }));
    for (const id of [...this.watches.keys()]) this.stop(id);
    this.ended = true;
    this.clearRequestTimer();
    for (const c of cancels) this.writeLine(Buffer.from(`{"result":${c}}\n`), () => {});
    this.res.end();
    this.closeUnlessDrained('it did not read its cancelled stream in time');
  }

  /** After the grace period, a client that has not taken what was queued for it is disconnected. */
  private closeUnlessDrained(why: string): void {
    this.graceTimer = setTimeout(() => {
      if (this.backlog.queuedBytes > 0 || this.req.socket.writableLength > 0 || !this.requestDone) this.dropConnection(why);
      else this.release();
    }, this.o.budget.limits.drainGraceMs);
    this.graceTimer.unref();
  }

  private dropConnection(why: string): void {
    if (this.req.socket.destroyed) return;
    this.o.logger.warn({ client: this.client(), why }, 'etcd watch: connection closed');
    this.release();
    this.res.destroy();
    this.req.socket.destroy();
    this.finish();
  }

  /** Ends the stream with an in-stream error (etcd's gateway does this for stream errors). */
  private abort(errorObject: string, status: number): void {
    for (const id of [...this.watches.keys()]) this.stop(id);
    this.ended = true;
    if (!this.started) {
      corsHeaders(this.res);
      this.res.setHeader('Content-Type', 'application/json');
      this.res.writeHead(status);
      this.started = true;
    }
    this.res.end(errorObject);
    // The rest of the body may never come: close rather than wait for it.
    this.closeUnlessDrained('its request was refused and it did not go away');
  }

  private start(): void {
    if (this.started) return;
    this.started = true;
    corsHeaders(this.res);
    this.res.setHeader('Content-Type', 'application/json');
    this.res.setHeader('Grpc-Metadata-Content-Type', 'application/grpc');
    this.res.writeHead(200);
  }

  /** `line` ends with its newline (so that one shared Buffer serves every stream). */
  private writeLine(line: Buffer, written: () => void): void {
    if (this.res.writableEnded || this.res.destroyed) return written();
    this.start();
    // Go flushes each message; past its 2 KiB buffer the newline goes out as its own chunk.
    if (line.length - 1 >= GO_BUFFER) {
      this.res.write(line.subarray(0, -1), written);
      this.res.write(NEWLINE);
    } else {
      this.res.write(line, written);
    }
  }

  private stop(id: string): void {
    const w = this.watches.get(id);
    if (!w) return;
    w.watcher?.cancel();
    if (w.timer) clearInterval(w.timer);
    this.watches.delete(id);
  }

  private clearRequestTimer(): void {
    if (this.requestTimer) clearTimeout(this.requestTimer);
    this.requestTimer = undefined;
  }

  private client(): string {
    return `${this.req.socket.remoteAddress}:${this.req.socket.remotePort}`;
  }

  shutdown(): void {
    if (this.ended) {
      this.dropConnection('the server is shutting down');
      return;
    }
    if (this.started) {
      this.res.write('{"error":{"grpc_code":14,"http_code":503,"message":"transport is closing","http_status":"Service Unavailable"}}');
      this.res.end();
    } else {
      this.res.destroy();
    }
    this.finish();
  }

  /** The response is over (handed to the socket, or the connection is gone): so are its watches. */
  private finish(): void {
    this.clearRequestTimer();
    this.ended = true;
    for (const id of [...this.watches.keys()]) this.stop(id);
    // A keep-alive socket may carry many watches: do not keep one listener per finished stream.
    if (this.backlog.queuedBytes === 0 && !this.graceTimer) this.release();
    this.onDone();
  }
}
