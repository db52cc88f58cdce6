import { describe, expect, it } from 'vitest';
import { CliError } from '../../cli/errors.js';
import { startClusterCertificates, wantsClusterCertificates } from '../../webhook/cluster-certs/command-options.js';

describe('when the webhook manages its certificates in the cluster', () => {
  const inPod = { KUBERNETES_SERVICE_HOST: '10.96.0.1' };

  it.each([
    ['in a pod, no certificate flags', {}, inPod, true],
    ['outside a cluster, no flags', {}, {}, false],
    ['outside a cluster, --cert-secret', { certSecret: 's' }, {}, true],
    ['outside a cluster, --webhook-config', { webhookConfig: 'w' }, {}, true],
    ['in a pod with --tls-cert/--tls-key (cert-manager)', { tlsCert: 'a', tlsKey: 'b' }, inPod, false],
    ['in a pod with --self-signed', { selfSigned: true }, inPod, false],
  ] as const)('%s → %s', (_name, flags, env, expected) => {
    expect(wantsClusterCertificates(flags, env)).toBe(expected);
  });

  it('refuses cluster flags mixed with certificate files', () => {
    expect(() => wantsClusterCertificates({ certSecret: 's', tlsCert: 'a', tlsKey: 'b' }, {})).toThrow(CliError);
    expect(() => wantsClusterCertificates({ namespace: 'n', selfSigned: true }, {})).toThrow(/exclude --tls-cert/);
    // it would leave the webhook entries on failurePolicy Ignore for good
    expect(() => wantsClusterCertificates({ failClosedWhenReady: true, tlsCert: 'a', tlsKey: 'b' }, {})).toThrow(/--fail-closed-when-ready works with in-cluster certificates only/);
  });

  it('needs to know its namespace', async () => {
    // No --namespace, no POD_NAMESPACE; the service-account file does not exist outside a pod.
    await expect(startClusterCertificates({ certSecret: 's' }, {})).rejects.toThrow(
      "cannot tell the webhook's namespace: give --namespace or set POD_NAMESPACE",
    );
  });

  it('says so when there is no cluster to talk to', async () => {
    await expect(startClusterCertificates({ namespace: 'n' }, { HOME: '/nonexistent' })).rejects.toThrow(
      'no Kubernetes cluster to keep certificates in (not in a pod, no KUBECONFIG, no ~/.kube/config): give --tls-cert/--tls-key or --self-signed',
    );
  });

  it('refuses a bad --cert-check-interval before calling the API', async () => {
    await expect(startClusterCertificates({ namespace: 'n', certCheckInterval: 'soon' }, {})).rejects.toThrow(
      '--cert-check-interval must be a positive number of seconds, got "soon"',
    );
  });
});
