#!/usr/bin/env bash
# Build the embedded cluster's Go programs into bin/:
#
#   wasmop-controlplane     etcd, kube-apiserver, controller-manager, scheduler, kubectl (./)
#   wasmop-metrics-server   sigs.k8s.io/metrics-server (./metrics-server/, its own module)
#   wasmop-registry         CNCF distribution, the OCI registry (./registry/, its own module)
#
# metrics-server and the registry are separate modules because minimal version selection
# would otherwise upgrade dozens of modules the control plane shares with them (etcd's
# client among them). Each binary is skipped when it is newer than every input of its
# module. Go's module and build caches stay in their default places, so a rebuild on the
# same machine reuses earlier work. Measured on two cores with an empty GOCACHE: the
# control plane compiles in about 6-7 minutes, metrics-server and the registry add
# about 3 minutes (see README.md); a cached build takes well under a minute.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is not installed; install Go >= 1.26.4 (https://go.dev/doc/install, or 'conda install -c conda-forge go' with environment.yml)" >&2
  exit 1
fi

build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# The version a module requires of a dependency, from its go.mod.
required_version() { awk -v m="$2" '$1 == m { print $2; exit }' "$1/go.mod"; }

# build NAME DIR TAGS LDFLAGS EXTRA_INPUT...: go build DIR into bin/NAME unless up to date.
build() {
  local name=$1 dir=$2 tags=$3 ldflags=$4
  shift 4
  local out="bin/$name"
  local inputs=("$dir/go.mod" "$dir/go.sum" build.sh "$dir"/*.go "$@")
  if [[ -x "$out" ]]; then
    local stale=0 f
    for f in "${inputs[@]}"; do
      [[ "$f" -nt "$out" ]] && stale=1 && break
    done
    if [[ $stale == 0 ]]; then
      echo "controlplane: $out is up to date"
      return 0
    fi
  fi
  echo "controlplane: building $name"
  mkdir -p bin
  local start
  start=$(date +%s)
  (cd "$dir" && go build -tags="$tags" -ldflags "$ldflags" -o "$OLDPWD/$out.tmp" .)
  mv "$out.tmp" "$out"
  echo "controlplane: built $out in $(( $(date +%s) - start )) s"
}

k8s_version=$(cat K8S_VERSION)
etcd_version=$(cat ETCD_VERSION)
minor=${k8s_version#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${k8s_version}"
  ldflags+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
done
echo "controlplane: Kubernetes ${k8s_version} + etcd ${etcd_version} (first build: about 7 min on 2 cores)"
build wasmop-controlplane . selinux,notest "$ldflags" K8S_VERSION ETCD_VERSION

ms_version=$(required_version metrics-server sigs.k8s.io/metrics-server)
pkg=k8s.io/client-go/pkg/version
build wasmop-metrics-server metrics-server "" \
  "-s -w -X ${pkg}.gitVersion=${ms_version} -X ${pkg}.buildDate=${build_date}"

registry_version=$(required_version registry github.com/distribution/distribution/v3)
build wasmop-registry registry "" \
  "-s -w -X github.com/distribution/distribution/v3/version.version=${registry_version}"
