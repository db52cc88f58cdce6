import protobuf from 'protobufjs';
import { lookupMessage } from './protos.js';

/**
 * Two representations of an Envoy resource meet here:
 * - the wire: protobuf bytes inside a `google.protobuf.Any` (what istiod sends);
 * - proto3 canonical JSON (what Envoy's /config_dump and the fixtures hold: "10s", bare wrappers,
 *   `{"@type": ...}` for Any).
 * The agent's single in-memory form is protobufjs's object form with proto field names
 * (`Duration` = `{seconds, nanos}`, wrappers = `{value}`, enums as names, 64-bit ints as strings,
 * nested `Any` left packed until a translator asks for it). Both inputs are brought to that form
 * here, so live streams and dumps feed the same translators.
 */
// (google.protobuf.Struct/Value come from protobufjs's built-in definitions, whose Value fields are
// camelCase: stringValue, structValue, ...)
const TO_OBJECT: protobuf.IConversionOptions = { longs: String, enums: String, defaults: false, oneofs: true };

export interface PackedAny {
  type_url?: string;
  value?: Uint8Array | Buffer | string;
}

/** Decode one resource's bytes; throws (caller NACKs) when they are not a valid message. */
export function decodeMessage<T>(typeUrl: string, bytes: Uint8Array): T {
  const type = lookupMessage(typeUrl);
  if (!type) throw new Error(`unknown resource type ${typeUrl}`);
  return type.toObject(type.decode(bytes), TO_OBJECT) as T;
}

/** Unpack a typed config when its type is known (Istio-private types return undefined). */
export function unpackAny<T>(any: PackedAny | null | undefined, expectedTypeUrl?: string): T | undefined {
  if (!any?.type_url) return undefined;
  if (expectedTypeUrl && any.type_url !== expectedTypeUrl) return undefined;
  const type = lookupMessage(any.type_url);
  if (!type) return undefined;
  const value = any.value ?? new Uint8Array();
  const bytes = typeof value === 'string' ? Buffer.from(value, 'base64') : value;
  return type.toObject(type.decode(bytes), TO_OBJECT) as T;
}

export function encodeMessage(typeUrl: string, objectForm: unknown): Uint8Array {
  const type = lookupMessage(typeUrl);
  if (!type) throw new Error(`unknown resource type ${typeUrl}`);
  return type.encode(type.fromObject(objectForm as Record<string, unknown>)).finish();
}

/** Canonical JSON (as in config dumps) → bytes. */
export function encodeCanonical(typeUrl: string, json: unknown): Uint8Array {
  const type = lookupMessage(typeUrl);
  if (!type) throw new Error(`unknown resource type ${typeUrl}`);
  return type.encode(type.fromObject(canonicalToObject(type, json) as Record<string, unknown>)).finish();
}

/** Canonical JSON → the agent's object form (through the bytes, exactly as a live stream gives it). */
export function fromCanonical<T>(typeUrl: string, json: unknown): T {
  return decodeMessage<T>(typeUrl, encodeCanonical(typeUrl, json));
}

const WRAPPERS = new Set([
  'google.protobuf.DoubleValue', 'google.protobuf.FloatValue', 'google.protobuf.Int64Value',
  'google.protobuf.UInt64Value', 'google.protobuf.Int32Value', 'google.protobuf.UInt32Value',
  'google.protobuf.BoolValue', 'google.protobuf.StringValue', 'google.protobuf.BytesValue',
]);

const names = new WeakMap<protobuf.Type, string>();

function fullName(type: protobuf.Type): string {
  let name = names.get(type);
  if (name === undefined) names.set(type, (name = type.fullName.replace(/^\./, '')));
  return name;
}

export function parseDurationText(text: string): { seconds: string; nanos: number } {
  const m = /^(-?)(\d+)(?:\.(\d{1,9}))?s$/.exec(text);
  if (!m) throw new Error(`not a duration: ${JSON.stringify(text)}`);
  const nanos = m[3] ? Number(m[3].padEnd(9, '0')) : 0;
  return { seconds: `${m[1]}${m[2]}`, nanos: m[1] ? -nanos : nanos };
}

function snakeCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function fieldFor(type: protobuf.Type, key: string): protobuf.Field | undefined {
  return type.fields[key] ?? type.fields[snakeCase(key)];
}

/**
 * Reflection over the message type: proto3 JSON → what protobufjs's `fromObject` accepts.
 * Unknown fields are dropped (config dumps add a few); an Any whose type is not in the Root
 * (Istio-private filters) is kept as an empty payload with its type URL.
 */
export function canonicalToObject(type: protobuf.Type, json: unknown): unknown {
  const name = fullName(type);
  if (name === 'google.protobuf.Duration') return typeof json === 'string' ? parseDurationText(json) : json;
  if (name === 'google.protobuf.Timestamp') {
    if (typeof json !== 'string') return json;
    const ms = Date.parse(json);
    return { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 };
  }
  if (WRAPPERS.has(name)) return json !== null && typeof json === 'object' && 'value' in json ? json : { value: json };
  if (name === 'google.protobuf.Struct') return structToObject(json as Record<string, unknown>);
  if (name === 'google.protobuf.Value') return valueToObject(json);
  if (name === 'google.protobuf.ListValue') return { values: (json as unknown[]).map(valueToObject) };
  if (name === 'google.protobuf.FieldMask') return typeof json === 'string' ? { paths: json.split(',') } : json;
  if (name === 'google.protobuf.Any') return anyToObject(json as Record<string, unknown>);
  if (json === null || typeof json !== 'object') return json;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(json as Record<string, unknown>)) {
    const field = fieldFor(type, key);
    if (!field || value === null) continue;
    field.resolve();
    const inner = field.resolvedType;
    const convert = (v: unknown): unknown => (inner instanceof protobuf.Type ? canonicalToObject(inner, v) : v);
    if (field.map) {
      out[field.name] = Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, convert(v)]));
    } else if (field.repeated) {
      out[field.name] = (value as unknown[]).map(convert);
    } else {
      out[field.name] = convert(value);
    }
  }
  return out;
}

function anyToObject(json: Record<string, unknown>): unknown {
  const typeUrl = String(json['@type'] ?? '');
  const inner = lookupMessage(typeUrl);
  if (!inner) return { type_url: typeUrl, value: new Uint8Array() };
  const { '@type': _drop, ...rest } = json;
  const special = /^google\.protobuf\.(Duration|Timestamp|Struct|Value|ListValue|FieldMask|\w+Value)$/.test(fullName(inner));
  const body = special ? rest['value'] : rest;
  return { type_url: typeUrl, value: inner.encode(inner.fromObject(canonicalToObject(inner, body) as object)).finish() };
}

function structToObject(json: Record<string, unknown>): unknown {
  return { fields: Object.fromEntries(Object.entries(json ?? {}).map(([k, v]) => [k, valueToObject(v)])) };
}

function valueToObject(v: unknown): unknown {
  if (v === null) return { nullValue: 'NULL_VALUE' };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(valueToObject) } };
  return { structValue: structToObject(v as Record<string, unknown>) };
}
