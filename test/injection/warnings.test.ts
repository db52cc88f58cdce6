// A Job's pod with ordinary sidecar containers never completes: the user hears it from kubectl
// (the AdmissionResponse's warnings), the webhook's log and `apisix-mesh inject`.
import { describe, expect, it } from 'vitest';
import { defaultInjectionConfig } from '../../webhook/config/injection-config.js';
import { reviewAdmission } from '../../webhook/injection/review.js';
import { reviewResponse } from '../../webhook/server/admission-codec.js';
import type { AdmissionRequest } from '../../webhook/injection/admission-types.js';

const request = (restartPolicy: string | undefined, annotations: Record<string, string> = {}): AdmissionRequest => ({
  uid: 'u-1',
  kind: { group: '', version: 'v1', kind: 'Pod' },
  resource: { group: '', version: 'v1', resource: 'pods' },
  operation: 'CREATE',
  namespace: 'batch',
  object: {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { generateName: 'report-', namespace: 'batch', annotations },
    spec: { ...(restartPolicy ? { restartPolicy } : {}), containers: [{ name: 'report', image: 'busybox' }] },
  },
} as AdmissionRequest);

describe('warnings about injected pods', () => {
  it('a pod meant to finish (Never, OnFailure) with ordinary sidecars is warned about', () => {
    for (const policy of ['Never', 'OnFailure']) {
      const outcome = reviewAdmission(request(policy), defaultInjectionConfig);
      expect(outcome).toMatchObject({ kind: 'injected', warnings: [expect.stringContaining(`restartPolicy ${policy}`)] });
      const review = reviewResponse('admission.k8s.io/v1', 'u-1', outcome);
      expect(review.response?.warnings).toEqual([expect.stringContaining('never completes')]);
    }
  });

  it('native sidecars and long-running pods get none', () => {
    const native = reviewAdmission(request('Never', { 'sidecar.istio.io/nativeSidecar': 'true' }), defaultInjectionConfig);
    expect(native).toMatchObject({ kind: 'injected' });
    expect(native.kind === 'injected' && native.warnings).toBeFalsy();
    for (const policy of [undefined, 'Always']) {
      const outcome = reviewAdmission(request(policy), defaultInjectionConfig);
      expect(outcome.kind === 'injected' && outcome.warnings).toBeFalsy();
      expect(reviewResponse('admission.k8s.io/v1', 'u-1', outcome).response?.warnings).toBeUndefined();
    }
  });
});

describe('Istio annotations the APISIX sidecar does not honour', () => {
  it('each one set is named in a warning; the pod is still injected', () => {
    const outcome = reviewAdmission(request(undefined, { 'sidecar.istio.io/userVolumeMount': '[]', 'sidecar.istio.io/proxyMemory': '256Mi' }), defaultInjectionConfig);
    expect(outcome.kind).toBe('injected');
    const warnings = outcome.kind === 'injected' ? outcome.warnings ?? [] : [];
    expect(warnings).toEqual([expect.stringMatching(/^annotation sidecar\.istio\.io\/userVolumeMount is not honoured/)]);
  });

  it("ProxyConfig: concurrency and holdApplicationUntilProxyStarts apply, every other field is named as not honoured", () => {
    const quiet = reviewAdmission(request(undefined, { 'proxy.istio.io/config': 'concurrency: 4\n' }), defaultInjectionConfig);
    expect(quiet.kind === 'injected' && quiet.warnings).toBeFalsy();
    const outcome = reviewAdmission(
      request(undefined, { 'proxy.istio.io/config': '{"concurrency": 1, "holdApplicationUntilProxyStarts": true, "proxyMetadata": {"A": "b"}, "tracing": {}}' }),
      defaultInjectionConfig,
    );
    const warnings = outcome.kind === 'injected' ? outcome.warnings ?? [] : [];
    expect(warnings).toEqual([
      "annotation proxy.istio.io/config: only concurrency (APISIX's worker processes) and holdApplicationUntilProxyStarts apply to the APISIX sidecar; not honoured: proxyMetadata, tracing (the sidecar's other settings come from apisix-mesh's configuration file)",
    ]);
    const all = reviewAdmission(request(undefined, { 'proxy.istio.io/config': 'concurrency: 0\n' }), defaultInjectionConfig);
    expect(all.kind === 'injected' ? all.warnings : []).toEqual([expect.stringMatching(/^annotation proxy\.istio\.io\/config: concurrency 0 runs one APISIX worker per CPU of the node/)]);
  });

  it('gateway and none modes say nothing about them (Envoy or nothing reads them there)', () => {
    for (const mode of ['gateway', 'none']) {
      const outcome = reviewAdmission(request(undefined, { 'apisix-mesh.io/mode': mode, 'proxy.istio.io/config': 'concurrency: 4\n' }), defaultInjectionConfig);
      expect(outcome.kind === 'injected' ? outcome.warnings : undefined).toBeUndefined();
    }
  });
});
