/**
 * Two simulated APISIX data planes, written from APISIX's `apisix/core/config_etcd.lua` and
 * lua-resty-etcd's HTTP mode (see the etcd gateway reference, §1.1–1.5). They speak real HTTP to an
 * etcd v3 gateway and keep the view APISIX would keep: key → value for every JSON object under the
 * prefix (APISIX drops non-object values such as the `init_dir` markers).
 *
 * - `Apisix3Client` (3.4+): one readdir of the whole prefix, then ONE long watch on `/apisix/` from
 *   revision+1; on `canceled` with `compact_revision` it reloads everything and rewatches from the
 *   compact revision; a header revision lower than expected means "etcd may be restarted" → full
 *   resync; a broken stream is rewatched from the same revision.
 * - `Apisix2Client` (2.x–3.3): a readdir per directory, then per directory short watches from
 *   prev_index+1 that read `created` plus one message and close; a compacted answer reloads that
 *   directory.
 */
import http from 'node:http';

export const APISIX_DIRECTORIES = [
  'routes',
  'services',
  'upstreams',
  'ssls',
  'consumers',
  'consumer_groups',
  'global_rules',
  'plugin_configs',
  'plugin_metadata',
  'protos',
  'secrets',
  'stream_routes',
] as const;

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string | undefined): string => (s === undefined ? '' : Buffer.from(s, 'base64').toString('utf8'));
/** lua-resty-etcd get_range_end(): last byte + 1. */
export function rangeEnd(key: string): string {
  return key.slice(0, -1) + String.fromCharCode(key.charCodeAt(key.length - 1) + 1);
}

interface WireKv {
  key: string;
  value?: string;
  mod_revision?: string;
  create_revision?: string;
}
interface WireEvent {
  type?: 'PUT' | 'DELETE';
  kv: WireKv;
}
interface WatchResult {
  header?: { revision?: string };
  created?: boolean;
  canceled?: boolean;
  compact_revision?: string;
  events?: WireEvent[];
}

/** APISIX keeps only values that decode to a JSON object (cjson.safe.decode, table check). */
export function apisixValue(text: string): string | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? text : undefined;
  } catch {
    return undefined;
  }
}

/** The view APISIX should end up with for a given store content. */
export function expectedView(entries: Iterable<[string, string]>, prefix = '/apisix/'): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of entries) {
    if (!k.startsWith(prefix)) continue;
    const kept = apisixValue(v);
    if (kept !== undefined) out.set(k, kept);
  }
  return out;
}

const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 4 });

/** lua-resty-etcd's unary call: POST a JSON body without Content-Type, JSON answer. */
async function post(base: string, path: string, body: unknown): Promise<{ status: number; json: any }> {
  const data = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${base}/v3${path}`,
      { method: 'POST', agent: keepAlive, headers: { 'Content-Length': data.length } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          try {
            resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) });
          } catch (err) {
            reject(new Error(`bad answer from ${path}: ${text.slice(0, 200)}`));
          }
        });
        res.on('error', reject);
        res.on('close', () => {
          if (!res.complete) reject(new Error(`${path}: connection closed mid-answer`));
        });
      },
    );
    // lua-resty-etcd has a timeout on every call; a stuck call must not hang the client.
    req.setTimeout(5000, () => req.destroy(new Error(`${path}: timeout`)));
    req.on('error', reject);
    req.end(data);
  });
}

/** lua-resty-etcd's readdir body: every field sent, zeros included. */
function readdirBody(key: string, withRangeEnd = true): object {
  return {
    key: b64(key),
    ...(withRangeEnd ? { range_end: b64(rangeEnd(key)) } : {}),
    limit: 0,
    revision: 0,
    sort_order: 0,
    sort_target: 0,
    serializable: false,
    keys_only: false,
    count_only: false,
    min_mod_revision: 0,
    max_mod_revision: 0,
    min_create_revision: 0,
    max_create_revision: 0,
  };
}

async function readdir(base: string, key: string): Promise<{ revision: number; kvs: WireKv[] }> {
  const r = await post(base, '/kv/range', readdirBody(key));
  if (r.status !== 200) throw new Error(`readdir ${key}: HTTP ${r.status} ${JSON.stringify(r.json)}`);
  const rev = Number(r.json?.header?.revision);
  if (!Number.isFinite(rev)) throw new Error('etcd response missing header.revision');
  return { revision: rev, kvs: r.json.kvs ?? [] };
}

/**
 * One watch request: calls `onMessage` for every line (lua-resty-etcd reads until a chunk ends with
 * "\n" and splits on "\n"); resolves when the stream ends or the consumer says stop.
 */
function openWatch(
  base: string,
  createRequest: object,
  onMessage: (m: { result?: WatchResult; error?: unknown }) => 'continue' | 'stop',
): { done: Promise<'ended' | 'stopped' | 'error'>; close: () => void } {
  const data = Buffer.from(JSON.stringify({ create_request: createRequest }));
  let req: http.ClientRequest;
  const done = new Promise<'ended' | 'stopped' | 'error'>((resolve) => {
    req = http.request(`${base}/v3/watch`, { method: 'POST', agent: false, headers: { 'Content-Length': data.length } }, (res) => {
      if ((res.statusCode ?? 0) >= 300) {
        res.resume();
        resolve('error');
        return;
      }
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        if (!buf.endsWith('\n')) return;
        const lines = buf.split('\n').filter((l) => l.length > 0);
        buf = '';
        for (const line of lines) {
          let m: { result?: WatchResult; error?: unknown };
          try {
            m = JSON.parse(line);
          } catch {
            req.destroy();
            resolve('error');
            return;
          }
          if (onMessage(m) === 'stop') {
            req.destroy();
            resolve('stopped');
            return;
          }
        }
      });
      res.on('end', () => resolve(buf.length ? 'error' : 'ended'));
      res.on('error', () => resolve('error'));
      res.on('close', () => resolve('ended'));
    });
    req.on('error', () => resolve('error'));
    req.end(data);
  });
  return { done, close: () => req.destroy() };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

abstract class SimulatedApisix {
  readonly view = new Map<string, string>();
  readonly stats = { readdirs: 0, watches: 0, compactions: 0, resyncs: 0, errors: 0 };
  protected running = false;
  protected loop: Promise<void> | undefined;
  /** Open watch connections, closed on stop (2.x has one per directory). */
  protected readonly open = new Set<{ close(): void }>();

  constructor(protected readonly baseUrl: () => string, protected readonly prefix = '/apisix') {}

  start(): void {
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.resume();
    for (const w of this.open) w.close();
    await Promise.race([this.loop, sleep(3000)]);
  }

  private gate: Promise<void> | undefined;
  private openGate: (() => void) | undefined;

  /**
   * Closes the watch connections and holds off rewatching until `resume()`: an APISIX worker that
   * was busy (or whose connection broke) while the store moved on, so it comes back from an old
   * revision.
   */
  pause(): void {
    this.gate = new Promise((r) => (this.openGate = r));
    for (const w of this.open) w.close();
  }

  resume(): void {
    this.openGate?.();
    this.gate = undefined;
  }

  protected async whenNotPaused(): Promise<void> {
    while (this.gate) await this.gate;
  }

  protected async watchOnce(w: { done: Promise<'ended' | 'stopped' | 'error'>; close(): void }): Promise<'ended' | 'stopped' | 'error'> {
    this.open.add(w);
    this.stats.watches++;
    try {
      return await w.done;
    } finally {
      this.open.delete(w);
    }
  }

  protected apply(e: WireEvent): void {
    const key = unb64(e.kv.key);
    if (e.type === 'DELETE') {
      this.view.delete(key);
      return;
    }
    const v = apisixValue(unb64(e.kv.value));
    if (v === undefined) this.view.delete(key);
    else this.view.set(key, v);
  }

  protected abstract run(): Promise<void>;

  /** Waits until the view equals `expected`; throws with the difference after `timeoutMs`. */
  async waitForView(expected: ReadonlyMap<string, string>, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const diff = viewDiff(expected, this.view);
      if (diff.length === 0) return;
      if (Date.now() > deadline) throw new Error(`${this.constructor.name} view differs: ${diff.slice(0, 5).join('; ')}`);
      await sleep(10);
    }
  }
}

export function viewDiff(expected: ReadonlyMap<string, string>, actual: ReadonlyMap<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of expected) {
    if (!actual.has(k)) out.push(`missing ${k}`);
    else if (actual.get(k) !== v) out.push(`stale ${k}`);
  }
  for (const k of actual.keys()) if (!expected.has(k)) out.push(`unexpected ${k}`);
  return out;
}

export class Apisix3Client extends SimulatedApisix {
  /** watch_ctx.rev: the next revision the main watcher wants. */
  watchRevision = 0;
  /** prev_index of the (single, merged) config view. */
  private prevIndex = 0;

  private async fullLoad(): Promise<void> {
    const { revision, kvs } = await readdir(this.baseUrl(), this.prefix);
    this.stats.readdirs++;
    this.view.clear();
    for (const kv of kvs) this.apply({ kv });
    this.prevIndex = revision;
  }

  protected async run(): Promise<void> {
    while (this.running) {
      try {
        await this.fullLoad();
        this.watchRevision = this.prevIndex + 1;
        break;
      } catch {
        this.stats.errors++;
        await sleep(50);
      }
    }
    while (this.running) {
      let reload = false;
      await this.whenNotPaused();
      const w = openWatch(
        this.baseUrl(),
        { key: b64(this.prefix + '/'), range_end: b64(this.prefix + '0'), start_revision: this.watchRevision },
        (m) => {
          if (m.error) return 'stop';
          const r = m.result ?? {};
          if (r.canceled) {
            if (r.compact_revision) {
              this.stats.compactions++;
              this.watchRevision = Number(r.compact_revision);
              reload = true;
            }
            return 'stop';
          }
          if (r.created) return 'continue';
          const rev = Number(r.header?.revision);
          if (!Number.isFinite(rev) || rev === 0) return 'stop';
          if (rev < this.watchRevision) {
            // APISIX ≥ 3.12: "etcd may be restarted" → resync everything.
            this.stats.resyncs++;
            this.watchRevision = rev;
            reload = true;
            return 'stop';
          }
          if (rev > this.watchRevision) this.watchRevision = rev + 1;
          if (rev > this.prevIndex) for (const e of r.events ?? []) this.apply(e);
          return 'continue';
        },
      );
      const how = await this.watchOnce(w);
      if (!this.running) break;
      if (how === 'error') {
        this.stats.errors++;
        await sleep(20);
      }
      if (reload) {
        try {
          await this.fullLoad();
        } catch {
          this.stats.errors++;
          await sleep(50);
        }
      }
    }
  }
}

export class Apisix2Client extends SimulatedApisix {
  private readonly prevIndex = new Map<string, number>();

  constructor(baseUrl: () => string, prefix = '/apisix', private readonly directories: readonly string[] = APISIX_DIRECTORIES) {
    super(baseUrl, prefix);
  }

  private async loadDir(dirKey: string): Promise<void> {
    const { revision, kvs } = await readdir(this.baseUrl(), dirKey);
    this.stats.readdirs++;
    for (const k of [...this.view.keys()]) if (k.startsWith(dirKey)) this.view.delete(k);
    for (const kv of kvs) this.apply({ kv });
    this.prevIndex.set(dirKey, revision);
  }

  protected async run(): Promise<void> {
    await Promise.all(this.directories.map((d) => this.runDir(`${this.prefix}/${d}`)));
  }

  private async runDir(dirKey: string): Promise<void> {
    let needReload = true;
    while (this.running) {
      try {
        if (needReload) {
          await this.loadDir(dirKey);
          needReload = false;
        }
        let got = 0;
        await this.whenNotPaused();
        const w = openWatch(
          this.baseUrl(),
          { key: b64(dirKey), range_end: b64(rangeEnd(dirKey)), start_revision: this.prevIndex.get(dirKey)! + 1 },
          (m) => {
            if (m.error) return 'stop';
            const r = m.result ?? {};
            if (r.compact_revision && Number(r.compact_revision) > 0) {
              this.stats.compactions++;
              needReload = true;
              return 'stop';
            }
            if (r.created) return 'continue';
            if (r.canceled) return 'stop';
            let max = this.prevIndex.get(dirKey)!;
            for (const e of r.events ?? []) {
              this.apply(e);
              max = Math.max(max, Number(e.kv.mod_revision));
            }
            this.prevIndex.set(dirKey, max);
            got++;
            return 'stop'; // 2.x reads created + one message, then closes the connection
          },
        );
        const how = await this.watchOnce(w);
        if (!this.running) break;
        if (how === 'error' || (how === 'ended' && got === 0 && !needReload)) {
          this.stats.errors++;
          await sleep(20);
        }
      } catch {
        this.stats.errors++;
        await sleep(50);
      }
    }
  }
}
