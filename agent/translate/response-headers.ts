import type { Route } from '../xds/envoy-types.js';
import { UnsupportedMatch } from './unsupported.js';
import { hasControlBreak, wrapped } from './values.js';

/** The response header mutations of one level (route, virtual host or route configuration). */
export type ResponseHeaderLevel = Pick<Route, 'response_headers_to_add' | 'response_headers_to_remove'>;

/**
 * One response header operation, in the order Envoy applies them. `append` adds another line of
 * the header; `set` replaces it; `absent` adds it only when the response has none; `present`
 * replaces it only when the response has one (Envoy's four `append_action`s).
 */
export type ResponseHeaderOp = ['remove', string] | ['append' | 'set' | 'absent' | 'present', string, string];

const ACTIONS: Record<string, 'append' | 'set' | 'absent' | 'present'> = {
  APPEND_IF_EXISTS_OR_ADD: 'append',
  OVERWRITE_IF_EXISTS_OR_ADD: 'set',
  ADD_IF_ABSENT: 'absent',
  OVERWRITE_IF_EXISTS: 'present',
};

/**
 * Envoy's response header mutations as a list of operations run in Envoy's order: the levels as
 * headerLevels orders them (route, virtual host, route configuration: the less specific one last
 * and so winning; reversed under `most_specific_header_mutations_wins`), each level removing
 * before it adds (Envoy's HeaderParser). An empty value is not added unless `keep_empty_value`
 * (Envoy's default). Values are literals: they are set by Lua as written, never expanded. CR, LF
 * or NUL skips the route; pseudo-headers (`:status`) cannot be set and are refused the same way.
 */
export function responseHeaderOps(levels: readonly ResponseHeaderLevel[]): ResponseHeaderOp[] {
  const ops: ResponseHeaderOp[] = [];
  for (const level of levels) {
    for (const name of level.response_headers_to_remove ?? []) ops.push(['remove', headerName(name)]);
    for (const option of level.response_headers_to_add ?? []) {
      const name = option.header?.key;
      if (!name) continue;
      const value = option.header?.value ?? '';
      if (hasControlBreak(value)) throw new UnsupportedMatch('control-character', `CR, LF or NUL in the value of response header ${headerName(name)}`);
      if (value === '' && !option.keep_empty_value) continue;
      const append = wrapped(option.append);
      const action = option.append_action ? ACTIONS[String(option.append_action)] ?? 'append' : append === false ? 'set' : 'append';
      ops.push([action, headerName(name), value]);
    }
  }
  return ops;
}

function headerName(name: string): string {
  if (hasControlBreak(name) || name.startsWith(':') || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
    throw new UnsupportedMatch('response-header-name', `response header name ${JSON.stringify(name.slice(0, 40))} cannot be set`);
  }
  return name.toLowerCase();
}
