import type { KvStore } from '../store/store.js';
import type { ServerIdentity } from './encode.js';
import type { Logger } from './gateway.js';

export interface GrpcServerOptions {
  store: KvStore;
  encoderIdentity: ServerIdentity;
  host: string;
  port: number;
  readOnly: boolean;
  logger: Logger;
}

export async function startGrpcServer(_o: GrpcServerOptions): Promise<{ port: number; close(): Promise<void> }> {
  throw new Error('the gRPC side is not built yet');
}
