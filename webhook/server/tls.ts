import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { unwatchFile, watchFile, type Stats } from 'node:fs';
import type { SecureContextOptions, SecureVersion } from 'node:tls';

/** TLS 1.2 is the floor: the API server speaks 1.2 and 1.3, nothing older is accepted. */
export const MIN_TLS_VERSION: SecureVersion = 'TLSv1.2';

/** A certificate pair that cannot be read or cannot serve; the message says which file and why. */
export class TlsPairError extends Error {
  override name = 'TlsPairError';
}

/** A serving certificate (chain) and its key, PEM. */
export interface TlsPair {
  cert: string;
  key: string;
}

/** What is known about a certificate once checked, for the logs. */
export interface TlsPairSummary {
  subject: string;
  subjectAltNames: string;
  notAfter: string;
  fingerprint256: string;
}

/**
 * Checks that `pair` can serve: both parse, the key belongs to the certificate, and the
 * certificate has not expired. Throws an Error saying what is wrong; never returns a half-checked
 * pair, so a bad new pair can be refused while the old one keeps serving.
 */
export function checkTlsPair(pair: TlsPair, now: Date = new Date()): TlsPairSummary {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pair.cert);
  } catch (err) {
    throw new TlsPairError(`the certificate is not a PEM X.509 certificate (${(err as Error).message})`);
  }
  let key;
  try {
    key = createPrivateKey(pair.key);
  } catch (err) {
    throw new TlsPairError(`the key is not a PEM private key (${(err as Error).message})`);
  }
  if (!cert.checkPrivateKey(key)) throw new TlsPairError(`the key does not belong to the certificate for ${cert.subject}`);
  if (new Date(cert.validTo).getTime() < now.getTime()) {
    throw new TlsPairError(`the certificate for ${cert.subject} expired on ${new Date(cert.validTo).toISOString()}`);
  }
  return {
    subject: cert.subject.replace(/\n/g, ', '),
    subjectAltNames: cert.subjectAltName ?? '',
    notAfter: new Date(cert.validTo).toISOString(),
    fingerprint256: cert.fingerprint256,
  };
}

/** The TLS settings of the webhook's HTTPS server for `pair`. */
export function secureContextOptions(pair: TlsPair): SecureContextOptions {
  return { cert: pair.cert, key: pair.key, minVersion: MIN_TLS_VERSION };
}

export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

export async function readTlsPair(files: TlsFiles): Promise<TlsPair> {
  const read = (path: string, what: string): Promise<string> =>
    readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new TlsPairError(`cannot read the ${what} ${path}: ${err.code ?? err.message}`);
    });
  const cert = await read(files.certFile, 'certificate');
  const key = await read(files.keyFile, 'key');
  return { cert, key };
}

/**
 * Calls `onChange` when either file changes. Polls with `stat` rather than using inotify, because
 * Kubernetes updates mounted Secrets by swapping a symlink, which inotify on the file misses; a
 * poll that follows the link sees the new inode and mtime. Writes of the two files are not atomic
 * together, so a change is reported after a short settling delay, and a half-updated pair is simply
 * refused by the caller until the second file lands (which reports again).
 */
export function watchTlsFiles(files: TlsFiles, intervalMs: number, onChange: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  const listener = (curr: Stats, prev: Stats): void => {
    if (curr.mtimeMs === prev.mtimeMs && curr.ino === prev.ino && curr.size === prev.size) return;
    clearTimeout(timer);
    timer = setTimeout(onChange, Math.min(intervalMs, 250));
  };
  const paths = [...new Set([files.certFile, files.keyFile])];
  for (const path of paths) watchFile(path, { interval: intervalMs, persistent: false }, listener);
  return () => {
    clearTimeout(timer);
    for (const path of paths) unwatchFile(path, listener);
  };
}
