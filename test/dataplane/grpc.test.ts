// gRPC through the sidecar, both ways, on the real APISIX: h2c from the app reaches APISIX's
// hand-off listener (HTTP/2 and HTTP/1.1 share it), clusters istiod marks HTTP/2 go out as HTTP/2
// (nginx's gRPC proxy), and inbound gRPC reaches the app as HTTP/2, from 127.0.0.6.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { POD_IP } from '../support/pod/network.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { loadCanonical } from '../support/xds-fixtures.js';
import { edsCluster, loadAssignment, outboundHttpListener, routeConfiguration, serviceVirtualHost, httpRoute, virtualInbound } from '../support/istio-xds.js';

const SCRIPT = fileURLToPath(new URL('../support/grpc-echo.mjs', import.meta.url));
const VIP = '10.96.60.5';
const HOST = 'greeter.shop.svc.cluster.local';
const PORT = 50051;
const ENDPOINT = '10.244.6.10';
const APP_PORT = 9000;
const CLUSTER = `outbound|${PORT}||${HOST}`;
const T = 'type.googleapis.com/';
const HTTP2 = {
  'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
    '@type': `${T}envoy.extensions.upstreams.http.v3.HttpProtocolOptions`,
    explicit_http_config: { http2_protocol_options: {} },
  },
};

interface Reply { text?: string; name?: string; peer?: string; error?: number; replies?: Reply[] }

function run(ns: string, args: string[]): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, process.execPath, SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

async function serve(ns: string, name: string, host: string, port: number): Promise<ChildProcess> {
  const child = run(ns, ['server', name, host, String(port)]);
  await new Promise<void>((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (d) => (err += String(d)));
    child.stdout!.on('data', (d) => String(d).includes('listening') && resolve());
    child.once('exit', (code) => reject(new Error(`gRPC server ${name} exited ${code}: ${err}`)));
  });
  return child;
}

async function call(ns: string, mode: 'unary' | 'stream', target: string, authority: string, text: string): Promise<Reply> {
  const child = run(ns, [mode, target, authority, text]);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += String(d)));
  child.stderr!.on('data', (d) => (err += String(d)));
  await new Promise((r) => child.once('exit', r));
  if (!out.trim()) throw new Error(`gRPC client printed nothing: ${err}`);
  return JSON.parse(out) as Reply;
}

describeWhenAvailable('gRPC through the sidecar (real APISIX)', missingForPod(), () => {
  let pod: RunningPod;
  const servers: ChildProcess[] = [];
  beforeAll(async () => {
    const canary = loadCanonical('synthetic-canary-xds-responses.json');
    const inboundCluster = { '@type': `${T}envoy.config.cluster.v3.Cluster`, name: `inbound|${APP_PORT}||`, type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '10s', typed_extension_protocol_options: HTTP2 };
    const passthrough = { '@type': `${T}envoy.config.cluster.v3.Cluster`, name: 'InboundPassthroughClusterIpv4', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '10s' };
    const grpcCluster = { '@type': `${T}envoy.config.cluster.v3.Cluster`, ...edsCluster(CLUSTER), typed_extension_protocol_options: HTTP2 };
    const route = httpRoute('default', { prefix: '/' }, { cluster: CLUSTER, timeout: '0s' });
    pod = await startPod({
      manifest: podManifest('greeter-client', 'shop', { app: 'greeter-client' }, [{ name: 'app', ports: [APP_PORT] }]),
      xds: {
        ...canary,
        cluster: [...canary.cluster, grpcCluster, inboundCluster, passthrough],
        endpoint: [...canary.endpoint, { '@type': `${T}envoy.config.endpoint.v3.ClusterLoadAssignment`, ...loadAssignment(CLUSTER, [{ ip: ENDPOINT, port: PORT }]) }],
        listener: [
          ...canary.listener,
          { '@type': `${T}envoy.config.listener.v3.Listener`, ...outboundHttpListener(PORT) },
          { '@type': `${T}envoy.config.listener.v3.Listener`, ...virtualInbound([{ port: APP_PORT, service: 'greeter-client.shop.svc.cluster.local' }]) },
        ],
        route: [...canary.route, { '@type': `${T}envoy.config.route.v3.RouteConfiguration`, ...routeConfiguration(PORT, [serviceVirtualHost(HOST, PORT, VIP, [route])]) }],
      },
      clusterAddresses: [VIP, ENDPOINT, '10.244.5.21', '10.244.5.11', '10.244.5.12'],
    });
    servers.push(await serve(pod.network.cluster, 'greeter', ENDPOINT, PORT));
    servers.push(await serve(pod.network.pod, 'app', '0.0.0.0', APP_PORT));
    await pod.kubelet.waitReady(20_000);
    await pod.waitSynced(20_000);
  }, 90_000);
  afterAll(async () => {
    for (const s of servers) s.kill();
    await pod?.stop();
  });

  it('outbound unary: the app calls a mesh gRPC service by its VIP and gets its answer', async () => {
    const reply = await call(pod.network.pod, 'unary', `${VIP}:${PORT}`, `${HOST}:${PORT}`, 'hello');
    expect(reply).toMatchObject({ text: 'hello', name: 'greeter' });
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });

  it('outbound server streaming: every message arrives, in order', async () => {
    const reply = await call(pod.network.pod, 'stream', `${VIP}:${PORT}`, `${HOST}:${PORT}`, 'tick');
    expect(reply.error).toBeUndefined();
    expect(reply.replies?.map((r) => r.text)).toEqual(['tick#0', 'tick#1', 'tick#2']);
  });

  it('inbound unary and streaming: a cluster client reaches the app as HTTP/2, from 127.0.0.6', async () => {
    const unary = await call(pod.network.cluster, 'unary', `${POD_IP}:${APP_PORT}`, `greeter-client.shop:${APP_PORT}`, 'in');
    expect(unary).toMatchObject({ text: 'in', name: 'app' });
    expect(unary.peer).toMatch(/^(ipv4:)?127\.0\.0\.6:\d+$/);
    const stream = await call(pod.network.cluster, 'stream', `${POD_IP}:${APP_PORT}`, `greeter-client.shop:${APP_PORT}`, 'in');
    expect(stream.replies?.map((r) => r.text)).toEqual(['in#0', 'in#1', 'in#2']);
    expect(pod.apisixErrors(), describeLines(pod.apisixErrors())).toEqual([]);
  });
});
