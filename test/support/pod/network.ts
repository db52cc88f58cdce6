import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { sh } from '../../iptables/support/netns.js';

/**
 * The pod's network and the cluster around it: two namespaces joined by a veth pair. The pod has
 * one address and a default route into the cluster namespace, which holds every other address a
 * test needs (istiod, service VIPs, endpoints, external hosts) on its loopback, so whatever the pod
 * dials is either captured by its rules or answered there. Nothing is added to the host's own
 * namespace. Names carry a random suffix; `destroy` kills what still runs inside and removes both.
 * `hosts` stands for the cluster's DNS inside the pod: `ip netns exec` bind-mounts
 * /etc/netns/<pod>/hosts over /etc/hosts for every process it starts there (APISIX's resolver reads
 * it, e.g. for proxy-mirror's service host names).
 */
export const POD_IP = '10.66.0.2';
export const CLUSTER_GATEWAY_IP = '10.66.0.1';
/** With `dualStack` or `ipv6Only`: the pod's IPv6 address (a unique local one, which the kernel scopes global) and its gateway. */
export const POD_IP6 = 'fd00:66::2';
export const CLUSTER_GATEWAY_IP6 = 'fd00:66::1';

export interface PodNetwork {
  pod: string;
  cluster: string;
  /** adds addresses (v4 /32, v6 /128) to the cluster namespace */
  addClusterAddresses(...ips: string[]): void;
  destroy(): void;
}

function killAllIn(ns: string): void {
  const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * `dualStack`: the pod also gets POD_IP6 and an IPv6 default route (as a dual-stack cluster's pod,
 * IPv4 first: status.podIP stays POD_IP). `ipv6Only`: POD_IP6 and the IPv6 route alone, as in an
 * IPv6-only cluster — no IPv4 address or route on eth0 (nor on the cluster's side of the pair), lo
 * keeps 127.0.0.1 as the kernel gives it. Addresses skip duplicate address detection, which would
 * keep them unusable for a second or two.
 */
export function createPodNetwork(hosts: Record<string, string> = {}, options: { dualStack?: boolean; ipv6Only?: boolean } = {}): PodNetwork {
  const suffix = randomBytes(3).toString('hex');
  const pod = `pod-${suffix}`;
  const cluster = `cluster-${suffix}`;
  const added = new Set<string>();
  const etc = `/etc/netns/${pod}`;
  const destroy = (): void => {
    for (const ns of [pod, cluster]) {
      killAllIn(ns);
      spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    }
    rmSync(etc, { recursive: true, force: true });
  };
  process.once('exit', destroy);
  try {
    if (Object.keys(hosts).length) {
      mkdirSync(etc, { recursive: true });
      const lines = ['127.0.0.1 localhost', '::1 localhost', ...Object.entries(hosts).map(([name, ip]) => `${ip} ${name}`)];
      writeFileSync(`${etc}/hosts`, `${lines.join('\n')}\n`, { mode: 0o644 });
    }
    sh(['ip', 'netns', 'add', pod]);
    sh(['ip', 'netns', 'add', cluster]);
    sh(['ip', '-n', pod, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'veth-pod', 'netns', cluster]);
    if (!options.ipv6Only) {
      sh(['ip', '-n', pod, 'addr', 'add', `${POD_IP}/24`, 'dev', 'eth0']);
      sh(['ip', '-n', cluster, 'addr', 'add', `${CLUSTER_GATEWAY_IP}/24`, 'dev', 'veth-pod']);
    }
    for (const [ns, dev] of [[pod, 'eth0'], [cluster, 'veth-pod']] as const) {
      sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      sh(['ip', '-n', ns, 'link', 'set', dev, 'up']);
    }
    if (!options.ipv6Only) sh(['ip', '-n', pod, 'route', 'add', 'default', 'via', CLUSTER_GATEWAY_IP]);
    if (options.dualStack || options.ipv6Only) {
      sh(['ip', '-n', pod, 'addr', 'add', `${POD_IP6}/64`, 'dev', 'eth0', 'nodad']);
      sh(['ip', '-n', cluster, 'addr', 'add', `${CLUSTER_GATEWAY_IP6}/64`, 'dev', 'veth-pod', 'nodad']);
      sh(['ip', '-n', pod, '-6', 'route', 'add', 'default', 'via', CLUSTER_GATEWAY_IP6]);
    }
    // containerd opens every port to a pod's users (enable_unprivileged_ports): an app may listen on 80
    sh(['ip', 'netns', 'exec', pod, 'sysctl', '-qw', 'net.ipv4.ip_unprivileged_port_start=0']);
  } catch (err) {
    destroy();
    throw err;
  }
  return {
    pod,
    cluster,
    addClusterAddresses(...ips: string[]) {
      for (const ip of ips) {
        if (added.has(ip)) continue;
        added.add(ip);
        if (ip.includes(':')) sh(['ip', '-n', cluster, 'addr', 'add', `${ip}/128`, 'dev', 'lo', 'nodad']);
        else sh(['ip', '-n', cluster, 'addr', 'add', `${ip}/32`, 'dev', 'lo']);
      }
    },
    destroy,
  };
}
