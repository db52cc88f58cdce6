import { Ajv, type ValidateFunction, type ErrorObject } from 'ajv';
import addFormatsModule from 'ajv-formats';
import common from './apisix/common.schema.json' with { type: 'json' };
import upstream from './apisix/upstream.schema.json' with { type: 'json' };
import route from './apisix/route.schema.json' with { type: 'json' };
import ssl from './apisix/ssl.schema.json' with { type: 'json' };
import upstreamStrict from './apisix/upstream.strict.schema.json' with { type: 'json' };
import routeStrict from './apisix/route.strict.schema.json' with { type: 'json' };
import trafficSplit from './apisix/plugins/traffic-split.schema.json' with { type: 'json' };
import faultInjection from './apisix/plugins/fault-injection.schema.json' with { type: 'json' };
import proxyRewrite from './apisix/plugins/proxy-rewrite.schema.json' with { type: 'json' };
import proxyMirror from './apisix/plugins/proxy-mirror.schema.json' with { type: 'json' };
import apiBreaker from './apisix/plugins/api-breaker.schema.json' with { type: 'json' };
import limitConn from './apisix/plugins/limit-conn.schema.json' with { type: 'json' };
import prometheus from './apisix/plugins/prometheus.schema.json' with { type: 'json' };
import serverlessPreFunction from './apisix/plugins/serverless-pre-function.schema.json' with { type: 'json' };
import meshAccess from './apisix/plugins/apisix-mesh-access.schema.json' with { type: 'json' };

/**
 * APISIX 3.18's own JSON schemas (transcribed from its Lua sources, see apisix/SOURCE.md), compiled
 * once with ajv. `route` and `upstream` are the root schemas = what APISIX's Admin API accepts on
 * PUT; the agent checks every object against them before the store sees it, using the strict
 * profiles (known balancer types) because the agent never means anything else.
 */
const BASE = 'https://schemas.example/apisix/3.18.0/';

export type SchemaName = 'route' | 'upstream' | 'ssl' | 'route.strict' | 'upstream.strict';

/**
 * Two compilations of the same schemas: one that stops at the first error, which every object the
 * agent writes goes through (a full snapshot checks ~20,000 objects: collecting every error cost
 * ~30 % more on valid objects, the common case), and one that collects all errors, compiled only
 * when an object is refused, for the one-line report.
 */
const compilers = new Map<boolean, Ajv>();

function compiler(allErrors: boolean): Ajv {
  let a = compilers.get(allErrors);
  if (a) return a;
  const addFormats = (addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule;
  a = new Ajv({ allErrors, strictTypes: false, strictTuples: false });
  (addFormats as unknown as (a: Ajv) => void)(a);
  for (const schema of [common, upstream, route, ssl, upstreamStrict, routeStrict, trafficSplit, faultInjection, proxyRewrite, proxyMirror, apiBreaker, limitConn, prometheus, serverlessPreFunction, meshAccess]) {
    a.addSchema(schema as object);
  }
  compilers.set(allErrors, a);
  return a;
}

const validators = new Map<string, ValidateFunction>();
const firstErrorValidators = new Map<string, ValidateFunction>();

function lookup(cache: Map<string, ValidateFunction>, allErrors: boolean, name: string): ValidateFunction {
  let v = cache.get(name);
  if (!v) {
    const found = compiler(allErrors).getSchema(`${BASE}${name}.schema.json`);
    if (!found) throw new Error(`no APISIX schema named ${name}`);
    cache.set(name, (v = found));
  }
  return v;
}

/** The validator that reports every error (its verdicts are the first-error one's). */
export function schemaValidator(name: SchemaName | string): ValidateFunction {
  return lookup(validators, true, name);
}

/** null when valid, else one line per error (path: message). */
export function validateApisix(name: SchemaName, object: unknown): string | null {
  if (lookup(firstErrorValidators, false, name)(object)) return null;
  // refused either way (fail closed), even if the reporting compilation were to disagree
  const validate = schemaValidator(name);
  return (!validate(object) && formatErrors(validate.errors ?? [])) || `refused by APISIX's ${name} schema`;
}

function formatErrors(errors: ErrorObject[]): string {
  // anyOf/oneOf produce cascades; the deepest messages say what is wrong
  return errors
    .slice(0, 5)
    .map((e) => `${e.instancePath || '/'} ${e.message ?? 'invalid'}${e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : ''}`)
    .join('; ');
}
