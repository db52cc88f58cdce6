import type { KvStore } from '../store/store.js';

/**
 * A key no APISIX watcher reads (none of APISIX's directories, nor the sidecar's, starts with its
 * name): writing it is an event every APISIX Lua VM receives and ignores.
 */
export const WATCH_RELEASE_KEY = '/apisix/mesh_watch_release';

/** after the last revision: a first release once watchers have usually read it, a second for slow ones */
export const DEFAULT_RELEASE_DELAYS_MS = [5_000, 30_000];

/**
 * APISIX 3.13's etcd client (core/config_etcd.lua) runs one watch per Lua VM (each worker's HTTP
 * and stream VMs, and the privileged agent's) and keeps the decoded responses in a queue that its
 * watchers read from; a response is dropped only when the NEXT one arrives after every watcher
 * read past it. While the mesh is quiet, each VM therefore keeps the last revision's whole decoded
 * response: ~40 MiB per VM after a revision that wrote 10,000 services, in the stream VMs too,
 * which use none of it (BENCHMARKS.md). Some seconds after the store's last revision, this writes
 * a small key so that the queues move on and the big response is released. Returns a stop function.
 */
export function releaseWatchResponses(store: KvStore, delaysMs: readonly number[] = DEFAULT_RELEASE_DELAYS_MS): () => void {
  let timers: NodeJS.Timeout[] = [];
  let writing = false;
  const clear = () => {
    for (const t of timers) clearTimeout(t);
    timers = [];
  };
  const release = (after: number) => {
    writing = true;
    try {
      store.write([{ op: 'put', key: WATCH_RELEASE_KEY, value: String(after) }]);
    } finally {
      writing = false;
    }
  };
  const stop = store.onRevision((revision) => {
    if (writing) return; // its own write: nothing new to release
    clear();
    timers = delaysMs.map((ms) => setTimeout(() => release(revision), ms).unref());
  });
  return () => {
    stop();
    clear();
  };
}
