// APISIX 3.13 keeps each Lua VM's last watch response until the next one arrives (agent/etcd/
// watch-release.ts): some seconds after the store's last revision the agent writes a small key so
// that APISIX lets the big response go. Its own writes must not keep it writing, and a full apply
// must not delete the key (that would be one more event for nothing).
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { releaseWatchResponses, WATCH_RELEASE_KEY } from '../../agent/etcd/watch-release.js';
import { StoreApplier } from '../../agent/apply.js';
import { KvStore } from '../../agent/store/store.js';
import { keyFromText } from '../../agent/store/keys.js';

const released = (store: KvStore) => store.get(keyFromText(WATCH_RELEASE_KEY));

describe('releasing APISIX\'s last watch response', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('writes the release key 5 s and 30 s after the last revision, then nothing until the next revision', () => {
    const store = new KvStore();
    const stop = releaseWatchResponses(store);
    const rev = store.write([{ op: 'put', key: '/apisix/routes/r1', value: '{}' }]);
    vi.advanceTimersByTime(4_999);
    expect(released(store)).toBeUndefined();
    vi.advanceTimersByTime(1);
    expect(Buffer.from(released(store)!.value).toString()).toBe(String(rev));
    expect(store.revision).toBe(rev + 1);
    vi.advanceTimersByTime(25_000);
    expect(store.revision).toBe(rev + 2);
    vi.advanceTimersByTime(600_000);
    expect(store.revision).toBe(rev + 2);
    stop();
  });

  it('a revision meanwhile starts the delays again; stop() cancels them', () => {
    const store = new KvStore();
    const stop = releaseWatchResponses(store);
    store.write([{ op: 'put', key: '/apisix/routes/r1', value: '{}' }]);
    vi.advanceTimersByTime(4_000);
    const rev = store.write([{ op: 'put', key: '/apisix/routes/r2', value: '{}' }]);
    vi.advanceTimersByTime(4_000);
    expect(released(store)).toBeUndefined();
    vi.advanceTimersByTime(1_000);
    expect(Buffer.from(released(store)!.value).toString()).toBe(String(rev));
    stop();
    vi.advanceTimersByTime(60_000);
    expect(store.revision).toBe(rev + 1);
  });

  it('a full apply keeps the key', () => {
    const store = new KvStore();
    const stop = releaseWatchResponses(store);
    const applier = new StoreApplier(store);
    applier.apply({ upstreams: new Map(), routes: new Map(), l4: new Map(), notes: [] });
    vi.advanceTimersByTime(5_000);
    const revision = store.revision;
    stop();
    applier.apply({ upstreams: new Map(), routes: new Map(), l4: new Map(), notes: [] });
    expect(released(store)).toBeDefined();
    expect(store.revision).toBe(revision);
  });
});
