import { boundedGet } from '../bounded-get.js';
import { JWKS_LIMITS, parseJwks, type JwtKey } from './jwks.js';
import type { RemoteJwksLookup, RemoteJwksSource, RemoteJwksState } from './jwt.js';

/**
 * The agent's side of `remote_jwks`: Envoy fetches a provider's JWKS itself; here the agent does (it
 * may reach out, APISIX gets only keys). Per URI:
 * - fetched at once when a filter first names it, with the provider's timeout, no redirects, a
 *   200 answer only and at most JWKS_LIMITS.bytes read (Envoy's fetcher also takes only a 200);
 * - the keys are used for the provider's cache duration at most, as Envoy's cache; a refresh starts
 *   ahead of that (so a slow JWKS server does not leave a gap) and is retried with back-off while
 *   the old keys last;
 * - without keys (never fetched, failed, expired) the provider's state is `failed`: its tokens get
 *   Envoy's 401 `Jwks remote fetch is failed`; retries back off from 1 s to 60 s.
 * Every change of what APISIX must get calls `onChange` (the agent re-translates); a refresh that
 * brings the same keys changes nothing.
 */
export interface JwksFetcherOptions {
  onChange: () => void;
  logger?: { info(msg: string): void; warn(msg: string): void };
  /** retry back-off after a failed fetch */
  retry?: { initialMs: number; maxMs: number };
  /** most URIs fetched at once (beyond: failed, fail closed) */
  maxSources?: number;
}

interface Entry {
  source: RemoteJwksSource;
  state: RemoteJwksState;
  /** when the current keys may no longer be used */
  expiresAt: number;
  keysText?: string;
  failures: number;
  timer?: NodeJS.Timeout;
  expiry?: NodeJS.Timeout;
  inFlight?: AbortController;
}

const NOT_FETCHED = 'not fetched yet';

export class JwksFetcher {
  private readonly entries = new Map<string, Entry>();
  private snapshot: Map<string, RemoteJwksState> | undefined;
  private closed = false;
  private readonly retry: { initialMs: number; maxMs: number };
  private readonly maxSources: number;

  constructor(private readonly options: JwksFetcherOptions) {
    this.retry = options.retry ?? { initialMs: 1000, maxMs: 60_000 };
    this.maxSources = options.maxSources ?? 100;
  }

  /** The URIs the current configuration names: new ones are fetched, others forgotten. */
  want(sources: readonly RemoteJwksSource[]): void {
    if (this.closed) return;
    const wanted = new Map(sources.slice(0, this.maxSources).map((s) => [s.uri, s]));
    for (const [uri, entry] of this.entries) {
      if (!wanted.has(uri)) {
        this.stop(entry);
        this.entries.delete(uri);
        this.changed(false);
      }
    }
    for (const [uri, source] of wanted) {
      const entry = this.entries.get(uri);
      if (entry) entry.source = source;
      else {
        const fresh: Entry = { source, state: { failed: NOT_FETCHED }, expiresAt: 0, failures: 0 };
        this.entries.set(uri, fresh);
        void this.fetch(fresh);
      }
    }
    if (sources.length > this.maxSources) this.options.logger?.warn(`${sources.length} remote JWKS named; only ${this.maxSources} are fetched, tokens of the others are refused`);
  }

  /** The state of every wanted URI (the same object until something changes). */
  states(): RemoteJwksLookup {
    if (!this.snapshot) this.snapshot = new Map([...this.entries].map(([uri, e]) => [uri, e.state]));
    return this.snapshot;
  }

  close(): void {
    this.closed = true;
    for (const entry of this.entries.values()) this.stop(entry);
    this.entries.clear();
  }

  private async fetch(entry: Entry): Promise<void> {
    entry.timer = undefined;
    const controller = new AbortController();
    entry.inFlight = controller;
    const outcome = await this.download(entry.source, controller);
    if (entry.inFlight !== controller || this.closed) return; // forgotten meanwhile
    entry.inFlight = undefined;
    if ('error' in outcome) return this.failed(entry, outcome.error);
    const parsed = parseJwks(outcome.text);
    if (parsed.error) return this.failed(entry, `invalid JWKS: ${parsed.error}`);
    this.succeeded(entry, outcome.text, parsed.keys);
  }

  /** The body of a 200 answer, or why not; never throws (bounded-get.ts). */
  private async download(source: RemoteJwksSource, controller: AbortController): Promise<{ text: string } | { error: string }> {
    let url: URL;
    try {
      url = new URL(source.uri);
    } catch {
      return { error: 'not a URL' };
    }
    const got = await boundedGet(url, { timeoutMs: source.timeoutMs, maxBytes: JWKS_LIMITS.bytes, headers: { accept: 'application/json' }, signal: controller.signal });
    return got.ok ? { text: got.body.toString('utf8') } : { error: got.reason };
  }

  private succeeded(entry: Entry, text: string, keys: JwtKey[]): void {
    const { cacheMs, timeoutMs } = entry.source;
    const first = !('keys' in entry.state);
    entry.failures = 0;
    entry.expiresAt = Date.now() + cacheMs;
    if (entry.keysText !== text || first) {
      entry.keysText = text;
      entry.state = { keys };
      if (first) this.options.logger?.info(`JWKS ${short(entry.source.uri)}: ${keys.length} keys fetched`);
      this.changed(true);
    }
    // refresh ahead of the expiry, so that a slow server does not leave the provider without keys
    this.schedule(entry, Math.max(cacheMs / 2, cacheMs - timeoutMs - 1000));
    clearTimeout(entry.expiry);
    entry.expiry = setTimeout(() => this.expire(entry), cacheMs);
    entry.expiry.unref();
  }

  private failed(entry: Entry, why: string): void {
    entry.failures++;
    if (entry.failures === 1) this.options.logger?.warn(`JWKS ${short(entry.source.uri)} not fetched (${why}); tokens of its providers are refused until it is${'keys' in entry.state ? ' once the keys fetched before expire' : ''}`);
    // not fetched yet and failed are the same to APISIX (401 for the provider's tokens): no change
    if (!('keys' in entry.state) && entry.state.failed === NOT_FETCHED) {
      entry.state = { failed: why };
      this.changed(false);
    }
    this.schedule(entry, Math.min(this.retry.maxMs, this.retry.initialMs * 2 ** Math.min(entry.failures - 1, 16)));
  }

  /** The keys' cache duration is over and no refresh succeeded: the provider has no keys. */
  private expire(entry: Entry): void {
    entry.expiry = undefined;
    if (!('keys' in entry.state)) return;
    // timers run on a monotonic clock and may fire a moment before Date.now() reaches the expiry:
    // wait out the rest instead of keeping the keys forever
    const left = entry.expiresAt - Date.now();
    if (left > 0) {
      entry.expiry = setTimeout(() => this.expire(entry), left + 1);
      entry.expiry.unref();
      return;
    }
    entry.state = { failed: 'keys expired, refresh failed' };
    entry.keysText = undefined;
    this.changed(true);
  }

  private schedule(entry: Entry, ms: number): void {
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => void this.fetch(entry), ms);
    entry.timer.unref();
  }

  private stop(entry: Entry): void {
    clearTimeout(entry.timer);
    clearTimeout(entry.expiry);
    entry.inFlight?.abort(new Error('no longer wanted'));
    entry.inFlight = undefined;
  }

  private changed(notify: boolean): void {
    this.snapshot = undefined;
    if (notify && !this.closed) this.options.onChange();
  }
}

/** A URI for a log line: scheme, host and path, never a query (it may hold a credential). */
function short(uri: string): string {
  try {
    const u = new URL(uri);
    return `${u.protocol}//${u.host}${u.pathname}`.slice(0, 120);
  } catch {
    return '(unparseable URI)';
  }
}
