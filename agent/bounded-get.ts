import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

/**
 * One bounded HTTP(S) GET — the merged metrics endpoint's scrapes of loopback sources, the JWKS
 * fetcher's downloads: a deadline for the whole exchange (connect, headers and body), a byte limit
 * on the body, status 200 only (a redirect is not followed), an optional signal that abandons it.
 * It never throws: a failure says why in `reason` (one short line).
 *
 * Node's HTTP client rather than `fetch`: fetch's HTTP parser is WebAssembly, which V8's lite mode
 * (the injection's `agentLiteMode`) turns off, and a fetch then throws where no promise catches it.
 */
export type GetResult = { ok: true; body: Buffer; contentType: string } | { ok: false; reason: string };

export interface GetOptions {
  timeoutMs: number;
  maxBytes: number;
  headers?: Record<string, string>;
  /** abandons the request (the result's reason is the signal's) */
  signal?: AbortSignal;
}

export function boundedGet(url: URL, options: GetOptions): Promise<GetResult> {
  return new Promise((resolve) => {
    const send = url.protocol === 'https:' ? httpsRequest : url.protocol === 'http:' ? httpRequest : undefined;
    if (!send) return resolve({ ok: false, reason: `not an http(s) URL (${oneLine(url.protocol)})` });
    let settled = false;
    const finish = (result: GetResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', abandon);
      req.destroy();
      resolve(result);
    };
    const abandon = () => finish({ ok: false, reason: oneLine(String((options.signal?.reason as Error | undefined)?.message ?? 'abandoned')) });
    const req = send(url, { method: 'GET', headers: options.headers ?? {}, agent: false }, (res) => {
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
      // kept as bytes: the metrics merge only concatenates them (decoding and re-encoding a MiB costs ms)
      res.on('end', () => finish({ ok: true, body: Buffer.concat(chunks, size), contentType: String(res.headers['content-type'] ?? '') }));
      res.on('error', (err) => finish({ ok: false, reason: oneLine(err.message) }));
      res.on('aborted', () => finish({ ok: false, reason: 'the connection closed before the answer was complete' }));
    });
    const timer = setTimeout(() => finish({ ok: false, reason: `no complete answer within ${options.timeoutMs} ms` }), options.timeoutMs);
    req.on('error', (err) => finish({ ok: false, reason: oneLine((err as NodeJS.ErrnoException).code ?? err.message) }));
    if (options.signal?.aborted) return abandon();
    options.signal?.addEventListener('abort', abandon, { once: true });
    req.end();
  });
}

/** An error text fit for one line (of a log, or a comment of the exposition format). */
export function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').slice(0, 200);
}
