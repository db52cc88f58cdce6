import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { asUser } from '../../iptables/support/netns.js';

export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[]>;
  body: string;
  /** https: the SAN of the certificate the server presented */
  peerSan?: string;
  /** https: the public key of that certificate, `ec prime256v1` or `rsa 2048` */
  peerKey?: string;
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
  /** https: the only trusted root (PEM) */
  ca?: string;
  /** https: the server name (SNI) to send */
  servername?: string;
  /** https: a client certificate (PEM, leaf then intermediates) and its key */
  cert?: string;
  key?: string;
  /** https: the application protocols offered (ALPN) */
  alpn?: string[];
  /** https: accept any server name (the chain is still verified against `ca`) */
  anyServerName?: boolean;
}

export interface SeenRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  peer: string;
  /** HTTPS servers: the server name (SNI) the client sent */
  servername?: string;
  /** HTTPS servers requiring a client certificate: its SAN (Node's form, `URI:spiffe://...`) */
  clientSan?: string;
  /** ... and its public key, `ec prime256v1` or `rsa 2048` */
  clientKey?: string;
  /** ... the protocol negotiated, and the ALPN list the client offered */
  alpn?: string | false;
  alpnOffered?: string[];
  /** ... whether the TLS session was resumed, and the TLS version */
  resumed?: boolean;
  protocol?: string;
}

/** What the echo servers of netns-worker.mjs answer. */
export interface Echo extends SeenRequest {
  name: string;
  body: string;
}

/**
 * One exchange on a raw TCP connection: `send` (if any) is written, the client's side is closed
 * with `end` (a half-close: it still reads), then `want` more bytes are awaited.
 */
export interface TcpExchange {
  send?: Buffer | string;
  end?: boolean;
  want: number;
}

export interface TcpResult {
  /** what arrived during each exchange */
  received: Buffer[];
  /** the peer ended or reset the connection */
  closed: boolean;
  /** a connection error or a timeout, when the exchanges did not all complete */
  error?: string;
  /** TLS: the SAN of the certificate the server presented (Node's form, `URI:spiffe://...`) */
  peerSan?: string;
}

/** A TLS client's side of `tcp`: the only trusted root, a client certificate, SNI and ALPN offered. */
export interface TcpTls {
  ca: string;
  cert?: string;
  key?: string;
  servername?: string;
  alpn?: string[];
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
  serve(name: string, host: string, port: number, options: { peerMetadata?: { id: string; value: string } } = {}): Promise<void> {
    return this.ok('serve', { name, host, port, ...options });
  }

  /** `connections`: TCP connections accepted, for HTTPS servers */
  async served(name: string): Promise<{ count: number; requests: SeenRequest[]; connections?: number }> {
    return (await this.call('served', { name })) as unknown as { count: number; requests: SeenRequest[]; connections?: number };
  }

  /** An HTTPS echo server (as `serve`) with this certificate and key (PEM); with `ca`, mutual TLS. */
  serveTls(name: string, host: string, port: number, tls: { cert: string; key: string; ca?: string }): Promise<void> {
    return this.ok('serve', { name, host, port, tls });
  }

  /** A TCP echo server; with a `banner` it speaks first (sends it on accept), then echoes; with `tls`, over mutual TLS. */
  /** `tls.ca`: require a client certificate from it; `countAtEnd`: answer `<n> bytes` only after the client's half-close */
  serveTcp(name: string, host: string, port: number, options: { banner?: string; tls?: { cert: string; key: string; ca?: string }; countAtEnd?: boolean } = {}): Promise<void> {
    return this.ok('tcpServe', { name, host, port, ...options });
  }

  /** One TCP connection through `exchanges`, closed by the client after the last (from `localAddress` if given; over TLS with `tls`). */
  async tcp(host: string, port: number, exchanges: TcpExchange[], timeoutMs = 8000, localAddress?: string, tls?: TcpTls): Promise<TcpResult> {
    const res = await this.call('tcp', {
      host,
      port,
      timeoutMs,
      ...(localAddress ? { localAddress } : {}),
      ...(tls ? { tls } : {}),
      exchanges: exchanges.map((e) => ({ want: e.want, ...(e.send !== undefined ? { send: Buffer.from(e.send).toString('base64') } : {}), ...(e.end ? { end: true } : {}) })),
    });
    const received = ((res.received as string[] | undefined) ?? []).map((b) => Buffer.from(b, 'base64'));
    return { received, closed: res.closed === true, ...(res.error ? { error: String(res.error) } : {}), ...(typeof res.peerSan === 'string' ? { peerSan: res.peerSan } : {}) };
  }

  /** The server `name` stops listening: the app goes down. */
  close(name: string): Promise<void> {
    return this.ok('close', { name });
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
