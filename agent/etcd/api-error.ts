import { StoreError, type StoreErrorKind } from '../store/errors.js';
import { GoJsonError } from './go-json.js';

/**
 * An answer etcd gives as an error: its gRPC code, the HTTP status the gateway maps it to, and the
 * message text APISIX matches on. `decode` errors come from the gateway itself (plain
 * Content-Length bodies); the others from etcd's server (chunked, with a gRPC trailer).
 */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly grpcCode: number,
    readonly httpStatus: number,
    readonly source: 'server' | 'decode' = 'server',
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const GRPC = {
  OK: 0,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  OUT_OF_RANGE: 11,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

const fromStore: Record<StoreErrorKind, [grpc: number, http: number]> = {
  compacted: [GRPC.OUT_OF_RANGE, 400],
  'future-revision': [GRPC.OUT_OF_RANGE, 400],
  'key-not-provided': [GRPC.INVALID_ARGUMENT, 400],
  'key-not-found': [GRPC.INVALID_ARGUMENT, 400],
  'duplicate-key': [GRPC.INVALID_ARGUMENT, 400],
  'lease-not-found': [GRPC.NOT_FOUND, 404],
  'lease-exists': [GRPC.FAILED_PRECONDITION, 412],
  'lease-ttl-too-large': [GRPC.OUT_OF_RANGE, 400],
  // grpc-gateway maps ResourceExhausted to 429, as etcd 3.4 answers a full quota.
  'no-space': [GRPC.RESOURCE_EXHAUSTED, 429],
};

export const etcdErrors = {
  permissionDenied: () => new ApiError('etcdserver: permission denied', GRPC.PERMISSION_DENIED, 403),
  authNotEnabled: () => new ApiError('etcdserver: authentication is not enabled', GRPC.FAILED_PRECONDITION, 412),
  invalidAuthToken: () => new ApiError('etcdserver: invalid auth token', GRPC.UNAUTHENTICATED, 401),
  userNameEmpty: () => new ApiError('etcdserver: user name is empty', GRPC.INVALID_ARGUMENT, 400),
  authFailed: () =>
    new ApiError('etcdserver: authentication failed, invalid user ID or password', GRPC.INVALID_ARGUMENT, 400),
  requestTooLarge: () => new ApiError('etcdserver: request is too large', GRPC.INVALID_ARGUMENT, 400),
  userExists: () => new ApiError('etcdserver: user name already exists', GRPC.FAILED_PRECONDITION, 412),
  roleExists: () => new ApiError('etcdserver: role name already exists', GRPC.FAILED_PRECONDITION, 412),
  userNotFound: () => new ApiError('etcdserver: user name not found', GRPC.FAILED_PRECONDITION, 412),
  roleNotFound: () => new ApiError('etcdserver: role name not found', GRPC.FAILED_PRECONDITION, 412),
  rootMissing: () => new ApiError('etcdserver: root user does not exist', GRPC.FAILED_PRECONDITION, 412),
};

/** Any error from decoding or the store, as etcd would report it; unknown errors are re-thrown. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof StoreError) {
    const [grpc, http] = fromStore[err.kind];
    return new ApiError(`etcdserver: ${err.message}`, grpc, http);
  }
  if (err instanceof GoJsonError) return new ApiError(err.message, GRPC.INVALID_ARGUMENT, 400, 'decode');
  throw err;
}
