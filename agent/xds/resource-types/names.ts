/**
 * What the agent takes as a resource name (cluster, listener, route configuration, the EDS/RDS
 * names it subscribes to): printable ASCII without spaces, 1–1024 characters. Istio's names are
 * (`outbound|9080|v1|reviews.default.svc.cluster.local`, `0.0.0.0_9080`, `virtualOutbound`); bytes
 * that decode into anything else (a cluster named "\x01") are corruption, not configuration.
 */
const VALID_NAME = /^[\x21-\x7e]{1,1024}$/;

/** Why the name is refused, or null. */
export function nameRejection(name: string | undefined | null): string | null {
  if (!name) return 'no name';
  if (VALID_NAME.test(name)) return null;
  return `invalid name ${JSON.stringify(name.slice(0, 60))}${name.length > 60 ? '…' : ''} (printable ASCII without spaces, at most 1024 characters)`;
}

/** A name fit to quote in a NACK, or undefined. */
export function validName(name: string | undefined | null): string | undefined {
  return name && nameRejection(name) === null ? name : undefined;
}
