import { request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AppProber } from './app-probers.js';
import { failed, hostPort, type ProbeOutcome, type ProbeTarget } from './probe-target.js';

/** The kubelet's probe headers the agent passes on (it sends `User-Agent: kube-probe/…` and `Accept`). */
const FORWARDED = ['user-agent', 'accept'] as const;
/** As much of a body as the kubelet reads; a longer one is cut off. */
const MAX_BODY_BYTES = 10 * 1024;

/**
 * The kubelet's httpGet probe, run by the agent: GET at the pod's address over HTTP, or HTTPS
 * without verifying the certificate (as the kubelet), with the probe's headers (a `Host` header
 * sets the request's host). 200–399 passes. The answer to the kubelet is the app's status, or 200
 * for a redirect (as pilot-agent), which is not followed.
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
  const https = action.scheme === 'HTTPS';
  const where = `${https ? 'https' : 'http'}://${hostPort(target.host, action.port)}${path.length > 64 ? `${path.slice(0, 64)}…` : path}`;
  return new Promise((resolve) => {
    let done = false;
    const finish = (outcome: ProbeOutcome): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve(outcome);
    };
    const options = {
      host: target.host,
      port: action.port,
      path,
      method: 'GET',
      headers,
      agent: false as const, // a new connection per probe, as the kubelet (no keep-alive)
      ...(target.localAddress ? { localAddress: target.localAddress } : {}),
    };
    const req = https ? httpsRequest({ ...options, rejectUnauthorized: false }) : httpRequest(options);
    const timer = setTimeout(() => finish(failed(`${where}: no answer within ${timeoutMs} ms`)), timeoutMs);
    req.once('response', (res) => {
      const status = res.statusCode ?? 0;
      let read = 0;
      const answer = (): void =>
        finish(status >= 300 && status < 400 ? { status: 200, detail: `${status} (redirect, not followed)` } : status >= 200 && status < 300 ? { status, detail: `${status}` } : { status: status >= 400 ? status : 500, detail: `${where}: HTTP ${status}` });
      res.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read > MAX_BODY_BYTES) answer();
      });
      res.once('end', answer);
      res.once('error', answer);
    });
    req.once('error', (err: NodeJS.ErrnoException) => finish(failed(`${where}: ${err.code ?? err.message}`)));
    req.end();
  });
}
