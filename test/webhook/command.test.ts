import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { connect } from 'node:tls';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { generateCa, generateServingCert } from '../../webhook/certificates/generate.js';
import { podCreateReview } from './helpers.js';

// The built command, as a user and Kubernetes run it: `node dist/cli/main.js webhook ...`
// (`npm test` builds first).

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = join(root, 'dist', 'cli', 'main.js');

interface Running {
  child: ChildProcess;
  port: number;
  caFile: string;
  lines: Array<Record<string, unknown>>;
  stderr: () => string;
  exit: Promise<number | null>;
}

const started: ChildProcess[] = [];
const scratchDirs: string[] = [];
afterEach(async () => {
  for (const child of started.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
  for (const dir of scratchDirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function startWebhook(args: string[]): Promise<Running> {
  // --self-signed writes its CA into a directory; keep it inside one this file removes.
  if (args.includes('--self-signed') && !args.includes('--self-signed-dir')) {
    const dir = await mkdtemp(join(tmpdir(), 'apisix-mesh-webhook-cmd-'));
    scratchDirs.push(dir);
    args = [...args, '--self-signed-dir', dir];
  }
  const child = spawn(process.execPath, [cli, 'webhook', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c) => (stderr += c));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const lines: Array<Record<string, unknown>> = [];
  const listening = new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const entry = JSON.parse(line) as Record<string, unknown>;
      lines.push(entry);
      if (entry.msg === 'webhook listening') resolve(entry.port as number);
    });
    void exit.then((code) => reject(new Error(`webhook exited with ${code} before listening: ${stderr}`)));
  });
  const port = await listening;
  const caFile = /self-signed CA written to (\S+)/.exec(stderr)?.[1] ?? '';
  return { child, port, caFile, lines, stderr: () => stderr, exit };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

describe('apisix-mesh webhook (spawned)', () => {
  it('--self-signed --port 0: logs the bound port, prints the CA path, serves a client trusting that CA', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'apisix-mesh-webhook-cmd-'));
    try {
      const run = await startWebhook(['--self-signed', '--self-signed-dir', join(dir, 'made', 'for-it'), '--port', '0']);
      expect(run.port).toBeGreaterThan(0);
      expect(run.caFile).toBe(join(dir, 'made', 'for-it', 'ca.crt')); // the directory is created
      // one line says it listens (Fastify's own "Server listening at" would repeat it per address)
      expect(run.lines.filter((l) => /listening/i.test(String(l.msg)))).toHaveLength(1);
      const ca = readFileSync(run.caFile, 'utf8');
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpsRequest(`https://localhost:${run.port}/readyz`, { ca, agent: false }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end();
      });
      expect(status).toBe(200);
      run.child.kill('SIGTERM');
      expect(await run.exit).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('SIGTERM: stops accepting connections, finishes the request in flight, then exits 0', async () => {
    const run = await startWebhook(['--self-signed', '--port', '0']);
    const ca = readFileSync(run.caFile, 'utf8');
    const body = Buffer.from(JSON.stringify(podCreateReview()));

    // A request whose body is still arriving when the signal comes, on a keep-alive connection as
    // the API server uses: the connection must still be closed once the answer is out.
    const agent = new Agent({ keepAlive: true });
    let req!: ReturnType<typeof httpsRequest>;
    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      req = httpsRequest(
        `https://localhost:${run.port}/inject`,
        { method: 'POST', ca, agent, headers: { 'content-type': 'application/json', 'content-length': body.length } },
        (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (c) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        },
      );
      req.on('error', reject);
    });
    req.write(body.subarray(0, 100));
    await new Promise((r) => setTimeout(r, 300));
    run.child.kill('SIGTERM');
    await expect.poll(() => run.lines.some((l) => l.msg === 'draining: no new connections, waiting for requests in flight'), { timeout: 10_000 }).toBe(true);

    expect(await canConnect(run.port)).toBe(false);
    expect(run.child.exitCode).toBeNull();

    req.end(body.subarray(100));
    const res = await answer;
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body).response).toMatchObject({ allowed: true, patchType: 'JSONPatch' });
    expect(await run.exit).toBe(0);
    expect(run.lines.find((l) => l.msg === 'webhook stopped')).toMatchObject({ forced: false });
    agent.destroy();
  });

  it('refuses bad usage with one line and exit 2', () => {
    const cases: Array<[string[], RegExp]> = [
      [[], /serves HTTPS only: give --tls-cert and --tls-key, or --self-signed/],
      [['--tls-cert', '/nonexistent/tls.crt'], /give --tls-cert and --tls-key/],
      [['--self-signed', '--tls-cert', 'a', '--tls-key', 'b'], /exclude each other/],
      [['--self-signed', '--port', '70000'], /--port must be an integer from 0 to 65535, got "70000"/],
      [['--self-signed', '--drain-timeout', 'soon'], /--drain-timeout must be a positive number of seconds/],
      [['--self-signed', '--config', '/nonexistent/config.yaml'], /\/nonexistent\/config.yaml: cannot read the injection configuration \(ENOENT\)/],
      [['--self-signed', '--log-level', 'loud'], /argument 'loud' is invalid/],
    ];
    for (const [args, message] of cases) {
      const res = spawnSync(process.execPath, [cli, 'webhook', ...args], { encoding: 'utf8', timeout: 20_000 });
      expect(res.status, args.join(' ')).toBe(2);
      expect(res.stderr).toMatch(message);
      expect(res.stderr).not.toMatch(/\n\s+at /);
    }
  });

  it('refuses unreadable or unusable certificate files with exit 2 and the file named', async () => {
    const res = spawnSync(process.execPath, [cli, 'webhook', '--tls-cert', '/nonexistent/tls.crt', '--tls-key', '/nonexistent/tls.key', '--port', '0'], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(res.stderr).toMatch(/cannot read the certificate \/nonexistent\/tls.crt: ENOENT/);
    expect(res.status).toBe(2);

    const dir = await mkdtemp(join(tmpdir(), 'apisix-mesh-webhook-cmd-'));
    try {
      const ca = generateCa();
      const a = generateServingCert(ca, ['localhost'], { days: 1 });
      const b = generateServingCert(ca, ['localhost'], { days: 1 });
      writeFileSync(join(dir, 'tls.crt'), a.certPem);
      writeFileSync(join(dir, 'tls.key'), b.keyPem);
      const mismatch = spawnSync(process.execPath, [cli, 'webhook', '--tls-cert', join(dir, 'tls.crt'), '--tls-key', join(dir, 'tls.key'), '--port', '0'], {
        encoding: 'utf8',
        timeout: 20_000,
      });
      expect(mismatch.status).toBe(2);
      expect(mismatch.stderr).toMatch(/the key does not belong to the certificate for CN=localhost/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('says when the port is taken', async () => {
    const first = await startWebhook(['--self-signed', '--port', '0']);
    const dir = await mkdtemp(join(tmpdir(), 'apisix-mesh-webhook-cmd-'));
    scratchDirs.push(dir);
    const res = spawnSync(process.execPath, [cli, 'webhook', '--self-signed', '--self-signed-dir', dir, '--port', String(first.port), '--log-level', 'silent'], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(res.status).toBe(1);
    expect(res.stderr).toMatch(new RegExp(`cannot listen on 127.0.0.1:${first.port}: the address is in use`));
    expect(existsSync(cli)).toBe(true);
  });
});
