import protobuf from 'protobufjs';
import { RE2JS } from 're2js';
import { lookupMessage } from './protos.js';
import { decodeMessage } from './codec.js';
import { elide } from './wire-check.js';

/**
 * The protoc-gen-validate rules Envoy's protos carry (`(validate.rules)` on fields,
 * `(validate.required)` on oneofs), checked on a decoded resource the way Envoy's generated
 * validators check them before a configuration is accepted: scalar rules apply to proto3 fields
 * whether set or not (an absent string is ""), message rules only to set messages, oneof members
 * only when chosen. Envoy validates every typed config it instantiates, so the payload of every
 * `Any` whose type is known is validated too. Message types can carry extra checks (`hooks`), e.g.
 * RE2 for RegexMatcher. The subset implemented is what the protos the agent loads use (string,
 * bytes, numbers and wrappers, bool, enum, message, repeated, map, duration, any); a rule kind it
 * does not know is ignored.
 */
export type MessageHook = (message: Record<string, unknown>, report: (problem: string) => void) => void;

export interface ValidateOptions {
  /** extra checks per message type, by full name without the leading dot */
  hooks?: ReadonlyMap<string, MessageHook>;
  /** stop after this many violations (default 5) */
  limit?: number;
}

type Rules = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- PGV's option tree

const WRAPPERS: Readonly<Record<string, string>> = {
  'google.protobuf.DoubleValue': 'double', 'google.protobuf.FloatValue': 'float',
  'google.protobuf.Int64Value': 'int64', 'google.protobuf.UInt64Value': 'uint64',
  'google.protobuf.Int32Value': 'int32', 'google.protobuf.UInt32Value': 'uint32',
  'google.protobuf.BoolValue': 'bool', 'google.protobuf.StringValue': 'string', 'google.protobuf.BytesValue': 'bytes',
};
const NUMERIC = new Set(['double', 'float', 'int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64', 'fixed32', 'fixed64', 'sfixed32', 'sfixed64']);

class Stop extends Error {}

/** protobufjs computes `fullName` on every read (walking the parents): asked once per type */
const typeNames = new WeakMap<protobuf.Type, string>();

function nameOf(type: protobuf.Type): string {
  let name = typeNames.get(type);
  if (name === undefined) typeNames.set(type, (name = type.fullName.slice(1)));
  return name;
}

const rulesCache = new WeakMap<protobuf.ReflectionObject, Rules | null>();

function rulesOf(object: protobuf.Field | protobuf.OneOf, key: string): Rules | null {
  let rules = rulesCache.get(object);
  if (rules === undefined) {
    rules = null;
    // protobufjs keeps each declared option as one object in a list
    const declared = (object.parsedOptions ?? []) as unknown as Array<Record<string, unknown>>;
    for (const option of declared) if (option[key] !== undefined) rules = option[key] as Rules;
    rulesCache.set(object, rules);
  }
  return rules;
}

const patterns = new Map<string, RE2JS>();

function matchesPattern(pattern: string, value: string): boolean {
  let re = patterns.get(pattern);
  if (!re) patterns.set(pattern, (re = RE2JS.compile(pattern)));
  return re.matcher(value).find();
}

function list<T>(value: T | T[] | undefined): T[] {
  return value === undefined ? [] : Array.isArray(value) ? value : [value];
}

class Validator {
  readonly problems: string[] = [];
  private readonly path: string[] = [];
  private readonly limit: number;

  constructor(private readonly options: ValidateOptions) {
    this.limit = options.limit ?? 5;
  }

  private report(problem: string): void {
    this.problems.push(`${elide(this.path.join('.') || '(message)')}: ${problem}`);
    if (this.problems.length >= this.limit) throw new Stop();
  }

  message(type: protobuf.Type, value: Record<string, unknown>): void {
    const name = nameOf(type);
    this.options.hooks?.get(name)?.(value, (p) => this.report(p));
    if (name === 'google.protobuf.Any') return this.any(value);
    for (const oneof of type.oneofsArray) {
      if ((rulesOf(oneof, '(validate.required)') as unknown) === true && !oneof.fieldsArray.some((f) => present(value[f.name]))) {
        this.report(`one of ${oneof.fieldsArray.map((f) => f.name).join(', ')} is required`);
      }
    }
    for (const field of type.fieldsArray) {
      this.path.push(field.name);
      this.field(field, value[field.name]);
      this.path.pop();
    }
  }

  private any(value: Record<string, unknown>): void {
    const typeUrl = typeof value['type_url'] === 'string' ? value['type_url'] : '';
    const inner = typeUrl ? lookupMessage(typeUrl) : undefined;
    if (!inner) return; // Istio-private and other unknown types stay opaque
    const bytes = value['value'] instanceof Uint8Array ? value['value'] : new Uint8Array();
    this.path.push(`<${inner.name}>`);
    this.message(inner, decodeMessage<Record<string, unknown>>(typeUrl, bytes));
    this.path.pop();
  }

  private field(field: protobuf.Field, value: unknown): void {
    const rules = rulesOf(field, '(validate.rules)');
    const resolved = field.resolvedType;
    if (field.map) {
      const entries = Object.entries((value ?? {}) as Record<string, unknown>);
      if (rules?.map) this.mapRules(rules.map, entries);
      if (resolved instanceof protobuf.Type) {
        for (const [key, entry] of entries) {
          this.path.push(JSON.stringify(key.slice(0, 60)));
          this.message(resolved, entry as Record<string, unknown>);
          this.path.pop();
        }
      }
      return;
    }
    if (field.repeated) {
      const items = (value ?? []) as unknown[];
      if (rules?.repeated) this.repeatedRules(rules.repeated, field, items);
      if (resolved instanceof protobuf.Type) {
        items.forEach((item, i) => {
          this.path.push(String(i));
          this.message(resolved, item as Record<string, unknown>);
          this.path.pop();
        });
      }
      return;
    }
    // an unchosen oneof member (or unset proto3 optional): its rules, `required` too, do not apply
    if (field.partOf && !present(value)) return;
    if (resolved instanceof protobuf.Type) {
      const set = present(value);
      const required = rules?.message?.required === true || rules?.duration?.required === true || rules?.any?.required === true || rules?.timestamp?.required === true;
      if (required && !set) this.report('is required');
      if (!set) return;
      const message = value as Record<string, unknown>;
      if (rules) this.messageValueRules(rules, resolved, message);
      if (rules?.message?.skip !== true) this.message(resolved, message);
      return;
    }
    if (rules) this.scalarRules(rules, field.type, resolved instanceof protobuf.Enum ? resolved : undefined, value ?? scalarDefault(field.type, resolved));
  }

  /** Rules on a set message field: wrappers take their scalar's rules, Duration and Any theirs. */
  private messageValueRules(rules: Rules, type: protobuf.Type, value: Record<string, unknown>): void {
    const name = nameOf(type);
    const wrapped = WRAPPERS[name];
    if (wrapped) {
      const inner = value['value'] ?? scalarDefault(wrapped, null);
      this.scalarRules(rules, wrapped, undefined, inner);
    } else if (name === 'google.protobuf.Duration' && rules.duration) {
      this.durationRules(rules.duration, nanosOf(value));
    } else if (name === 'google.protobuf.Any' && rules.any) {
      const url = String(value['type_url'] ?? '');
      if (rules.any.in !== undefined && !list<string>(rules.any.in).includes(url)) this.report(`type ${url} is not allowed here`);
      if (list<string>(rules.any.not_in).includes(url)) this.report(`type ${url} is not allowed here`);
    }
  }

  private scalarRules(rules: Rules, typeName: string, enumType: protobuf.Enum | undefined, value: unknown): void {
    if (enumType && rules.enum) return this.enumRules(rules.enum, enumType, value);
    if (typeName === 'string' && rules.string) return this.stringRules(rules.string, String(value));
    if (typeName === 'bytes' && rules.bytes) {
      const length = value instanceof Uint8Array ? value.length : 0;
      if (rules.bytes.min_len !== undefined && length < Number(rules.bytes.min_len)) this.report(`must be at least ${rules.bytes.min_len} bytes`);
      if (rules.bytes.max_len !== undefined && length > Number(rules.bytes.max_len)) this.report(`must be at most ${rules.bytes.max_len} bytes`);
      return;
    }
    if (typeName === 'bool' && rules.bool?.const !== undefined && value !== rules.bool.const) return this.report(`must be ${rules.bool.const}`);
    if (NUMERIC.has(typeName) && rules[typeName]) this.numberRules(rules[typeName], Number(value));
  }

  private numberRules(r: Rules, n: number): void {
    if (r.const !== undefined && n !== Number(r.const)) this.report(`must be ${r.const}`);
    if (r.lt !== undefined && !(n < Number(r.lt))) this.report(`must be below ${r.lt}`);
    if (r.lte !== undefined && !(n <= Number(r.lte))) this.report(`must be at most ${r.lte}`);
    if (r.gt !== undefined && !(n > Number(r.gt))) this.report(`must be above ${r.gt}`);
    if (r.gte !== undefined && !(n >= Number(r.gte))) this.report(`must be at least ${r.gte}`);
    if (r.in !== undefined && !list(r.in).map(Number).includes(n)) this.report(`must be one of ${list(r.in).join(', ')}`);
    if (list(r.not_in).map(Number).includes(n)) this.report(`must not be ${n}`);
  }

  private enumRules(r: Rules, type: protobuf.Enum, value: unknown): void {
    const n = typeof value === 'number' ? value : type.values[String(value)];
    const defined = typeof value === 'string' && n !== undefined;
    if (r.defined_only === true && !defined) this.report(`${String(value)} is not a defined value`);
    if (r.const !== undefined && n !== Number(r.const)) this.report(`must be ${r.const}`);
    if (r.in !== undefined && !list(r.in).map(Number).includes(n ?? NaN)) this.report(`${String(value)} is not allowed here`);
    if (list(r.not_in).map(Number).includes(n ?? NaN)) this.report(`${String(value)} is not allowed here`);
  }

  private stringRules(r: Rules, s: string): void {
    if (r.ignore_empty === true && s === '') return;
    const chars = r.min_len !== undefined || r.max_len !== undefined || r.len !== undefined ? [...s].length : 0;
    const bytes = r.min_bytes !== undefined || r.max_bytes !== undefined ? Buffer.byteLength(s) : 0;
    if (r.min_len !== undefined && chars < Number(r.min_len)) this.report(r.min_len === 1 ? 'must not be empty' : `must be at least ${r.min_len} characters`);
    if (r.max_len !== undefined && chars > Number(r.max_len)) this.report(`must be at most ${r.max_len} characters`);
    if (r.len !== undefined && chars !== Number(r.len)) this.report(`must be ${r.len} characters`);
    if (r.min_bytes !== undefined && bytes < Number(r.min_bytes)) this.report(`must be at least ${r.min_bytes} bytes`);
    if (r.max_bytes !== undefined && bytes > Number(r.max_bytes)) this.report(`must be at most ${r.max_bytes} bytes`);
    if (r.prefix !== undefined && !s.startsWith(r.prefix)) this.report(`must start with ${JSON.stringify(r.prefix)}`);
    if (r.suffix !== undefined && !s.endsWith(r.suffix)) this.report(`must end with ${JSON.stringify(r.suffix)}`);
    if (r.contains !== undefined && !s.includes(r.contains)) this.report(`must contain ${JSON.stringify(r.contains)}`);
    if (r.in !== undefined && !list<string>(r.in).includes(s)) this.report(`${quote(s)} is not allowed here`);
    if (list<string>(r.not_in).includes(s)) this.report(`${quote(s)} is not allowed here`);
    if (r.pattern !== undefined && !matchesPattern(String(r.pattern), s)) this.report(`${quote(s)} does not match ${r.pattern}`);
    if (r.well_known_regex !== undefined && !wellKnown(String(r.well_known_regex), r.strict !== false, s)) {
      this.report(`${quote(s)} is not a valid ${r.well_known_regex === 'HTTP_HEADER_NAME' ? 'header name' : 'header value'}`);
    }
  }

  private durationRules(r: Rules, nanos: number): void {
    const limit = (d: unknown) => nanosOf((d ?? {}) as Record<string, unknown>);
    if (r.const !== undefined && nanos !== limit(r.const)) this.report('has the wrong duration');
    if (r.lt !== undefined && !(nanos < limit(r.lt))) this.report('duration too long');
    if (r.lte !== undefined && !(nanos <= limit(r.lte))) this.report('duration too long');
    if (r.gt !== undefined && !(nanos > limit(r.gt))) this.report('duration too short');
    if (r.gte !== undefined && !(nanos >= limit(r.gte))) this.report('duration too short');
  }

  private repeatedRules(r: Rules, field: protobuf.Field, items: unknown[]): void {
    if (r.min_items !== undefined && items.length < Number(r.min_items)) this.report(`needs at least ${r.min_items} items`);
    if (r.max_items !== undefined && items.length > Number(r.max_items)) this.report(`has more than ${r.max_items} items`);
    if (r.unique === true && new Set(items.map((i) => (typeof i === 'object' ? JSON.stringify(i) : i))).size !== items.length) this.report('items must be unique');
    if (r.items) {
      const resolved = field.resolvedType;
      items.forEach((item, i) => {
        this.path.push(String(i));
        if (resolved instanceof protobuf.Type) {
          if (r.items.message?.required === true && !present(item)) this.report('is required');
          else if (present(item)) this.messageValueRules(r.items, resolved, item as Record<string, unknown>);
        } else {
          this.scalarRules(r.items, field.type, resolved instanceof protobuf.Enum ? resolved : undefined, item);
        }
        this.path.pop();
      });
    }
  }

  private mapRules(r: Rules, entries: Array<[string, unknown]>): void {
    if (r.min_pairs !== undefined && entries.length < Number(r.min_pairs)) this.report(`needs at least ${r.min_pairs} entries`);
    if (r.max_pairs !== undefined && entries.length > Number(r.max_pairs)) this.report(`has more than ${r.max_pairs} entries`);
    if (r.keys?.string) for (const [key] of entries) this.stringRules(r.keys.string, key);
  }
}

function present(value: unknown): boolean {
  return value !== undefined && value !== null;
}

function scalarDefault(typeName: string, resolved: protobuf.Type | protobuf.Enum | null | undefined): unknown {
  if (resolved instanceof protobuf.Enum) return resolved.valuesById[0] ?? 0;
  if (typeName === 'string') return '';
  if (typeName === 'bool') return false;
  if (typeName === 'bytes') return new Uint8Array();
  return 0;
}

function nanosOf(d: Record<string, unknown>): number {
  return Number(d['seconds'] ?? 0) * 1e9 + Number(d['nanos'] ?? 0);
}

function quote(s: string): string {
  return JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);
}

/** PGV's HTTP header rules: strict is RFC 7230's token / field-value; lax only refuses NUL, CR, LF. */
function wellKnown(kind: string, strict: boolean, s: string): boolean {
  if (!strict) return !/[\0\r\n]/.test(s);
  if (kind === 'HTTP_HEADER_NAME') return /^:?[0-9a-zA-Z!#$%&'*+\-.^_|~`]+$/.test(s);
  if (kind === 'HTTP_HEADER_VALUE') return !/[\0-\x08\x0A-\x1F\x7F]/.test(s);
  return true;
}

/** The PGV violations of a decoded message (at most `limit`), each with its field path. */
export function validateRules(type: protobuf.Type, message: Record<string, unknown>, options: ValidateOptions = {}): string[] {
  const validator = new Validator(options);
  try {
    validator.message(type, message);
  } catch (err) {
    if (!(err instanceof Stop)) throw err;
  }
  return validator.problems;
}
