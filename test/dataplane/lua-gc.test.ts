// Issue 15 (what the sidecar costs, memory): LuaJIT's collector in the sidecar's APISIX as the
// injection configures it (`apisixLuaGc` → config.yaml `apisix_mesh.lua_gc` → lua_gc.lua in
// init_by_lua, before APISIX forks). Each worker and the privileged agent report, at the info level,
// what their collector runs with once they started: every one must have inherited the setting, in
// both subsystems. A value out of bounds in config.yaml (not one the webhook writes) leaves LuaJIT's
// defaults with an [error] line per subsystem, and APISIX serves. The memory it saves: BENCHMARKS.md.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterEach, expect, it } from 'vitest';
import type { V1Pod } from '@kubernetes/client-node';
import { parse, stringify } from 'yaml';
import { describeWhenAvailable } from '../support/requirements.js';
import { missingForPod, podManifest } from '../support/pod/requirements.js';
import { PLAINTEXT_ISTIOD_CONFIG, startPod, type RunningPod } from '../support/pod/pod-harness.js';
import { describeLines } from '../support/pod/apisix-log.js';
import { CANARY_HOST, CANARY_SERVICE_VIP } from '../support/pod/canary-pod.js';
import { loadCanonical } from '../support/xds-fixtures.js';
import { servedBy } from '../support/echo-requests.js';
import { APISIX_CONFIG_ANNOTATION } from '../../webhook/injection/annotations.js';

const ENDPOINTS = { 'stable-1': '10.244.5.11', 'stable-2': '10.244.5.12', canary: '10.244.5.21' };

/** APISIX's error log at the info level (the reports), and `edit` applied to its config.yaml */
function apisixConfig(edit: (doc: { nginx_config: Record<string, unknown>; apisix_mesh?: unknown }) => void) {
  return (pod: V1Pod): V1Pod => {
    const annotations = pod.metadata!.annotations!;
    const doc = parse(annotations[APISIX_CONFIG_ANNOTATION]!);
    doc.nginx_config.error_log_level = 'info';
    edit(doc);
    annotations[APISIX_CONFIG_ANNOTATION] = stringify(doc);
    return pod;
  };
}

/** APISIX's nginx processes other than the master (workers and the privileged agent), by pid */
function apisixChildren(pod: RunningPod): number[] {
  const pids = spawnSync('ip', ['netns', 'pids', pod.network.pod], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
  return pids.filter((pid) => {
    try {
      return /^nginx: (worker|privileged agent) process/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
    } catch {
      return false; // gone meanwhile
    }
  });
}

/** pid → subsystem → "pause/stepmul", from the processes' reports */
function reports(log: string): Map<number, Map<string, string>> {
  const out = new Map<number, Map<string, string>>();
  for (const m of log.matchAll(/\[info\] (\d+)#\d+: .*LuaJIT's collector in this (http|stream) process: pause (\d+) %, step multiplier (\d+) %/g)) {
    const pid = Number(m[1]);
    if (!out.has(pid)) out.set(pid, new Map());
    out.get(pid)!.set(m[2]!, `${m[3]}/${m[4]}`);
  }
  return out;
}

describeWhenAvailable('LuaJIT\'s collector as the injection sets it (real APISIX)', missingForPod(), () => {
  let pod: RunningPod | undefined;
  afterEach(async () => {
    await pod?.stop();
    pod = undefined;
  });

  async function start(config: typeof PLAINTEXT_ISTIOD_CONFIG, mutateInjected: (p: V1Pod) => V1Pod): Promise<RunningPod> {
    const running = await startPod({
      manifest: podManifest('frontend', 'shop', { app: 'frontend' }),
      config,
      xds: loadCanonical('synthetic-canary-xds-responses.json'),
      clusterAddresses: [CANARY_SERVICE_VIP, ...Object.values(ENDPOINTS)],
      mutateInjected,
    });
    pod = running;
    for (const [name, ip] of Object.entries(ENDPOINTS)) await running.cluster.serve(name, ip, 8080);
    await running.kubelet.waitReady(20_000);
    expect(await running.waitSynced(20_000)).toBe(true);
    return running;
  }

  async function expectServes(running: RunningPod): Promise<void> {
    expect(await servedBy(running.app(), { url: `http://${CANARY_SERVICE_VIP}:8080/checkout`, headers: { host: CANARY_HOST } })).toMatch(/^(stable-[12]|canary)$/);
  }

  it('every worker and the privileged agent run with the configured pause and step, in both subsystems', async () => {
    const running = await start({ ...PLAINTEXT_ISTIOD_CONFIG, apisixLuaGc: { pause: 150, stepmul: 800 } }, apisixConfig(() => {}));
    await expectServes(running);
    const children = apisixChildren(running);
    expect(children.length).toBeGreaterThanOrEqual(3); // 2 workers and the privileged agent
    const byPid = reports(running.apisixLog());
    for (const pid of children) {
      expect(Object.fromEntries(byPid.get(pid) ?? []), `process ${pid}`).toEqual({ http: '150/800', stream: '150/800' });
    }
    expect(running.apisixErrors(), describeLines(running.apisixErrors())).toEqual([]);
  }, 90_000);

  it('a value out of bounds in config.yaml: LuaJIT\'s defaults, an [error] line per subsystem, and APISIX serves', async () => {
    const running = await start(PLAINTEXT_ISTIOD_CONFIG, apisixConfig((doc) => (doc.apisix_mesh = { lua_gc: { pause: 150, stepmul: 50 } })));
    await expectServes(running);
    for (const pid of apisixChildren(running)) {
      expect(Object.fromEntries(reports(running.apisixLog()).get(pid) ?? []), `process ${pid}`).toEqual({ http: '200/200', stream: '200/200' });
    }
    // nothing else is wrong; each subsystem says it once (nginx's master prints init_by_lua's lines
    // on stderr too, as `nginx: [error] ...`)
    const errors = running.apisixErrors();
    for (const line of errors) expect(line).toContain("apisix_mesh.lua_gc in config.yaml: stepmul must be an integer in 100-10000, got 50; LuaJIT's collector keeps its defaults");
    const logged = errors.filter((l) => !l.startsWith('nginx: '));
    expect(logged.map((l) => (/\[error\] \d+#\d+: stream \[lua\]/.test(l) ? 'stream' : 'http')).sort(), describeLines(errors)).toEqual(['http', 'stream']);
  }, 90_000);
});
