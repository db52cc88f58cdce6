// Node identity and metadata as istiod parses them (reference: pkg/model/proxy.go NodeMetadata).
import { describe, expect, it } from 'vitest';
import { buildNode, nodeId, nodeIdentityFromEnv, NodeIdentityError } from '../../agent/xds/node.js';

const base = { POD_NAME: 'reviews-v1-7d8f', POD_NAMESPACE: 'bookinfo', INSTANCE_IP: '10.244.2.66' };

describe('node identity', () => {
  it('builds istiod\'s four-part sidecar id', () => {
    expect(nodeId(nodeIdentityFromEnv(base))).toBe('sidecar~10.244.2.66~reviews-v1-7d8f.bookinfo~bookinfo.svc.cluster.local');
  });

  it('types the metadata the way istiod unmarshals it', () => {
    const identity = nodeIdentityFromEnv({
      ...base,
      SERVICE_ACCOUNT: 'bookinfo-reviews',
      ISTIO_META_CLUSTER_ID: 'east',
      ISTIO_META_POD_PORTS: '[{"containerPort":9080,"protocol":"TCP"}]',
      ISTIO_META_DNS_CAPTURE: 'true',
      ISTIO_METAJSON_LABELS: '{"app":"reviews","version":"v1"}',
    });
    const fields = (buildNode(identity, '1.0.0')['metadata'] as { fields: Record<string, Record<string, unknown>> }).fields;
    expect(fields['INSTANCE_IPS']).toEqual({ stringValue: '10.244.2.66' });
    expect(fields['CLUSTER_ID']).toEqual({ stringValue: 'east' });
    expect(fields['POD_PORTS']).toEqual({ stringValue: '[{"containerPort":9080,"protocol":"TCP"}]' }); // a JSON *string*
    expect(fields['DNS_CAPTURE']).toEqual({ stringValue: 'true' }); // StringBool, never a JSON bool
    expect(fields['SERVICE_ACCOUNT']).toEqual({ stringValue: 'bookinfo-reviews' });
    expect(fields['INTERCEPTION_MODE']).toEqual({ stringValue: 'REDIRECT' });
    expect(fields['LABELS']).toEqual({ structValue: { fields: { app: { stringValue: 'reviews' }, version: { stringValue: 'v1' } } } });
    expect(fields['ISTIO_VERSION']).toBeUndefined(); // absent = newest, rather than a guessed version
  });

  it('refuses to start without what istiod needs', () => {
    expect(() => nodeIdentityFromEnv({ POD_NAME: 'x' })).toThrow(/missing POD_NAMESPACE, INSTANCE_IP/);
    expect(() => nodeIdentityFromEnv({ ...base, INSTANCE_IP: 'pod-ip' })).toThrow(NodeIdentityError);
    expect(() => nodeIdentityFromEnv({ ...base, ISTIO_METAJSON_LABELS: '{' })).toThrow(/ISTIO_METAJSON_LABELS is not valid JSON/);
  });
});
