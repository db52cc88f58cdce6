/**
 * `apisix-mesh inject` end to end: the built CLI (`node dist/cli/main.js`, built by `npm test`),
 * real files, real stdin, exit statuses and messages.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { defaultInjectionConfig } from '../../webhook/config/injection-config.js';
import { injectManifests } from '../../webhook/injection/manifests.js';

const cli = join(process.cwd(), 'dist', 'cli', 'main.js');
const example = join(process.cwd(), 'examples', 'deployment.yaml');

function run(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [cli, ...args], { input, encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

let dir: string;
beforeAll(() => {
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run \`npm run build\` (npm test does it)`);
  dir = mkdtempSync(join(tmpdir(), 'apisix-mesh-inject-'));
});

const write = (name: string, text: string): string => {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
};

describe('apisix-mesh inject', () => {
  it('injects the README example and prints what injectManifests prints', () => {
    const r = run(['inject', '-f', example]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(injectManifests(readFileSync(example, 'utf8'), { config: defaultInjectionConfig }).yaml);
    const deployment = parse(r.stdout);
    expect(deployment.spec.template.spec.containers.map((c: { name: string }) => c.name)).toEqual(['apisix-mesh-agent', 'apisix-mesh-apisix', 'reviews']);
  });

  it('warns (without -v) about a workload whose pod template it does not know, and leaves it as it is', () => {
    const rollout = 'apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: web, namespace: shop}\nspec:\n  template:\n    spec:\n      containers: [{name: web, image: nginx}]\n';
    const r = run(['inject', '-f', '-'], `${rollout}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n`);
    expect(r.status).toBe(0);
    expect(r.stderr).toBe(
      'apisix-mesh inject: warning: Rollout shop/web (document 1): its pod template was left as it is (inject knows Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob and Pod); in a cluster the webhook injects its pods when they are created\n',
    );
    expect(parseAllDocuments(r.stdout)[0]!.toJS()).toEqual(parse(rollout));
  });

  it('reads standard input with -f -', () => {
    const r = run(['inject', '-f', '-'], readFileSync(example, 'utf8'));
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(run(['inject', '-f', example]).stdout);
  });

  it('forces a mode with --mode', () => {
    const r = run(['inject', '-f', example, '--mode', 'gateway']);
    expect(r.status).toBe(0);
    const tpl = parse(r.stdout).spec.template;
    expect(tpl.metadata.labels['sidecar.istio.io/inject']).toBe('true');
    expect(tpl.metadata.annotations['traffic.sidecar.istio.io/excludeInboundPorts']).toBe('80,443');
    expect(tpl.spec.containers).toHaveLength(1);
    const none = run(['inject', '-f', example, '--mode', 'none']);
    expect(parse(none.stdout)).toEqual(parse(readFileSync(example, 'utf8')));
  });

  it('refuses an unknown --mode with exit 2', () => {
    const r = run(['inject', '-f', example, '--mode', 'ambient']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('ambient');
    expect(r.stdout).toBe('');
  });

  it('uses the configuration file given with --config', () => {
    const config = write('native.yaml', 'nativeSidecars: true\nimages:\n  apisix: mirror.example.com/apisix:3.13.0-debian\n');
    const r = run(['inject', '-f', example, '--config', config]);
    expect(r.status).toBe(0);
    const spec = parse(r.stdout).spec.template.spec;
    const apisix = spec.initContainers.find((c: { name: string }) => c.name === 'apisix-mesh-apisix');
    expect(apisix).toMatchObject({ image: 'mirror.example.com/apisix:3.13.0-debian', restartPolicy: 'Always' });
    expect(spec.containers.map((c: { name: string }) => c.name)).toEqual(['reviews']);
  });

  it('stops with exit 2 and the field name on a bad configuration file', () => {
    const config = write('bad.yaml', 'ports:\n  inbound: 99999\n');
    const r = run(['inject', '-f', example, '--config', config]);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(`apisix-mesh: inject: ${config}: ports.inbound: must be an integer in 1-65535, got 99999\n`);
    expect(r.stdout).toBe('');
  });

  it('exits 1 with the reason on stderr when a pod is refused, printing nothing', () => {
    const file = write(
      'rejected.yaml',
      `${readFileSync(example, 'utf8')}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\n  namespace: shop\n  annotations:\n    traffic.sidecar.istio.io/excludeOutboundPorts: "*"\nspec:\n  containers:\n    - name: app\n      image: app:1\n`,
    );
    const r = run(['inject', '-f', file]);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      `apisix-mesh: inject: ${file}: pod refused: document 2 (Pod shop/bad): annotation traffic.sidecar.istio.io/excludeOutboundPorts: "*" may not contain "*" (it is an exclude or port list)\n`,
    );
  });

  it('exits 1 on an unknown mode annotation', () => {
    const r = run(['inject', '-f', '-'], 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: m\n  annotations:\n    apisix-mesh.io/mode: ambient\nspec:\n  containers: [{name: a, image: a}]\n');
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('apisix-mesh.io/mode: "ambient" is not a mode (allowed: sidecar, gateway, none)');
  });

  it('exits 2 with the parse error and the document index on unreadable YAML', () => {
    const r = run(['inject', '-f', '-'], `${readFileSync(example, 'utf8')}---\nkind: Pod\nmetadata: {name: [unclosed\n`);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^apisix-mesh: inject: stdin: document 2: .+/);
  });

  it('exits 2 on a document that is not an object, and on a missing file', () => {
    const scalar = run(['inject', '-f', '-'], 'just a string\n');
    expect(scalar.status).toBe(2);
    expect(scalar.stderr).toContain('document 1: is not a Kubernetes object');
    const missing = run(['inject', '-f', join(dir, 'nope.yaml')]);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toBe(`apisix-mesh: inject: cannot read ${join(dir, 'nope.yaml')} (ENOENT)\n`);
  });

  it('passes objects that are not workloads through, and says what it did with -v', () => {
    const input = 'apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports: [{port: 80}]\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: h\n  namespace: shop\nspec:\n  hostNetwork: true\n  containers: [{name: a, image: a}]\n';
    const r = run(['inject', '-f', '-', '-v'], input);
    expect(r.status).toBe(0);
    expect(parseAllDocuments(r.stdout).map((d) => d.toJS())).toEqual(parseAllDocuments(input).map((d) => d.toJS()));
    expect(r.stderr).toBe('Pod shop/h: skipped (host-network)\n');
  });

  it('passes through an object whose kind is an Object.prototype name', () => {
    const input = 'apiVersion: v1\nkind: toString\nmetadata:\n  name: odd\n';
    const r = run(['inject', '-f', '-'], input);
    expect(r.status).toBe(0);
    expect(parse(r.stdout)).toEqual(parse(input));
  });

  it('explains every flag in --help', () => {
    const r = run(['inject', '--help']);
    expect(r.status).toBe(0);
    for (const flag of ['--filename', '--mode', '--config', '--verbose', 'sidecar', 'gateway', 'none']) expect(r.stdout).toContain(flag);
  });
});
