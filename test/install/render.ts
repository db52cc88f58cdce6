import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** A rendered Kubernetes object; the tests narrow it with the kubernetes-models classes. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

/** `kubectl kustomize DIR` (the kustomize embedded in kubectl, as `kubectl apply -k` uses it). */
export function renderKustomization(relativeDir: string): KubeObject[] {
  const out = execFileSync('kubectl', ['kustomize', join(repoRoot, relativeDir)], {
    encoding: 'utf8',
    // Newer kubectl warns on stderr about `bases:`, kept for kubectl < 1.21; not an error.
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const objects: KubeObject[] = [];
  for (const doc of parseAllDocuments(out)) {
    if (doc.errors.length > 0) throw new Error(`kubectl kustomize printed invalid YAML: ${doc.errors[0]!.message}`);
    const value = doc.toJS() as KubeObject | null;
    if (value === null) continue;
    // kustomize < 2.1 leaves `{}` behind for deleted objects, which `kubectl apply` rejects.
    if (!value.kind || !value.metadata?.name) throw new Error(`rendered a document without kind or name: ${JSON.stringify(value)}`);
    objects.push(value);
  }
  return objects;
}

export function findObject<T = KubeObject>(objects: KubeObject[], kind: string, name?: string): T {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (found.length !== 1) {
    throw new Error(`expected exactly one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  }
  return found[0] as T;
}
