import { describe, expect, it } from 'vitest';
import { buildWebhookApp } from '../../webhook/server/app.js';
import { podCreateReview, postReview } from './helpers.js';

/** The value of one sample line of Prometheus text, or undefined when absent. */
function sample(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('GET /metrics', () => {
  it('counts requests by code, injections by mode, skips by reason, rejections, errors and latency', async () => {
    const app = buildWebhookApp({ logLevel: 'silent' });
    const sidecar = podCreateReview();
    const gateway = podCreateReview();
    (gateway.request.object as any).metadata.labels['app.kubernetes.io/name'] = 'apisix';
    const update = podCreateReview();
    update.request.operation = 'UPDATE';
    const hostNetwork = podCreateReview();
    (hostNetwork.request.object as any).spec.hostNetwork = true;
    const rejected = podCreateReview();
    (rejected.request.object as any).metadata.annotations['traffic.sidecar.istio.io/excludeOutboundIPRanges'] = '10.0.0.0/33';

    for (const body of [sidecar, sidecar, gateway, update, hostNetwork, rejected]) await postReview(app, body);
    await postReview(app, 'x', 'text/plain');
    await postReview(app, '');
    await postReview(app, '{not json');

    const res = await app.inject('/metrics');
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = res.body;
    const p = 'apisix_mesh_webhook_';
    expect(sample(text, `${p}requests_total`, '{code="200"}')).toBe(7);
    expect(sample(text, `${p}requests_total`, '{code="415"}')).toBe(1);
    expect(sample(text, `${p}requests_total`, '{code="400"}')).toBe(1);
    expect(sample(text, `${p}injections_total`, '{mode="sidecar"}')).toBe(2);
    expect(sample(text, `${p}injections_total`, '{mode="gateway"}')).toBe(1);
    expect(sample(text, `${p}skips_total`, '{reason="not-pod-create"}')).toBe(1);
    expect(sample(text, `${p}skips_total`, '{reason="host-network"}')).toBe(1);
    expect(sample(text, `${p}rejections_total`)).toBe(1);
    expect(sample(text, `${p}errors_total`, '{reason="unsupported-media-type"}')).toBe(1);
    expect(sample(text, `${p}errors_total`, '{reason="bad-body"}')).toBe(1);
    expect(sample(text, `${p}errors_total`, '{reason="undecodable-review"}')).toBe(1);
    expect(sample(text, `${p}request_duration_seconds_count`)).toBe(9);
    expect(sample(text, `${p}request_duration_seconds_bucket`, '{le="+Inf"}')).toBe(9);
    expect(sample(text, `${p}request_duration_seconds_sum`)).toBeGreaterThan(0);
    // Process metrics come from the same registry.
    expect(text).toContain(`${p}process_resident_memory_bytes`);
  });

  it('keeps counters per app (its own registry)', async () => {
    const a = buildWebhookApp({ logLevel: 'silent' });
    const b = buildWebhookApp({ logLevel: 'silent' });
    await postReview(a, podCreateReview());
    const text = (await b.inject('/metrics')).body;
    expect(sample(text, 'apisix_mesh_webhook_injections_total', '{mode="sidecar"}')).toBeUndefined();
  });
});

describe('logs', () => {
  function recordingApp(logLevel: 'info' | 'debug') {
    const lines: Record<string, unknown>[] = [];
    const app = buildWebhookApp({ logLevel, logStream: { write: (line) => lines.push(JSON.parse(line)) } });
    return { app, lines };
  }

  it('writes one structured JSON line per review at info, without pod contents', async () => {
    const { app, lines } = recordingApp('info');
    const body = podCreateReview();
    await postReview(app, body);
    const reviews = lines.filter((l) => l.msg === 'admission review');
    expect(reviews).toHaveLength(1);
    expect(reviews[0]).toMatchObject({
      level: 30,
      uid: body.request.uid,
      operation: 'CREATE',
      resource: 'pods',
      namespace: 'bookinfo',
      // a Deployment's pod has no name yet at admission: its generateName tells whose pod it was
      generateName: 'reviews-v1-5b9f6c7d8-',
      outcome: 'injected',
      mode: 'sidecar',
    });
    const all = lines.map((l) => JSON.stringify(l)).join('\n');
    expect(all).not.toContain('examples-bookinfo-reviews');
    expect(all).not.toContain('/tmp/logs');
    expect(all).not.toContain('"patch"');
  });

  it('logs the patch only at debug', async () => {
    const { app, lines } = recordingApp('debug');
    await postReview(app, podCreateReview());
    expect(lines.some((l) => l.msg === 'patch' && Array.isArray(l.patch))).toBe(true);
  });

  it('says why a body was refused', async () => {
    const { app, lines } = recordingApp('info');
    await postReview(app, '[]');
    expect(lines.find((l) => l.msg === 'refused a body that is not an AdmissionReview')).toMatchObject({ reason: expect.stringContaining('array') });
  });
});
