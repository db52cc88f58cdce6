import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { translateCluster } from '../../agent/translate/cluster.js';
import { defaultInjectionConfig } from '../../webhook/config/injection-config.js';
import { apisixConfigDocument, requestIdSnippets } from '../../webhook/injection/apisix-config.js';
import { retryLocationsSnippet, retryUpstreamSnippet } from '../../webhook/injection/retry-locations.js';
import { describeWhenAvailable, firstMissing, missingCommand, missingRoot } from '../support/requirements.js';
import { otherUidsDir, removeOtherUidsDir } from '../support/other-uids.js';
import { asUser, createPair, podIp, remoteIp, runIptables, startHttpEcho, type Listener, type NetnsPair } from '../iptables/support/netns.js';

/**
 * The proxy's side of the capture rules on a real kernel. APISIX is nginx: here Debian's nginx
 * stands in for it, running as the proxy uid in the pod's network namespace with the capture rules
 * of `apisix-mesh iptables` and the very `nginx_config` snippets the webhook puts into APISIX's
 * config.yaml. It forwards to the node the agent's translation gives an inbound cluster (the pod
 * IP), so the test shows that inbound requests reach the app instead of being captured again.
 */
const missing = firstMissing(
  missingRoot(),
  missingCommand('ip', 'install iproute2'),
  missingCommand('iptables-nft-restore', 'install iptables'),
  missingCommand('nginx', 'install nginx-light'),
  missingCommand('setpriv', 'install util-linux'),
  missingCommand('curl', 'install curl'),
);

const { proxyUid, proxyGid } = defaultInjectionConfig;
const appUid = 1000;
const { outbound, inbound } = defaultInjectionConfig.ports;
const appPort = 8080;

interface Nginx {
  dir: string;
  stop(): Promise<void>;
}

/** nginx as the proxy uid in `ns`, listening on both capture ports like APISIX's `node_listen`. */
async function startNginx(ns: string, snippets: { http: string; server: string }, inboundNode: string): Promise<Nginx> {
  // nginx runs as the proxy uid: its directory must not be under one only root may enter.
  const dir = mkdtempSync(join(otherUidsDir(), 'sidecar-nginx-'));
  for (const sub of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, sub));
  writeFileSync(
    join(dir, 'nginx.conf'),
    `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${snippets.http}
  server {
    listen ${outbound};
    listen ${inbound};
${snippets.server}
    proxy_connect_timeout 2s;
    proxy_read_timeout 3s;
    # the route of an inbound listener, and an outbound service whose endpoint is this very pod
    location / { proxy_pass http://${inboundNode}; }
    # an outbound service on the remote host
    location /remote/ { proxy_pass http://${remoteIp}:80; }
  }
}
`,
  );
  spawnSync('chown', ['-R', `${proxyUid}:${proxyGid}`, dir]);
  chmodSync(dir, 0o755);
  const child: ChildProcess = spawn(
    'ip',
    ['netns', 'exec', ns, ...asUser({ uid: proxyUid, gid: proxyGid }), 'nginx', '-p', dir, '-e', `${dir}/error.log`, '-c', `${dir}/nginx.conf`],
    { stdio: 'ignore' },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 10_000;
  while (spawnSync('ip', ['netns', 'exec', ns, 'sh', '-c', `ss -Hltn 'sport = :${inbound}' | grep -q .`]).status !== 0) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`nginx did not start: ${readFileSync(join(dir, 'error.log'), { encoding: 'utf8', flag: 'a+' })}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    dir,
    stop: async () => {
      child.kill();
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** One HTTP GET from `ns` as `uid` (root when omitted): the status and the body. */
function get(ns: string, url: string, uid?: number): { status: number; body: string } {
  const identity = uid === undefined ? [] : asUser({ uid, gid: uid });
  const res = spawnSync('ip', ['netns', 'exec', ns, ...identity, 'curl', '-s', '-m', '8', '-o', '-', '-w', '\n%{http_code}', url], { encoding: 'utf8' });
  const lines = res.stdout.trimEnd().split('\n');
  return { status: Number(lines.pop()), body: lines.join('\n') };
}

/** Who answered a request, as the echo app reports it. */
function answer(res: { status: number; body: string }): { role: string; peer: string } | string {
  if (res.status !== 200) return `status ${res.status}`;
  const { role, peer } = JSON.parse(res.body) as { role: string; peer: string };
  return { role, peer };
}

describeWhenAvailable('APISIX forwarding under the capture rules (a real kernel, nginx as the proxy)', missing, () => {
  let pair: NetnsPair;
  const apps: Listener[] = [];
  const config = (apisixConfigDocument(defaultInjectionConfig) as { nginx_config: { http_configuration_snippet: string; http_server_configuration_snippet: string } }).nginx_config;
  // the retry locations and their upstream are OpenResty Lua (Debian's nginx has none); they run
  // on the real APISIX in test/dataplane/translation-semantics.test.ts
  const snippets = {
    http_configuration_snippet: config.http_configuration_snippet.replace(retryUpstreamSnippet(), ''),
    http_server_configuration_snippet: config.http_server_configuration_snippet.replace(retryLocationsSnippet(requestIdSnippets().location), ''),
  };
  const inboundNodes = translateCluster({ name: `inbound|${appPort}||`, type: 'ORIGINAL_DST' }, { podIp }).inlineNodes ?? [];

  beforeAll(async () => {
    pair = createPair();
    const rules = runIptables(pair.pod, ['--ipv6=off']);
    if (rules.status !== 0) throw new Error(rules.stderr);
    apps.push(await startHttpEcho(pair.pod, 'app', appPort));
    apps.push(await startHttpEcho(pair.remote, 'remote', 80));
  });

  afterAll(() => {
    for (const a of apps) a.stop();
    pair?.destroy();
    removeOtherUidsDir();
  });

  it('the agent forwards inbound traffic to the pod IP', () => {
    expect(inboundNodes).toEqual([{ host: podIp, port: appPort, weight: 1 }]);
  });

  it('without binding the passthrough source, an inbound request forwarded to the pod IP is captured again', async () => {
    const node = inboundNodes[0]!;
    const nginx = await startNginx(pair.pod, { http: '', server: '' }, `${node.host}:${node.port}`);
    try {
      const res = get(pair.remote, `http://${podIp}:${appPort}/`);
      expect(res.status).toBeGreaterThanOrEqual(500); // the loop ends when nginx runs out of connections
      expect(readFileSync(join(nginx.dir, 'error.log'), 'utf8')).toContain('worker_connections are not enough');
    } finally {
      await nginx.stop();
    }
  });

  describe('with the snippets of the sidecar config.yaml', () => {
    let nginx: Nginx;
    beforeAll(async () => {
      const node = inboundNodes[0]!;
      nginx = await startNginx(pair.pod, { http: snippets.http_configuration_snippet, server: snippets.http_server_configuration_snippet }, `${node.host}:${node.port}`);
    });
    afterAll(() => nginx?.stop());

    it('inbound: a request from the remote host reaches the app, from the passthrough source', () => {
      expect(answer(get(pair.remote, `http://${podIp}:${appPort}/`))).toEqual({ role: 'app', peer: '127.0.0.6' });
    });

    it('outbound: the app reaches the remote host through the proxy, from the pod IP', () => {
      expect(answer(get(pair.pod, `http://${remoteIp}:80/remote/`, appUid))).toEqual({ role: 'remote', peer: podIp });
    });

    it('outbound to an endpoint in this pod goes through the inbound side, as with Istio', () => {
      expect(answer(get(pair.pod, `http://${remoteIp}:80/`, appUid))).toEqual({ role: 'app', peer: '127.0.0.6' });
    });
  });
});
