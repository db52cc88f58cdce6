import { firstMissing, missingCommand, missingRoot } from '../requirements.js';
import { missingApisixRuntime } from './apisix-runtime.js';

/** What the pod harness needs, or null: root (namespaces, iptables), the tools, a real APISIX. */
export function missingForPod(): string | null {
  return firstMissing(
    missingRoot(),
    missingCommand('ip', 'install iproute2'),
    missingCommand('iptables-nft-restore', 'install iptables'),
    missingCommand('setpriv', 'install util-linux'),
    missingCommand('mkfifo', 'install coreutils'),
    missingApisixRuntime(),
  );
}

/** A pod manifest with one app container per name (the harness replaces them by test programs). */
export function podManifest(name: string, namespace: string, labels: Record<string, string>, apps: Array<{ name: string; ports?: number[] }> = [{ name: 'app' }]) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels },
    spec: {
      serviceAccountName: name,
      containers: apps.map((a) => ({
        name: a.name,
        image: `example.com/${a.name}:1`,
        ...(a.ports ? { ports: a.ports.map((containerPort) => ({ containerPort, protocol: 'TCP' })) } : {}),
      })),
    },
  };
}
