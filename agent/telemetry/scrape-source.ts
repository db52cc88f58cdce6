import { request } from 'node:http';

/**
 * One bounded HTTP scrape of a Prometheus endpoint on loopback: a deadline for the whole exchange
 * (connect, headers and body), a byte limit on the body, status 200 only. It never throws: a source
 * that fails says why in `reason` (one short line), so the merged answer can go on without it.
 */
export type ScrapeResult = { ok: true; body: Buffer; contentType: string } | { ok: false; reason: string };

export interface ScrapeOptions {
  timeoutMs: number;
  maxBytes: number;
  /** request headers passed through from Prometheus (Accept, User-Agent, the scrape timeout) */
  headers?: Record<string, string>;
}

export function scrape(url: URL, options: ScrapeOptions): Promise<ScrapeResult> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (result: ScrapeResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(result);
    };
    const req = request(url, { method: 'GET', headers: options.headers ?? {}, agent: false }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        finish({ ok: false, reason: `answered HTTP ${res.statusCode}` });
        return;
      }
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > options.maxBytes) {
        finish({ ok: false, reason: `answer of ${declared} bytes is over the limit of ${options.maxBytes}` });
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > options.maxBytes) {
          finish({ ok: false, reason: `answer is over the limit of ${options.maxBytes} bytes` });
          return;
        }
        chunks.push(chunk);
      });
      // kept as bytes: the merge only concatenates them (decoding and re-encoding a MiB costs ms)
      res.on('end', () => finish({ ok: true, body: Buffer.concat(chunks, size), contentType: String(res.headers['content-type'] ?? '') }));
      res.on('error', (err) => finish({ ok: false, reason: oneLine(err.message) }));
      res.on('aborted', () => finish({ ok: false, reason: 'the connection closed before the answer was complete' }));
    });
    const timer = setTimeout(() => finish({ ok: false, reason: `no complete answer within ${options.timeoutMs} ms` }), options.timeoutMs);
    req.on('error', (err) => finish({ ok: false, reason: oneLine((err as NodeJS.ErrnoException).code ?? err.message) }));
    req.end();
  });
}

/** An error text fit for one comment line of the exposition format. */
export function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').slice(0, 200);
}
