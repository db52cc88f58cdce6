import type { ByteKey } from '../store/keys.js';
import type { KeyValue, PutRequest } from '../store/store.js';
import { etcdErrors } from './api-error.js';

export const INIT_DIR = Buffer.from('init_dir');
/** APISIX's default `etcd.prefix`, with the slash its directory keys add. */
export const DEFAULT_APISIX_PREFIX = '/apisix/';
/** APISIX 3.x marks 13 directories; room for new ones, not for a flood of keys. */
export const MAX_INIT_DIR_MARKERS = 64;
/** One directory name: APISIX's are lowercase words joined by `_`. */
const DIR_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * The one write a read-only etcd API still takes. APISIX's CLI puts `<prefix><dir>/ = init_dir`
 * for each of its directories at startup and stops on any error, so such a marker is accepted when
 * it is exactly that (directly under the prefix, no lease) and missing, for at most
 * MAX_INIT_DIR_MARKERS distinct keys. Everything else is etcd's permission denied: every process
 * in the pod shares the loopback with APISIX, and none may change what APISIX reads.
 */
export class ReadOnlyWrites {
  private readonly markers = new Set<ByteKey>();

  constructor(
    /** The prefix as a byte key, with its trailing slash (`/apisix/`). */
    private readonly prefix: ByteKey,
    private readonly maxMarkers = MAX_INIT_DIR_MARKERS,
  ) {}

  /** 'write' a new marker, or 'skip' one that is already there; anything else throws. */
  admitPut(put: PutRequest, current: KeyValue | undefined): 'write' | 'skip' {
    if (!this.isMarker(put)) throw etcdErrors.permissionDenied();
    if (current) {
      if (INIT_DIR.equals(current.value)) return 'skip';
      throw etcdErrors.permissionDenied(); // never overwrite what the agent wrote
    }
    if (!this.markers.has(put.key) && this.markers.size >= this.maxMarkers) throw etcdErrors.permissionDenied();
    this.markers.add(put.key);
    return 'write';
  }

  private isMarker(p: PutRequest): boolean {
    if (p.ignoreValue || p.ignoreLease || (p.lease !== undefined && p.lease !== '0')) return false;
    if (!p.value || !INIT_DIR.equals(p.value)) return false;
    if (!p.key.startsWith(this.prefix) || !p.key.endsWith('/')) return false;
    return DIR_NAME.test(p.key.slice(this.prefix.length, -1));
  }
}
