import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import type protobuf from 'protobufjs';
import { envoyRoot, STREAM_TYPE_URL, type StreamKind, type XdsKind } from './protos.js';
import type { PackedAny } from './codec.js';
import type { Cluster, Listener } from './envoy-types.js';
import { checkWireFormat } from './wire-check.js';
import { RESOURCE_TYPES, edsServiceNames, listenerRouteConfigNames } from './resource-types/index.js';
import { secretResourceType } from './resource-types/secret.js';
import { clusterSecretNames, isIstiodSecret } from '../mtls/upstream-tls.js';
import type { XdsResourceType } from './resource-types/resource-type.js';
import type { ChangedResource, XdsChange } from '../translate/snapshot.js';
import { peekStringField } from './wire-check.js';
import { jitteredBackoff, type Backoff } from '../backoff.js';

const ADS_PATH = '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources';
/** The order Envoy subscribes in and istiod pushes in: clusters before what uses them. */
const KINDS: XdsKind[] = ['cluster', 'endpoint', 'listener', 'route'];
/** ... and the secrets of `credentialName` (SDS on the same stream), last, as istiod pushes them. */
const STREAM_KINDS: StreamKind[] = [...KINDS, 'secret'];
const WILDCARD: ReadonlySet<StreamKind> = new Set(['cluster', 'listener']);
const STREAM_RESOURCE_TYPES: Readonly<Record<StreamKind, XdsResourceType<unknown>>> = { ...RESOURCE_TYPES, secret: secretResourceType as XdsResourceType<unknown> };

export interface AdsLogger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export interface AdsClientOptions {
  /** host:port of istiod (15010 plaintext, 15012 TLS) */
  address: string;
  /** envoy.config.core.v3.Node in protobufjs object form (see node.ts) */
  node: Record<string, unknown>;
  credentials?: grpc.ChannelCredentials;
  /** extra channel options, e.g. grpc.ssl_target_name_override */
  channelOptions?: grpc.ChannelOptions;
  backoff?: Backoff;
  logger?: AdsLogger;
  /** how long to wait for EDS/RDS answers before calling a snapshot complete anyway (xDS spec: 15 s) */
  warmingTimeoutMs?: number;
  /**
   * What `changes` reports for a new or changed resource, made right when it is decoded (default:
   * the decoded resource and its bytes). A consumer that keeps less than the decoded resource (the
   * translator) saves holding a whole large response decoded.
   */
  prepare?: (kind: XdsKind, name: string, resource: unknown, bytes: Uint8Array) => unknown;
}

const NO_REFS: readonly string[] = [];

/**
 * The names a resource makes the client subscribe to. A cluster's are its EDS name and the
 * `kubernetes://` secrets its TLS names (SDS over ADS); an EDS name is a cluster's name, never a
 * `kubernetes://` one, so the two are told apart by that prefix.
 */
const REFS: Partial<Record<StreamKind, (resource: never) => readonly string[]>> = {
  cluster: (c: Cluster) => [...edsServiceNames([c]), ...clusterSecretNames(c)],
  listener: (l: Listener) => listenerRouteConfigNames(l),
};

/**
 * Per type: what the client keeps of each resource is its digest (an unchanged resource is neither
 * decoded nor reported again) and the EDS/RDS names it needs. Not the resource: its consumer takes
 * what it needs when it changes, and decoded resources are many times their wire size.
 */
interface TypeState {
  version: string;
  nonce: string;
  /** subscribed names, sorted (EDS/RDS); wildcard types keep this empty */
  names: string[];
  /** the same names, each to itself: a resource is kept under the name's string it was subscribed with (one copy per name) */
  subscribed: Map<string, string>;
  /** `resource_names` of every request, encoded once per change of the names (ACKs repeat them) */
  encodedNames: Uint8Array;
  /** resource name → digest of its bytes */
  digests: Map<string, string>;
  /** a cluster's EDS name, a listener's RDS names (one name is kept as such, not in an array) */
  refs: Map<string, string | readonly string[]>;
  received: boolean;
}

/** The last good version of one resource, as `decodeAll` hands it on. */
interface Held {
  digest: string;
  refs: readonly string[];
}

/** The `secrets` event: SDS secrets a response added or changed (decoded), and those no cluster names any more. */
export interface SecretChange {
  kind: 'secret';
  changed: Map<string, unknown>;
  removed: string[];
}

export interface AdsStats {
  responses: number;
  acks: number;
  nacks: number;
  reconnects: number;
}

/**
 * One ADS stream (state of the world) to istiod, kept alive: per type the last accepted version,
 * the nonce of the last response, and the subscribed names; every ACK carries the full name list;
 * CDS/LDS responses replace the whole set, EDS/RDS responses are merged by name; EDS/RDS names
 * follow the clusters and listeners. After a stream ends it reconnects with jittered exponential
 * backoff, re-subscribes with empty nonces, and keeps the last good state meanwhile.
 *
 * Every resource goes through its resource type (resource-types/: strict decode → validation) when
 * it arrives. A response with invalid resources is NACKed with an error_detail naming each of them,
 * and their last good versions stay (as Envoy and gRPC's xDS clients do: the valid resources of the
 * response are taken). When a resource does not even decode (its name cannot be trusted), or the
 * response itself is malformed (wrong type, duplicate names), nothing of it is taken: a corrupt
 * resource must never count as the deletion of the one it was meant to be.
 *
 * Events: `changes` (XdsChange: the resources a response added or changed, decoded, and the names
 * it removed, once per type it changed; synchronous, the decoded resources are not kept after it)
 * then `update` (kinds: Set<XdsKind>) after every accepted response; `secrets` (SecretChange) for
 * SDS responses (the `kubernetes://` secrets the clusters name, subscribed like EDS names); `ack`/`nack` (kind, detail);
 * `connected`; `disconnected` (error); `reconnecting` (delayMs).
 */
export class AdsClient extends EventEmitter {
  private readonly state = new Map<StreamKind, TypeState>(
    STREAM_KINDS.map((k) => [k, { version: '', nonce: '', names: [], subscribed: new Map(), encodedNames: new Uint8Array(), digests: new Map(), refs: new Map(), received: false }]),
  );
  private readonly client: grpc.Client;
  private readonly requestType: protobuf.Type;
  private readonly prepare: NonNullable<AdsClientOptions['prepare']>;
  private readonly responseType: protobuf.Type;
  private call: grpc.ClientDuplexStream<Buffer, protobuf.Message & Record<string, unknown>> | undefined;
  private stopped = false;
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  private nodeSent = false;
  private subscribedAt = 0;
  readonly stats: AdsStats = { responses: 0, acks: 0, nacks: 0, reconnects: 0 };

  constructor(private readonly options: AdsClientOptions) {
    super();
    const root = envoyRoot();
    this.requestType = root.lookupType('envoy.service.discovery.v3.DiscoveryRequest');
    this.responseType = root.lookupType('envoy.service.discovery.v3.DiscoveryResponse');
    this.prepare = options.prepare ?? ((_kind, _name, resource, bytes): ChangedResource<unknown> => ({ resource, bytes }));
    this.client = new grpc.Client(options.address, options.credentials ?? grpc.credentials.createInsecure(), {
      // istiod's CDS/LDS easily exceed gRPC's 4 MiB default in medium meshes
      'grpc.max_receive_message_length': -1,
      // istiod refuses client pings more often than every 15 s (GOAWAY too_many_pings)
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.keepalive_permit_without_calls': 0,
      ...(options.channelOptions ?? {}),
    });
  }

  start(): void {
    this.stopped = false;
    this.open();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.call?.cancel();
    this.call = undefined;
    this.client.close();
  }

  /** Names of the current (last good) resources of a type. */
  names(kind: XdsKind): string[] {
    return [...this.state.get(kind)!.digests.keys()];
  }

  /** Versions last accepted, per type (for /debug and logs). */
  versions(): Record<XdsKind, string> {
    return Object.fromEntries(KINDS.map((k) => [k, this.state.get(k)!.version])) as Record<XdsKind, string>;
  }

  /** The SDS version last accepted (credentialName's secrets; not among `versions`, which are translated). */
  secretVersion(): string {
    return this.state.get('secret')!.version;
  }

  /** Subscribed EDS/RDS names that have not been answered yet. */
  pendingNames(): { endpoint: string[]; route: string[] } {
    const pending = (kind: XdsKind) => {
      const s = this.state.get(kind)!;
      return s.names.filter((n) => !s.digests.has(n));
    };
    return { endpoint: pending('endpoint'), route: pending('route') };
  }

  /**
   * Subscribed `kubernetes://` secrets istiod has not sent, each with the clusters that name it.
   * istiod leaves out a secret that does not exist or that this proxy may not read (sds.go,
   * filterAuthorizedResources) without saying so: until it arrives the relay refuses those clusters.
   */
  pendingSecrets(): Map<string, string[]> {
    const secrets = this.state.get('secret')!;
    return this.secretUsers(secrets.names.filter((name) => !secrets.digests.has(name)));
  }

  /** The clusters that name each of these secrets. */
  secretUsers(names: Iterable<string>): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const name of names) out.set(name, []);
    if (out.size === 0) return out;
    for (const [cluster, refs] of this.state.get('cluster')!.refs) {
      for (const ref of typeof refs === 'string' ? [refs] : refs) out.get(ref)?.push(cluster);
    }
    return out;
  }

  /**
   * A complete snapshot: clusters and listeners received, and every subscribed assignment and route
   * configuration received too (or the warming timeout passed since the names were requested).
   */
  isComplete(now = Date.now()): boolean {
    const cds = this.state.get('cluster')!;
    const lds = this.state.get('listener')!;
    if (!cds.received || !lds.received) return false;
    const warmedOut = now - this.subscribedAt >= (this.options.warmingTimeoutMs ?? 15_000);
    for (const kind of ['endpoint', 'route'] as const) {
      const s = this.state.get(kind)!;
      if (!warmedOut && s.names.some((n) => !s.digests.has(n))) return false;
    }
    return true;
  }

  private log(level: keyof AdsLogger, msg: string): void {
    this.options.logger?.[level](msg);
  }

  private open(): void {
    const call = this.client.makeBidiStreamRequest<Buffer, protobuf.Message & Record<string, unknown>>(
      ADS_PATH,
      (request) => request,
      (bytes) => {
        // The envelope strictly (its resources are checked one by one, to be NACKed by name); a
        // malformed envelope cannot even be NACKed: gRPC ends the stream and it is opened again.
        checkWireFormat(this.responseType, bytes, { descendAny: false });
        return this.responseType.decode(bytes) as protobuf.Message & Record<string, unknown>;
      },
    );
    this.call = call;
    this.nodeSent = false;
    for (const s of this.state.values()) s.nonce = ''; // nonces do not survive a stream
    let gotResponse = false;
    call.on('data', (response) => {
      if (this.call !== call) return;
      if (!gotResponse) {
        gotResponse = true;
        this.attempt = 0;
        this.emit('connected');
      }
      try {
        this.onResponse(response);
      } catch (err) {
        // nothing from istiod may stop the agent; what was served stays served
        this.log('error', `xDS response not processed: ${(err as Error).message.slice(0, 300)}`);
      }
    });
    const ended = (err?: Error) => {
      if (this.call !== call) return;
      this.call = undefined;
      this.emit('disconnected', err);
      if (!this.stopped) this.scheduleReconnect(err);
    };
    call.on('error', (err) => ended(err));
    call.on('end', () => ended());
    // Subscribe: wildcard CDS and LDS, plus the EDS/RDS names already known (after a reconnect),
    // in istiod's push order.
    this.send('cluster');
    this.send('listener');
    for (const kind of ['endpoint', 'route', 'secret'] as const) if (this.state.get(kind)!.names.length) this.send(kind);
  }

  private scheduleReconnect(err?: Error): void {
    const delay = jitteredBackoff(this.attempt++, this.options.backoff ?? { initialMs: 1000, maxMs: 30_000 });
    this.stats.reconnects++;
    const accepted = Object.values(this.versions()).some((v) => v !== '');
    const meanwhile = accepted ? 'serving the last good configuration meanwhile' : 'no configuration from istiod yet, so nothing is served';
    this.log('warn', `xDS stream to ${this.options.address} ended (${err ? err.message : 'closed by server'}); reconnecting in ${delay} ms, ${meanwhile}`);
    this.emit('reconnecting', delay);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.stopped) this.open();
    }, delay);
  }

  private send(kind: StreamKind, errorDetail?: string): void {
    const s = this.state.get(kind)!;
    const request: Record<string, unknown> = {
      type_url: STREAM_TYPE_URL[kind],
      version_info: s.version,
      response_nonce: s.nonce,
    };
    if (!this.nodeSent) {
      request['node'] = this.options.node;
      this.nodeSent = true;
    }
    if (errorDetail !== undefined) request['error_detail'] = { code: 3, message: errorDetail.slice(0, 4096) };
    // A message's fields may come in any order, and a repeated field's parts are joined: the
    // names (thousands in a large mesh, the same in every ACK) are encoded once, not per request.
    this.call?.write(Buffer.concat([this.requestType.encode(this.requestType.fromObject(request)).finish(), s.encodedNames]));
  }

  private onResponse(response: Record<string, unknown>): void {
    this.stats.responses++;
    const typeUrl = String(response['type_url'] ?? '');
    const kind = STREAM_KINDS.find((k) => STREAM_TYPE_URL[k] === typeUrl);
    if (!kind) {
      this.log('warn', `ignoring xDS response of unrequested type ${typeUrl.slice(0, 200)}`);
      return;
    }
    const s = this.state.get(kind)!;
    const nonce = String(response['nonce'] ?? '');
    const version = String(response['version_info'] ?? '');
    const outcome = this.decodeAll(kind, s, (response['resources'] as PackedAny[] | undefined) ?? []);
    s.nonce = nonce;
    const removed: string[] = [];
    if (outcome.accepted) {
      if (WILDCARD.has(kind)) {
        for (const name of s.digests.keys()) if (!outcome.accepted.has(name)) removed.push(name);
        for (const name of removed) {
          s.digests.delete(name);
          s.refs.delete(name);
        }
      }
      for (const [name, held] of outcome.accepted) {
        if (!WILDCARD.has(kind) && !s.subscribed.has(name)) {
          outcome.changed.delete(name);
          continue;
        }
        s.digests.set(name, held.digest);
        if (held.refs.length) s.refs.set(name, held.refs.length === 1 ? held.refs[0]! : held.refs);
        else s.refs.delete(name);
      }
      s.received = true;
    }
    if (outcome.errors.length) {
      // NACK: names this response (nonce), keeps the last accepted version
      this.stats.nacks++;
      const detail = outcome.errors.join('; ');
      this.log('error', `NACK ${kind} version ${version.slice(0, 100)}: ${detail.slice(0, 1000)}; keeping version ${s.version || '(none)'}${outcome.accepted ? ' of those resources' : ''}`);
      this.send(kind, detail);
      this.emit('nack', kind, detail);
    } else {
      s.version = version;
      this.stats.acks++;
      this.send(kind);
      this.emit('ack', kind, version);
    }
    if (!outcome.accepted) return;
    if (kind === 'secret') {
      // not configuration to translate: the relay's key material (agent/mtls/sds-secrets.ts)
      if (outcome.changed.size) this.emit('secrets', { kind, changed: outcome.changed, removed } satisfies SecretChange);
      return;
    }
    if (outcome.changed.size || removed.length) this.emit('changes', { kind, changed: outcome.changed, removed } satisfies XdsChange<unknown>);
    if (kind === 'cluster') {
      const refs = [...s.refs.values()].flat();
      this.resubscribe('endpoint', refs.filter((n) => !isIstiodSecret(n)));
      this.resubscribe('secret', refs.filter(isIstiodSecret));
    }
    if (kind === 'listener') this.resubscribe('route', [...s.refs.values()].flat());
    this.emit('update', new Set([kind]));
  }

  /** EDS/RDS names follow CDS/LDS; dropped names are forgotten (that is their deletion). */
  private resubscribe(kind: 'endpoint' | 'route' | 'secret', names: string[]): void {
    const s = this.state.get(kind)!;
    const sorted = [...new Set(names)].sort();
    if (sorted.length === s.names.length && sorted.every((n, i) => n === s.names[i])) return;
    const keep = new Map(sorted.map((n) => [n, n]));
    const removed = [...s.digests.keys()].filter((name) => !keep.has(name));
    for (const name of removed) s.digests.delete(name);
    if (removed.length) {
      if (kind === 'secret') this.emit('secrets', { kind, changed: new Map(), removed } satisfies SecretChange);
      else this.emit('changes', { kind, changed: new Map(), removed } satisfies XdsChange<unknown>);
    }
    const added = sorted.some((n) => !s.subscribed.has(n));
    s.names = sorted;
    s.subscribed = keep;
    s.encodedNames = this.requestType.encode(this.requestType.fromObject({ resource_names: sorted })).finish();
    if (added) this.subscribedAt = Date.now();
    // An empty list would unsubscribe from everything (istiod: watch deleted), which is exactly
    // right when nothing references the type any more.
    this.send(kind);
  }

  /**
   * Decodes and validates a response; a resource whose bytes are unchanged (same digest) is not
   * decoded again. `accepted` is the new set (wildcard types) or the resources to merge (EDS/RDS):
   * the valid resources, and for an invalid one its last good version if there is one. It is
   * undefined when nothing of the response may be taken. `changed`: what `prepare` made of the
   * accepted resources that are new or changed. `errors` is what the NACK says.
   */
  private decodeAll(kind: StreamKind, s: TypeState, packed: PackedAny[]): { accepted?: Map<string, Held>; changed: Map<string, unknown>; errors: string[] } {
    const resourceType = STREAM_RESOURCE_TYPES[kind];
    const refs = REFS[kind] as ((resource: unknown) => readonly string[]) | undefined;
    const lastGood = (name: string): Held | undefined => {
      const digest = s.digests.get(name);
      const refs = s.refs.get(name) ?? NO_REFS;
      return digest === undefined ? undefined : { digest, refs: typeof refs === 'string' ? [refs] : refs };
    };
    const out = new Map<string, Held>();
    const changed = new Map<string, unknown>();
    const errors: string[] = [];
    const seen = new Set<string>();
    let whole = true;
    const duplicate = (name: string) => {
      if (!seen.has(name)) {
        seen.add(name);
        return false;
      }
      errors.push(`duplicate ${kind} resource ${JSON.stringify(name.slice(0, 200))}`);
      whole = false;
      return true;
    };
    packed.forEach((any, index) => {
      if (any.type_url !== STREAM_TYPE_URL[kind]) {
        errors.push(`resource ${index}: type ${String(any.type_url).slice(0, 200)} in a ${kind} response`);
        whole = false;
        return;
      }
      const bytes = toBytes(any.value);
      const digest = createHash('sha1').update(bytes).digest('base64');
      // The name as far as the bytes can be read: the resource held under it has the same digest
      // only if these are its very bytes (so the name is right), and it is not decoded again.
      const seemingly = peekStringField(bytes, resourceType.nameField);
      const unchanged = seemingly === undefined ? undefined : lastGood(seemingly);
      if (unchanged?.digest === digest) {
        if (!duplicate(seemingly!)) out.set(seemingly!, unchanged);
        return;
      }
      const result = resourceType.decode(bytes);
      if (result.error !== undefined) {
        if (result.name === undefined) {
          const seems = result.readableName ? ` (${JSON.stringify(result.readableName.slice(0, 200))} as far as it can be read)` : '';
          errors.push(`${kind} resource ${index}${seems}: ${result.error}`);
          whole = false; // cannot tell for sure which resource it replaces
          return;
        }
        if (duplicate(result.name)) return;
        errors.push(`${kind} ${JSON.stringify(result.name.slice(0, 200))}: ${result.error}`);
        const good = lastGood(result.name);
        if (good) out.set(result.name, good);
        return;
      }
      const name = s.subscribed.get(result.name) ?? result.name;
      if (duplicate(name)) return;
      // a name equal to the resource's own is the same string (an EDS cluster's, mostly)
      out.set(name, { digest, refs: refs?.(result.value).map((ref) => (ref === name ? name : ref)) ?? NO_REFS });
      // a secret is handed on as decoded (its material is taken from it at once, nothing keeps it)
      changed.set(name, kind === 'secret' ? result.value : this.prepare(kind, name, result.value, bytes));
    });
    return whole ? { accepted: out, changed, errors } : { changed: new Map(), errors };
  }
}

function toBytes(value: PackedAny['value']): Uint8Array {
  if (value === undefined) return new Uint8Array();
  return typeof value === 'string' ? Buffer.from(value, 'base64') : value;
}


