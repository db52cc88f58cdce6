import type { ServerResponse } from 'node:http';
import { ApiError } from './api-error.js';
import { errorBody } from './encode.js';

/**
 * How etcd 3.4's gateway frames answers, so that a client sees the same bytes: CORS headers on
 * everything; gateway JSON with the gRPC metadata header; Content-Length up to Go's 2 KiB response
 * buffer, chunked above; server errors chunked with a gRPC trailer; decode errors plain.
 */
const GO_BUFFER = 2048;

export function corsHeaders(res: ServerResponse): void {
  res.setHeader('Access-Control-Allow-Headers', 'accept, content-type, authorization');
  res.setHeader('Access-Control-Allow-Methods', 'POST, GET, OPTIONS, PUT, DELETE');
  res.setHeader('Access-Control-Allow-Origin', '*');
}

export function sendJson(res: ServerResponse, body: string | Buffer, status = 200): void {
  corsHeaders(res);
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Grpc-Metadata-Content-Type', 'application/grpc');
  const buf = typeof body === 'string' ? Buffer.from(body) : body;
  res.statusCode = status;
  if (buf.length <= GO_BUFFER) {
    res.setHeader('Content-Length', buf.length);
    res.end(buf);
  } else {
    // write() before end(): without a Content-Length Node then sends it chunked, as Go does.
    res.write(buf);
    res.end();
  }
}

/** A streamed gateway answer that ends by itself (lease keepalive): one chunk `{"result":…}\n`. */
export function sendStreamedOnce(res: ServerResponse, result: string): void {
  corsHeaders(res);
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Grpc-Metadata-Content-Type', 'application/grpc');
  res.statusCode = 200;
  res.write(`{"result":${result}}\n`);
  res.end();
}

export function sendApiError(res: ServerResponse, err: ApiError, decodeCode = 3): void {
  corsHeaders(res);
  res.setHeader('Content-Type', 'application/json');
  res.statusCode = err.httpStatus;
  if (err.source === 'decode') {
    const body = Buffer.from(errorBody(err.message, decodeCode));
    res.setHeader('Content-Length', body.length);
    res.end(body);
    return;
  }
  res.setHeader('Trailer', 'Grpc-Trailer-Content-Type');
  res.write(errorBody(err.message, err.grpcCode));
  res.addTrailers({ 'Grpc-Trailer-Content-Type': 'application/grpc' });
  res.end();
}

export function sendText(
  res: ServerResponse,
  status: number,
  text: string,
  extra: Record<string, string> = {},
): void {
  corsHeaders(res);
  for (const [k, v] of Object.entries(extra)) res.setHeader(k, v);
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  if (status === 404 || status === 405) res.setHeader('X-Content-Type-Options', 'nosniff');
  const buf = Buffer.from(text);
  res.statusCode = status;
  res.setHeader('Content-Length', buf.length);
  res.end(buf);
}
