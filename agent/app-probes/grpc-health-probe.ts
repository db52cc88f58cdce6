import { connect as http2Connect, constants as h2, type ClientHttp2Session } from 'node:http2';
import { connect as tcpConnect, type Socket } from 'node:net';
import protobuf from 'protobufjs';
import { failed, hostPort, type ProbeOutcome, type ProbeTarget } from './probe-target.js';

/**
 * grpc.health.v1 (grpc/grpc-proto health.proto): the two messages of Health/Check. A tiny
 * definition rather than a .proto file to ship and load at start-up.
 */
const HealthCheckRequest = new protobuf.Type('HealthCheckRequest').add(new protobuf.Field('service', 1, 'string'));
const HealthCheckResponse = new protobuf.Type('HealthCheckResponse').add(new protobuf.Field('status', 1, 'int32'));
new protobuf.Root().define('grpc.health.v1').add(HealthCheckRequest).add(HealthCheckResponse);
const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];
/** gRPC status codes the answer may name (grpc/doc/statuscodes.md) */
const GRPC_CODES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];
/** A health answer is a few bytes; more is not a health answer. */
const MAX_RESPONSE_BYTES = 4096;

/** One length-prefixed gRPC message (uncompressed). */
function frame(message: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

/**
 * The kubelet's grpc probe: `grpc.health.v1.Health/Check` with the probe's service name (empty:
 * the server as a whole), in plaintext, answered SERVING within the timeout. Spoken over Node's
 * HTTP/2 client rather than @grpc/grpc-js because the connection must leave from the probe
 * source address (probe-target.ts), which grpc-js's channels cannot be told to bind.
 */
export function probeGrpc(target: ProbeTarget, port: number, service: string, timeoutMs: number, userAgent?: string): Promise<ProbeOutcome> {
  const where = `grpc ${hostPort(target.host, port)}`;
  return new Promise((resolve) => {
    let session: ClientHttp2Session | undefined;
    let socket: Socket | undefined;
    let done = false;
    const finish = (outcome: ProbeOutcome): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      session?.destroy();
      socket?.destroy(); // the session does not always take its socket along (when the peer ended it first)
      resolve(outcome);
    };
    const timer = setTimeout(() => finish(failed(`${where}: no health answer within ${timeoutMs} ms`)), timeoutMs);
    session = http2Connect(`http://${hostPort(target.host, port)}`, {
      createConnection: () => (socket = tcpConnect({ host: target.host, port, ...(target.localAddress ? { localAddress: target.localAddress } : {}) })),
      maxSessionMemory: 1,
    });
    session.once('error', (err: NodeJS.ErrnoException) => finish(failed(`${where}: ${err.code ?? err.message}`)));
    const stream = session.request({
      [h2.HTTP2_HEADER_METHOD]: 'POST',
      [h2.HTTP2_HEADER_PATH]: '/grpc.health.v1.Health/Check',
      [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
      te: 'trailers',
      'grpc-timeout': `${timeoutMs}m`,
      ...(userAgent ? { [h2.HTTP2_HEADER_USER_AGENT]: userAgent } : {}),
    });
    const chunks: Buffer[] = [];
    let size = 0;
    let grpcStatus: string | undefined;
    let grpcMessage = '';
    const noteStatus = (headers: Record<string, unknown>): void => {
      if (typeof headers['grpc-status'] === 'string') grpcStatus = headers['grpc-status'];
      if (typeof headers['grpc-message'] === 'string') grpcMessage = decodeURIComponent(headers['grpc-message']).slice(0, 80);
    };
    stream.once('response', (headers) => {
      const status = headers[h2.HTTP2_HEADER_STATUS];
      if (Number(status) !== 200) finish(failed(`${where}: HTTP ${String(status)}, not a gRPC server`));
      else noteStatus(headers); // a trailers-only answer carries its status here
    });
    stream.once('trailers', noteStatus);
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_RESPONSE_BYTES) finish(failed(`${where}: health answer over ${MAX_RESPONSE_BYTES} bytes`));
      else chunks.push(chunk);
    });
    // a stream cancelled by its session's failure names the session's error as its cause
    stream.once('error', (err: NodeJS.ErrnoException) => {
      const cause = err.cause as NodeJS.ErrnoException | undefined;
      finish(failed(`${where}: ${cause?.code ?? err.code ?? err.message}`));
    });
    stream.once('end', () => finish(healthOutcome(where, grpcStatus, grpcMessage, Buffer.concat(chunks))));
    stream.end(frame(HealthCheckRequest.encode({ service }).finish()));
  });
}

function healthOutcome(where: string, grpcStatus: string | undefined, grpcMessage: string, body: Buffer): ProbeOutcome {
  if (grpcStatus === undefined) return failed(`${where}: no gRPC status (the connection ended without one)`);
  if (grpcStatus !== '0') {
    const name = GRPC_CODES[Number(grpcStatus)] ?? `status ${grpcStatus.slice(0, 8)}`;
    return failed(`${where}: ${name}${grpcMessage ? ` (${grpcMessage})` : ''}`);
  }
  if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) return failed(`${where}: malformed health answer`);
  let status: number;
  try {
    status = (HealthCheckResponse.decode(body.subarray(5)) as unknown as { status: number }).status;
  } catch {
    return failed(`${where}: malformed health answer`);
  }
  const name = SERVING_STATUS[status] ?? `status ${status}`;
  return status === 1 ? { status: 200, detail: name } : failed(`${where}: ${name}`);
}
