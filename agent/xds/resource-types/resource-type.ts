import { lookupMessage, STREAM_TYPE_URL, type StreamKind } from '../protos.js';
import { checkWireFormat, peekStringField } from '../wire-check.js';
import { decodeMessage } from '../codec.js';
import { validateRules, type MessageHook } from '../proto-validate.js';
import { re2Rejection } from '../re2.js';
import { nameRejection, validName } from './names.js';

/**
 * One xDS resource type, in the shape of @grpc/grpc-js-xds's `xds-resource-type/*`: decode →
 * validate → the typed value the rest of the agent uses. Decoding is strict (wire-check.ts), the
 * protos' protoc-gen-validate rules are checked (proto-validate.ts) with RE2 for every regex, the
 * name must be a valid name, and each type adds what its translation relies on. A resource that
 * passes can be translated without surprises; one that does not is reported, by name, so the
 * response is NACKed saying which.
 */
export type DecodeResult<T> =
  | { name: string; value: T; error?: undefined }
  /**
   * name: set when the resource decoded (so the name is its own) but is invalid; readableName:
   * what its bytes seem to name when they do not decode, only to say which one in a NACK (the
   * corruption may have cut the name: `o` for `outbound|…`)
   */
  | { name: string | undefined; readableName?: string; error: string; value?: undefined };

export interface XdsResourceType<T> {
  readonly kind: StreamKind;
  readonly typeUrl: string;
  /** state of the world: a response holds the complete set (CDS, LDS), not a merge by name */
  readonly allResourcesRequiredInSotW: boolean;
  /** protobuf field number of the name */
  readonly nameField: number;
  decode(bytes: Uint8Array): DecodeResult<T>;
}

export interface ResourceTypeSpec<T> {
  kind: StreamKind;
  allResourcesRequiredInSotW: boolean;
  /** protobuf field number of the name (read from the bytes when they do not decode) */
  nameField: number;
  nameOf(resource: T): string | undefined;
  /** this type's own checks, beyond its protos' rules */
  validate(resource: T): string[];
  /**
   * What the agent keeps of a valid resource, for its whole life: fields nothing downstream reads
   * are dropped here (after validation), as they would cost memory per resource in large meshes.
   */
  retain?(resource: T): T;
}

/** Envoy compiles every RegexMatcher when it loads a configuration and NACKs one RE2 refuses. */
const HOOKS: ReadonlyMap<string, MessageHook> = new Map([
  ['envoy.type.matcher.v3.RegexMatcher', (m, report) => {
    const why = re2Rejection(typeof m['regex'] === 'string' ? m['regex'] : '');
    if (why) report(why);
  }],
]);

const MAX_PROBLEMS = 5;

export function resourceType<T>(spec: ResourceTypeSpec<T>): XdsResourceType<T> {
  const typeUrl = STREAM_TYPE_URL[spec.kind];
  return {
    kind: spec.kind,
    typeUrl,
    allResourcesRequiredInSotW: spec.allResourcesRequiredInSotW,
    nameField: spec.nameField,
    decode(bytes: Uint8Array): DecodeResult<T> {
      // looked up on first use: loading the protos is not an import side effect
      const type = lookupMessage(typeUrl);
      if (!type) throw new Error(`no message type for ${typeUrl}`);
      let resource: T;
      try {
        checkWireFormat(type, bytes);
        resource = decodeMessage<T>(typeUrl, bytes);
      } catch (err) {
        const readableName = validName(peekStringField(bytes, spec.nameField));
        return { name: undefined, ...(readableName ? { readableName } : {}), error: `undecodable: ${short(err)}` };
      }
      const name = spec.nameOf(resource);
      const refused = nameRejection(name);
      if (refused) return { name: undefined, error: refused };
      let problems: string[];
      try {
        problems = validateRules(type, resource as Record<string, unknown>, { hooks: HOOKS, limit: MAX_PROBLEMS });
        if (problems.length < MAX_PROBLEMS) problems.push(...spec.validate(resource));
      } catch (err) {
        // a validator that throws is a bug; the resource is refused rather than the agent stopped
        problems = [`cannot be validated: ${short(err)}`];
      }
      if (problems.length) return { name: name!, error: problems.slice(0, MAX_PROBLEMS).join('; ') };
      return { name: name!, value: spec.retain ? spec.retain(resource) : resource };
    },
  };
}

function short(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).slice(0, 300);
}
