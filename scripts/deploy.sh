#!/usr/bin/env bash
# Installs apisix-mesh into the cluster the current kubectl context points at (kind or real),
# labels a namespace for injection, and runs a smoke check. For people with a cluster; CI does not
# run it. Read docs/operations.md first.
#
#   scripts/deploy.sh [--image REF] [--cert-manager] [--app-namespace NS] [--smoke-only] [--uninstall]
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/deploy.sh [options]
  --image REF           the apisix-mesh image to run (webhook, and the injected init container and
                        agent); default: the one in manifests/ (ghcr.io/apisix-mesh/apisix-mesh:0.1.0).
                        With kind, load it first: kind load docker-image REF
  --cert-manager        install manifests/overlays/cert-manager (cert-manager must be installed)
                        instead of manifests/ (certificates managed by the webhook itself)
  --app-namespace NS    namespace to label istio-injection=enabled and smoke-check (default
                        apisix-mesh-demo; created if missing)
  --smoke-only          skip the install, only run the smoke check
  --uninstall           delete what manifests/ installed (namespace labels are left alone)
  -h, --help            this text
Needs kubectl; Istio itself must be installed for meshed pods to get configuration.
USAGE
}

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
image=""
kustomization="$repo/manifests"
app_ns="apisix-mesh-demo"
smoke_only=false
uninstall=false
default_image="ghcr.io/apisix-mesh/apisix-mesh:0.1.0"
system_ns="apisix-mesh-system"

while [ $# -gt 0 ]; do
  case "$1" in
    --image) image="${2:?--image needs a value}"; shift 2 ;;
    --image=*) image="${1#*=}"; shift ;;
    --cert-manager) kustomization="$repo/manifests/overlays/cert-manager"; shift ;;
    --app-namespace) app_ns="${2:?--app-namespace needs a value}"; shift 2 ;;
    --app-namespace=*) app_ns="${1#*=}"; shift ;;
    --smoke-only) smoke_only=true; shift ;;
    --uninstall) uninstall=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "deploy: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

say() { printf 'deploy: %s\n' "$*"; }
fail() { printf 'deploy: %s\n' "$*" >&2; exit 1; }

command -v kubectl >/dev/null || fail "kubectl is not on PATH"
context="$(kubectl config current-context 2>/dev/null)" || fail "no current kubectl context"
say "context: $context"
kubectl version >/dev/null 2>&1 || fail "cannot reach the cluster of context $context"

render() {
  # The image appears in the Deployment and in the injection ConfigMap (images.mesh): both follow.
  if [ -n "$image" ]; then
    kubectl kustomize "$kustomization" 2>/dev/null | sed "s#${default_image}#${image}#g"
  else
    kubectl kustomize "$kustomization" 2>/dev/null
  fi
}

if $uninstall; then
  say "deleting the webhook configuration first, so pod creation never waits on a webhook that is going away"
  kubectl delete mutatingwebhookconfiguration apisix-mesh-injector --ignore-not-found
  render | kubectl delete --ignore-not-found -f -
  say "uninstalled; pods injected earlier keep their sidecars until they are re-created"
  exit 0
fi

if ! $smoke_only; then
  if [ "$kustomization" != "$repo/manifests" ]; then
    kubectl get crd certificates.cert-manager.io >/dev/null 2>&1 || fail "cert-manager is not installed (no certificates.cert-manager.io CRD)"
  fi
  kubectl get mutatingwebhookconfiguration istio-sidecar-injector >/dev/null 2>&1 \
    || say "warning: no istio-sidecar-injector found; is Istio installed? (revisioned installs name it istio-sidecar-injector-<rev>)"
  say "applying $(basename "$kustomization") ${image:+with image $image}"
  render | kubectl apply -f -
  kubectl -n "$system_ns" rollout status deploy/apisix-mesh-webhook --timeout=180s
  say "waiting for the caBundle to be set"
  for _ in $(seq 1 60); do
    bundle="$(kubectl get mutatingwebhookconfiguration apisix-mesh-injector -o jsonpath='{.webhooks[0].clientConfig.caBundle}')"
    [ -n "$bundle" ] && break
    sleep 2
  done
  [ -n "${bundle:-}" ] || fail "the caBundle of apisix-mesh-injector is still empty: kubectl -n $system_ns logs deploy/apisix-mesh-webhook"
fi

say "labelling namespace $app_ns istio-injection=enabled"
kubectl get namespace "$app_ns" >/dev/null 2>&1 || kubectl create namespace "$app_ns"
kubectl label namespace "$app_ns" istio-injection=enabled --overwrite

say "webhook order (the API server calls configurations in name order; ours must come first):"
kubectl get mutatingwebhookconfigurations -o name | sed 's#.*/##' | LC_ALL=C sort | sed 's/^/  /'

say "smoke check: server-side dry run of a pod in $app_ns (runs the mutating webhooks, creates nothing)"
out="$(kubectl -n "$app_ns" run apisix-mesh-smoke --image=nginx:stable --port=80 --restart=Never --dry-run=server \
  -o jsonpath='{.metadata.annotations.apisix-mesh\.io/status}{"\n"}{.spec.initContainers[*].name} {.spec.containers[*].name}')" \
  || fail "the dry run failed: see 'Troubleshooting' in docs/operations.md"
status="$(printf '%s\n' "$out" | sed -n 1p)"
containers="$(printf '%s\n' "$out" | sed -n 2p)"
say "containers: $containers"
[ -n "$status" ] || fail "the pod was not injected (no apisix-mesh.io/status annotation): see 'A pod did not get the mesh' in docs/operations.md"
case " $containers " in
  *" istio-proxy "*) fail "Istio's injector added istio-proxy as well: check the webhook order above" ;;
esac
say "ok: the pod was injected ($status)"
