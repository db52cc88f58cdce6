#!/usr/bin/env node
// `npm run bench -- injection`: the CPU cost of answering one AdmissionReview for a realistic
// Deployment's pod, without HTTP or TLS (the webhook benchmark measures those). Three lines, same run:
//   floor  — parse the review and answer `allowed` without a patch (what every answer costs);
//   naive  — clone the whole pod, inject into the clone, fast-json-patch `compare` the two;
//   inject — reviewAdmission (injection sharing untouched objects + a diff that skips them) and
//            serializePatch (the shared sidecar parts' JSON is produced once).
// Each line: parse the body, compute, serialise the response with the base64 patch.
// Then: how long one review of a pod with a long excludeOutboundIPRanges annotation blocks the
// event loop (every other review and /healthz wait that long), against a baseline in the same run:
// the same list parsed the way it was before, de-duplicated with Array.includes. And the same for
// hostile `proxy.istio.io/config` texts (a YAML document: APISIX's worker count), against the review
// of the pod without it.
import { performance } from 'node:perf_hooks';
import { isDeepStrictEqual } from 'node:util';
import fjp from 'fast-json-patch';
import { defaultInjectionConfig } from '../dist/webhook/config/injection-config.js';
import { decide } from '../dist/webhook/injection/decide.js';
import { injectPod } from '../dist/webhook/injection/inject-pod.js';
import { reviewAdmission } from '../dist/webhook/injection/review.js';
import { serializePatch } from '../dist/webhook/injection/patch-json.js';
import { MAX_LIST_LENGTH, parseCidr } from '../dist/iptables-init/capture-config.js';
import { MAX_RULES_PER_FAMILY } from '../dist/iptables-init/rules.js';

const container = (name, image, port) => ({
  name,
  image,
  imagePullPolicy: 'IfNotPresent',
  ports: [{ name: 'http', containerPort: port, protocol: 'TCP' }],
  env: Array.from({ length: 12 }, (_, i) => ({ name: `SETTING_${i}`, value: `value-${i}-${'x'.repeat(20)}` })).concat([
    { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
  ]),
  resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { cpu: '1', memory: '512Mi' } },
  readinessProbe: { httpGet: { path: '/ready', port: 'http' }, periodSeconds: 5 },
  livenessProbe: { httpGet: { path: '/live', port: 'http' }, initialDelaySeconds: 10 },
  volumeMounts: [
    { name: 'config', mountPath: '/etc/app' },
    { name: 'cache', mountPath: '/var/cache/app' },
  ],
  securityContext: { runAsNonRoot: true, runAsUser: 1000, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
});

/** A pod as a Deployment's ReplicaSet submits it: generateName, owner, labels, several containers. */
const pod = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: {
    generateName: 'reviews-v1-7d9c8b5f4-',
    namespace: 'bookinfo',
    labels: { app: 'reviews', version: 'v1', 'pod-template-hash': '7d9c8b5f4', 'app.kubernetes.io/part-of': 'bookinfo' },
    annotations: { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '9080', 'kubectl.kubernetes.io/restartedAt': '2026-11-01T10:00:00Z' },
    ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'reviews-v1-7d9c8b5f4', uid: 'd9607e19-f88f-11e6-a518-42010a800195', controller: true, blockOwnerDeletion: true }],
  },
  spec: {
    serviceAccountName: 'bookinfo-reviews',
    initContainers: [{ name: 'migrate', image: 'ghcr.io/example/migrate:1.0', args: ['up'] }],
    containers: [container('reviews', 'docker.io/istio/examples-bookinfo-reviews-v1:1.20.1', 9080), container('log-shipper', 'fluent/fluent-bit:3.1', 2020)],
    volumes: [
      { name: 'config', configMap: { name: 'reviews-config' } },
      { name: 'cache', emptyDir: {} },
      { name: 'kube-api-access-abcde', projected: { sources: [{ serviceAccountToken: { expirationSeconds: 3607, path: 'token' } }] } },
    ],
    tolerations: [
      { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
      { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
    ],
    affinity: { podAntiAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [{ weight: 100, podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: { app: 'reviews' } } } }] } },
  },
};

const body = JSON.stringify({
  apiVersion: 'admission.k8s.io/v1',
  kind: 'AdmissionReview',
  request: {
    uid: '705ab4f5-6393-11e8-b7cc-42010a800002',
    kind: { group: '', version: 'v1', kind: 'Pod' },
    resource: { group: '', version: 'v1', resource: 'pods' },
    namespace: 'bookinfo',
    operation: 'CREATE',
    userInfo: { username: 'system:serviceaccount:kube-system:replicaset-controller' },
    object: pod,
  },
});

const respond = (review, patch, serialize = JSON.stringify) =>
  JSON.stringify({
    apiVersion: review.apiVersion,
    kind: 'AdmissionReview',
    response: patch
      ? { uid: review.request.uid, allowed: true, patchType: 'JSONPatch', patch: Buffer.from(serialize(patch)).toString('base64') }
      : { uid: review.request.uid, allowed: true },
  });

const config = defaultInjectionConfig;
const variants = {
  floor: () => {
    const review = JSON.parse(body);
    return respond(review, null);
  },
  naive: () => {
    const review = JSON.parse(body);
    const original = review.request.object;
    const clone = JSON.parse(JSON.stringify(original));
    const decision = decide(clone, review.request.namespace, config);
    const injected = injectPod(clone, decision.mode, config);
    return respond(review, fjp.compare(original, injected.pod));
  },
  inject: () => {
    const review = JSON.parse(body);
    const outcome = reviewAdmission(review.request, config);
    return respond(review, outcome.patch, serializePatch);
  },
};

// Both injecting variants must give the same pod, or the comparison means nothing.
{
  const a = fjp.applyPatch(structuredClone(pod), JSON.parse(Buffer.from(JSON.parse(variants.naive()).response.patch, 'base64').toString())).newDocument;
  const b = fjp.applyPatch(structuredClone(pod), JSON.parse(Buffer.from(JSON.parse(variants.inject()).response.patch, 'base64').toString())).newDocument;
  if (!isDeepStrictEqual(a, b)) throw new Error('naive and inject disagree');
}

function measure(fn, ms) {
  const end = performance.now() + ms;
  let n = 0;
  const start = performance.now();
  while (performance.now() < end) {
    for (let i = 0; i < 50; i++) fn();
    n += 50;
  }
  return n / ((performance.now() - start) / 1000);
}

for (const fn of Object.values(variants)) measure(fn, 300); // warm up
const rounds = 3;
const results = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
for (let r = 0; r < rounds; r++) for (const [k, fn] of Object.entries(variants)) results[k].push(measure(fn, 1000));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const floor = median(results.floor);
console.log(`review body: ${body.length} bytes; patch (inject): ${Buffer.from(JSON.parse(variants.inject()).response.patch, 'base64').length} bytes, naive: ${Buffer.from(JSON.parse(variants.naive()).response.patch, 'base64').length} bytes`);
for (const k of Object.keys(variants)) {
  const v = median(results[k]);
  console.log(`${k.padEnd(7)} ${v.toFixed(0).padStart(8)} reviews/s  ${(v / floor * 100).toFixed(1).padStart(5)} % of floor  (${(1e6 / v).toFixed(1)} µs each)`);
}
console.log(`inject vs naive: ${(median(results.inject) / median(results.naive)).toFixed(2)}x`);
console.log(`rss ${(process.memoryUsage().rss / 1048576).toFixed(0)} MiB`);

// --- Large traffic annotations ---------------------------------------------------------------------
/** `n` distinct IPv4 /32s, comma-separated. */
const cidrList = (n) => Array.from({ length: n }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`).join(',');
/** The parse before the limit and the Set: split, check each CIDR, de-duplicate with Array.includes. */
function quadraticParse(value) {
  const cidrs = [];
  for (const item of value.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
    const cidr = parseCidr(item, 'bench');
    if (!cidrs.includes(cidr)) cidrs.push(cidr);
  }
  return cidrs;
}
const reviewOf = (value, annotation = 'traffic.sidecar.istio.io/excludeOutboundIPRanges') =>
  JSON.stringify({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: 'u',
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      namespace: 'bookinfo',
      operation: 'CREATE',
      object: { ...pod, metadata: { ...pod.metadata, annotations: { ...pod.metadata.annotations, ...(value === undefined ? {} : { [annotation]: value }) } } },
    },
  });
/** The most entries of `cidrList` (in hundreds) that the size limit and the rule budget accept. */
let fitting = 0;
while (reviewAdmission(JSON.parse(reviewOf(cidrList(fitting + 100))).request, config).kind === 'injected') fitting += 100;
const timeOnce = (fn) => {
  const start = performance.now();
  const result = fn();
  return { ms: performance.now() - start, result };
};
console.log(`\nexcludeOutboundIPRanges with N CIDRs: one review (parse body, review, answer), median of 3; the most accepted: ${fitting} (limits: ${MAX_LIST_LENGTH} characters, ${MAX_RULES_PER_FAMILY} rules a family)`);
for (const n of [1000, fitting, 17000, 45000]) {
  const value = cidrList(n);
  const body = reviewOf(value);
  const runs = [0, 1, 2].map(() =>
    timeOnce(() => {
      const review = JSON.parse(body);
      const outcome = reviewAdmission(review.request, config);
      return { outcome, text: respond(review, outcome.kind === 'injected' ? outcome.patch : null, serializePatch) };
    }),
  );
  const { outcome, text } = runs[0].result;
  const answer = outcome.kind === 'rejected' ? `rejected, message ${outcome.message.length} chars` : `${outcome.kind}, answer ${text.length} bytes`;
  const baseline = timeOnce(() => quadraticParse(value));
  console.log(
    `  N=${String(n).padStart(6)} (${(value.length / 1024).toFixed(0).padStart(4)} KiB): review ${median(runs.map((r) => r.ms)).toFixed(1).padStart(8)} ms (${answer}); ` +
      `baseline Array.includes parse alone ${baseline.ms.toFixed(1).padStart(8)} ms`,
  );
}

// --- Hostile ProxyConfig annotations ---------------------------------------------------------------
// each run's text differs (a comment first), as a hostile client's would: the injection keeps the
// last text's outcome, so the same text again would not be parsed again
const reviewMs = (bodyOf) => {
  const runs = [0, 1, 2, 3, 4].map((run) =>
    timeOnce(() => {
      const review = JSON.parse(bodyOf(run));
      const outcome = reviewAdmission(review.request, config);
      return { outcome, text: respond(review, outcome.kind === 'injected' ? outcome.patch : null, serializePatch) };
    }),
  );
  const { outcome, text } = runs[0].result;
  return { ms: median(runs.map((r) => r.ms)), answer: outcome.kind === 'rejected' ? `rejected: ${outcome.message.slice(0, 90)}…` : `${outcome.kind}, answer ${text.length} bytes` };
};
const PROXY_CONFIG = 'proxy.istio.io/config';
const limit = 16 * 1024 - 4; // the texts' own limit: each run puts a 4-character comment first
const keys = (n) => `concurrency: 1\n${Array.from({ length: n }, (_, i) => `k${i}: ${i}`).join('\n')}`;
let manyKeys = 0;
while (keys(manyKeys + 100).length <= limit) manyKeys += 100;
const depth = Math.floor((limit - 20) / 2);
const proxyConfigs = [
  ['none (baseline)', undefined],
  ['typical (concurrency and 2 fields)', 'concurrency: 1\nholdApplicationUntilProxyStarts: true\nproxyMetadata: {ISTIO_META_DNS_CAPTURE: "true"}'],
  [`${manyKeys} keys (${(keys(manyKeys).length / 1024).toFixed(0)} KiB, near the limit)`, keys(manyKeys)],
  [`flow nesting ${depth} deep (at the limit)`, `concurrency: ${'['.repeat(depth)}${']'.repeat(depth)}`.slice(0, limit)],
  ['one 16 KiB scalar', `concurrency: 1\nx: "${'y'.repeat(limit - 40)}"`],
  ['256 KiB (over the limit)', keys(20000).slice(0, 256 * 1024 - 4)],
];
console.log(`\n${PROXY_CONFIG}: one review (parse body, review, answer), median of 5`);
for (const [what, value] of proxyConfigs) {
  const { ms, answer } = reviewMs((run) => reviewOf(value === undefined ? undefined : `# ${run}\n${value}`, PROXY_CONFIG));
  console.log(`  ${what.padEnd(42)} ${ms.toFixed(2).padStart(8)} ms (${answer})`);
}
