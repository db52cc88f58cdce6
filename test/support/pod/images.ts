import { chmodSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { ApisixRuntime } from './apisix-runtime.js';
import type { StagedProject } from './staged-project.js';

/**
 * The container images a pod of this project uses, as they run on this machine: what the image's
 * filesystem holds (container path → host path), its ENTRYPOINT/CMD/WORKDIR and PATH.
 */
export interface LocalImage {
  files: Record<string, string>;
  entrypoint: string[];
  cmd: string[];
  workdir: string;
  path: string[];
}

/** The project's image (Dockerfile): the built CLI under /app, run by node. */
export function meshImage(project: StagedProject): LocalImage {
  return {
    files: { '/app': project.app },
    entrypoint: ['node', '/app/dist/cli/main.js'],
    cmd: ['--help'],
    workdir: '/app',
    path: [dirname(process.execPath), '/usr/sbin', '/usr/bin', '/sbin', '/bin'],
  };
}

/**
 * apache/apisix:3.13.0-debian: APISIX's home at /usr/local/apisix, OpenResty's bin on PATH, and its
 * docker-entrypoint.sh, which for `docker-start` runs `apisix init`, `apisix init_etcd` and then
 * OpenResty in the foreground. The script below does the same from the image's layout here (its own
 * directory is the container's root).
 */
export function apisixImage(runtime: ApisixRuntime, scratch: string): LocalImage {
  const entrypoint = join(scratch, 'apisix-docker-entrypoint.sh');
  writeFileSync(
    entrypoint,
    `#!/usr/bin/env bash
# apache/apisix:3.13.0-debian /docker-entrypoint.sh (docker-start, etcd provider), run from the
# container's filesystem view: the directory this script is placed in stands for "/".
set -eo pipefail
ROOT=$(dirname "$0")
PREFIX="$ROOT/usr/local/apisix"
if [[ "$1" == "docker-start" ]]; then
    cd "$PREFIX"
    ./bin/apisix init
    ./bin/apisix init_etcd
    rm -f "$PREFIX/conf/config_listen.sock" "$PREFIX/logs/worker_events.sock"
    exec openresty -p "$PREFIX" -g 'daemon off;'
fi
exec "$@"
`,
  );
  chmodSync(entrypoint, 0o755);
  return {
    files: { '/usr/local/apisix': runtime.apisixHome, '/docker-entrypoint.sh': entrypoint },
    entrypoint: ['/docker-entrypoint.sh'],
    cmd: ['docker-start'],
    workdir: '/usr/local/apisix',
    path: [runtime.openrestyBin, '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'],
  };
}
