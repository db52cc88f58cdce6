import type {
  Compare,
  CompareResult,
  CompareTarget,
  DeleteRangeRequest,
  PutRequest,
  RangeRequest,
  RequestOp,
  SortOrder,
  SortTarget,
  TxnRequest,
} from '../store/store.js';
import type { Decoded, DecodedValue } from './proto-json.js';

/** Decoded JSON (proto field names) → the store's request types. */
const bytesKey = (v: DecodedValue | undefined): string => (v instanceof Buffer ? v.toString('latin1') : '');
const optKey = (v: DecodedValue | undefined): string | undefined =>
  v instanceof Buffer && v.length > 0 ? v.toString('latin1') : undefined;
export const int = (v: DecodedValue | undefined): number => (typeof v === 'bigint' ? Number(v) : 0);
const flag = (v: DecodedValue | undefined): boolean => v === true;
const enumName = <T extends string>(v: DecodedValue | undefined, fallback: T): T =>
  (typeof v === 'string' ? v : fallback) as T;

export function toRange(d: Decoded): RangeRequest {
  return {
    key: bytesKey(d.key),
    rangeEnd: optKey(d.range_end),
    limit: int(d.limit),
    revision: int(d.revision),
    sortOrder: enumName<SortOrder>(d.sort_order, 'NONE'),
    sortTarget: enumName<SortTarget>(d.sort_target, 'KEY'),
    keysOnly: flag(d.keys_only),
    countOnly: flag(d.count_only),
    minModRevision: int(d.min_mod_revision),
    maxModRevision: int(d.max_mod_revision),
    minCreateRevision: int(d.min_create_revision),
    maxCreateRevision: int(d.max_create_revision),
  };
}

export function toPut(d: Decoded): PutRequest {
  return {
    key: bytesKey(d.key),
    value: d.value instanceof Buffer ? new Uint8Array(d.value) : new Uint8Array(0),
    lease: typeof d.lease === 'bigint' ? d.lease.toString() : '0',
    prevKv: flag(d.prev_kv),
    ignoreValue: flag(d.ignore_value),
    ignoreLease: flag(d.ignore_lease),
  };
}

export function toDeleteRange(d: Decoded): DeleteRangeRequest {
  return { key: bytesKey(d.key), rangeEnd: optKey(d.range_end), prevKv: flag(d.prev_kv) };
}

function toCompare(d: Decoded): Compare {
  const target = enumName<CompareTarget>(d.target, 'VERSION');
  const operand =
    target === 'VALUE'
      ? d.value instanceof Buffer ? new Uint8Array(d.value) : new Uint8Array(0)
      : target === 'LEASE'
        ? typeof d.lease === 'bigint' ? d.lease.toString() : '0'
        : int(target === 'VERSION' ? d.version : target === 'CREATE' ? d.create_revision : d.mod_revision);
  return {
    key: bytesKey(d.key),
    rangeEnd: optKey(d.range_end),
    target,
    result: enumName<CompareResult>(d.result, 'EQUAL'),
    operand,
  };
}

function toOps(v: DecodedValue | undefined): RequestOp[] {
  if (!Array.isArray(v)) return [];
  const ops: RequestOp[] = [];
  for (const item of v as Decoded[]) {
    if (item.request_range) ops.push({ range: toRange(item.request_range as Decoded) });
    else if (item.request_put) ops.push({ put: toPut(item.request_put as Decoded) });
    else if (item.request_delete_range) ops.push({ deleteRange: toDeleteRange(item.request_delete_range as Decoded) });
    else if (item.request_txn) ops.push({ txn: toTxn(item.request_txn as Decoded) });
  }
  return ops;
}

export function toTxn(d: Decoded): TxnRequest {
  return {
    compare: Array.isArray(d.compare) ? (d.compare as Decoded[]).map(toCompare) : [],
    success: toOps(d.success),
    failure: toOps(d.failure),
  };
}

/** Does the txn write anything, whichever branch runs? */
export function txnWrites(t: TxnRequest): boolean {
  const writes = (ops: RequestOp[]): boolean =>
    ops.some((op) => 'put' in op || 'deleteRange' in op || ('txn' in op && txnWrites(op.txn)));
  return writes(t.success) || writes(t.failure);
}
