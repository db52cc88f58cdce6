import type { V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { defaultInjectionConfig } from '../../webhook/config/injection-config.js';
import { captureConfigFor } from '../../webhook/injection/capture.js';
import { reviewAdmission } from '../../webhook/injection/review.js';
import { podCreate } from './helpers.js';

function pod(annotations: Record<string, string>, extra: Partial<V1Pod['spec']> = {}): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'p', namespace: 'shop', annotations },
    spec: { containers: [{ name: 'app', image: 'app:1', ports: [{ containerPort: 8080 }] }], ...extra },
  };
}

const T = 'traffic.sidecar.istio.io/';

/** Every way a traffic annotation can be refused: [annotation, value, the message must mention]. */
const sidecarRejections: [string, string, string][] = [
  [`${T}includeInboundPorts`, '70000', '70000'],
  [`${T}includeInboundPorts`, '80,http', 'http'],
  [`${T}includeInboundPorts`, '0', '0'],
  [`${T}includeInboundPorts`, '-1', '-1'],
  [`${T}excludeInboundPorts`, '*', '*'],
  [`${T}excludeInboundPorts`, '65536', '65536'],
  [`${T}excludeInboundPorts`, '15020,8o', '8o'],
  [`${T}includeOutboundIPRanges`, '10.0.0.0/33', '10.0.0.0/33'],
  [`${T}includeOutboundIPRanges`, '10.0.0.1', '10.0.0.1'],
  [`${T}includeOutboundIPRanges`, 'example.com/8', 'example.com/8'],
  [`${T}includeOutboundIPRanges`, 'fd00::/129', 'fd00::/129'],
  [`${T}excludeOutboundIPRanges`, '*', '*'],
  [`${T}excludeOutboundIPRanges`, '10.0.0.0/8,300.1.1.1/32', '300.1.1.1/32'],
  [`${T}includeOutboundPorts`, '*', '*'],
  [`${T}includeOutboundPorts`, '3306,99999', '99999'],
  [`${T}excludeOutboundPorts`, '*', '*'],
  [`${T}excludeOutboundPorts`, '65536', '65536'],
  [`${T}excludeInterfaces`, 'eth0/1', 'eth0/1'],
  [`${T}excludeInterfaces`, 'averyveryverylongname', 'averyveryverylongname'],
  ['sidecar.istio.io/interceptionMode', 'TPROXY', 'TPROXY'],
  ['sidecar.istio.io/interceptionMode', 'redirect', 'redirect'],
  ['sidecar.istio.io/nativeSidecar', 'yes', 'yes'],
];

describe('traffic annotations in sidecar mode', () => {
  it.each(sidecarRejections)('%s: %j is refused, naming the annotation and the value', (name, value, mention) => {
    const outcome = reviewAdmission(podCreate(pod({ [name]: value })), defaultInjectionConfig);
    expect(outcome.kind).toBe('rejected');
    const message = outcome.kind === 'rejected' ? outcome.message : '';
    expect(message).toContain(name);
    expect(message).toContain(mention);
  });

  it('follows istio-iptables: defaults, whitespace, empty includes, order and duplicates', () => {
    const cfg = (a: Record<string, string>) => captureConfigFor(pod(a), pod(a).spec!.containers, defaultInjectionConfig);
    expect(cfg({})).toMatchObject({
      inboundPorts: '*',
      excludeInboundPorts: [15020, 15021, 15090],
      outboundIpRanges: '*',
      excludeOutboundIpRanges: [],
      outboundPorts: [],
      excludeOutboundPorts: [],
      excludeInterfaces: [],
      outboundPort: 15001,
      inboundPort: 15006,
      proxyUid: 1337,
      proxyGid: 1337,
    });
    expect(cfg({ [`${T}includeInboundPorts`]: '' }).inboundPorts).toEqual([]);
    expect(cfg({ [`${T}includeInboundPorts`]: ' 9080 , 9090,9080 ' }).inboundPorts).toEqual([9080, 9090]);
    expect(cfg({ [`${T}includeOutboundIPRanges`]: '' }).outboundIpRanges).toEqual([]);
    expect(cfg({ [`${T}includeOutboundIPRanges`]: '*' }).outboundIpRanges).toBe('*');
    expect(cfg({ [`${T}includeOutboundIPRanges`]: '10.0.0.0/8,fd00::/8' }).outboundIpRanges).toEqual(['10.0.0.0/8', 'fd00::/8']);
    // The mesh's own ports stay excluded, before the pod's own, without repeats.
    expect(cfg({ [`${T}excludeInboundPorts`]: '15021,22' }).excludeInboundPorts).toEqual([15020, 15021, 15090, 22]);
  });

  it('takes the mesh-wide outbound capture when the pod does not say, and the annotation over it', () => {
    const config = {
      ...defaultInjectionConfig,
      outboundCapture: { includeIpRanges: ['10.96.0.0/12', 'fd00:10:96::/108'], excludeIpRanges: ['10.96.0.1/32'], excludePorts: [443, 5432] },
    };
    const plain = pod({});
    expect(captureConfigFor(plain, plain.spec!.containers, config)).toMatchObject({
      outboundIpRanges: ['10.96.0.0/12', 'fd00:10:96::/108'],
      excludeOutboundIpRanges: ['10.96.0.1/32'],
      excludeOutboundPorts: [443, 5432],
    });
    const own = pod({ [`${T}includeOutboundIPRanges`]: '*', [`${T}excludeOutboundIPRanges`]: '', [`${T}excludeOutboundPorts`]: '6379' });
    expect(captureConfigFor(own, own.spec!.containers, config)).toMatchObject({ outboundIpRanges: '*', excludeOutboundIpRanges: [], excludeOutboundPorts: [6379] });
  });

  it('captures only the declared TCP ports when so configured and the pod does not say', () => {
    const p = pod({}, {
      containers: [
        { name: 'a', image: 'a', ports: [{ containerPort: 8080 }, { containerPort: 53, protocol: 'UDP' }] },
        { name: 'b', image: 'b', ports: [{ containerPort: 9100, protocol: 'TCP' }, { containerPort: 8080 }] },
      ],
    });
    const config = { ...defaultInjectionConfig, inboundCapture: 'declared' as const };
    expect(captureConfigFor(p, p.spec!.containers, config).inboundPorts).toEqual([8080, 9100]);
    const withAnnotation = pod({ [`${T}includeInboundPorts`]: '*' });
    expect(captureConfigFor(withAnnotation, withAnnotation.spec!.containers, config).inboundPorts).toBe('*');
  });

  it('refuses an app container that declares a port the sidecar uses', () => {
    for (const port of [15001, 15002, 15006, 15020, 15021, 15081, 15082, 15090, 15379]) {
      const outcome = reviewAdmission(podCreate(pod({}, { containers: [{ name: 'app', image: 'a', ports: [{ containerPort: port }] }] })), defaultInjectionConfig);
      expect(outcome).toEqual({ kind: 'rejected', message: `container "app" declares port ${port}, which the apisix-mesh sidecar uses` });
    }
  });

  it("refuses a pod that already has Istio's sidecar", () => {
    const outcome = reviewAdmission(podCreate(pod({ 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' })), defaultInjectionConfig);
    expect(outcome).toEqual({
      kind: 'rejected',
      message: "the pod already has Istio's sidecar (annotation sidecar.istio.io/status); remove it, or use apisix-mesh.io/mode: gateway or none",
    });
    const gateway = reviewAdmission(podCreate(pod({ 'sidecar.istio.io/status': '{}', 'apisix-mesh.io/mode': 'gateway' })), defaultInjectionConfig);
    expect(gateway.kind).toBe('injected');
  });

  it('refuses app containers and volumes named like the sidecar parts', () => {
    const c = reviewAdmission(podCreate(pod({}, { containers: [{ name: 'apisix-mesh-agent', image: 'a' }] })), defaultInjectionConfig);
    expect(c.kind === 'rejected' && c.message).toContain('container "apisix-mesh-agent"');
    const i = reviewAdmission(podCreate(pod({}, { initContainers: [{ name: 'apisix-mesh-init', image: 'a' }] })), defaultInjectionConfig);
    expect(i.kind === 'rejected' && i.message).toContain('init container "apisix-mesh-init"');
    const v = reviewAdmission(podCreate(pod({}, { volumes: [{ name: 'apisix-mesh-podinfo', emptyDir: {} }] })), defaultInjectionConfig);
    expect(v.kind === 'rejected' && v.message).toContain('volume "apisix-mesh-podinfo"');
  });
});

const gatewayRejections: [string, string, string][] = [
  ['apisix-mesh.io/gateway-inbound-ports', '80,https', 'https'],
  ['apisix-mesh.io/gateway-inbound-ports', '*', '*'],
  ['apisix-mesh.io/gateway-exclude-outbound-ports', '70000', '70000'],
  ['apisix-mesh.io/gateway-exclude-outbound-ip-ranges', '10.0.0.0', '10.0.0.0'],
  ['apisix-mesh.io/gateway-exclude-outbound-ip-ranges', '*', '*'],
  [`${T}excludeInboundPorts`, '80,x', 'x'],
  [`${T}excludeOutboundPorts`, '*', '*'],
  [`${T}excludeOutboundIPRanges`, 'bad/8', 'bad/8'],
];

describe('annotations in gateway mode', () => {
  it.each(gatewayRejections)('%s: %j is refused, naming the annotation and the value', (name, value, mention) => {
    const outcome = reviewAdmission(podCreate(pod({ 'apisix-mesh.io/mode': 'gateway', [name]: value })), defaultInjectionConfig);
    expect(outcome.kind).toBe('rejected');
    const message = outcome.kind === 'rejected' ? outcome.message : '';
    expect(message).toContain(name);
    expect(message).toContain(mention);
  });
});
