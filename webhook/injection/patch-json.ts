import type { Operation } from 'fast-json-patch';

/**
 * The JSON text of frozen values. The sidecar parts every injected pod shares are built once and
 * frozen; their text never changes, so it is produced once instead of for every admission request.
 */
const frozenText = new WeakMap<object, string>();

function valueText(value: unknown): string {
  if (value !== null && typeof value === 'object') {
    if (Object.isFrozen(value)) {
      let text = frozenText.get(value);
      if (text === undefined) {
        text = JSON.stringify(value);
        frozenText.set(value, text);
      }
      return text;
    }
    // Lists are where shared parts sit next to the pod's own (a new `volumes`, `initContainers`).
    if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : valueText(v))).join(',')}]`;
  }
  return JSON.stringify(value);
}

/**
 * `JSON.stringify(patch)`, byte for byte, but cheaper for the injection's patches: the shared
 * sidecar containers and volumes are serialised once per configuration rather than per request.
 * Use it where the patch is turned into the AdmissionResponse's `patch` field.
 */
export function serializePatch(patch: readonly Operation[]): string {
  let text = '[';
  for (let i = 0; i < patch.length; i++) {
    const op = patch[i] as Operation & { from?: string; value?: unknown };
    if (i > 0) text += ',';
    // Key order as JSON.stringify writes an operation built as {op, path, from?, value?}.
    text += `{"op":${JSON.stringify(op.op)},"path":${JSON.stringify(op.path)}`;
    if (op.from !== undefined) text += `,"from":${JSON.stringify(op.from)}`;
    if (op.value !== undefined) text += `,"value":${valueText(op.value)}`;
    text += '}';
  }
  return `${text}]`;
}
