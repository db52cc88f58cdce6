import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../cli/program.js';
import { parseDownwardApiLabels } from '../../agent/xds/node.js';
import { APP_PROBERS_ENV, parseAppProbers } from '../../agent/app-probes/app-probers.js';

// The webhook writes command lines that other parts of this same binary must accept: the init
// container's `apisix-mesh iptables ...` and the sidecar's `apisix-mesh agent ...`. These tests
// feed the injected pod's own arguments to those commands, so a renamed flag on either side fails here.
const cli = new URL('../../dist/cli/main.js', import.meta.url).pathname;
const example = new URL('../../examples/deployment.yaml', import.meta.url).pathname;

function injectedSpec() {
  const res = spawnSync(process.execPath, [cli, 'inject', '-f', example], { encoding: 'utf8' });
  expect(res.status, res.stderr).toBe(0);
  const deployment = parseAllDocuments(res.stdout)[0]!.toJSON() as { spec: { template: V1Pod } };
  return deployment.spec.template.spec!;
}

function injectedContainers(): V1Container[] {
  const spec = injectedSpec();
  return [...(spec.initContainers ?? []), ...spec.containers];
}

describe('command lines the webhook injects', () => {
  const containers = injectedContainers();
  const volumes = injectedSpec().volumes ?? [];
  const argsOf = (command: string): string[] => {
    const c = containers.find((x) => x.args?.[0] === command);
    expect(c, `a container running "${command}"`).toBeDefined();
    return c!.args!;
  };

  it('the agent command knows every flag the sidecar is given', async () => {
    const agent = (await buildProgram()).commands.find((c) => c.name() === 'agent')!;
    const parsed = agent.parseOptions(argsOf('agent').slice(1));
    expect(parsed.unknown).toEqual([]);
    expect(parsed.operands).toEqual([]);
  });

  it('the iptables command accepts the init container\'s capture configuration', () => {
    const res = spawnSync(process.execPath, [cli, ...argsOf('iptables'), '--dry-run'], { encoding: 'utf8' });
    expect(res.status, res.stderr).toBe(0);
    expect(res.stdout).toContain(':APISIX_MESH_OUTPUT');
    expect(res.stdout).toContain('--to-ports 15001');
    expect(res.stdout).toContain('--to-ports 15006');
  });

  it('the agent reads the labels file the downward API writes', () => {
    // The exact format the kubelet writes for `fieldPath: metadata.labels` (Go %q values).
    const file = 'app="reviews"\nversion="v1"\nquote="a\\"b"\nempty=""';
    expect(parseDownwardApiLabels(file)).toEqual({ app: 'reviews', version: 'v1', quote: 'a"b', empty: '' });
    const agent = containers.find((x) => x.args?.[0] === 'agent')!;
    const labelsFlag = agent.args!.find((a) => a.startsWith('--pod-labels-file='))!;
    const mount = agent.volumeMounts!.find((m) => labelsFlag.slice('--pod-labels-file='.length).startsWith(`${m.mountPath}/`));
    expect(mount, 'the labels file lies on a mounted volume').toBeDefined();
  });

  it('the agent reads the app probers the injection hands it, one for each rewritten probe', () => {
    const agent = containers.find((x) => x.args?.[0] === 'agent')!;
    const probers = parseAppProbers(agent.env?.find((e) => e.name === APP_PROBERS_ENV)?.value);
    const rewritten = containers.flatMap((c) =>
      [c.livenessProbe, c.readinessProbe, c.startupProbe].flatMap((p) => (p?.httpGet?.port === 15020 && p.httpGet.path?.startsWith('/app-health/') ? [p.httpGet.path] : [])),
    );
    expect(rewritten.length).toBeGreaterThan(0);
    expect([...probers.keys()].sort()).toEqual(rewritten.sort());
    expect(agent.ports?.map((p) => p.containerPort)).toContain(15020);
  });

  it('the mesh root and the token the agent is pointed at lie on the volumes Istio fills', () => {
    const agent = containers.find((x) => x.args?.[0] === 'agent')!;
    for (const [flag, source] of [['--root-cert=', 'configMap'], ['--token-file=', 'projected']] as const) {
      const file = agent.args!.find((a) => a.startsWith(flag))?.slice(flag.length);
      expect(file, flag).toBeDefined();
      const mount = agent.volumeMounts!.find((m) => file!.startsWith(`${m.mountPath}/`));
      expect(mount, `${flag} lies on a mounted volume`).toBeDefined();
      expect(Object.keys(volumes.find((v) => v.name === mount!.name)!)).toContain(source);
    }
  });
});

describe('the agent\'s postStart hook (holds APISIX until the etcd API answers)', () => {
  const agent = injectedContainers().find((x) => x.args?.[0] === 'agent')!;
  const hook = agent.lifecycle?.postStart?.exec?.command ?? [];

  it('runs the image\'s own entrypoint, since exec hooks bypass it', () => {
    const dockerfile = readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8');
    const entrypoint = JSON.parse(/^ENTRYPOINT (.*)$/m.exec(dockerfile)![1]!) as string[];
    expect(hook.slice(0, entrypoint.length)).toEqual(entrypoint);
    expect(hook[entrypoint.length]).toBe('wait');
  });

  it('waits for the address the agent serves the etcd API on', async () => {
    const listen = agent.args!.find((a) => a.startsWith('--etcd-listen='))!.split('=')[1];
    expect(hook).toContain(`--etcd-address=${listen}`);
    const wait = (await buildProgram()).commands.find((c) => c.name() === 'wait')!;
    const parsed = wait.parseOptions(hook.slice(3));
    expect(parsed.unknown).toEqual([]);
    expect(parsed.operands).toEqual([]);
  });
});
