// The APISIX schemas the agent validates with must give APISIX's own verdicts on APISIX's samples
// (test/fixtures/apisix-schema/samples.manifest.json, from APISIX's docs and tests).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { schemaValidator, validateApisix, type SchemaName } from '../../agent/schema/validate.js';

const dir = new URL('../fixtures/apisix-schema/', import.meta.url);
const manifest = JSON.parse(readFileSync(new URL('samples.manifest.json', dir), 'utf8')) as {
  samples: Array<{ file: string; schema: string; expect: 'valid' | 'invalid'; source: string }>;
};

describe('APISIX schema samples', () => {
  it('has samples of both kinds', () => {
    expect(manifest.samples.filter((s) => s.expect === 'valid').length).toBeGreaterThan(5);
    expect(manifest.samples.filter((s) => s.expect === 'invalid').length).toBeGreaterThan(5);
  });
  for (const sample of manifest.samples) {
    it(`${sample.file} is ${sample.expect} for ${sample.schema}`, () => {
      const name = sample.schema.replace(/\.schema\.json$/, '');
      const validate = schemaValidator(name);
      const data: unknown = JSON.parse(readFileSync(new URL(sample.file, dir), 'utf8'));
      expect(validate(data)).toBe(sample.expect === 'valid');
      // the agent's check stops at the first error; same verdict, and a refusal always says why
      if (['route', 'upstream', 'ssl', 'route.strict', 'upstream.strict'].includes(name)) {
        const error = validateApisix(name as SchemaName, data);
        if (sample.expect === 'valid') expect(error).toBeNull();
        else expect(error).toMatch(/\S/);
      }
    });
  }
});
