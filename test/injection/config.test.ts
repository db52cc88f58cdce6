import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultInjectionConfig } from '../../webhook/config/injection-config.js';
import { InjectionConfigError, loadInjectionConfig, parseInjectionConfig } from '../../webhook/config/parse-config.js';

describe('the injection configuration file', () => {
  it('is all defaults when empty', () => {
    expect(parseInjectionConfig('', 'c.yaml')).toEqual(defaultInjectionConfig);
    expect(parseInjectionConfig('# nothing\n', 'c.yaml')).toEqual(defaultInjectionConfig);
    expect(parseInjectionConfig('{}', 'c.yaml')).toEqual(defaultInjectionConfig);
  });

  it('has the documented defaults', () => {
    expect(defaultInjectionConfig).toMatchObject({
      images: { apisix: expect.stringMatching(/^apache\/apisix:3\.\d+\.\d+-debian$/), pullPolicy: 'IfNotPresent' },
      ports: { outbound: 15001, inbound: 15006, agentStatus: 15020, apisixStatus: 15021, apisixMetrics: 15090, etcd: 15379 },
      proxyUid: 1337,
      proxyGid: 1337,
      istiodAddress: 'istiod.istio-system.svc:15012',
      istiodTls: true,
      trustDomain: 'cluster.local',
      workloadKeyType: 'rsa',
      defaultMode: 'sidecar',
      nativeSidecars: false,
      rewriteAppProbes: true,
      inboundCapture: 'all',
      outboundCapture: { includeIpRanges: '*', excludeIpRanges: [], excludePorts: [] },
      gateway: { inboundPorts: [80, 443], excludeOutboundPorts: [4317, 4318], excludeOutboundIpRanges: [] },
      excludedNamespaces: ['kube-system', 'kube-public', 'kube-node-lease', 'local-path-storage'],
      webhookNamespace: 'apisix-mesh-system',
    });
  });

  it('overrides only the fields it names, keeping defaults next to them', () => {
    const config = parseInjectionConfig(
      [
        'images:',
        '  mesh: registry.example.com/mesh:1.2.3',
        'ports:',
        '  etcd: 25379',
        'resources:',
        '  apisix:',
        '    requests: {cpu: 250m, memory: 256Mi}',
        'istiodAddress: istiod.mesh.svc:15010',
        'nativeSidecars: true',
        'gateway:',
        '  excludeOutboundIpRanges: [169.254.169.254/32]',
        'excludedNamespaces: [kube-system]',
        'webhookNamespace: mesh-system',
      ].join('\n'),
      'c.yaml',
    );
    expect(config.images).toEqual({ ...defaultInjectionConfig.images, mesh: 'registry.example.com/mesh:1.2.3' });
    expect(config.ports).toEqual({ ...defaultInjectionConfig.ports, etcd: 25379 });
    expect(config.resources.apisix).toEqual({ requests: { cpu: '250m', memory: '256Mi' } });
    expect(config.resources.agent).toEqual(defaultInjectionConfig.resources.agent);
    expect(config.istiodAddress).toBe('istiod.mesh.svc:15010');
    expect(config.nativeSidecars).toBe(true);
    expect(config.gateway).toEqual({ ...defaultInjectionConfig.gateway, excludeOutboundIpRanges: ['169.254.169.254/32'] });
    expect(config.excludedNamespaces).toEqual(['kube-system']);
    expect(config.webhookNamespace).toBe('mesh-system');
  });

  it('istiodTls: false means istiod\'s plaintext port unless the file names an address', () => {
    expect(parseInjectionConfig('istiodTls: false', 'c.yaml')).toMatchObject({ istiodTls: false, istiodAddress: 'istiod.istio-system.svc:15010' });
    expect(parseInjectionConfig('istiodTls: false\nistiodAddress: istiod.mesh.svc:9010', 'c.yaml').istiodAddress).toBe('istiod.mesh.svc:9010');
    expect(parseInjectionConfig('istiodTls: true', 'c.yaml').istiodAddress).toBe('istiod.istio-system.svc:15012');
    expect(parseInjectionConfig('istiodAddress: "[fd00:96::10]:15012"', 'c.yaml').istiodAddress).toBe('[fd00:96::10]:15012');
    expect(parseInjectionConfig('istiodServerName: istiod-canary.istio-system.svc', 'c.yaml').istiodServerName).toBe('istiod-canary.istio-system.svc');
    expect(parseInjectionConfig('trustDomain: mesh.example.com', 'c.yaml').trustDomain).toBe('mesh.example.com');
    expect(parseInjectionConfig('workloadKeyType: ecdsa', 'c.yaml').workloadKeyType).toBe('ecdsa');
  });

  it('does not share objects with the defaults', () => {
    const config = parseInjectionConfig('nativeSidecars: true', 'c.yaml');
    expect(config.gateway.inboundPorts).not.toBe(defaultInjectionConfig.gateway.inboundPorts);
  });

  it.each([
    ['unknown top-level field', 'nativeSidecar: true', 'c.yaml: nativeSidecar: is not a known field'],
    ['unknown nested field', 'images:\n  agent: x', 'c.yaml: images.agent: is not a known field'],
    ['wrong type', 'nativeSidecars: "yes"', 'c.yaml: nativeSidecars: must be true or false, got "yes"'],
    ['port out of range', 'ports:\n  inbound: 70000', 'c.yaml: ports.inbound: must be an integer in 1-65535, got 70000'],
    ['two ports the same', 'ports:\n  inbound: 15001', 'c.yaml: ports.inbound: must differ from ports.outbound (both 15001)'],
    ['bad pull policy', 'images:\n  pullPolicy: Sometimes', 'c.yaml: images.pullPolicy: must be one of Always, IfNotPresent, Never'],
    ['empty image', 'images:\n  apisix: ""', 'c.yaml: images.apisix: must be a non-empty string'],
    ['uid 0', 'proxyUid: 0', 'c.yaml: proxyUid: must be an integer in 1-4294967294, got 0'],
    ['bad quantity', 'resources:\n  agent:\n    limits: {memory: lots}', 'c.yaml: resources.agent.limits.memory: must be a resource quantity'],
    ['unknown resources key', 'resources:\n  agent:\n    maximum: {}', 'c.yaml: resources.agent.maximum: is not a known field'],
    ['istiod without port', 'istiodAddress: istiod.istio-system.svc', 'c.yaml: istiodAddress: must be host:port'],
    ['an IPv6 istiod without brackets', 'istiodAddress: "fd00:96::10:15012"', 'c.yaml: istiodAddress: must be host:port (an IPv6 address goes in brackets: [fd00:96::10]:15012)'],
    ['brackets around no IPv6 address', 'istiodAddress: "[istiod]:15012"', 'c.yaml: istiodAddress: must be host:port ([istiod] is not an IPv6 address)'],
    ['a server name that is no DNS name', 'istiodServerName: "Istiod Canary"', 'c.yaml: istiodServerName: must be a DNS name in lower case'],
    ['istiodTls not a boolean', 'istiodTls: "no"', 'c.yaml: istiodTls: must be true or false, got "no"'],
    ['agentLiteMode not a boolean', 'agentLiteMode: "yes"', 'c.yaml: agentLiteMode: must be true or false, got "yes"'],
    ['a trust domain with capitals', 'trustDomain: Cluster.Local', 'c.yaml: trustDomain: must be a SPIFFE trust domain'],
    ['an unknown key type', 'workloadKeyType: ECDSA', 'c.yaml: workloadKeyType: must be one of rsa, ecdsa, got "ECDSA"'],
    ['bad CIDR', 'gateway:\n  excludeOutboundIpRanges: [10.0.0.0/40]', 'c.yaml: gateway.excludeOutboundIpRanges[0]: must be a CIDR'],
    ['bad port in a list', 'gateway:\n  inboundPorts: [80, "443"]', 'c.yaml: gateway.inboundPorts[1]: must be an integer in 1-65535'],
    ['bad namespace', 'excludedNamespaces: [Kube_System]', 'c.yaml: excludedNamespaces[0]: must be a namespace name'],
    ['not a list', 'excludedNamespaces: kube-system', 'c.yaml: excludedNamespaces: must be a list'],
    ['bad inbound capture', 'inboundCapture: some', 'c.yaml: inboundCapture: must be one of all, declared'],
    ['outbound ranges neither * nor a list', 'outboundCapture: {includeIpRanges: all}', 'c.yaml: outboundCapture.includeIpRanges: must be "*" or a list of CIDRs, got "all"'],
    ['a bad outbound CIDR', 'outboundCapture: {includeIpRanges: [10.96.0.0]}', 'c.yaml: outboundCapture.includeIpRanges[0]: must be a CIDR (address/prefix-length), got "10.96.0.0"'],
    ['a bad excluded port', 'outboundCapture: {excludePorts: [0]}', 'c.yaml: outboundCapture.excludePorts[0]: must be an integer in 1-65535, got 0'],
    ['a collector pause below 100 %', 'apisixLuaGc: {pause: 50}', 'c.yaml: apisixLuaGc.pause: must be an integer in 100-1000, got 50'],
    ['a collector step given as text', 'apisixLuaGc: {stepmul: "400"}', 'c.yaml: apisixLuaGc.stepmul: must be an integer in 100-10000, got "400"'],
    ['an unknown collector setting', 'apisixLuaGc: {mode: generational}', 'c.yaml: apisixLuaGc.mode: is not a known field (known: pause, stepmul)'],
    ['a list document', '- a', 'c.yaml: the document: must be a mapping'],
    ['duplicate keys', 'nativeSidecars: true\nnativeSidecars: false', 'c.yaml: not valid YAML'],
    ['broken YAML', 'images: [', 'c.yaml: not valid YAML'],
  ])('refuses %s, naming the field', (_name, text, message) => {
    expect(() => parseInjectionConfig(text, 'c.yaml')).toThrow(InjectionConfigError);
    expect(() => parseInjectionConfig(text, 'c.yaml')).toThrow(message);
  });

  it('loads a file, and says which file it cannot read', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'apisix-mesh-config-'));
    const file = join(dir, 'injection.yaml');
    writeFileSync(file, 'apisixWorkerProcesses: 4\napisixLuaGc: {stepmul: 600}\n');
    const loaded = await loadInjectionConfig(file);
    expect(loaded.apisixWorkerProcesses).toBe(4);
    // one field of a section given: the other keeps its default
    expect(loaded.apisixLuaGc).toEqual({ pause: 150, stepmul: 600 });
    await expect(loadInjectionConfig(join(dir, 'missing.yaml'))).rejects.toThrow(`${join(dir, 'missing.yaml')}: cannot read the injection configuration (ENOENT)`);
  });
});
