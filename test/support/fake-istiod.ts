import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { envoyRoot, STREAM_TYPE_URL as TYPE_URL, type StreamKind } from '../../agent/xds/protos.js';
import { encodeCanonical } from '../../agent/xds/codec.js';
import { resourceName, type CanonicalResources } from '../../agent/xds/config-dump.js';

const nameOf = (kind: StreamKind, r: Record<string, unknown>): string => (kind === 'secret' ? String(r['name'] ?? '') : resourceName(kind, r));

/**
 * A fake istiod for tests: a grpc-js ADS server (state of the world) fed with canonical-JSON
 * resources, which behaves as pilot/pkg/xds does where clients can tell:
 * - the first request must carry a node (else InvalidArgument);
 * - a request with an empty nonce (or for an unwatched type) is INIT: it always gets the full set;
 * - a request whose nonce is not the last one sent for that type is stale and ignored;
 * - a NACK (error_detail) is recorded and never answered;
 * - an ACK that adds EDS/RDS names is answered with only the added names (partial);
 * - pushes go out in CDS → EDS → LDS → RDS order, EDS pushes may be partial (`push({ only })`);
 * - it can answer Unavailable to the first N streams and close streams on demand;
 * - SDS secrets (`set('secret', …)`) are served by name like EDS, after RDS (sds.go: a name it has
 *   no secret for is left out of the response, without an error).
 */
type XdsKind = StreamKind;
const ORDER: XdsKind[] = ['cluster', 'endpoint', 'listener', 'route', 'secret'];
const WILDCARD = new Set<XdsKind>(['cluster', 'listener']);

export interface RecordedRequest {
  stream: number;
  kind: XdsKind | undefined;
  versionInfo: string;
  nonce: string;
  names: string[];
  error?: string;
  node?: Record<string, unknown>;
  verdict: 'init' | 'ack' | 'nack' | 'stale';
}

interface Watch {
  names: string[];
  nonce: string;
}

interface Stream {
  id: number;
  call: grpc.ServerDuplexStream<Record<string, unknown>, Uint8Array>;
  node?: Record<string, unknown>;
  watches: Map<XdsKind, Watch>;
}

export class FakeIstiod {
  private server: grpc.Server | undefined;
  private readonly streams = new Map<number, Stream>();
  private nextStream = 1;
  private counter = 0;
  private resources: Record<XdsKind, Map<string, Record<string, unknown>>> = { cluster: new Map(), endpoint: new Map(), listener: new Map(), route: new Map(), secret: new Map() };
  private readonly encoded = new WeakMap<object, Uint8Array>();
  /** bytes served instead of a resource's encoding (corruption tests), by kind and name */
  private readonly raw = new Map<string, Uint8Array>();
  readonly requests: RecordedRequest[] = [];
  /** how many new streams still get Unavailable straight away */
  unavailableStreams = 0;
  /** responses sent, per stream and type (for assertions) */
  readonly responses: Array<{ stream: number; kind: XdsKind; names: string[]; nonce: string; version: string }> = [];
  port = 0;
  /** call metadata of every stream (authorization, clusterid), for TLS/auth assertions */
  readonly streamMetadata: Array<Record<string, string>> = [];
  /** when set, streams without `authorization: Bearer <token>` get Unauthenticated (as istiod on 15012) */
  requiredToken: string | undefined;

  constructor(initial?: CanonicalResources) {
    if (initial) this.setAll(initial);
  }

  setAll(resources: CanonicalResources): void {
    for (const kind of ORDER) if (kind !== 'secret') this.resources[kind] = new Map(resources[kind].map((r) => [nameOf(kind, r), r]));
  }

  set(kind: XdsKind, resource: Record<string, unknown>): void {
    this.resources[kind].set(nameOf(kind, resource), resource);
  }

  remove(kind: XdsKind, name: string): void {
    this.resources[kind].delete(name);
  }

  /** Serves these bytes as the resource `name` (which must be set) until `clearRaw`. */
  setRaw(kind: XdsKind, name: string, bytes: Uint8Array): void {
    this.raw.set(`${kind}\0${name}`, bytes);
  }

  clearRaw(): void {
    this.raw.clear();
  }

  /** The encoding of a resource as it is served. */
  bytesOf(kind: XdsKind, name: string): Uint8Array {
    const resource = this.resources[kind].get(name);
    if (!resource) throw new Error(`no ${kind} ${name}`);
    return this.raw.get(`${kind}\0${name}`) ?? this.encode(kind, resource);
  }

  get(kind: XdsKind, name: string): Record<string, unknown> | undefined {
    return this.resources[kind].get(name);
  }

  get streamCount(): number {
    return this.streams.size;
  }

  /** Listens on 127.0.0.1:`port`, or on `address` as grpc-js spells it (e.g. `unix:/path`). */
  async start(port: number | string = 0, tls?: { key: string; cert: string }): Promise<number> {
    const root = envoyRoot();
    const req = root.lookupType('envoy.service.discovery.v3.DiscoveryRequest');
    const server = new grpc.Server();
    server.addService(
      {
        StreamAggregatedResources: {
          path: '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources',
          requestStream: true,
          responseStream: true,
          requestSerialize: (v: unknown) => Buffer.from(req.encode(req.fromObject(v as object)).finish()),
          requestDeserialize: (b: Buffer) => req.toObject(req.decode(b), { longs: String, enums: String, defaults: true }),
          responseSerialize: (v: Uint8Array) => Buffer.from(v),
          responseDeserialize: (b: Buffer) => b,
        },
      } as unknown as grpc.ServiceDefinition,
      { StreamAggregatedResources: (call: grpc.ServerDuplexStream<Record<string, unknown>, Uint8Array>) => this.onStream(call) },
    );
    this.port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(
        typeof port === 'string' ? port : `127.0.0.1:${port}`,
        tls ? grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(tls.key), cert_chain: Buffer.from(tls.cert) }], false) : grpc.ServerCredentials.createInsecure(),
        (err, p) => (err ? reject(err) : resolve(p)),
      ),
    );
    this.server = server;
    return this.port;
  }

  /** Stops abruptly (like an istiod pod going away): streams end with an error on the client. */
  async stop(): Promise<void> {
    for (const s of this.streams.values()) s.call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'istiod going away' });
    this.streams.clear();
    this.server?.forceShutdown();
    this.server = undefined;
  }

  /** Ends every stream cleanly (istiod's max connection age). */
  closeStreams(): void {
    for (const s of this.streams.values()) s.call.end();
    this.streams.clear();
  }

  /**
   * A push to every stream, for the types it watches, in istiod's order. `only` limits EDS/RDS
   * to some names (istiod's incremental EDS push).
   */
  push(kinds: XdsKind[] = ORDER, only?: string[]): void {
    for (const s of this.streams.values()) {
      for (const kind of ORDER) {
        if (!kinds.includes(kind)) continue;
        const w = s.watches.get(kind);
        if (!w) continue;
        const names = WILDCARD.has(kind) ? undefined : only ? w.names.filter((n) => only.includes(n)) : w.names;
        if (names && names.length === 0 && !WILDCARD.has(kind)) continue;
        this.respond(s, kind, names);
      }
    }
  }

  private onStream(call: grpc.ServerDuplexStream<Record<string, unknown>, Uint8Array>): void {
    if (this.unavailableStreams > 0) {
      this.unavailableStreams--;
      call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'server is not ready to serve discovery information' });
      return;
    }
    const md = Object.fromEntries(['authorization', 'clusterid'].map((k) => [k, String(call.metadata.get(k)[0] ?? '')]));
    this.streamMetadata.push(md);
    if (this.requiredToken !== undefined && md['authorization'] !== `Bearer ${this.requiredToken}`) {
      call.emit('error', { code: grpc.status.UNAUTHENTICATED, details: 'authentication failure' });
      return;
    }
    const stream: Stream = { id: this.nextStream++, call, watches: new Map() };
    this.streams.set(stream.id, stream);
    call.on('data', (request: Record<string, unknown>) => this.onRequest(stream, request));
    call.on('end', () => {
      this.streams.delete(stream.id);
      call.end();
    });
    call.on('error', () => this.streams.delete(stream.id));
    call.on('cancelled', () => this.streams.delete(stream.id));
  }

  private onRequest(s: Stream, r: Record<string, unknown>): void {
    const kind = ORDER.find((k) => TYPE_URL[k] === r['type_url']);
    const names = (r['resource_names'] as string[] | undefined) ?? [];
    const nonce = String(r['response_nonce'] ?? '');
    const error = (r['error_detail'] as { message?: string } | null | undefined)?.message;
    const node = r['node'] as Record<string, unknown> | undefined;
    const record: RecordedRequest = { stream: s.id, kind, versionInfo: String(r['version_info'] ?? ''), nonce, names, verdict: 'init' };
    if (node && (node['id'] as string)) record.node = node;
    if (r['error_detail']) record.error = error ?? '';
    this.requests.push(record);
    if (!s.node) {
      if (!node || !node['id']) {
        s.call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: 'missing node information' });
        return;
      }
      s.node = node;
    }
    if (!kind) return;
    if (r['error_detail']) {
      record.verdict = 'nack';
      return; // istiod logs "ACK ERROR" and does not respond
    }
    const w = s.watches.get(kind);
    if (nonce === '' || !w) {
      s.watches.set(kind, { names: WILDCARD.has(kind) ? [] : names, nonce: '' });
      if (!WILDCARD.has(kind) && names.length === 0) {
        s.watches.delete(kind);
        return;
      }
      this.respond(s, kind, WILDCARD.has(kind) ? undefined : names);
      return;
    }
    if (nonce !== w.nonce) {
      record.verdict = 'stale';
      return; // "Expired nonce": no state change
    }
    record.verdict = 'ack';
    if (WILDCARD.has(kind)) return;
    if (names.length === 0) {
      s.watches.delete(kind);
      return;
    }
    const added = names.filter((n) => !w.names.includes(n));
    w.names = names;
    if (added.length) this.respond(s, kind, added);
  }

  private respond(s: Stream, kind: XdsKind, names: string[] | undefined): void {
    const version = `2026-11-22T00:00:00Z/${++this.counter}`;
    const nonce = `${version}${randomUUID()}`;
    const selected = names === undefined ? [...this.resources[kind].values()] : names.map((n) => this.resources[kind].get(n)).filter((r): r is Record<string, unknown> => !!r);
    const resources = selected.map((r) => ({ type_url: TYPE_URL[kind], value: this.bytesOf(kind, nameOf(kind, r)) }));
    const res = envoyRoot().lookupType('envoy.service.discovery.v3.DiscoveryResponse');
    const bytes = res.encode(res.fromObject({ version_info: version, type_url: TYPE_URL[kind], nonce, resources })).finish();
    const w = s.watches.get(kind);
    if (w) w.nonce = nonce;
    this.responses.push({ stream: s.id, kind, names: selected.map((r) => nameOf(kind, r)), nonce, version });
    s.call.write(bytes);
  }

  /** Writes bytes as a DiscoveryResponse to every stream, whatever they are (malformed envelopes). */
  writeRaw(bytes: Uint8Array): void {
    for (const s of this.streams.values()) s.call.write(bytes);
  }

  /** Sends a response that is not valid (for NACK tests): a duplicate resource name. */
  pushMalformed(kind: XdsKind): void {
    for (const s of this.streams.values()) {
      const first = [...this.resources[kind].values()][0];
      if (!first) continue;
      const version = `2026-11-22T00:00:00Z/${++this.counter}`;
      const nonce = `${version}${randomUUID()}`;
      const bytes = this.encode(kind, first);
      const res = envoyRoot().lookupType('envoy.service.discovery.v3.DiscoveryResponse');
      const w = s.watches.get(kind);
      if (w) w.nonce = nonce;
      this.responses.push({ stream: s.id, kind, names: ['(duplicate)'], nonce, version });
      s.call.write(res.encode(res.fromObject({ version_info: version, type_url: TYPE_URL[kind], nonce, resources: [{ type_url: TYPE_URL[kind], value: bytes }, { type_url: TYPE_URL[kind], value: bytes }] })).finish());
    }
  }

  private encode(kind: XdsKind, resource: Record<string, unknown>): Uint8Array {
    let bytes = this.encoded.get(resource);
    if (!bytes) this.encoded.set(resource, (bytes = encodeCanonical(TYPE_URL[kind], resource)));
    return bytes;
  }
}
