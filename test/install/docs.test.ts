import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { V1MutatingWebhookConfiguration } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { repoRoot } from './render.js';

/** The operations guide states the webhook configuration's values; keep it honest. */
describe('docs/operations.md', () => {
  const doc = readFileSync(join(repoRoot, 'docs', 'operations.md'), 'utf8');
  const mwc = parse(readFileSync(join(repoRoot, 'manifests/base/mutatingwebhookconfiguration.yaml'), 'utf8')) as V1MutatingWebhookConfiguration;
  const webhook = mwc.webhooks![0]!;

  it('documents the failurePolicy, timeout and reinvocation the manifests really set', () => {
    expect(doc).toContain(`| \`failurePolicy\` | \`${webhook.failurePolicy}\` |`);
    expect(doc).toContain(`| \`timeoutSeconds\` | ${webhook.timeoutSeconds} |`);
    expect(doc).toContain(`| \`reinvocationPolicy\` | \`${webhook.reinvocationPolicy}\` |`);
    expect(doc).toContain(`**Why \`failurePolicy: ${webhook.failurePolicy}\`.**`);
    expect(doc).toContain(`| name | \`${mwc.metadata!.name}\` |`);
  });

  it('covers install, upgrade, uninstall, ordering, native sidecars, troubleshooting and metrics', () => {
    const headings = [...doc.matchAll(/^## (.+)$/gm)].map((m) => m[1]);
    expect(headings).toEqual(
      expect.arrayContaining(['Install', 'Upgrade', 'Uninstall', 'Webhook ordering with Istio\'s injector', 'Native sidecars', 'Troubleshooting', 'Metrics']),
    );
    const flat = doc.replace(/\s+/g, ' ');
    for (const topic of ['context deadline exceeded', 'A pod did not get the mesh', 'iptables backends']) expect(flat).toContain(topic);
  });
});
