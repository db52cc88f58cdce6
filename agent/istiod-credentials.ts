import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';

export interface XdsTlsOptions {
  /** PEM file of the mesh root (istio-ca-root-cert's root-cert.pem) */
  rootCertFile: string;
  /** projected service-account token (audience istio-ca), re-read for every stream */
  tokenFile?: string;
  /** TLS server name when dialling istiod by another name or address */
  serverName?: string;
}

/**
 * Channel credentials for istiod's 15012 (xDS and the CA): plaintext, or TLS verified against the mesh
 * root with the token and ClusterID as call metadata. The token is read again for every call or
 * stream, since the kubelet rotates it.
 */
export function xdsCredentials(tls: XdsTlsOptions | undefined, clusterId: string): grpc.ChannelCredentials {
  if (!tls) return grpc.credentials.createInsecure();
  const root = readFileSync(tls.rootCertFile);
  const ssl = grpc.credentials.createSsl(root);
  const tokenFile = tls.tokenFile;
  const perCall = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    const md = new grpc.Metadata();
    md.set('ClusterID', clusterId);
    if (tokenFile) {
      try {
        md.set('authorization', `Bearer ${readFileSync(tokenFile, 'utf8').trim()}`); // tokens rotate
      } catch (err) {
        callback(err as Error);
        return;
      }
    }
    callback(null, md);
  });
  return grpc.credentials.combineChannelCredentials(ssl, perCall);
}

/** Channel options that make grpc-js check `serverName` instead of the dialled host. */
export function serverNameOptions(serverName: string | undefined): grpc.ChannelOptions {
  return serverName ? { 'grpc.ssl_target_name_override': serverName, 'grpc.default_authority': serverName } : {};
}
