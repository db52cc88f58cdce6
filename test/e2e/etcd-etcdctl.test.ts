import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { KvStore } from '../../agent/store/store.js';
import { startEtcdServer, type EtcdServer } from '../../agent/etcd/server.js';
import { describeWhenAvailable, missingCommand } from '../support/requirements.js';

/**
 * Debian's etcdctl (etcd-client 3.4) against the emulator's gRPC side: every command the issue
 * names, checked through etcdctl's own output and through the store behind it.
 */
const run = promisify(execFile);

describeWhenAvailable('etcdctl against the gRPC side', missingCommand('etcdctl', 'Debian package etcd-client'), () => {
  let store: KvStore;
  let server: EtcdServer;
  let readOnly: EtcdServer;
  const ctl = async (...args: string[]) => {
    const r = await run('etcdctl', [`--endpoints=127.0.0.1:${server.grpcPort}`, '--dial-timeout=3s', ...args], {
      env: { ...process.env, ETCDCTL_API: '3' },
    });
    return r.stdout;
  };

  beforeAll(async () => {
    store = new KvStore();
    server = await startEtcdServer({ store, port: 0, grpcPort: 0 });
    readOnly = await startEtcdServer({ store: new KvStore(), port: 0, grpcPort: 0, readOnly: true });
  });
  afterAll(async () => {
    await server?.close();
    await readOnly?.close();
  });

  it('put, get --prefix, del', async () => {
    expect(await ctl('put', '/apisix/routes/1', '{"uri":"/a"}')).toBe('OK\n');
    expect(await ctl('put', '/apisix/routes/2', '{"uri":"/b"}')).toBe('OK\n');
    expect(await ctl('put', '/other', 'x')).toBe('OK\n');
    expect(await ctl('get', '--prefix', '/apisix/')).toBe('/apisix/routes/1\n{"uri":"/a"}\n/apisix/routes/2\n{"uri":"/b"}\n');
    const json = JSON.parse(await ctl('get', '/apisix/routes/1', '-w', 'json'));
    expect(json.kvs[0]).toMatchObject({ create_revision: 2, mod_revision: 2, version: 1 });
    expect(json.header.revision).toBe(store.revision);
    expect(await ctl('del', '--prefix', '/apisix/routes/')).toBe('2\n');
    expect(store.range({ key: '/apisix/', rangeEnd: '/apisix0' }).kvs).toEqual([]);
  });

  it('watch --prefix sees puts and deletes, with --prev-kv', async () => {
    const child = spawn('etcdctl', [`--endpoints=127.0.0.1:${server.grpcPort}`, 'watch', '--prefix', '--prev-kv', '/w/'], {
      env: { ...process.env, ETCDCTL_API: '3' },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      for (let i = 0; i < 100 && store.watcherCount === 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(store.watcherCount).toBe(1);
      await ctl('put', '/w/a', '1');
      await ctl('put', '/w/a', '2');
      await ctl('put', '/elsewhere', 'no');
      await ctl('del', '/w/a');
      for (let i = 0; i < 100 && !out.includes('DELETE'); i++) await new Promise((r) => setTimeout(r, 20));
    } finally {
      child.kill();
    }
    expect(out).toBe('PUT\n/w/a\n1\nPUT\n/w/a\n1\n/w/a\n2\nDELETE\n/w/a\n2\n/w/a\n\n');
    for (let i = 0; i < 100 && store.watcherCount > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(store.watcherCount).toBe(0);
  });

  it('watch --rev replays history; a compacted start revision is refused', async () => {
    await ctl('put', '/h/a', '1');
    const from = store.revision;
    await ctl('put', '/h/a', '2');
    await ctl('del', '/h/a');
    const watchFrom = async (rev: number) => {
      const child = spawn('etcdctl', [`--endpoints=127.0.0.1:${server.grpcPort}`, 'watch', '--prefix', `--rev=${rev}`, '/h/'], {
        env: { ...process.env, ETCDCTL_API: '3' },
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise((r) => child.once('exit', r));
      for (let i = 0; i < 100 && !out.includes('DELETE') && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 20));
      child.kill();
      await exited;
      return { out, err };
    };
    expect((await watchFrom(from)).out).toBe('PUT\n/h/a\n1\nPUT\n/h/a\n2\nDELETE\n/h/a\n\n');
    await ctl('compaction', String(store.revision));
    const compacted = await watchFrom(from);
    expect(compacted.out + compacted.err).toContain('required revision has been compacted');
  });

  it('lease grant, put --lease, timetolive --keys, revoke', async () => {
    const granted = await ctl('lease', 'grant', '60');
    const m = /^lease ([0-9a-f]+) granted with TTL\(60s\)\n$/.exec(granted);
    expect(m, granted).not.toBeNull();
    const hex = m![1]!;
    expect(await ctl('put', '--lease', hex, '/apisix/data_plane/server_info/n1', '{}')).toBe('OK\n');
    expect(store.range({ key: '/apisix/data_plane/server_info/n1' }).kvs[0]!.lease).toBe(BigInt('0x' + hex).toString());
    expect(await ctl('lease', 'timetolive', '--keys', hex)).toMatch(
      new RegExp(`^lease ${hex} granted with TTL\\(60s\\), remaining\\((59|60)s\\), attached keys\\(\\[/apisix/data_plane/server_info/n1\\]\\)\\n$`),
    );
    expect(await ctl('lease', 'revoke', hex)).toBe(`lease ${hex} revoked\n`);
    expect(store.range({ key: '/apisix/data_plane/server_info/n1' }).kvs).toEqual([]);
  });

  it('endpoint status reports the version and the revision', async () => {
    const status = JSON.parse(await ctl('endpoint', 'status', '-w', 'json'));
    expect(status[0].Status.version).toBe('3.4.23');
    expect(status[0].Status.header.revision).toBe(store.revision);
  });

  it('compaction: older revisions refused afterwards, with etcd\'s message', async () => {
    await ctl('put', '/c', '1');
    const old = store.revision;
    await ctl('put', '/c', '2');
    expect(await ctl('get', '/c', `--rev=${old}`, '--print-value-only')).toBe('1\n');
    expect(await ctl('compaction', String(store.revision))).toBe(`compacted revision ${store.revision}\n`);
    await expect(ctl('get', '/c', `--rev=${old}`)).rejects.toThrow('etcdserver: mvcc: required revision has been compacted');
  });

  it('a read-only server refuses etcdctl writes with permission denied', async () => {
    await expect(
      run('etcdctl', [`--endpoints=127.0.0.1:${readOnly.grpcPort}`, 'put', '/a', '1'], { env: { ...process.env, ETCDCTL_API: '3' } }),
    ).rejects.toThrow('etcdserver: permission denied');
  });

  it('a read-only server refuses lease grants too, and takes only init_dir markers under /apisix/', async () => {
    const ro = (...args: string[]) =>
      run('etcdctl', [`--endpoints=127.0.0.1:${readOnly.grpcPort}`, '--dial-timeout=3s', ...args], { env: { ...process.env, ETCDCTL_API: '3' } });
    await expect(ro('lease', 'grant', '60')).rejects.toThrow('failed to grant lease (etcdserver: permission denied)');
    expect((await ro('put', '/apisix/routes/', 'init_dir')).stdout).toBe('OK\n');
    await expect(ro('put', '/elsewhere/routes/', 'init_dir')).rejects.toThrow('etcdserver: permission denied');
  });

  it("lease TTLs above etcd's MaxLeaseTTL are refused with etcd's message", async () => {
    await expect(ctl('lease', 'grant', '9000000001')).rejects.toThrow('failed to grant lease (etcdserver: too large lease TTL)');
    expect(await ctl('lease', 'grant', '9000000000')).toMatch(/granted with TTL\(9000000000s\)/);
  });
});
