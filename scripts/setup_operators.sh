#!/usr/bin/env bash
# Install wasmop on the cluster KUBECONFIG points at: CRDs, kopf peering, RBAC, the default
# WasmRuntime, then the operator and gateway Deployments. Idempotent (server-side apply).
#
#   KUBECONFIG=~/.kube/config scripts/setup_operators.sh        # a real cluster
#   eval "$(wasmop cluster env)"; scripts/setup_operators.sh     # the embedded one: the same
#       manifests; 'cluster up' applied them already, and its system node runs the two Pods
#       (the wasmop/operator image as host processes of the installed package)
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v kubectl >/dev/null 2>&1; then
  kubectl=(kubectl)
elif [[ -x .venv/bin/wasmop ]]; then
  kubectl=(.venv/bin/wasmop kubectl)
else
  echo "error: no kubectl: install kubectl, or run 'make venv controlplane' to use 'wasmop kubectl'" >&2
  exit 1
fi
if [[ -z "${KUBECONFIG:-}" && ! -f "$HOME/.kube/config" ]]; then
  echo "error: set KUBECONFIG to the cluster to install on" >&2
  exit 1
fi

config=operator/config
echo "==> CRDs"
"${kubectl[@]}" apply --server-side -f "$config/crds/wasmruntimes.yaml" -f "$config/crds/wasmfunctions.yaml" \
  -f <(sed -n '1,/^---$/p' "$config/crds/kopf-peering.yaml" | sed '$d')
"${kubectl[@]}" wait --for=condition=Established --timeout=60s \
  crd/wasmruntimes.operators.bits-dissertation.io crd/wasmfunctions.operators.bits-dissertation.io \
  crd/clusterkopfpeerings.kopf.dev
echo "==> peering, RBAC and the default WasmRuntime"
"${kubectl[@]}" apply --server-side -f "$config/crds/kopf-peering.yaml" -f "$config/rbac/" \
  -f "$config/crds/default-runtime.yaml"

if [[ "${WASMOP_SKIP_DEPLOYMENTS:-}" != "1" ]]; then
  echo "==> operator and gateway"
  # --force-conflicts: this script owns what it applies, also where another installer
  # (the embedded cluster's bootstrap, an earlier wasmop) applied the same manifest.
  "${kubectl[@]}" apply --server-side --force-conflicts -f "$config/operators/operator.yaml"
  for deployment in wasmop-operator wasmop-gateway; do
    "${kubectl[@]}" -n wasm-operators rollout status "deployment/$deployment" --timeout=120s || true
  done
fi

echo
echo "Check the installation:"
echo "  kubectl get pods -n wasm-operators"
"${kubectl[@]}" get pods -n wasm-operators || true
echo "  kubectl get crds | grep wasm"
"${kubectl[@]}" get crds | grep wasm || true
