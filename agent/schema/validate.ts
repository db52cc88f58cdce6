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

let ajv: Ajv | undefined;

function compiler(): Ajv {
  if (ajv) return ajv;
  const addFormats = (addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule;
  const a = new Ajv({ allErrors: true, strictTypes: false, strictTuples: false });
  (addFormats as unknown as (a: Ajv) => void)(a);
  for (const schema of [common, upstream, route, ssl, upstreamStrict, routeStrict, trafficSplit, faultInjection, proxyRewrite, proxyMirror, apiBreaker, limitConn, prometheus, serverlessPreFunction, meshAccess]) {
    a.addSchema(schema as object);
  }
  ajv = a;
  return a;
}

const validators = new Map<string, ValidateFunction>();

export function schemaValidator(name: SchemaName | string): ValidateFunction {
  let v = validators.get(name);
  if (!v) {
    const found = compiler().getSchema(`${BASE}${name}.schema.json`);
    if (!found) throw new Error(`no APISIX schema named ${name}`);
    validators.set(name, (v = found));
  }
  return v;
}

/** null when valid, else one line per error (path: message). */
export function validateApisix(name: SchemaName, object: unknown): string | null {
  const validate = schemaValidator(name);
  if (validate(object)) return null;
  return formatErrors(validate.errors ?? []);
}

function formatErrors(errors: ErrorObject[]): string {
  // anyOf/oneOf produce cascades; the deepest messages say what is wrong
  return errors
    .slice(0, 5)
    .map((e) => `${e.instancePath || '/'} ${e.message ?? 'invalid'}${e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : ''}`)
    .join('; ');
}
