import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { repoRoot } from './render.js';

/**
 * No Docker engine runs here, so the Dockerfile is checked by reading it: the instructions are
 * parsed (continuation lines joined) and held against the rules of the image and against the rest
 * of the repository (what the build compiles, what the CLI entry is, which uid the manifests use).
 */
interface Instruction {
  keyword: string;
  args: string;
}
interface Stage {
  from: string;
  name: string | undefined;
  instructions: Instruction[];
}

function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const logical = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  for (const line of logical) {
    const [keyword, ...rest] = line.split(/\s+/);
    const instruction = { keyword: keyword!.toUpperCase(), args: rest.join(' ') };
    if (instruction.keyword === 'FROM') {
      const [from, as, name] = rest;
      stages.push({ from: from!, name: as?.toUpperCase() === 'AS' ? name : undefined, instructions: [] });
    } else if (stages.length === 0 && instruction.keyword === 'ARG') {
      const [k, v] = instruction.args.split('=');
      args.set(k!, v ?? '');
    } else {
      stages.at(-1)!.instructions.push(instruction);
    }
  }
  return { args, stages };
}

const dockerfile = parseDockerfile(readFileSync(join(repoRoot, 'Dockerfile'), 'utf8'));
const dockerignore = readFileSync(join(repoRoot, '.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));
const final = dockerfile.stages.at(-1)!;
const all = (stage: Stage, keyword: string) => stage.instructions.filter((i) => i.keyword === keyword).map((i) => i.args);

describe('Dockerfile', () => {
  it('builds in stages from a Node LTS image', () => {
    expect(dockerfile.stages.length).toBeGreaterThanOrEqual(3);
    const version = Number(dockerfile.args.get('NODE_VERSION'));
    expect(version).toBe(22);
    for (const stage of dockerfile.stages) expect(stage.from).toMatch(/^node:\$\{NODE_VERSION\}-bookworm-slim$/);
  });

  it('compiles every source folder the TypeScript build includes', () => {
    const tsconfig = JSON.parse(readFileSync(join(repoRoot, 'tsconfig.json'), 'utf8')) as { include: string[] };
    const build = dockerfile.stages.find((s) => all(s, 'RUN').some((r) => r.includes('npm run build')))!;
    const copied = all(build, 'COPY').map((c) => c.split(/\s+/)[0]);
    for (const pattern of tsconfig.include) expect(copied, pattern).toContain(pattern.split('/')[0]);
    expect(copied).toContain('tsconfig.json');
    for (const source of copied) {
      expect(existsSync(join(repoRoot, source!)), source).toBe(true);
      expect(dockerignore, `${source} must reach the build context`).not.toContain(source);
    }
  });

  it('ships only runtime dependencies and the compiled CLI', () => {
    const depsStage = dockerfile.stages.find((s) => all(s, 'RUN').some((r) => r.includes('npm ci --omit=dev')));
    expect(depsStage?.name).toBeDefined();
    const finalCopies = all(final, 'COPY');
    expect(finalCopies).toContain(`--from=${depsStage!.name} /app/node_modules ./node_modules`);
    expect(finalCopies.some((c) => /^--from=build \/src\/dist /.test(c))).toBe(true);
    expect(all(final, 'RUN').some((r) => /npm (ci|install)/.test(r))).toBe(false);
  });

  it('installs iptables for the init role', () => {
    expect(all(final, 'RUN').some((r) => /apt-get install .*\biptables\b/.test(r))).toBe(true);
  });

  it('runs as a non-root user that is neither root nor the proxy uid, the same the manifests use', () => {
    const [user] = all(final, 'USER');
    const [uid, gid] = user!.split(':').map(Number);
    expect(uid).toBeGreaterThan(0);
    expect(uid).not.toBe(1337);
    expect(gid).toBeGreaterThan(0);
    expect(all(final, 'RUN').some((r) => r.includes(`useradd`) && r.includes(`--uid ${uid}`))).toBe(true);
    const deployment = parse(readFileSync(join(repoRoot, 'manifests/base/deployment.yaml'), 'utf8')) as {
      spec: { template: { spec: { securityContext: { runAsUser: number; runAsGroup: number } } } };
    };
    expect(deployment.spec.template.spec.securityContext.runAsUser).toBe(uid);
    expect(deployment.spec.template.spec.securityContext.runAsGroup).toBe(gid);
  });

  it('has the CLI as its entrypoint, in exec form', () => {
    const [entrypoint] = all(final, 'ENTRYPOINT');
    const argv = JSON.parse(entrypoint!) as string[];
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    expect(argv).toEqual(['node', `/app/${pkg.bin['apisix-mesh']}`]);
    // The CLI finds its version by walking up to package.json.
    expect(all(final, 'COPY')).toContain('package.json ./');
  });
});
