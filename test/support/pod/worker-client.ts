import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { asUser } from '../../iptables/support/netns.js';

export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[]>;
  body: string;
}

export interface HttpRequest {
  url: string;
  /** the request target exactly as sent (`/a/../b`, `//b`), instead of the URL's resolved path */
  path?: string;
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  timeoutMs?: number;
  localAddress?: string;
}

export interface SeenRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  peer: string;
}

/** What the echo servers of netns-worker.mjs answer. */
export interface Echo extends SeenRequest {
  name: string;
  body: string;
}

/**
 * A netns-worker.mjs process inside a network namespace, as a uid: the test's hands there. Its
 * stdin/stdout pipes cross namespaces, so the test process never needs a route into them.
 */
export class NetnsWorker {
  private readonly pending = new Map<number, { resolve: (v: Record<string, unknown>) => void }>();
  private nextId = 1;
  private stderr = '';

  private constructor(
    private readonly child: ChildProcess,
    readonly label: string,
  ) {}

  static async start(label: string, netns: string, script: string, ids?: { uid: number; gid: number }): Promise<NetnsWorker> {
    const child = spawn('ip', ['netns', 'exec', netns, ...(ids ? asUser(ids) : []), process.execPath, script], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const worker = new NetnsWorker(child, label);
    child.stderr!.on('data', (d) => (worker.stderr = (worker.stderr + d).slice(-4000)));
    const lines = createInterface({ input: child.stdout! });
    await new Promise<void>((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`${label} worker exited (${code}): ${worker.stderr}`));
      child.once('exit', onExit);
      lines.once('line', (line) => {
        child.off('exit', onExit);
        const msg = JSON.parse(line) as { ready?: boolean };
        if (msg.ready) resolve();
        else reject(new Error(`${label} worker said ${line}`));
      });
    });
    lines.on('line', (line) => {
      const msg = JSON.parse(line) as Record<string, unknown> & { id?: number };
      const waiter = msg.id === undefined ? undefined : worker.pending.get(msg.id);
      if (waiter) {
        worker.pending.delete(msg.id!);
        waiter.resolve(msg);
      }
    });
    child.once('exit', () => {
      for (const [, w] of worker.pending) w.resolve({ error: `${label} worker exited: ${worker.stderr}` });
      worker.pending.clear();
    });
    return worker;
  }

  call(op: string, args: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, { resolve });
      this.child.stdin!.write(`${JSON.stringify({ id, op, ...args })}\n`);
    });
  }

  private async ok(op: string, args: Record<string, unknown>): Promise<void> {
    const res = await this.call(op, args);
    if (res.error) throw new Error(`${this.label}: ${op} failed: ${String(res.error)}`);
  }

  /** One request; a connection-level failure comes back as `{ error }` (e.g. ECONNREFUSED). */
  async http(req: HttpRequest): Promise<HttpAnswer | { error: string }> {
    const res = await this.call('http', { ...req });
    return res.error ? { error: String(res.error) } : (res as unknown as HttpAnswer);
  }

  /** An Upgrade (WebSocket) request whose connection, once upgraded, carries `message` there and back. */
  async upgrade(req: HttpRequest & { message: string }): Promise<{ status: number; echoed?: string; body?: string } | { error: string }> {
    const res = await this.call('upgrade', { ...req });
    return res.error ? { error: String(res.error) } : (res as unknown as { status: number; echoed?: string; body?: string });
  }

  /** An HTTP echo server named `name` on host:port in this namespace. */
  serve(name: string, host: string, port: number): Promise<void> {
    return this.ok('serve', { name, host, port });
  }

  async served(name: string): Promise<{ count: number; requests: SeenRequest[] }> {
    return (await this.call('served', { name })) as unknown as { count: number; requests: SeenRequest[] };
  }

  /** TCP on host:port here → the Unix socket `unixPath` (reachable from every namespace). */
  relay(host: string, port: number, unixPath: string): Promise<void> {
    return this.ok('relay', { host, port, unixPath });
  }

  stop(): void {
    this.child.stdin!.end();
    this.child.kill();
  }
}
