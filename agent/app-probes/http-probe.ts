import { request as httpRequest, type ClientRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AppProber } from './app-probers.js';
import { failed, hostPort, type ProbeOutcome, type ProbeTarget } from './probe-target.js';
import { redirectStep } from './probe-redirects.js';

/** The kubelet's probe headers the agent passes on (it sends `User-Agent: kube-probe/…` and `Accept`). */
const FORWARDED = ['user-agent', 'accept'] as const;
/** As much of a body as the kubelet reads; a longer one is cut off. */
const MAX_BODY_BYTES = 10 * 1024;

/**
 * The kubelet's httpGet probe, run by the agent: GET at the pod's address over HTTP, or HTTPS
 * without verifying the certificate (as the kubelet), with the probe's headers (a `Host` header
 * sets the request's host). Redirects to the pod itself are followed, others are not
 * (probe-redirects.ts). 200–399 passes. The answer to the kubelet is the app's status, or 200 for
 * a redirect that was not followed (as pilot-agent). The probe's timeout bounds all its requests.
 */
export function probeHttp(
  target: ProbeTarget,
  action: NonNullable<AppProber['httpGet']>,
  timeoutMs: number,
  incoming: IncomingHttpHeaders,
): Promise<ProbeOutcome> {
  const headers: OutgoingHttpHeaders = {};
  for (const name of FORWARDED) if (typeof incoming[name] === 'string') headers[name] = incoming[name];
  // the probe's headers replace the kubelet's of the same name; a repeated name adds values (as Go)
  const own = action.httpHeaders ?? [];
  for (const h of own) delete headers[h.name.toLowerCase()];
  for (const h of own) {
    const name = h.name.toLowerCase();
    const prev = headers[name];
    headers[name] = prev === undefined || name === 'host' ? h.value : [...(Array.isArray(prev) ? prev : [String(prev)]), h.value];
  }
  const path = action.path === undefined || action.path === '' ? '/' : action.path.startsWith('/') ? action.path : `/${action.path}`;
  const first = new URL(`${action.scheme === 'HTTPS' ? 'https' : 'http'}://${hostPort(target.host, action.port)}`);
  return new Promise((resolve) => {
    let done = false;
    let req: ClientRequest | undefined;
    let where = shown(first, path);
    const finish = (outcome: ProbeOutcome): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req?.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => finish(failed(`${where}: no answer within ${timeoutMs} ms`)), timeoutMs);
    const send = (url: URL, requestPath: string, hopHeaders: OutgoingHttpHeaders, requests: number): void => {
      where = shown(url, requestPath);
      const options = {
        // the URL's hostname keeps an IPv6 address in brackets
        host: hostOf(url),
        port: portOf(url),
        path: requestPath,
        method: 'GET',
        headers: hopHeaders,
        agent: false as const, // a new connection per probe, as the kubelet (no keep-alive)
        ...(target.localAddress ? { localAddress: target.localAddress } : {}),
      };
      const current = url.protocol === 'https:' ? httpsRequest({ ...options, rejectUnauthorized: false }) : httpRequest(options);
      req = current;
      current.once('response', (res) => {
        const status = res.statusCode ?? 0;
        const location = typeof res.headers.location === 'string' ? res.headers.location : undefined;
        const step = redirectStep(first, new URL(`${url.origin}${requestPath}`), status, location, requests);
        if (step.kind === 'follow') {
          current.destroy();
          const next = { ...hopHeaders };
          if (!step.keepHost) delete next['host'];
          send(step.url, `${step.url.pathname}${step.url.search}`, next, requests + 1);
          return;
        }
        let read = 0;
        const answer = (): void =>
          finish(
            step.kind === 'fail' ? failed(`${where}: ${step.reason}`)
            : status >= 300 && status < 400 ? { status: 200, detail: step.kind === 'elsewhere' ? `${status} (redirect to ${step.host}, not followed)` : `${status}` }
            : status >= 200 && status < 300 ? { status, detail: `${status}` }
            : { status: status >= 400 ? status : 500, detail: `${where}: HTTP ${status}` },
          );
        res.on('data', (chunk: Buffer) => {
          read += chunk.length;
          if (read > MAX_BODY_BYTES) answer();
        });
        res.once('end', answer);
        res.once('error', answer);
      });
      current.once('error', (err: NodeJS.ErrnoException) => finish(failed(`${where}: ${err.code ?? err.message}`)));
      current.end();
    };
    send(first, path, headers, 1);
  });
}

/** The URL's host as a socket takes it (a URL keeps an IPv6 address in brackets). */
function hostOf(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, '$1');
}

/** The URL's port (a URL leaves out its scheme's default). */
function portOf(url: URL): number {
  return url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
}

/** A request's URL for messages, its path cut to a readable length. */
function shown(url: URL, path: string): string {
  return `${url.protocol}//${hostPort(hostOf(url), portOf(url))}${path.length > 64 ? `${path.slice(0, 64)}…` : path}`;
}
