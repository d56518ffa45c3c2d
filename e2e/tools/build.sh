#!/usr/bin/env bash
# Builds the real test tools from Go modules into $MESHSEC_CACHE/bin, once.
# Each tool is stamped with its version; a stamped tool is not rebuilt.
# Usage: e2e/tools/build.sh [tool...]   (default: all)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
CACHE=${MESHSEC_CACHE:-$HOME/.cache/meshsec}
BIN=$CACHE/bin
SRC=$CACHE/src
LOGS=$CACHE/logs
mkdir -p "$BIN" "$SRC" "$LOGS"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

die() { echo "meshsec-tools: $*" >&2; exit 1; }
command -v go >/dev/null || die "go is not installed (needed to build the test tools)"

stamped() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { echo "$2" >"$BIN/.$1.version"; }

# A throwaway module that requires k8s.io/kubernetes and replaces every staging
# module with its published v0.<minor>.<patch> tag (the repo's go.mod points
# them at ./staging, which `go install` cannot follow).
k8s_module() {
  local dir=$SRC/kubernetes-$KUBERNETES_VERSION
  [ -f "$dir/.ready" ] && { echo "$dir"; return; }
  mkdir -p "$dir"
  local modfile staging_ver godebug
  modfile=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  [ -f "$modfile" ] || die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION"
  staging_ver="v0.${KUBERNETES_VERSION#v1.}"
  godebug=$(grep -m1 '^godebug ' "$modfile" || true)
  {
    echo "module meshsec.local/k8s-tools"
    echo
    echo "go $(sed -n 's/^go //p' "$modfile")"
    [ -n "$godebug" ] && echo "$godebug"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    grep -E '^\s+k8s.io/[a-z0-9-]+ => ./staging/' "$modfile" |
      awk -v v="$staging_ver" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$dir" && go mod tidy -e >"$LOGS/k8s-mod.log" 2>&1) ||
    die "go mod tidy for kubernetes failed (log: $LOGS/k8s-mod.log)"
  touch "$dir/.ready"
  echo "$dir"
}

build_k8s() {
  local name=$1
  stamped "$name" "$KUBERNETES_VERSION" && return
  local dir minor major=1 commit ld
  dir=$(k8s_module)
  minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
  commit=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"Hash": "\(.*\)",/\1/p')
  ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld="$ld -X $pkg.gitCommit=$commit -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "meshsec-tools: building $name $KUBERNETES_VERSION (log: $LOGS/$name.log)" >&2
  (cd "$dir" && go build -tags selinux,notest,grpcnotrace -ldflags "$ld" -o "$BIN/$name" "k8s.io/kubernetes/cmd/$name") \
    >"$LOGS/$name.log" 2>&1 || die "building $name failed (log: $LOGS/$name.log)"
  stamp "$name" "$KUBERNETES_VERSION"
}

# A plain module that requires $mod@$ver and builds package $pkg.
build_plain() {
  local name=$1 mod=$2 ver=$3 pkg=$4 ld=${5:-"-s -w"}
  stamped "$name" "$ver" && return
  local dir=$SRC/$name-$ver
  mkdir -p "$dir"
  echo "meshsec-tools: building $name $ver (log: $LOGS/$name.log)" >&2
  (
    cd "$dir"
    [ -f go.mod ] || go mod init "meshsec.local/$name" >/dev/null 2>&1
    go get "$pkg@$ver" && go build -ldflags "$ld" -o "$BIN/$name" "$pkg"
  ) >"$LOGS/$name.log" 2>&1 || die "building $name failed (log: $LOGS/$name.log)"
  stamp "$name" "$ver"
}

build_etcd() {
  build_plain etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3
}
build_helm() {
  local minor
  minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
  build_plain helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
}
build_cni() {
  build_plain bridge github.com/containernetworking/plugins "$CNI_PLUGINS_VERSION" github.com/containernetworking/plugins/plugins/main/bridge
  build_plain host-local github.com/containernetworking/plugins "$CNI_PLUGINS_VERSION" github.com/containernetworking/plugins/plugins/ipam/host-local
  build_plain loopback github.com/containernetworking/plugins "$CNI_PLUGINS_VERSION" github.com/containernetworking/plugins/plugins/main/loopback
  build_plain cnitool github.com/containernetworking/cni "$CNI_VERSION" github.com/containernetworking/cni/cnitool
}

tools=("$@")
[ ${#tools[@]} -eq 0 ] && tools=(etcd kube-apiserver kube-controller-manager kubectl helm cni)
for t in "${tools[@]}"; do
  case $t in
    etcd) build_etcd ;;
    kube-apiserver | kube-controller-manager | kubectl) build_k8s "$t" ;;
    helm) build_helm ;;
    cni) build_cni ;;
    *) die "unknown tool: $t" ;;
  esac
done
