import { GoJsonError, firstJsonValue } from './go-json.js';

/**
 * Decoding of request bodies as etcd's grpc-gateway (golang/protobuf jsonpb) does it: proto names
 * and lowerCamelCase both accepted (camel wins), int64 as number or string, enums as name or
 * number, unknown fields and nulls ignored, and Go's error texts for everything it refuses.
 */
export type FieldKind =
  | 'bytes'
  | 'int64'
  | 'bool'
  | 'string'
  | { enum: string; values: readonly string[] }
  | { message: MessageSchema }
  | { repeated: FieldKind };

export type MessageSchema = ReadonlyArray<readonly [name: string, kind: FieldKind]>;

/** Decoded message: proto field names; bytes → Buffer, int64 → bigint, enums → name or number. */
export type Decoded = { [field: string]: DecodedValue };
export type DecodedValue = Buffer | bigint | boolean | string | number | Decoded | DecodedValue[];

function camel(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function goType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'object') return 'object';
  return typeof v === 'boolean' ? 'bool' : typeof v;
}

/** Parses a whole body (first JSON value only). Empty body and `null` give an empty message. */
export function decodeBody(body: string, schema: MessageSchema): Decoded {
  const first = firstJsonValue(body);
  if (first.text === undefined) return {};
  return decodeMessageText(first.text, schema);
}

export function decodeMessageText(text: string, schema: MessageSchema): Decoded {
  const raw: unknown = JSON.parse(text);
  return decodeMessage(raw, schema);
}

function decodeMessage(raw: unknown, schema: MessageSchema): Decoded {
  if (raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new GoJsonError(`json: cannot unmarshal ${goType(raw)} into Go value of type map[string]json.RawMessage`);
  }
  const obj = raw as Record<string, unknown>;
  const out: Decoded = {};
  for (const [name, kind] of schema) {
    const c = camel(name);
    let v: unknown = undefined;
    if (Object.hasOwn(obj, name)) v = obj[name];
    if (c !== name && Object.hasOwn(obj, c)) v = obj[c];
    if (v === undefined || v === null) continue;
    out[name] = decodeValue(v, kind);
  }
  return out;
}

function decodeValue(v: unknown, kind: FieldKind): DecodedValue {
  if (kind === 'bytes') {
    if (typeof v !== 'string') throw new GoJsonError(`json: cannot unmarshal ${goType(v)} into Go value of type []uint8`);
    return decodeBase64(v);
  }
  if (kind === 'int64') return decodeInt64(v);
  if (kind === 'bool') {
    if (typeof v !== 'boolean') throw new GoJsonError(`json: cannot unmarshal ${goType(v)} into Go value of type bool`);
    return v;
  }
  if (kind === 'string') {
    if (typeof v !== 'string') throw new GoJsonError(`json: cannot unmarshal ${goType(v)} into Go value of type string`);
    return v;
  }
  if ('enum' in kind) {
    if (typeof v === 'string') {
      if (!kind.values.includes(v)) throw new GoJsonError(`unknown value ${JSON.stringify(v)} for enum ${kind.enum}`);
      return v;
    }
    if (typeof v === 'number' && Number.isInteger(v)) return kind.values[v] ?? v;
    throw new GoJsonError(`json: cannot unmarshal ${goType(v)} into Go value of type int32`);
  }
  if ('message' in kind) return decodeMessage(v, kind.message);
  if (!Array.isArray(v)) throw new GoJsonError(`json: cannot unmarshal ${goType(v)} into Go value of type []json.RawMessage`);
  return v.map((x) => decodeValue(x, kind.repeated));
}

function decodeInt64(v: unknown): bigint {
  // jsonpb strips the quotes of a string and parses the rest as a JSON number.
  let text: string;
  if (typeof v === 'string') {
    const first = firstJsonValue(v);
    if (first.text === undefined) throw new GoJsonError('unexpected end of JSON input');
    if (first.end !== v.length) {
      const c = v[first.end]!;
      throw new GoJsonError(`invalid character ${JSON.stringify(c).replace(/"/g, "'")} after top-level value`);
    }
    text = first.text;
    const inner: unknown = JSON.parse(text);
    if (typeof inner !== 'number') throw new GoJsonError(`json: cannot unmarshal ${goType(inner)} into Go value of type int64`);
  } else if (typeof v === 'number') {
    text = String(v);
  } else {
    throw new GoJsonError(`json: cannot unmarshal ${goType(v)} into Go value of type int64`);
  }
  if (!/^-?\d+$/.test(text)) throw new GoJsonError(`json: cannot unmarshal number ${text} into Go value of type int64`);
  return BigInt(text);
}

/** Go's base64.StdEncoding: padded, standard alphabet, errors at the first bad byte. */
export function decodeBase64(s: string): Buffer {
  const alphabet = /[A-Za-z0-9+/]/;
  let i = 0;
  while (i < s.length && alphabet.test(s[i]!)) i++;
  const dataLen = i;
  if (i < s.length) {
    if (s[i] !== '=') throw new GoJsonError(`illegal base64 data at input byte ${i}`);
    const rem = dataLen % 4;
    const pads = rem === 2 ? 2 : rem === 3 ? 1 : 0;
    if (pads === 0) throw new GoJsonError(`illegal base64 data at input byte ${i}`);
    for (let k = 0; k < pads; k++) {
      if (s[i + k] !== '=') throw new GoJsonError(`illegal base64 data at input byte ${i + k}`);
    }
    if (i + pads !== s.length) throw new GoJsonError(`illegal base64 data at input byte ${i + pads}`);
  } else if (dataLen % 4 !== 0) {
    throw new GoJsonError(`illegal base64 data at input byte ${dataLen - (dataLen % 4)}`);
  }
  return Buffer.from(s, 'base64');
}

// ------------------------------------------------------------------ etcd's request messages

const sortOrder = { enum: 'etcdserverpb.RangeRequest_SortOrder', values: ['NONE', 'ASCEND', 'DESCEND'] } as const;
const sortTarget = {
  enum: 'etcdserverpb.RangeRequest_SortTarget',
  values: ['KEY', 'VERSION', 'CREATE', 'MOD', 'VALUE'],
} as const;

export const RangeRequest: MessageSchema = [
  ['key', 'bytes'],
  ['range_end', 'bytes'],
  ['limit', 'int64'],
  ['revision', 'int64'],
  ['sort_order', sortOrder],
  ['sort_target', sortTarget],
  ['serializable', 'bool'],
  ['keys_only', 'bool'],
  ['count_only', 'bool'],
  ['min_mod_revision', 'int64'],
  ['max_mod_revision', 'int64'],
  ['min_create_revision', 'int64'],
  ['max_create_revision', 'int64'],
];

export const PutRequest: MessageSchema = [
  ['key', 'bytes'],
  ['value', 'bytes'],
  ['lease', 'int64'],
  ['prev_kv', 'bool'],
  ['ignore_value', 'bool'],
  ['ignore_lease', 'bool'],
];

export const DeleteRangeRequest: MessageSchema = [
  ['key', 'bytes'],
  ['range_end', 'bytes'],
  ['prev_kv', 'bool'],
];

export const Compare: MessageSchema = [
  ['result', { enum: 'etcdserverpb.Compare_CompareResult', values: ['EQUAL', 'GREATER', 'LESS', 'NOT_EQUAL'] }],
  ['target', { enum: 'etcdserverpb.Compare_CompareTarget', values: ['VERSION', 'CREATE', 'MOD', 'VALUE', 'LEASE'] }],
  ['key', 'bytes'],
  ['version', 'int64'],
  ['create_revision', 'int64'],
  ['mod_revision', 'int64'],
  ['value', 'bytes'],
  ['lease', 'int64'],
  ['range_end', 'bytes'],
];

const requestOp: [string, FieldKind][] = [];
export const RequestOp: MessageSchema = requestOp;
export const TxnRequest: MessageSchema = [
  ['compare', { repeated: { message: Compare } }],
  ['success', { repeated: { message: RequestOp } }],
  ['failure', { repeated: { message: RequestOp } }],
];
requestOp.push(
  ['request_range', { message: RangeRequest }],
  ['request_put', { message: PutRequest }],
  ['request_delete_range', { message: DeleteRangeRequest }],
  ['request_txn', { message: TxnRequest }],
);

export const CompactionRequest: MessageSchema = [
  ['revision', 'int64'],
  ['physical', 'bool'],
];

export const LeaseGrantRequest: MessageSchema = [
  ['TTL', 'int64'],
  ['ID', 'int64'],
];
export const LeaseIdRequest: MessageSchema = [['ID', 'int64']];
export const LeaseTimeToLiveRequest: MessageSchema = [
  ['ID', 'int64'],
  ['keys', 'bool'],
];

export const WatchCreateRequest: MessageSchema = [
  ['key', 'bytes'],
  ['range_end', 'bytes'],
  ['start_revision', 'int64'],
  ['progress_notify', 'bool'],
  ['filters', { repeated: { enum: 'etcdserverpb.WatchCreateRequest_FilterType', values: ['NOPUT', 'NODELETE'] } }],
  ['prev_kv', 'bool'],
  ['watch_id', 'int64'],
  ['fragment', 'bool'],
];
export const WatchRequest: MessageSchema = [
  ['create_request', { message: WatchCreateRequest }],
  ['cancel_request', { message: [['watch_id', 'int64']] }],
  ['progress_request', { message: [] }],
];

export const AuthenticateRequest: MessageSchema = [
  ['name', 'string'],
  ['password', 'string'],
];
export const AuthUserAddRequest: MessageSchema = [
  ['name', 'string'],
  ['password', 'string'],
];
export const AuthRoleAddRequest: MessageSchema = [['name', 'string']];
export const AuthUserGrantRoleRequest: MessageSchema = [
  ['user', 'string'],
  ['role', 'string'],
];
export const AuthRoleGrantPermissionRequest: MessageSchema = [
  ['name', 'string'],
  [
    'perm',
    {
      message: [
        ['permType', { enum: 'authpb.Permission_Type', values: ['READ', 'WRITE', 'READWRITE'] }],
        ['key', 'bytes'],
        ['range_end', 'bytes'],
      ],
    },
  ],
];
