/**
 * The `apisix-mesh.io/status` annotation: the names of what sidecar mode added, so that injecting an
 * injected pod first takes those out and then gives exactly the same pod (like Istio's
 * `sidecar.istio.io/status`). A value that does not parse is treated as "not injected".
 */
export interface InjectionStatus {
  initContainers: string[];
  containers: string[];
  volumes: string[];
}

const isNameList = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');

export function parseStatus(value: string | undefined): InjectionStatus | null {
  if (value === undefined || value === '') return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    return null;
  }
  if (parsed === null || typeof parsed !== 'object') return null;
  const { initContainers, containers, volumes } = parsed as Record<string, unknown>;
  if (!isNameList(initContainers) || !isNameList(containers) || !isNameList(volumes)) return null;
  return { initContainers, containers, volumes };
}

/** Compact JSON with a fixed key order, so the same injection always writes the same text. */
export function formatStatus(status: InjectionStatus): string {
  return JSON.stringify({
    initContainers: status.initContainers,
    containers: status.containers,
    volumes: status.volumes,
  });
}
