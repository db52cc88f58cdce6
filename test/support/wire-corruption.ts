import protobuf from 'protobufjs';
import { lookupMessage } from '../../agent/xds/protos.js';

/**
 * Where the length-delimited fields nested inside an encoded message lie (inside its sub-messages
 * and the payloads of known `Any` types, never its own top-level fields, so its name stays
 * readable), and corruptions of them that a strict protobuf parser must refuse. Written on
 * protobufjs's Reader, apart from the agent's own wire check, for well-formed input only.
 */
export interface NestedField {
  /** dotted field path, for messages */
  path: string;
  kind: 'message' | 'string' | 'bytes';
  tagPos: number;
  tagWidth: number;
  lengthPos: number;
  lengthWidth: number;
  /** the value's bytes */
  start: number;
  end: number;
  /** the end of the message that holds the field */
  parentEnd: number;
}

export function nestedFields(type: protobuf.Type, bytes: Uint8Array): NestedField[] {
  const out: NestedField[] = [];
  walk(type, bytes, 0, bytes.length, 0, '', out);
  return out;
}

function walk(type: protobuf.Type, bytes: Uint8Array, start: number, end: number, depth: number, path: string, out: NestedField[]): void {
  const reader = protobuf.Reader.create(bytes);
  reader.pos = start;
  let anyType = '';
  let anyValue: [number, number] | undefined;
  while (reader.pos < end) {
    const tagPos = reader.pos;
    const tag = reader.uint32();
    const field = type.fieldsById[tag >>> 3];
    if (!field || (tag & 7) !== 2) {
      reader.skipType(tag & 7);
      continue;
    }
    const lengthPos = reader.pos;
    const length = reader.uint32();
    const valueStart = reader.pos;
    const valueEnd = valueStart + length;
    reader.pos = valueEnd;
    const fieldPath = path ? `${path}.${field.name}` : field.name;
    const resolved = field.resolvedType;
    if (field.map) {
      if (resolved instanceof protobuf.Type) mapValues(resolved, bytes, valueStart, valueEnd, depth + 1, fieldPath, out);
      continue;
    }
    const kind = resolved instanceof protobuf.Type ? 'message' : field.type === 'string' ? 'string' : field.type === 'bytes' ? 'bytes' : undefined;
    if (!kind) continue;
    if (depth > 0) out.push({ path: fieldPath, kind, tagPos, tagWidth: lengthPos - tagPos, lengthPos, lengthWidth: valueStart - lengthPos, start: valueStart, end: valueEnd, parentEnd: end });
    if (type.fullName === '.google.protobuf.Any') {
      if (field.name === 'type_url') anyType = new TextDecoder().decode(bytes.subarray(valueStart, valueEnd));
      if (field.name === 'value') anyValue = [valueStart, valueEnd];
    }
    if (kind === 'message') walk(resolved as protobuf.Type, bytes, valueStart, valueEnd, depth + 1, fieldPath, out);
  }
  const inner = anyType ? lookupMessage(anyType) : undefined;
  if (inner && anyValue) walk(inner, bytes, anyValue[0], anyValue[1], depth + 1, `${path}<${inner.name}>`, out);
}

/** A map entry (key 1, value 2): its message value. */
function mapValues(type: protobuf.Type, bytes: Uint8Array, start: number, end: number, depth: number, path: string, out: NestedField[]): void {
  const reader = protobuf.Reader.create(bytes);
  reader.pos = start;
  while (reader.pos < end) {
    const tagPos = reader.pos;
    const tag = reader.uint32();
    if (tag >>> 3 !== 2 || (tag & 7) !== 2) {
      reader.skipType(tag & 7);
      continue;
    }
    const lengthPos = reader.pos;
    const length = reader.uint32();
    const valueStart = reader.pos;
    reader.pos = valueStart + length;
    out.push({ path: `${path}[value]`, kind: 'message', tagPos, tagWidth: lengthPos - tagPos, lengthPos, lengthWidth: valueStart - lengthPos, start: valueStart, end: valueStart + length, parentEnd: end });
    walk(type, bytes, valueStart, valueStart + length, depth + 1, `${path}[value]`, out);
  }
}

export type Corruption = 'overrun' | 'bad-utf8' | 'wire-type';

/** Which corruptions can be applied to the field without moving any other byte. */
export function applicable(field: NestedField): Corruption[] {
  const kinds: Corruption[] = [];
  // the largest length the same number of bytes can hold, if it runs past the parent
  if (2 ** (7 * field.lengthWidth) - 1 > field.parentEnd - field.start) kinds.push('overrun');
  if (field.kind === 'string' && field.end > field.start) kinds.push('bad-utf8');
  if (field.kind !== 'bytes') kinds.push('wire-type');
  return kinds;
}

/** A copy of bytes with one field corrupted so that a strict parser must refuse it. */
export function corrupt(bytes: Uint8Array, field: NestedField, how: Corruption): Uint8Array {
  const copy = Uint8Array.from(bytes);
  if (how === 'overrun') {
    for (let i = 0; i < field.lengthWidth; i++) copy[field.lengthPos + i] = i === field.lengthWidth - 1 ? 0x7f : 0xff;
  } else if (how === 'bad-utf8') {
    copy[field.start] = 0xff;
  } else {
    // wire type 2 → 1 (fixed64) in the tag's first byte: a string or message can never be that
    copy[field.tagPos] = (copy[field.tagPos]! & ~7) | 1;
  }
  return copy;
}
