import type { IncomingHttpHeaders } from 'node:http';
import type { AppProber, AppProbers } from './app-probers.js';
import { probeGrpc } from './grpc-health-probe.js';
import { probeHttp } from './http-probe.js';
import { probeTimeoutMs, type ProbeOutcome, type ProbeTarget } from './probe-target.js';
import { probeTcp } from './tcp-probe.js';

/** One probe of the app, as the kubelet would have run it. */
export function runAppProbe(prober: AppProber, target: ProbeTarget, incoming: IncomingHttpHeaders): Promise<ProbeOutcome> {
  const timeoutMs = probeTimeoutMs(prober.timeoutSeconds);
  if (prober.httpGet) return probeHttp(target, prober.httpGet, timeoutMs, incoming);
  if (prober.tcpSocket) return probeTcp(target, prober.tcpSocket.port, timeoutMs);
  const userAgent = typeof incoming['user-agent'] === 'string' ? incoming['user-agent'] : undefined;
  return probeGrpc(target, prober.grpc!.port, prober.grpc!.service ?? '', timeoutMs, userAgent);
}

/**
 * The app probes the status port serves: exactly the injected ones (`probers`), each always
 * against `target` (the pod itself). The status port is reachable from the whole network, so a
 * caller must not be able to multiply the agent's connections to the app: requests for a path
 * whose probe is under way share its outcome, which bounds the probes in flight by the number of
 * probers (at most MAX_APP_PROBERS).
 */
export class AppProbeService {
  private readonly inFlight = new Map<string, Promise<ProbeOutcome>>();

  constructor(
    private readonly probers: AppProbers,
    private readonly target: ProbeTarget,
  ) {}

  get size(): number {
    return this.probers.size;
  }

  /** The outcome of the probe at `path`, or null when no container declared one there. */
  probe(path: string, incoming: IncomingHttpHeaders): Promise<ProbeOutcome> | null {
    const prober = this.probers.get(path);
    if (prober === undefined) return null;
    let running = this.inFlight.get(path);
    if (running === undefined) {
      running = runAppProbe(prober, this.target, incoming).finally(() => this.inFlight.delete(path));
      this.inFlight.set(path, running);
    }
    return running;
  }
}
