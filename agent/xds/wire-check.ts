import protobuf from 'protobufjs';
import { lookupMessage } from './protos.js';

/**
 * A strict reading of the protobuf wire format, before protobufjs decodes anything. protobufjs is
 * lenient where the C++ parser Envoy uses is not: a nested message whose fields run past its own
 * length is read on into its parent, a known field with the wrong wire type is read as if it had
 * the right one, invalid UTF-8 in a `string` becomes replacement characters. A resource corrupted
 * that way decodes into something plausible (a cluster named "\x01") that Envoy would have refused.
 * This check walks the bytes with the message types' reflection and refuses, with the field path:
 * - a tag with field number 0, an unknown wire type, a truncated varint / fixed value / length;
 * - a length-delimited value longer than what is left of its message (exact nesting);
 * - a known field with a wire type its type cannot have (packed repeated scalars allowed);
 * - a `string` that is not valid UTF-8 (proto3);
 * - nesting deeper than 100 messages (the C++ parser's default recursion limit);
 * - and, inside every `google.protobuf.Any` whose type the agent knows, the same again for the
 *   payload (Envoy decodes every typed config it instantiates), unless told not to descend.
 * Unknown fields are skipped (with their framing checked), as proto3 parsers do.
 */
export class WireFormatError extends Error {}

export interface WireCheckOptions {
  /** check the payloads of known `Any` types too (default true) */
  descendAny?: boolean;
}

const MAX_DEPTH = 100;
const MAX_TAG = 0xffffffff;
const utf8 = new TextDecoder('utf-8', { fatal: true });

const VARINT = 0;
const FIXED64 = 1;
const LENGTH = 2;
const START_GROUP = 3;
const END_GROUP = 4;
const FIXED32 = 5;

/** The wire type of each scalar type (protobufjs's names). */
const SCALAR_WIRE: Readonly<Record<string, number>> = {
  double: FIXED64, fixed64: FIXED64, sfixed64: FIXED64,
  float: FIXED32, fixed32: FIXED32, sfixed32: FIXED32,
  int32: VARINT, int64: VARINT, uint32: VARINT, uint64: VARINT, sint32: VARINT, sint64: VARINT, bool: VARINT,
  string: LENGTH, bytes: LENGTH,
};

const ANY = '.google.protobuf.Any';
/** protobufjs computes `fullName` on every read (walking the parents): asked once per type */
const anyTypes = new WeakMap<protobuf.Type, boolean>();

function isAnyType(type: protobuf.Type): boolean {
  let any = anyTypes.get(type);
  if (any === undefined) anyTypes.set(type, (any = type.fullName === ANY));
  return any;
}

class Walker {
  /** set by `varint`: the value read (exact below 2^53, which is all a length or tag may be) */
  private value = 0;
  private readonly path: string[] = [];

  constructor(private readonly buf: Uint8Array, private readonly descendAny: boolean) {}

  fail(message: string): never {
    throw new WireFormatError(`${elide(this.path.join('.') || '(message)')}: ${message}`);
  }

  /** Reads a varint at pos (at most 10 bytes, within end); returns the position after it. */
  private varint(pos: number, end: number): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (pos >= end) this.fail('truncated varint');
      const b = this.buf[pos++]!;
      value += (b & 0x7f) * scale;
      scale *= 128;
      if (b < 0x80) {
        this.value = value;
        return pos;
      }
    }
    return this.fail('varint longer than 10 bytes');
  }

  /** Skips one value of wire type wt at pos; returns the position after it. */
  private skip(wt: number, fieldNo: number, pos: number, end: number, depth: number): number {
    switch (wt) {
      case VARINT:
        return this.varint(pos, end);
      case FIXED64:
        return this.fixed(pos, 8, end);
      case FIXED32:
        return this.fixed(pos, 4, end);
      case LENGTH: {
        const start = this.varint(pos, end);
        return this.bounded(start, this.value, end);
      }
      case START_GROUP: {
        if (depth >= MAX_DEPTH) this.fail('nested too deeply');
        while (true) {
          if (pos >= end) this.fail(`group ${fieldNo} not closed`);
          pos = this.varint(pos, end);
          const tag = this.value;
          const inner = Math.floor(tag / 8);
          if (tag % 8 === END_GROUP) {
            if (inner !== fieldNo) this.fail(`group ${fieldNo} closed as ${inner}`);
            return pos;
          }
          pos = this.skip(tag % 8, inner, pos, end, depth + 1);
        }
      }
      case END_GROUP:
        return this.fail(`unexpected end of group ${fieldNo}`);
      default:
        return this.fail(`invalid wire type ${wt}`);
    }
  }

  private fixed(pos: number, size: number, end: number): number {
    if (end - pos < size) this.fail('truncated fixed-size value');
    return pos + size;
  }

  /** The end of a length-delimited value starting at start, which must lie within end. */
  private bounded(start: number, length: number, end: number): number {
    if (length > end - start) this.fail(`length ${length} runs past the end of its message`);
    return start + length;
  }

  message(type: protobuf.Type, start: number, end: number, depth: number): void {
    if (depth > MAX_DEPTH) this.fail('nested too deeply');
    const isAny = isAnyType(type);
    let anyType = '';
    let anyStart = -1;
    let anyEnd = -1;
    let pos = start;
    while (pos < end) {
      pos = this.varint(pos, end);
      const tag = this.value;
      if (tag > MAX_TAG) this.fail('tag out of range');
      const fieldNo = Math.floor(tag / 8);
      const wt = tag % 8;
      if (fieldNo === 0) this.fail('field number 0');
      const field = type.fieldsById[fieldNo];
      if (!field) {
        pos = this.skip(wt, fieldNo, pos, end, depth);
        continue;
      }
      this.path.push(field.name);
      const next = this.field(field, wt, pos, end, depth);
      if (isAny && wt === LENGTH) {
        // the Any's own fields: where its payload lies and what it is
        if (fieldNo === 1) anyType = utf8.decode(this.buf.subarray(next - this.value, next));
        else if (fieldNo === 2) [anyStart, anyEnd] = [next - this.value, next];
      }
      this.path.pop();
      pos = next;
    }
    if (isAny && this.descendAny && anyType) {
      const inner = lookupMessage(anyType);
      if (inner) {
        this.path.push(`<${inner.name}>`);
        this.message(inner, anyStart < 0 ? end : anyStart, anyStart < 0 ? end : anyEnd, depth + 1);
        this.path.pop();
      }
    }
  }

  /** One occurrence of a known field; returns the position after it (this.value: its length, for LENGTH). */
  private field(field: protobuf.Field, wt: number, pos: number, end: number, depth: number): number {
    if (field.map) {
      if (wt !== LENGTH) this.fail(`wire type ${wt} for a map entry`);
      const start = this.varint(pos, end);
      const length = this.value;
      const entryEnd = this.bounded(start, length, end);
      this.mapEntry(field as unknown as protobuf.MapField, start, entryEnd, depth);
      this.value = length;
      return entryEnd;
    }
    const resolved = field.resolvedType;
    if (resolved instanceof protobuf.Type) {
      if (wt !== LENGTH) this.fail(`wire type ${wt} for a message`);
      const start = this.varint(pos, end);
      const length = this.value;
      const fieldEnd = this.bounded(start, length, end);
      this.message(resolved, start, fieldEnd, depth + 1);
      this.value = length;
      return fieldEnd;
    }
    const scalarWire = resolved instanceof protobuf.Enum ? VARINT : SCALAR_WIRE[field.type];
    if (scalarWire === undefined) return this.fail(`field of unresolved type ${field.type}`);
    return this.scalar(field.type, scalarWire, field.repeated, wt, pos, end);
  }

  private scalar(typeName: string, scalarWire: number, repeated: boolean, wt: number, pos: number, end: number): number {
    if (wt === scalarWire) {
      if (wt !== LENGTH) return this.skip(wt, 0, pos, end, 0);
      const start = this.varint(pos, end);
      const length = this.value;
      const valueEnd = this.bounded(start, length, end);
      if (typeName === 'string') this.utf8(start, valueEnd);
      this.value = length;
      return valueEnd;
    }
    if (repeated && wt === LENGTH && scalarWire !== LENGTH) {
      // packed: a run of values that fills the length exactly
      const start = this.varint(pos, end);
      const packedEnd = this.bounded(start, this.value, end);
      let p = start;
      while (p < packedEnd) p = this.skip(scalarWire, 0, p, packedEnd, 0);
      return packedEnd;
    }
    return this.fail(`wire type ${wt} for a ${typeName}`);
  }

  private mapEntry(field: protobuf.MapField, start: number, end: number, depth: number): void {
    const keyWire = SCALAR_WIRE[field.keyType];
    if (keyWire === undefined) this.fail(`map key of type ${field.keyType}`);
    let pos = start;
    while (pos < end) {
      pos = this.varint(pos, end);
      const tag = this.value;
      if (tag > MAX_TAG) this.fail('tag out of range');
      const fieldNo = Math.floor(tag / 8);
      const wt = tag % 8;
      if (fieldNo === 1) {
        pos = this.scalar(field.keyType, keyWire!, false, wt, pos, end);
      } else if (fieldNo === 2) {
        const value = field.resolvedType;
        if (value instanceof protobuf.Type) {
          if (wt !== LENGTH) this.fail(`wire type ${wt} for a message`);
          const s = this.varint(pos, end);
          const e = this.bounded(s, this.value, end);
          this.message(value, s, e, depth + 1);
          pos = e;
        } else {
          const wire = value instanceof protobuf.Enum ? VARINT : SCALAR_WIRE[field.type];
          if (wire === undefined) this.fail(`map value of type ${field.type}`);
          pos = this.scalar(field.type, wire, false, wt, pos, end);
        }
      } else {
        if (fieldNo === 0) this.fail('field number 0');
        pos = this.skip(wt, fieldNo, pos, end, depth);
      }
    }
  }

  private utf8(start: number, end: number): void {
    try {
      utf8.decode(this.buf.subarray(start, end));
    } catch {
      this.fail('string is not valid UTF-8');
    }
  }
}

/** A field path short enough to quote (hostile nesting makes long ones): its start and its end. */
export function elide(path: string): string {
  return path.length <= 160 ? path : `${path.slice(0, 50)}…${path.slice(-100)}`;
}

/** Throws a WireFormatError (with the field path) unless bytes are a well-formed `type`. */
export function checkWireFormat(type: protobuf.Type, bytes: Uint8Array, options: WireCheckOptions = {}): void {
  new Walker(bytes, options.descendAny ?? true).message(type, 0, bytes.length, 0);
}

/**
 * A top-level string field read without decoding the rest (the name of a resource that fails to
 * decode, to say which one in a NACK); undefined unless the framing up to it is sound.
 */
export function peekStringField(bytes: Uint8Array, fieldNo: number): string | undefined {
  const reader = protobuf.Reader.create(bytes);
  try {
    while (reader.pos < reader.len) {
      const tag = reader.uint32();
      if (tag >>> 3 === fieldNo && (tag & 7) === LENGTH) {
        const length = reader.uint32();
        if (length > reader.len - reader.pos) return undefined;
        return utf8.decode(bytes.subarray(reader.pos, reader.pos + length));
      }
      if (tag >>> 3 === 0) return undefined;
      reader.skipType(tag & 7);
    }
  } catch {
    return undefined;
  }
  return undefined;
}
