import type { IncomingMessage, ServerResponse } from 'node:http';
import type { KvStore, StoreEvent, Watcher } from '../store/store.js';
import { ApiError, toApiError } from './api-error.js';
import type { Auth } from './auth.js';
import type { ResponseEncoder } from './encode.js';
import { GoJsonError, firstJsonValue } from './go-json.js';
import { corsHeaders, sendApiError } from './http-framing.js';
import { WatchRequest as WatchRequestSchema, decodeMessageText, type Decoded } from './proto-json.js';

const GRPC_CODE_NAMES: Record<number, string> = {
  3: 'InvalidArgument',
  7: 'PermissionDenied',
  16: 'Unauthenticated',
};
const GO_BUFFER = 2048;

/**
 * The last event message encoded, shared by every stream: APISIX's workers all watch `/apisix/`
 * with watch id 0, so one revision's message is the same text for all of them, and the store hands
 * every watcher that wants all events the very same array.
 */
let lastMessage: { events: readonly StoreEvent[]; id: string; revision: number; prevKv: boolean; encoder: ResponseEncoder; text: string } | undefined;

function eventMessage(encoder: ResponseEncoder, id: string, revision: number, events: readonly StoreEvent[], prevKv: boolean): string {
  const m = lastMessage;
  if (m && m.events === events && m.id === id && m.revision === revision && m.prevKv === prevKv && m.encoder === encoder) return m.text;
  const text = encoder.watchResponse({ revision, watchId: id, events, prevKv });
  lastMessage = { events, id, revision, prevKv, encoder, text };
  return text;
}

export interface WatchStreamOptions {
  store: KvStore;
  encoder: ResponseEncoder;
  auth: Auth;
  /** Interval of progress notifications for watches that ask for them (etcd: 10 minutes). */
  progressNotifyIntervalMs: number;
}

interface OpenWatch {
  watcher: Watcher | undefined;
  timer: NodeJS.Timeout | undefined;
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
  private input = '';
  private parsed = 0;
  private started = false;
  private ended = false;
  private broken = false;
  private requestDone = false;
  /** Go's net/http without Expect: 100-continue holds the response until the request body ends. */
  private readonly holdUntilRequestEnds: boolean;
  private held: string[] = [];

  constructor(
    private readonly o: WatchStreamOptions,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly token: string | undefined,
    private readonly onDone: () => void,
  ) {
    const chunkedBody = /chunked/i.test(String(req.headers['transfer-encoding'] ?? ''));
    const expectContinue = /100-continue/i.test(String(req.headers.expect ?? ''));
    this.holdUntilRequestEnds = chunkedBody && !expectContinue;
    if (chunkedBody && expectContinue) res.setHeader('Connection', 'close');
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      this.input += chunk;
      this.processInput(false);
    });
    req.on('end', () => {
      this.requestDone = true;
      this.processInput(true);
      if (this.held.length) {
        const held = this.held;
        this.held = [];
        for (const m of held) this.writeLine(m);
      }
    });
    res.on('close', () => this.finish());
    req.on('error', () => this.finish());
  }

  private processInput(atEnd: boolean): void {
    while (!this.broken && !this.ended) {
      let first;
      try {
        first = firstJsonValue(this.input, this.parsed);
      } catch (err) {
        if (err instanceof GoJsonError && err.message === 'unexpected EOF' && !atEnd) return; // wait for more
        this.fail(err);
        return;
      }
      if (first.text === undefined) {
        this.input = '';
        this.parsed = 0;
        return;
      }
      this.parsed = first.end;
      if (this.parsed > 65536) {
        // A long-lived streamed body: drop what has been handled.
        this.input = this.input.slice(this.parsed);
        this.parsed = 0;
      }
      let msg: Decoded;
      try {
        msg = decodeMessageText(first.text, WatchRequestSchema);
      } catch (err) {
        this.fail(err);
        return;
      }
      this.handleRequest(msg);
    }
  }

  /** A body that does not decode: a 500 if nothing was sent yet, else the rest is ignored. */
  private fail(err: unknown): void {
    this.broken = true;
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
    const entry: OpenWatch = { watcher: undefined, timer: undefined };
    this.watches.set(id, entry);
    const start = store.watch(
      {
        key,
        rangeEnd,
        startRevision: typeof c.start_revision === 'bigint' ? Number(c.start_revision) : 0,
        prevKv,
        noPut: filters.includes('NOPUT') || filters.includes(0),
        noDelete: filters.includes('NODELETE') || filters.includes(1),
      },
      (revision, events) => this.sendEvents(id, revision, events, prevKv),
    );
    this.send(encoder.watchResponse({ revision: store.revision, watchId: id, created: true }));
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

  private sendEvents(id: string, revision: number, events: readonly StoreEvent[], prevKv: boolean): void {
    this.send(eventMessage(this.o.encoder, id, revision, events, prevKv));
  }

  private send(result: string): void {
    if (this.ended) return;
    const line = `{"result":${result}}`;
    if (this.holdUntilRequestEnds && !this.requestDone) {
      this.held.push(line);
      return;
    }
    this.writeLine(line);
  }

  private start(): void {
    if (this.started) return;
    this.started = true;
    corsHeaders(this.res);
    this.res.setHeader('Content-Type', 'application/json');
    this.res.setHeader('Grpc-Metadata-Content-Type', 'application/grpc');
    this.res.writeHead(200);
  }

  private writeLine(line: string): void {
    if (this.ended) return;
    this.start();
    // Go flushes each message; past its 2 KiB buffer the newline goes out as its own chunk.
    if (line.length >= GO_BUFFER) {
      this.res.write(line);
      this.res.write('\n');
    } else {
      this.res.write(line + '\n');
    }
  }

  private stop(id: string): void {
    const w = this.watches.get(id);
    if (!w) return;
    w.watcher?.cancel();
    if (w.timer) clearInterval(w.timer);
    this.watches.delete(id);
  }

  shutdown(): void {
    if (this.ended) return;
    if (this.started) {
      this.res.write('{"error":{"grpc_code":14,"http_code":503,"message":"transport is closing","http_status":"Service Unavailable"}}');
      this.res.end();
    } else {
      this.res.destroy();
    }
    this.finish();
  }

  private finish(): void {
    if (this.ended && this.watches.size === 0) {
      this.onDone();
      return;
    }
    this.ended = true;
    for (const id of [...this.watches.keys()]) this.stop(id);
    this.onDone();
  }
}
