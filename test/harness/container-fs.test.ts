// The pod harness's own pure parts: how a container's paths map onto this machine, and which APISIX
// log lines count as errors. The harness is a test instrument; a fault here would hide faults there.
import { mkdtempSync, readFileSync, readlinkSync, realpathSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ContainerFs } from '../support/pod/container-fs.js';
import { apisixErrorLines } from '../support/pod/apisix-log.js';

const scratch = mkdtempSync(join(tmpdir(), 'container-fs-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('ContainerFs', () => {
  const image = join(scratch, 'image');
  mkdirSync(join(image, 'conf'), { recursive: true });
  mkdirSync(join(image, 'apisix'), { recursive: true });
  writeFileSync(join(image, 'conf', 'config-default.yaml'), 'image default\n');
  writeFileSync(join(image, 'apisix', 'init.lua'), '-- lua\n');
  const volume = join(scratch, 'volume');
  mkdirSync(volume);
  writeFileSync(join(volume, 'config.yaml'), 'from the volume\n');
  const fs = new ContainerFs(join(scratch, 'root'));
  fs.place('/usr/local/apisix', image);
  fs.place('/usr/local/apisix/conf', volume);

  it('a mount inside an image directory shadows that entry and keeps the others', () => {
    expect(readFileSync(fs.hostPath('/usr/local/apisix/conf/config.yaml'), 'utf8')).toBe('from the volume\n');
    expect(() => readFileSync(fs.hostPath('/usr/local/apisix/conf/config-default.yaml'))).toThrow();
    expect(readFileSync(fs.hostPath('/usr/local/apisix/apisix/init.lua'), 'utf8')).toBe('-- lua\n');
    expect(realpathSync(fs.hostPath('/usr/local/apisix/apisix'))).toBe(realpathSync(join(image, 'apisix')));
    expect(readlinkSync(fs.hostPath('/usr/local/apisix/conf'))).toBe(volume);
  });

  it('rewrites placed paths in command lines, and only those', () => {
    const root = join(scratch, 'root');
    expect(fs.translate('cp -R /usr/local/apisix/conf/. /tmp/x && cat /usr/local/apisixx')).toBe(`cp -R ${root}/usr/local/apisix/conf/. /tmp/x && cat /usr/local/apisixx`);
    expect(fs.translate('--prefix=/usr/local/apisix')).toBe(`--prefix=${root}/usr/local/apisix`);
    expect(fs.translate('/usr/bin/env')).toBe('/usr/bin/env');
    expect(fs.translate('"/usr/local/apisix/conf"')).toBe(`"${root}/usr/local/apisix/conf"`);
  });
});

describe('apisixErrorLines', () => {
  it('keeps [error] and worse, drops lower levels and the sandbox\'s open-file alert', () => {
    const log = [
      '2026/12/01 23:54:18 [alert] 1938#1938: setrlimit(RLIMIT_NOFILE, 20480) failed (1: Operation not permitted)',
      '2026/12/01 23:54:18 [warn] 1938#1938: *1 [lua] plugin.lua:215: load(): new plugins: {}',
      '2026/12/01 23:51:29 [error] 28978#28978: *9 [lua] config_etcd.lua:719: sync_data(): failed to check item data of [/apisix/routes]',
      '2026/12/01 23:51:29 [emerg] 1#1: bind() to 0.0.0.0:15001 failed (98: Address already in use)',
      '2026/12/01 23:51:29 [alert] 1#1: worker process 7 exited on signal 11',
      '10.66.0.2 - - [01/Dec/2026:23:54:19 +0000] 127.0.0.1:15001 "GET /hello HTTP/1.1" 200 314',
    ].join('\n');
    expect(apisixErrorLines(log).map((l) => l.slice(20, 27))).toEqual(['[error]', '[emerg]', '[alert]']);
  });
});
