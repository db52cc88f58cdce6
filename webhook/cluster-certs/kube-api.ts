import {
  AdmissionregistrationV1Api,
  ApiException,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Secret,
} from '@kubernetes/client-node';
import type { Operation } from 'fast-json-patch';

/**
 * The few Kubernetes API calls the certificate manager makes, and nothing else (they match the
 * RBAC in manifests/webhook-certs/rbac.yaml): get/update of one Secret (create only when it is
 * missing and RBAC allows it), get/patch of one MutatingWebhookConfiguration.
 */

/** A write lost the optimistic-concurrency race (HTTP 409): read again and retry. */
export class WriteConflict extends Error {}

/** An API failure the operator has to fix, with a sentence saying what. */
export class ClusterApiError extends Error {}

export interface StoredSecret {
  data: Record<string, string> | undefined;
  resourceVersion: string;
  /** The object as read, so an update keeps its labels and annotations (kubectl's last-applied). */
  object: V1Secret;
}

export interface CertificateSecretStore {
  read(): Promise<StoredSecret | null>;
  /** Creates the Secret; WriteConflict when someone else created it first. */
  create(data: Record<string, string>): Promise<void>;
  /** Replaces the data if the Secret is still as read (same resourceVersion); WriteConflict otherwise. */
  replace(data: Record<string, string>, previous: StoredSecret): Promise<void>;
}

export interface WebhookConfigurationClient {
  /** Puts `caBundlePem` into every webhook of the configuration; returns whether anything changed. */
  ensureCaBundle(caBundlePem: string): Promise<boolean>;
  /** Sets `failurePolicy` of every webhook of the configuration; returns the names it changed. */
  ensureFailurePolicy(policy: 'Fail' | 'Ignore'): Promise<string[]>;
}

export function secretStore(kubeConfig: KubeConfig, namespace: string, name: string): CertificateSecretStore {
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const what = `Secret ${namespace}/${name}`;
  const created = (data: Record<string, string>): V1Secret => ({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name,
      namespace,
      labels: { 'app.kubernetes.io/name': 'apisix-mesh-webhook', 'app.kubernetes.io/part-of': 'apisix-mesh' },
    },
    type: 'Opaque',
    data,
  });
  return {
    async read() {
      try {
        const secret = await core.readNamespacedSecret({ name, namespace });
        return { data: secret.data, resourceVersion: secret.metadata?.resourceVersion ?? '', object: secret };
      } catch (err) {
        if (statusOf(err) === 404) return null;
        throw explain(err, `reading ${what}`);
      }
    },
    async create(data) {
      try {
        await core.createNamespacedSecret({ namespace, body: created(data) });
      } catch (err) {
        if (statusOf(err) === 409) throw new WriteConflict(`${what} was created concurrently`);
        if (statusOf(err) === 403) {
          throw new ClusterApiError(
            `${what} does not exist and the webhook may not create it (the manifests ship it empty: ` +
              `apply manifests/ again, or create it with \`kubectl -n ${namespace} create secret generic ${name}\`)`,
          );
        }
        throw explain(err, `creating ${what}`);
      }
    },
    async replace(data, previous) {
      const { resourceVersion } = previous;
      // Everything as read but the data; the resourceVersion makes the write conditional.
      const body: V1Secret = { ...previous.object, data, metadata: { ...previous.object.metadata, name, namespace, resourceVersion } };
      try {
        await core.replaceNamespacedSecret({ name, namespace, body });
      } catch (err) {
        if (statusOf(err) === 409) throw new WriteConflict(`${what} changed since resourceVersion ${resourceVersion}`);
        // Deleted between our read and write: the next read sees it missing and creates it.
        if (statusOf(err) === 404) throw new WriteConflict(`${what} was deleted concurrently`);
        throw explain(err, `updating ${what}`);
      }
    },
  };
}

export function webhookConfigurationClient(kubeConfig: KubeConfig, name: string): WebhookConfigurationClient {
  const admission = kubeConfig.makeApiClient(AdmissionregistrationV1Api);
  const what = `MutatingWebhookConfiguration ${name}`;
  return {
    async ensureCaBundle(caBundlePem) {
      const caBundle = Buffer.from(caBundlePem, 'utf8').toString('base64');
      let config;
      try {
        config = await admission.readMutatingWebhookConfiguration({ name });
      } catch (err) {
        throw explain(err, `reading ${what}`);
      }
      const patch: Operation[] = [];
      (config.webhooks ?? []).forEach((webhook, i) => {
        if (webhook.clientConfig.caBundle === caBundle) return;
        // `test` pins the index to the webhook we looked at, in case the list changed meanwhile.
        patch.push({ op: 'test', path: `/webhooks/${i}/name`, value: webhook.name });
        patch.push({ op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: caBundle });
      });
      if (patch.length === 0) return false;
      try {
        await admission.patchMutatingWebhookConfiguration(
          { name, body: patch },
          setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
        );
      } catch (err) {
        throw explain(err, `patching the caBundle of ${what}`);
      }
      return true;
    },
    async ensureFailurePolicy(policy) {
      let config;
      try {
        config = await admission.readMutatingWebhookConfiguration({ name });
      } catch (err) {
        throw explain(err, `reading ${what}`);
      }
      const patch: Operation[] = [];
      const changed: string[] = [];
      (config.webhooks ?? []).forEach((webhook, i) => {
        if (webhook.failurePolicy === policy) return;
        patch.push({ op: 'test', path: `/webhooks/${i}/name`, value: webhook.name });
        patch.push({ op: 'add', path: `/webhooks/${i}/failurePolicy`, value: policy });
        changed.push(webhook.name);
      });
      if (patch.length === 0) return [];
      try {
        await admission.patchMutatingWebhookConfiguration(
          { name, body: patch },
          setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
        );
      } catch (err) {
        throw explain(err, `patching the failurePolicy of ${what}`);
      }
      return changed;
    },
  };
}

function statusOf(err: unknown): number | undefined {
  return err instanceof ApiException ? err.code : undefined;
}

function explain(err: unknown, doing: string): ClusterApiError {
  const status = statusOf(err);
  if (status === 403) {
    return new ClusterApiError(`${doing}: forbidden (check the webhook's RBAC in manifests/webhook-certs/rbac.yaml)`);
  }
  if (status === 404) return new ClusterApiError(`${doing}: not found (are the manifests applied?)`);
  if (status !== undefined) {
    const body = (err as ApiException<unknown>).body;
    const message = typeof body === 'string' ? safeStatusMessage(body) : undefined;
    return new ClusterApiError(`${doing}: API server answered ${status}${message ? ` (${message})` : ''}`);
  }
  return new ClusterApiError(`${doing}: ${err instanceof Error ? err.message : String(err)}`);
}

function safeStatusMessage(body: string): string | undefined {
  try {
    const status = JSON.parse(body) as { message?: unknown };
    return typeof status.message === 'string' ? status.message : undefined;
  } catch {
    return undefined;
  }
}
