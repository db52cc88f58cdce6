import type { Secret__Output as Secret } from '@grpc/grpc-js-xds/build/src/generated/envoy/extensions/transport_sockets/tls/v3/Secret.js';
import { decodeSecret } from '../../mtls/sds-secret.js';
import { resourceType } from './resource-type.js';

/**
 * SDS (over the ADS stream): the secrets a DestinationRule's `credentialName` names. Subscribed by
 * name, merged by name like EDS. A secret Envoy would reject (agent/mtls/sds-secret.ts) is NACKed.
 */
export const secretResourceType = resourceType<Secret>({
  kind: 'secret',
  allResourcesRequiredInSotW: false,
  nameField: 1,
  nameOf: (s) => s.name,
  validate: (secret) => {
    const problem = decodeSecret(secret).problem;
    return problem ? [problem] : [];
  },
});
