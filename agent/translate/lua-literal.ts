/**
 * A JSON-like value → a Lua constructor. Nothing from xDS reaches the code as code: strings are
 * written byte by byte (printable ASCII as is, everything else, quotes and backslashes as `\ddd`),
 * numbers must be finite, keys are written as strings too (`["and"]=`, never a bare word).
 */
export function luaLiteral(value: unknown): string {
  if (value === null || value === undefined) return 'nil';
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new RangeError('not a finite number');
    return String(value);
  }
  if (typeof value === 'string') return luaString(value);
  if (Array.isArray(value)) return `{${value.map(luaLiteral).join(',')}}`;
  if (typeof value === 'object') {
    const fields = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `[${luaString(k)}]=${luaLiteral(v)}`);
    return `{${fields.join(',')}}`;
  }
  throw new TypeError(`no Lua form for ${typeof value}`);
}

function luaString(text: string): string {
  let out = '"';
  for (const byte of Buffer.from(text, 'utf8')) {
    out += byte >= 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x5c ? String.fromCharCode(byte) : `\\${String(byte).padStart(3, '0')}`;
  }
  return `${out}"`;
}
