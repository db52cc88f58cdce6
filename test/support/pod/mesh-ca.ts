import { connect, createServer, type Server } from 'node:net';
import type { V1Pod } from '@kubernetes/client-node';
import { generateKeyPairSync } from 'node:crypto';
import type { WorkloadKeyType } from '../../../agent/identity/key-type.js';
import { issueLeafPem, type CaKeyPair } from '../test-pki.js';

/** The token the fake CA requires of pods started `withTestCa`. */
export const TEST_CA_TOKEN = 'test-istio-ca-token';

/**
 * The agent with a CA, as the injection gives it one with TLS to istiod (--ca-address on the xDS
 * host, root certificate, token), here from files the pod's downward API writes from annotations:
 * the harness's kubelet runs no ConfigMap or projected-token volumes. The fake CA serves istiod's
 * certificate (DNS SAN istiod.istio-system.svc) while the harness dials istiod by address.
 */
export function withTestCa(rootPem: string, keyType?: WorkloadKeyType): (pod: V1Pod) => V1Pod {
  return (pod) => {
    const dir = '/var/run/apisix-mesh-test-ca';
    pod.metadata!.annotations = { ...pod.metadata!.annotations, 'test.apisix-mesh/root-cert': rootPem, 'test.apisix-mesh/token': TEST_CA_TOKEN };
    pod.spec!.volumes = [
      ...(pod.spec!.volumes ?? []),
      {
        name: 'test-ca',
        downwardAPI: {
          items: [
            { path: 'root-cert.pem', fieldRef: { fieldPath: "metadata.annotations['test.apisix-mesh/root-cert']" } },
            { path: 'token', fieldRef: { fieldPath: "metadata.annotations['test.apisix-mesh/token']" } },
          ],
        },
      },
    ];
    const agent = [...(pod.spec!.initContainers ?? []), ...pod.spec!.containers].find((c) => c.args?.[0] === 'agent')!;
    const xds = agent.args!.find((a) => a.startsWith('--xds-address='))!.slice('--xds-address='.length);
    agent.args!.push(`--ca-address=${xds.replace(/:\d+$/, ':15012')}`, '--xds-server-name=istiod.istio-system.svc', `--root-cert=${dir}/root-cert.pem`, `--token-file=${dir}/token`, ...(keyType ? [`--key-type=${keyType}`] : []));
    agent.volumeMounts = [...(agent.volumeMounts ?? []), { name: 'test-ca', mountPath: dir, readOnly: true }];
    return pod;
  };
}

/** A Unix socket in front of a TCP port on loopback (the pod reaches it through the cluster side's relay). */
export function unixBridge(path: string, port: number): Promise<Server> {
  const server = createServer((socket) => {
    const upstream = connect(port, '127.0.0.1');
    socket.pipe(upstream).pipe(socket);
    const end = () => {
      socket.destroy();
      upstream.destroy();
    };
    socket.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  return new Promise((resolve) => server.listen(path, () => resolve(server)));
}

/** A workload certificate as Istio's servers present it (leaf and intermediate) and its key (RSA 2048 or EC P-256), PEM. */
export function meshLeaf(issuer: CaKeyPair, spiffeId: string, lifetimeSeconds = 3600, keyType: WorkloadKeyType = 'rsa'): { cert: string; key: string } {
  const { privateKey, publicKey } = keyType === 'ecdsa' ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const leaf = issueLeafPem(issuer, publicKey, spiffeId, lifetimeSeconds);
  return { cert: leaf.pem + issuer.pem, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}
