import type { Echo, HttpAnswer, HttpRequest, NetnsWorker } from './pod/worker-client.js';

/** An answer, with the echo server's report when one of them answered (it says which by name). */
export interface Answer extends HttpAnswer {
  echo?: Echo;
}

/** One request from `worker`; a connection-level failure throws (a test expects an HTTP answer). */
export async function send(worker: NetnsWorker, req: HttpRequest): Promise<Answer> {
  const res = await worker.http(req);
  if ('error' in res) throw new Error(`${req.method ?? 'GET'} ${req.url}: ${res.error}`);
  const answer: Answer = res;
  if (res.headers['x-served-by'] !== undefined) answer.echo = JSON.parse(res.body) as Echo;
  return answer;
}

/** Which echo server answered (undefined: APISIX answered itself). */
export async function servedBy(worker: NetnsWorker, req: HttpRequest): Promise<string | undefined> {
  return (await send(worker, req)).echo?.name;
}

/** How many of `answers` each echo server (or APISIX: `-`) gave. */
export function tally(answers: Answer[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of answers) {
    const key = a.echo?.name ?? '-';
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}

/**
 * Requests one after the other until `enough(the answers so far)`, at most `max` of them: for hosts
 * picked at random (Envoy's least request draws two), where a fixed count of requests may miss a
 * host; `max` keeps a broken case from running on.
 */
export async function inTurnUntil(request: () => Promise<Answer>, enough: (answers: Answer[]) => boolean, max: number): Promise<Answer[]> {
  const out: Answer[] = [];
  while (out.length < max && !enough(out)) out.push(await request());
  return out;
}
