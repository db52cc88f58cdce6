/**
 * One value, or several: most keys of the translator's indexes have one, and an array per key would
 * cost memory (10,000 one-element arrays are ~0.5 MiB).
 */
export type OneOrMore<T> = T | T[];

export function add<T>(map: Map<string, OneOrMore<T>>, key: string, value: T): void {
  const now = map.get(key);
  if (now === undefined) map.set(key, value);
  else if (Array.isArray(now)) now.push(value);
  else map.set(key, [now, value]);
}

export function remove<T>(map: Map<string, OneOrMore<T>>, key: string, value: T): void {
  const left = each(map.get(key)).filter((v) => v !== value);
  if (left.length === 0) map.delete(key);
  else map.set(key, left.length === 1 ? left[0]! : left);
}

export function each<T>(values: OneOrMore<T> | undefined): readonly T[] {
  return values === undefined ? [] : Array.isArray(values) ? values : [values];
}
