import type { FractionalPercent, HTTPFault, Route } from '../xds/envoy-types.js';
import { unpackAny, type PackedAny } from '../xds/codec.js';
import { FAULT_TYPE } from '../xds/protos.js';
import { sampleCondition, SAMPLE_WINDOW } from './random-sample.js';
import { durationSeconds, fractionParts } from './values.js';

const FAULT_FILTER = 'envoy.filters.http.fault';

/** What Envoy's fault filter sends for an abort given as a gRPC status (its local reply). */
const GRPC_ABORT_MESSAGE = 'fault filter abort';

type Note = (reason: string, detail: string, skipped?: boolean) => void;

/**
 * A route's fault filter config (VirtualService `fault`) → fault-injection.
 * - Percentages: APISIX samples whole percents (`percentage`); a share Envoy states more finely
 *   (Istio writes per million: 0.1 % is 1000/1 000 000) becomes a `vars` condition on
 *   `$request_id` that holds for exactly that share (random-sample.ts), the delay and the abort on
 *   separate digits so that the two draws stay independent, as in Envoy.
 * - `grpc_status` aborts answer as Envoy's local reply to a gRPC request does: HTTP 200,
 *   `content-type: application/grpc`, the status in `grpc-status` and `grpc-message`, no body
 *   (gRPC's trailers-only form, which over HTTP/1.1 is a headers-only answer).
 */
export function faultPlugin(route: Route, note: Note): Record<string, unknown> | undefined {
  const typed = (route.typed_per_filter_config as Record<string, PackedAny> | undefined)?.[FAULT_FILTER];
  if (!typed) return undefined;
  const fault = unpackAny<HTTPFault>(typed, FAULT_TYPE);
  if (!fault) return undefined;
  const conf: Record<string, unknown> = {};
  const abort = fault.abort;
  if (abort) {
    const sampled = sampling(abort.percentage, SAMPLE_WINDOW.faultAbort);
    if (abort.http_status) conf['abort'] = { http_status: abort.http_status, ...sampled };
    else if (abort.grpc_status !== undefined && abort.grpc_status !== null && abort.error_type !== 'http_status' && abort.error_type !== 'header_abort') {
      conf['abort'] = { http_status: 200, headers: { 'content-type': 'application/grpc', 'grpc-status': String(abort.grpc_status), 'grpc-message': GRPC_ABORT_MESSAGE }, ...sampled };
    } else note('fault-abort-kind', 'an abort chosen by request header (header_abort) is not translated');
  }
  const delay = fault.delay;
  if (delay) {
    const seconds = durationSeconds(delay.fixed_delay);
    if (seconds !== undefined) conf['delay'] = { duration: seconds, ...sampling(delay.percentage, SAMPLE_WINDOW.faultDelay) };
    else note('fault-delay-kind', 'only fixed delays are translated (not delays chosen by request header)');
  }
  if (fault.headers?.length) note('fault-headers', 'fault header matchers are ignored');
  if (fault.upstream_cluster || fault.downstream_nodes?.length) note('fault-scope', 'faults restricted to an upstream cluster or downstream nodes apply to every request of the route');
  if (fault.response_rate_limit) note('fault-rate-limit', 'response rate limits are not translated');
  if (fault.max_active_faults) note('fault-max-active', 'max_active_faults is not translated: every sampled request gets the fault');
  return Object.keys(conf).length ? conf : undefined;
}

/**
 * `percentage` when the share is a whole percent (APISIX's own sampling is then exact), else a
 * `vars` condition on `$request_id` for the exact share. No FractionalPercent = every request.
 */
function sampling(percentage: FractionalPercent | null | undefined, window: number): { percentage: number } | { vars: unknown[] } | Record<string, never> {
  if (!percentage) return { percentage: 100 };
  const { numerator, scale } = fractionParts(percentage);
  if ((numerator * 100) % scale === 0) return { percentage: (numerator * 100) / scale };
  const condition = sampleCondition(numerator / scale, window);
  return condition ? { vars: [[condition]] } : {};
}
