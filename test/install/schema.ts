import { Certificate, Issuer } from '@kubernetes-models/cert-manager/cert-manager.io/v1';
import { MutatingWebhookConfiguration } from 'kubernetes-models/admissionregistration.k8s.io/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ClusterRole, ClusterRoleBinding, Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { ConfigMap, Namespace, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import { isDeepStrictEqual } from 'node:util';
// Deep import: client-node's typed serializer is not re-exported from its index.
import { ObjectSerializer } from '@kubernetes/client-node/dist/serializer.js';
import type { KubeObject } from './render.js';

/** The models (OpenAPI schemas of Kubernetes 1.x and cert-manager v1) for every kind we ship. */
const models: Record<string, new (data: never) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/Secret': Secret,
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'rbac.authorization.k8s.io/v1/Role': Role,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'admissionregistration.k8s.io/v1/MutatingWebhookConfiguration': MutatingWebhookConfiguration,
  'cert-manager.io/v1/Certificate': Certificate,
  'cert-manager.io/v1/Issuer': Issuer,
};

/** Throws with the schema's message when the object does not validate (or its kind is unknown). */
export function validateAgainstSchema(object: KubeObject): void {
  const Model = models[`${object.apiVersion}/${object.kind}`];
  if (Model === undefined) throw new Error(`no schema for ${object.apiVersion} ${object.kind}`);
  new Model(object as never).validate();
}

/**
 * The OpenAPI schemas allow unknown fields (the API server drops them, or refuses them under
 * strict field validation), so a misspelt field would pass `validate()`. Round-tripping through
 * @kubernetes/client-node's typed models drops every field the type does not know: any difference
 * names a field Kubernetes would not understand. Only for built-in kinds (`V1<Kind>`).
 */
export function unknownFieldsOf(object: KubeObject): string | null {
  if (object.apiVersion.includes('cert-manager.io')) return null;
  const type = `V1${object.kind}`;
  const roundTripped = JSON.parse(JSON.stringify(ObjectSerializer.serialize(ObjectSerializer.deserialize(object, type), type))) as unknown;
  return isDeepStrictEqual(roundTripped, object) ? null : firstDifference(object, roundTripped, '');
}

function firstDifference(a: unknown, b: unknown, path: string): string {
  if (a !== null && typeof a === 'object' && b !== null && typeof b === 'object') {
    for (const key of Object.keys(a)) {
      const left = (a as Record<string, unknown>)[key];
      const right = (b as Record<string, unknown>)[key];
      if (!isDeepStrictEqual(left, right)) return firstDifference(left, right, `${path}/${key}`);
    }
  }
  return path;
}
