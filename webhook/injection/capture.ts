import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { shortQuote } from '../../cli/short-quote.js';
import { HTTP_HANDOFF_PORT, MESH_TCP_TLS_PORT, MESH_TLS_PORT, UNUSED_STREAM_PORT } from './apisix-config.js';
import { TLS_RELAY_PORT, TLS_RELAY_TCP_PORT } from '../../agent/mtls/origination.js';
import {
  CaptureConfigError,
  defaultCaptureConfig,
  MAX_LIST_LENGTH,
  oversizedArgs,
  parseCidrList,
  parseCidrSelection,
  parseInterfaceList,
  parsePortList,
  parsePortSelection,
  type CaptureConfig,
} from '../../iptables-init/capture-config.js';
import { ruleBudgetExcess } from '../../iptables-init/rules.js';
import type { InjectionConfig } from '../config/injection-config.js';
import { ISTIO_INTERCEPTION_MODE_ANNOTATION, TRAFFIC } from './annotations.js';

/** How inbound traffic reaches APISIX: REDIRECT rules, or no capture at all (no init container). */
export type InterceptionMode = 'REDIRECT' | 'NONE';

/** A pod whose annotations cannot be honoured; the message names the annotation and the value. */
export class PodRejection extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PodRejection';
  }
}

function annotationError(err: unknown): never {
  if (err instanceof CaptureConfigError) throw new PodRejection(`annotation ${err.message}`);
  throw err;
}

/** `sidecar.istio.io/interceptionMode`; TPROXY is Istio's, but APISIX here only does REDIRECT. */
export function interceptionMode(annotations: Record<string, string>): InterceptionMode {
  const value = annotations[ISTIO_INTERCEPTION_MODE_ANNOTATION];
  if (value === undefined || value === 'REDIRECT') return 'REDIRECT';
  if (value === 'NONE') return 'NONE';
  if (value === 'TPROXY') {
    throw new PodRejection(
      `annotation ${ISTIO_INTERCEPTION_MODE_ANNOTATION}: "TPROXY" is not supported by apisix-mesh (allowed: REDIRECT, NONE)`,
    );
  }
  throw new PodRejection(
    `annotation ${ISTIO_INTERCEPTION_MODE_ANNOTATION}: ${shortQuote(value)} is not an interception mode (allowed: REDIRECT, NONE)`,
  );
}

/** The TCP ports the pod's own containers declare, in order, without repeats. */
export function declaredTcpPorts(containers: readonly V1Container[]): number[] {
  // A Set: a pod may declare any number of ports, and a list lookup per port would be quadratic.
  const ports = new Set<number>();
  for (const c of containers) {
    for (const p of c.ports ?? []) {
      if ((p.protocol ?? 'TCP') === 'TCP') ports.add(p.containerPort);
    }
  }
  return [...ports];
}

/** APISIX's loopback listeners (apisix-config.ts): the HTTP and mTLS hand-offs (HTTP and TCP), the unused stream server, the TLS relay. */
const LOOPBACK_PORTS = [HTTP_HANDOFF_PORT, MESH_TLS_PORT, MESH_TCP_TLS_PORT, UNUSED_STREAM_PORT, TLS_RELAY_PORT, TLS_RELAY_TCP_PORT];

/** Ports the mesh listens on in the pod's network namespace: an app container may not declare them. */
export function reservedPorts(config: InjectionConfig): number[] {
  return [...Object.values(config.ports), ...LOOPBACK_PORTS];
}

/**
 * The capture configuration of a pod, with istio-iptables' semantics: inbound `*` (or the declared
 * ports, per configuration) unless `includeInboundPorts` says otherwise; the mesh's own status and
 * metrics ports always excluded inbound before the pod's own exclusions; outbound as the
 * configuration's `outboundCapture` (`*` by default) unless the pod's annotations say otherwise.
 * Throws `PodRejection` for a value that is not valid.
 */
export function captureConfigFor(pod: V1Pod, appContainers: readonly V1Container[], config: InjectionConfig): CaptureConfig {
  const a = pod.metadata?.annotations ?? {};
  const get = (name: string): string | undefined => a[name];
  try {
    const include = get(TRAFFIC.includeInboundPorts);
    const inboundPorts =
      include !== undefined
        ? parsePortSelection(include, TRAFFIC.includeInboundPorts)
        : config.inboundCapture === 'all'
          ? '*'
          : declaredTcpPorts(appContainers);
    const excludeInbound = new Set([config.ports.agentStatus, config.ports.apisixStatus, config.ports.apisixMetrics]);
    const userExclude = get(TRAFFIC.excludeInboundPorts);
    if (userExclude !== undefined) {
      for (const p of parsePortList(userExclude, TRAFFIC.excludeInboundPorts)) excludeInbound.add(p);
    }
    /** The annotation's value parsed, or `fallback` when the pod does not carry it. */
    const annotated = <T>(name: string, parse: (v: string, s: string) => T, fallback: T): T => {
      const v = get(name);
      return v === undefined ? fallback : parse(v, name);
    };
    const defaults = config.outboundCapture;
    return passable({
      ...defaultCaptureConfig,
      outboundPort: config.ports.outbound,
      inboundPort: config.ports.inbound,
      proxyUid: config.proxyUid,
      proxyGid: config.proxyGid,
      inboundPorts,
      excludeInboundPorts: [...excludeInbound],
      outboundIpRanges: annotated(TRAFFIC.includeOutboundIPRanges, parseCidrSelection, defaults.includeIpRanges),
      excludeOutboundIpRanges: annotated(TRAFFIC.excludeOutboundIPRanges, parseCidrList, defaults.excludeIpRanges),
      outboundPorts: annotated(TRAFFIC.includeOutboundPorts, parsePortList, []),
      excludeOutboundPorts: annotated(TRAFFIC.excludeOutboundPorts, parsePortList, defaults.excludePorts),
      excludeInterfaces: annotated(TRAFFIC.excludeInterfaces, parseInterfaceList, []),
    });
  } catch (err) {
    annotationError(err);
  }
}

/** Which annotation feeds each list flag of the init container. */
const ANNOTATION_OF_FLAG: Readonly<Record<string, string>> = {
  '--inbound-ports': TRAFFIC.includeInboundPorts,
  '--exclude-inbound-ports': TRAFFIC.excludeInboundPorts,
  '--outbound-ip-ranges': TRAFFIC.includeOutboundIPRanges,
  '--exclude-outbound-ip-ranges': TRAFFIC.excludeOutboundIPRanges,
  '--outbound-ports': TRAFFIC.includeOutboundPorts,
  '--exclude-outbound-ports': TRAFFIC.excludeOutboundPorts,
  '--exclude-interfaces': TRAFFIC.excludeInterfaces,
};

/**
 * `capture`, when the init container can take it: a list the webhook made longer than the
 * annotation said (the mesh's own excluded ports added), or one from the injection configuration,
 * could pass the annotation's limit and still be refused by the init container (or, past 128 KiB,
 * not start at all); and too many rules would be refused too. Such a pod is refused now, with the
 * reason, rather than admitted to fail.
 */
function passable(capture: CaptureConfig): CaptureConfig {
  const [first] = oversizedArgs(capture);
  if (first !== undefined) {
    const source = ANNOTATION_OF_FLAG[first.flag];
    throw new PodRejection(
      `the capture rules cannot be passed to the init container: its ${first.flag} would be ${first.length} characters long, ` +
        `more than the ${MAX_LIST_LENGTH} a list may have (it comes from annotation ${source ?? '(none)'}, or from the injection configuration when the pod does not set it)`,
    );
  }
  // The init container's memory limit is sized for this budget; past it, it could be OOM-killed.
  const excess = ruleBudgetExcess(capture);
  if (excess !== null) {
    throw new PodRejection(`the traffic.sidecar.istio.io/* annotations (with the injection configuration) make ${excess}`);
  }
  return capture;
}
