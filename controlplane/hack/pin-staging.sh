#!/usr/bin/env bash
# Rewrite go.mod so every k8s.io staging module that k8s.io/kubernetes requires at v0.0.0
# is pinned to the matching published v0.<minor>.<patch>. Run after changing K8S_VERSION.
set -euo pipefail
cd "$(dirname "$0")/.."
k8s_version=$(cat K8S_VERSION)
staging_version="v0.${k8s_version#v1.}"
upstream_mod=$(go mod download -json "k8s.io/kubernetes@${k8s_version}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
staging=$(awk '/^\t*k8s\.io\/[a-z-]+ v0\.0\.0$/ {print $1}' "$upstream_mod" | sort -u)
go mod edit -require "k8s.io/kubernetes@${k8s_version}"
for module in $staging; do
  go mod edit -replace "${module}=${module}@${staging_version}"
done
go mod tidy
echo "pinned $(echo "$staging" | wc -w) staging modules to ${staging_version}"
