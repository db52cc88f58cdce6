import { existsSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Where a real APISIX 3.x runtime is on this machine: an APISIX home (apisix/, bin/, deps/, conf/) and
 * the OpenResty build it runs on, which must carry apisix-nginx-module (`$connection_original_dst`).
 * Given by the environment only — the tests never build it:
 *   APISIX_RUNTIME=<dir>  a directory laid out as the project's CI builds it: prefix/apisix and
 *                         prefix/openresty/bin/openresty (.ci/run builds it into a cache)
 *   APISIX_HOME=<dir> OPENRESTY_BIN=<dir>  any other install, e.g. /usr/local/apisix and
 *                         /usr/local/openresty/bin copied out of the apache/apisix:3.13.0-debian image
 */
export interface ApisixRuntime {
  apisixHome: string;
  /** the directory holding `openresty` */
  openrestyBin: string;
}

const HOW =
  'set APISIX_RUNTIME to a runtime built as .ci/run does, or APISIX_HOME and OPENRESTY_BIN to an APISIX 3.x ' +
  'install with apisix-nginx-module (e.g. /usr/local/apisix and /usr/local/openresty/bin of apache/apisix:3.13.0-debian); ' +
  'see docs/development.md';

export function findApisixRuntime(env: NodeJS.ProcessEnv = process.env): ApisixRuntime | string {
  let runtime: ApisixRuntime;
  if (env.APISIX_HOME && env.OPENRESTY_BIN) {
    runtime = { apisixHome: env.APISIX_HOME, openrestyBin: env.OPENRESTY_BIN };
  } else if (env.APISIX_RUNTIME) {
    runtime = { apisixHome: join(env.APISIX_RUNTIME, 'prefix/apisix'), openrestyBin: join(env.APISIX_RUNTIME, 'prefix/openresty/bin') };
  } else {
    return `no APISIX runtime is given (${HOW})`;
  }
  for (const path of [join(runtime.apisixHome, 'apisix/cli/apisix.lua'), join(runtime.apisixHome, 'bin/apisix'), join(runtime.openrestyBin, 'openresty')]) {
    if (!existsSync(path)) return `the APISIX runtime is incomplete: ${path} does not exist (${HOW})`;
  }
  return runtime;
}

/** `null` when a runtime is given, else what is missing (for describeWhenAvailable). */
export function missingApisixRuntime(): string | null {
  const found = findApisixRuntime();
  return typeof found === 'string' ? found : null;
}
