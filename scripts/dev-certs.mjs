#!/usr/bin/env node
// Development certificates for the webhook: a CA and a serving certificate signed by it, written
// as PEM files (ca.crt, tls.crt, tls.key) for `apisix-mesh webhook --tls-cert/--tls-key`, or for a
// Secret (`kubectl create secret tls ... --cert tls.crt --key tls.key`) with ca.crt as caBundle.
// Uses the webhook's own generator from dist/ (run `npm run build` first).
//
//   node scripts/dev-certs.mjs [--out DIR] [--days N] [NAME...]
//
// NAMEs default to localhost, 127.0.0.1, ::1 and the in-cluster Service names of manifests/.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const usage = `usage: node scripts/dev-certs.mjs [--out DIR] [--days N] [NAME...]
  --out DIR   where to write ca.crt, tls.crt, tls.key (default ./dev-certs)
  --days N    validity of both certificates in days (default 30)
  NAME...     DNS names / IP addresses of the serving certificate (default: localhost, 127.0.0.1,
              ::1 and apisix-mesh-webhook[.apisix-mesh-system[.svc[.cluster.local]]])`;

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: { out: { type: 'string', default: 'dev-certs' }, days: { type: 'string', default: '30' }, help: { type: 'boolean', short: 'h' } },
  });
} catch (err) {
  console.error(`dev-certs: ${err.message}\n${usage}`);
  process.exit(2);
}
if (parsed.values.help) {
  console.log(usage);
  process.exit(0);
}
const days = Number(parsed.values.days);
if (!Number.isFinite(days) || days <= 0) {
  console.error(`dev-certs: --days must be a positive number, got ${JSON.stringify(parsed.values.days)}`);
  process.exit(2);
}
const service = 'apisix-mesh-webhook';
const namespace = 'apisix-mesh-system';
const names = parsed.positionals.length > 0
  ? parsed.positionals
  : ['localhost', '127.0.0.1', '::1', service, `${service}.${namespace}`, `${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`];

let generator;
try {
  generator = await import('../dist/webhook/certificates/generate.js');
} catch {
  console.error('dev-certs: dist/ is missing; run `npm run build` first');
  process.exit(2);
}
const ca = generator.generateCa({ commonName: 'apisix-mesh-dev-ca', validity: { days } });
const serving = generator.generateServingCert(ca, names, { days });

const out = resolve(parsed.values.out);
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'ca.crt'), ca.certPem, { mode: 0o644 });
writeFileSync(join(out, 'tls.crt'), serving.certPem, { mode: 0o644 });
writeFileSync(join(out, 'tls.key'), serving.keyPem, { mode: 0o600 });
// The CA key is not kept: these certificates are for development, re-run to get new ones.
console.log(`dev-certs: wrote ${out}/{ca.crt,tls.crt,tls.key} for ${names.join(', ')}, valid ${days} days`);
