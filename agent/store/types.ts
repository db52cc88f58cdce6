import type { ByteKey } from './keys.js';

/**
 * One version of one key. Immutable once stored: watchers, history and cached encodings share
 * the same object, so a value is never copied per watcher.
 */
export interface KeyValue {
  readonly key: ByteKey;
  readonly createRevision: number;
  readonly modRevision: number;
  readonly version: number;
  readonly value: Uint8Array;
  /** Lease id as a decimal string, '0' when none (etcd's int64, beyond JS's safe integers). */
  readonly lease: string;
}

export interface StoreEvent {
  readonly type: 'PUT' | 'DELETE';
  /** For DELETE: only key and modRevision are meaningful (etcd sends no value). */
  readonly kv: KeyValue;
  /** The key's previous version, if it had one. */
  readonly prevKv: KeyValue | undefined;
}

/** All changes of one write transaction. */
export interface RevisionChanges {
  readonly revision: number;
  readonly events: readonly StoreEvent[];
}

export type SortOrder = 'NONE' | 'ASCEND' | 'DESCEND';
export type SortTarget = 'KEY' | 'VERSION' | 'CREATE' | 'MOD' | 'VALUE';

export interface RangeRequest {
  key: ByteKey;
  rangeEnd?: ByteKey;
  limit?: number;
  /** 0 or negative = current. */
  revision?: number;
  sortOrder?: SortOrder;
  sortTarget?: SortTarget;
  keysOnly?: boolean;
  countOnly?: boolean;
  minModRevision?: number;
  maxModRevision?: number;
  minCreateRevision?: number;
  maxCreateRevision?: number;
}

export interface RangeResult {
  revision: number;
  kvs: KeyValue[];
  more: boolean;
  count: number;
  keysOnly: boolean;
}

export interface PutRequest {
  key: ByteKey;
  value?: Uint8Array;
  lease?: string;
  prevKv?: boolean;
  ignoreValue?: boolean;
  ignoreLease?: boolean;
}

export interface PutResult {
  revision: number;
  prevKv: KeyValue | undefined;
}

export interface DeleteRangeRequest {
  key: ByteKey;
  rangeEnd?: ByteKey;
  prevKv?: boolean;
}

export interface DeleteRangeResult {
  revision: number;
  deleted: number;
  prevKvs: KeyValue[];
}

export type CompareTarget = 'VERSION' | 'CREATE' | 'MOD' | 'VALUE' | 'LEASE';
export type CompareResult = 'EQUAL' | 'GREATER' | 'LESS' | 'NOT_EQUAL';

export interface Compare {
  key: ByteKey;
  rangeEnd?: ByteKey;
  target: CompareTarget;
  result: CompareResult;
  /** number for VERSION/CREATE/MOD, bytes for VALUE, lease id string for LEASE. */
  operand: number | Uint8Array | string;
}

export type RequestOp =
  | { range: RangeRequest }
  | { put: PutRequest }
  | { deleteRange: DeleteRangeRequest }
  | { txn: TxnRequest };

export interface TxnRequest {
  compare: Compare[];
  success: RequestOp[];
  failure: RequestOp[];
}

export type ResponseOp =
  | { range: RangeResult }
  | { put: PutResult }
  | { deleteRange: DeleteRangeResult }
  | { txn: TxnResult };

export interface TxnResult {
  revision: number;
  succeeded: boolean;
  responses: ResponseOp[];
}

export interface LeaseInfo {
  id: string;
  grantedTtl: number;
  /** Remaining seconds, -1 when the lease does not exist. */
  ttl: number;
  keys: ByteKey[];
}
