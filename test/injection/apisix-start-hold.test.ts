// Istio's holdApplicationUntilProxyStarts: APISIX's postStart hook (ordinary sidecars) holds the app's
// containers until APISIX answers ready. The hook's bash runs here for real against a loopback server
// that answers as APISIX's status API does.
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultInjectionConfig } from '../../webhook/config/injection-config.js';
import { parseInjectionConfig } from '../../webhook/config/parse-config.js';
import { apisixHoldCommand } from '../../webhook/injection/apisix-start-hold.js';
import { injectPod } from '../../webhook/injection/inject-pod.js';
import { annotatedPod } from './helpers.js';

const apisixOf = (annotations: Record<string, string>, config = defaultInjectionConfig, native = false) => {
  const result = injectPod(annotatedPod({ ...annotations, ...(native ? { 'sidecar.istio.io/nativeSidecar': 'true' } : {}) }), 'sidecar', config);
  if (result.kind === 'rejected') throw new Error(result.message);
  const all = [...(result.pod.spec!.initContainers ?? []), ...result.pod.spec!.containers];
  return all.find((c) => c.name === 'apisix-mesh-apisix')!;
};
const PC = 'proxy.istio.io/config';

function run(command: string[]): Promise<{ code: number | null; output: string }> {
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, output: output.trim() })));
}

describe('holdApplicationUntilProxyStarts', () => {
  it('off by default (Istio\'s default): APISIX has its preStop drain only', () => {
    expect(defaultInjectionConfig.holdApplicationUntilProxyStarts).toBe(false);
    expect(Object.keys(apisixOf({}).lifecycle!)).toEqual(['preStop']);
  });

  it("the pod's ProxyConfig or the configuration turns it on: a postStart hook on APISIX, before the app starts", () => {
    const held = apisixOf({ [PC]: 'holdApplicationUntilProxyStarts: true' });
    expect(held.lifecycle!.postStart!.exec!.command).toEqual(apisixHoldCommand(15021));
    expect(held.lifecycle!.preStop).toBeDefined();
    const meshWide = parseInjectionConfig('holdApplicationUntilProxyStarts: true', 'c.yaml');
    expect(apisixOf({}, meshWide).lifecycle!.postStart).toBeDefined();
    // the pod's false wins over the mesh's true
    expect(apisixOf({ [PC]: '{"holdApplicationUntilProxyStarts": false}' }, meshWide).lifecycle!.postStart).toBeUndefined();
    // native sidecars: APISIX's startup probe holds the app already
    const native = apisixOf({ [PC]: 'holdApplicationUntilProxyStarts: true' }, defaultInjectionConfig, true);
    expect(native.lifecycle!.postStart).toBeUndefined();
    expect(native.startupProbe).toBeDefined();
  });

  it('refuses a value that is not a boolean, naming the annotation', () => {
    for (const bad of ['"true"', 'yes-please', '1']) {
      const result = injectPod(annotatedPod({ [PC]: `holdApplicationUntilProxyStarts: ${bad}` }), 'sidecar', defaultInjectionConfig);
      expect(result.kind === 'rejected' && result.message, bad).toMatch(/^annotation proxy\.istio\.io\/config: holdApplicationUntilProxyStarts .* must be true or false$/);
    }
    expect(() => parseInjectionConfig('holdApplicationUntilProxyStarts: maybe', 'c.yaml')).toThrow(/holdApplicationUntilProxyStarts: must be true or false/);
  });

  describe('the hook itself (bash, /dev/tcp)', () => {
    let server: Server | undefined;
    afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));
    const listen = (answer: () => number): Promise<number> =>
      new Promise((resolve) => {
        server = createServer((req, res) => {
          expect(req.url).toBe('/status/ready');
          res.writeHead(answer()).end('{}');
        });
        server.listen(0, '127.0.0.1', () => resolve((server!.address() as AddressInfo).port));
      });

    it('returns once APISIX answers 200, after answers of 503', async () => {
      let asked = 0;
      const port = await listen(() => (++asked < 3 ? 503 : 200));
      const { code, output } = await run(apisixHoldCommand(port, 20));
      expect(code).toBe(0);
      expect(output).toMatch(/^APISIX ready after \d+ s: the app starts$/);
      expect(asked).toBe(3);
    });

    it('fails after its timeout when APISIX never answers ready (the kubelet then restarts APISIX, as with pilot-agent wait)', async () => {
      const port = await listen(() => 503);
      const { code, output } = await run(apisixHoldCommand(port, 1));
      expect(code).toBe(1);
      expect(output).toMatch(/^APISIX not ready after 1 s \(last answer: HTTP\/1\.1 503 Service Unavailable\s*\): the app is held$/);
    });

    it('also when nothing listens (connection refused is not an answer)', async () => {
      const port = await listen(() => 200);
      await new Promise<void>((resolve) => server!.close(() => resolve()));
      server = undefined;
      const { code, output } = await run(apisixHoldCommand(port, 1));
      expect(code).toBe(1);
      expect(output).toBe('APISIX not ready after 1 s (last answer: none): the app is held');
    });
  });
});
