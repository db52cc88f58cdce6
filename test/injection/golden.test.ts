/**
 * Golden files: `testdata/<case>.yaml` (optionally with `<case>.config.yaml`, an injection
 * configuration file) → `<case>.injected.yaml`, the output of `injectManifests`.
 * Refresh with `UPDATE_GOLDEN=1 npx vitest run test/injection/golden.test.ts` and review the diff.
 *
 * Every case also checks: the output fed back in is unchanged (idempotency); every object validates
 * against the Kubernetes schema; for every pod (template), the webhook path (`reviewAdmission`)
 * produces a JSON Patch that turns the submitted pod into exactly the injected one.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fjp from 'fast-json-patch';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { defaultInjectionConfig, type InjectionConfig } from '../../webhook/config/injection-config.js';
import { parseInjectionConfig } from '../../webhook/config/parse-config.js';
import { injectManifests } from '../../webhook/injection/manifests.js';
import { reviewAdmission } from '../../webhook/injection/review.js';
import { podTemplates, podCreate } from './helpers.js';
import { validateObject, validatePod } from './kubernetes-schema.js';

const dir = join(fileURLToPath(new URL('.', import.meta.url)), 'testdata');
const update = process.env.UPDATE_GOLDEN === '1';
const cases = readdirSync(dir)
  .filter((f) => f.endsWith('.yaml') && !f.endsWith('.injected.yaml') && !f.endsWith('.config.yaml'))
  .map((f) => f.slice(0, -'.yaml'.length))
  .sort();

function configFor(name: string): InjectionConfig {
  const file = join(dir, `${name}.config.yaml`);
  return existsSync(file) ? parseInjectionConfig(readFileSync(file, 'utf8'), file) : defaultInjectionConfig;
}

const objectsOf = (yamlText: string): Record<string, unknown>[] =>
  parseAllDocuments(yamlText)
    .map((d) => d.toJS() as Record<string, unknown> | null)
    .filter((o): o is Record<string, unknown> => o !== null);

describe('golden injection cases', () => {
  it('has at least 20 cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(20);
  });

  describe.each(cases)('%s', (name) => {
    const input = readFileSync(join(dir, `${name}.yaml`), 'utf8');
    const config = configFor(name);
    const output = injectManifests(input, { config }).yaml;
    const goldenFile = join(dir, `${name}.injected.yaml`);

    it('matches the golden file', () => {
      if (update || !existsSync(goldenFile)) writeFileSync(goldenFile, output);
      expect(output).toBe(readFileSync(goldenFile, 'utf8'));
    });

    it('is idempotent: the output injected again is the same', () => {
      expect(injectManifests(output, { config }).yaml).toBe(output);
    });

    it('validates against the Kubernetes schema', () => {
      for (const obj of objectsOf(output)) validateObject(obj);
    });

    it('the webhook patch turns each submitted pod into the injected one', () => {
      const before = objectsOf(input).flatMap(podTemplates);
      const after = objectsOf(output).flatMap(podTemplates);
      expect(after.length).toBe(before.length);
      before.forEach((pod, i) => {
        const outcome = reviewAdmission(podCreate(pod.pod, pod.namespace), config);
        expect(outcome.kind).not.toBe('rejected');
        const patch = outcome.kind === 'injected' ? outcome.patch : [];
        const patched = fjp.applyPatch(structuredClone(pod.pod), patch, true).newDocument;
        expect(patched).toEqual(after[i]!.pod);
        validatePod(patched);
        // And the injected pod, submitted again, needs no patch.
        const again = reviewAdmission(podCreate(after[i]!.pod, pod.namespace), config);
        if (again.kind === 'injected') expect(again.patch).toEqual([]);
        else expect(again.kind).toBe('skipped');
      });
    });
  });
});
