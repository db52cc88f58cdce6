// Prometheus text exposition, read back by the metrics suites: one sample per line, labels by name.
import { waitFor } from './wait.js';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function samples(exposition: string): Sample[] {
  const out: Sample[] = [];
  for (const line of exposition.split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The samples of metric `name` whose labels include every one of `want`. */
export const find = (all: Sample[], name: string, want: Record<string, string>): Sample[] =>
  all.filter((s) => s.name === name && Object.entries(want).every(([k, v]) => s.labels[k] === v));

/** Requests Istio's `istio_requests_total` counts for `reporter`, over every series. */
export const requestsCounted = (all: Sample[], reporter: string): number =>
  all.filter((s) => s.name === 'istio_requests_total' && s.labels['reporter'] === reporter).reduce((sum, s) => sum + s.value, 0);

/**
 * nginx runs a request's log phase (where Istio's metrics count it) after the answer has left: a
 * scrape right after the last answer can come first. Scrapes until `reporter` has at least
 * `atLeast` requests counted, and returns that scrape.
 */
export async function scrapeWhenCounted(scrape: () => Promise<Sample[]>, reporter: string, atLeast: number): Promise<Sample[]> {
  let all = await scrape();
  await waitFor(async () => requestsCounted((all = await scrape()), reporter) >= atLeast, 10_000, `${atLeast} ${reporter} requests counted`);
  return all;
}
