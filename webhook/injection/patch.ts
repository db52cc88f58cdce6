import { escapePathComponent, type Operation } from 'fast-json-patch';

/**
 * RFC 6902 operations turning `before` into `after`, for an `after` built from `before` by copying
 * only the objects on the changed paths (the injection's way). Subtrees shared by identity are
 * skipped without a look, which is what makes this cheap: a pod's untouched containers, probes and
 * volumes cost nothing. Structurally equal subtrees give no operation either (re-injection).
 *
 * Arrays: when `after` only inserts elements into `before` (the injected containers), the patch is
 * those `add`s; equal lengths are diffed element by element; anything else replaces the array.
 * The invariant, tested: `applyPatch(clone(before), diff(before, after))` deep-equals `after`.
 * Values in the operations are `after`'s own objects (not copies): serialise the patch before
 * mutating `after`.
 */
export function diff(before: unknown, after: unknown): Operation[] {
  const ops: Operation[] = [];
  diffInto(ops, '', before, after);
  return ops;
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function diffInto(ops: Operation[], path: string, before: unknown, after: unknown): void {
  if (before === after) return;
  if (isObject(before) && isObject(after)) {
    for (const key of Object.keys(before)) {
      if (after[key] === undefined && before[key] !== undefined) ops.push({ op: 'remove', path: `${path}/${escapePathComponent(key)}` });
    }
    for (const key of Object.keys(after)) {
      const value = after[key];
      if (value === undefined) continue;
      const p = `${path}/${escapePathComponent(key)}`;
      if (before[key] === undefined) ops.push({ op: 'add', path: p, value });
      else diffInto(ops, p, before[key], value);
    }
    return;
  }
  if (Array.isArray(before) && Array.isArray(after)) {
    if (before.length === after.length) {
      for (let i = 0; i < after.length; i++) diffInto(ops, `${path}/${i}`, before[i], after[i]);
      return;
    }
    if (after.length > before.length && insertionsInto(ops, path, before, after)) return;
  } else if (deepEqual(before, after)) {
    return;
  }
  ops.push({ op: 'replace', path, value: after as Json });
}

/**
 * When `after` is `before` with elements inserted (old elements kept in order, identical or equal),
 * appends one `add` per inserted element, at its final index, and returns true.
 */
function insertionsInto(ops: Operation[], path: string, before: unknown[], after: unknown[]): boolean {
  const adds: Operation[] = [];
  let j = 0;
  for (let i = 0; i < after.length; i++) {
    if (j < before.length && (after[i] === before[j] || deepEqual(after[i], before[j]))) {
      j++;
    } else {
      adds.push({ op: 'add', path: `${path}/${i}`, value: after[i] });
    }
  }
  if (j !== before.length) return false;
  ops.push(...adds);
  return true;
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a).filter((k) => a[k] !== undefined);
    const kb = Object.keys(b).filter((k) => b[k] !== undefined);
    return ka.length === kb.length && ka.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
}
