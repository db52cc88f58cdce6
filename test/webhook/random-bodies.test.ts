import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildWebhookApp } from '../../webhook/server/app.js';
import { podCreateReview } from './helpers.js';

// Property: whatever arrives at POST /inject, the answer is never a 5xx and always valid JSON.
// Bodies range from random bytes to AdmissionReviews whose fields (and the pod inside) are replaced
// by arbitrary JSON, so that the injection sees hostile shapes too.

const app = buildWebhookApp({ logLevel: 'silent', maxBodyBytes: 64 * 1024 });

async function post(payload: string | Buffer, contentType: string | undefined) {
  return app.inject({
    method: 'POST',
    url: '/inject',
    headers: contentType === undefined ? {} : { 'content-type': contentType },
    payload,
  });
}

function expectSaneAnswer(res: { statusCode: number; body: string }) {
  expect(res.statusCode).toBeLessThan(500);
  expect([200, 400, 415]).toContain(res.statusCode);
  const parsed = JSON.parse(res.body);
  if (res.statusCode === 200) {
    expect(parsed.kind).toBe('AdmissionReview');
    expect(typeof parsed.response.allowed).toBe('boolean');
    expect(typeof parsed.response.uid).toBe('string');
  }
}

/** Sets `value` at a random place of the review (a path of existing keys), like a corrupted field. */
function corrupt(review: any, path: string[], value: unknown): any {
  let node = review;
  for (const key of path.slice(0, -1)) {
    if (node === null || typeof node !== 'object' || !(key in node)) return review;
    node = node[key];
  }
  if (node !== null && typeof node === 'object') node[path[path.length - 1]!] = value;
  return review;
}

const reviewPaths = [
  ['apiVersion'], ['kind'], ['request'], ['request', 'uid'], ['request', 'kind'], ['request', 'operation'],
  ['request', 'namespace'], ['request', 'object'], ['request', 'object', 'metadata'],
  ['request', 'object', 'metadata', 'annotations'], ['request', 'object', 'metadata', 'labels'],
  ['request', 'object', 'spec'], ['request', 'object', 'spec', 'containers'],
  ['request', 'object', 'spec', 'containers', '0'], ['request', 'object', 'spec', 'containers', '0', 'ports'],
  ['request', 'object', 'spec', 'volumes'], ['request', 'object', 'spec', 'initContainers'],
  ['request', 'object', 'spec', 'hostNetwork'],
];

describe('POST /inject with random bodies', () => {
  it('random bytes and strings under any content type: never 5xx, always JSON', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.uint8Array({ maxLength: 2048 }).map((b) => Buffer.from(b)), fc.string({ maxLength: 2048 })),
        fc.constantFrom(undefined, 'application/json', 'application/json; charset=utf-8', 'text/plain', 'application/octet-stream', ''),
        async (payload, type) => expectSaneAnswer(await post(payload, type)),
      ),
      { numRuns: 300 },
    );
  });

  it('arbitrary JSON values: never 5xx, always JSON', async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ maxDepth: 6 }), async (value) => {
        expectSaneAnswer(await post(JSON.stringify(value), 'application/json'));
      }),
      { numRuns: 300 },
    );
  });

  it('AdmissionReviews with a field replaced by arbitrary JSON: never 5xx, always JSON, uid echoed when valid', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.constantFrom(...reviewPaths), fc.jsonValue({ maxDepth: 4 })), { minLength: 1, maxLength: 3 }),
        async (changes) => {
          let review: any = podCreateReview();
          for (const [path, value] of changes) review = corrupt(review, path, value);
          const body = JSON.stringify(review);
          const res = await post(body, 'application/json');
          expectSaneAnswer(res);
          const answer = JSON.parse(res.body);
          // the uid as sent: a `uid` set on a request that was replaced by an array is not in the JSON
          const sent = JSON.parse(body);
          if (typeof sent.request?.uid === 'string' && res.statusCode === 200) expect(answer.response.uid).toBe(sent.request.uid);
        },
      ),
      { numRuns: 300 },
    );
  });
});
