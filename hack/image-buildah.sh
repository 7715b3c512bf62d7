#!/usr/bin/env bash
# Assembles a runnable operator image from a built binary with buildah, without pulling a base image
# (no registry is reachable here), then runs it with --help as its nonroot user.
#
#   hack/image-buildah.sh [BINARY] [IMAGE]     (defaults: the release binary, localhost/ecs-defender-operator:dev)
#
# The image holds what the Dockerfile's distroless base provides and the binary needs: the binary,
# the shared libraries it links (glibc, libgcc_s, ...; from this machine, which builds it), the CA
# roots, and the user 65532:65532 (the chart's podSecurityContext). The Dockerfile stays the way to
# build the published image; this proves the binary runs in such an image.
# Containers run with chroot isolation: an OCI runtime (crun) needs cgroups this machine's nested
# setup does not offer. Storage is vfs, under $CACHE/buildah, so nothing is left in system storage.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ecs-defender-operator
BIN=${1:-${CARGO_TARGET_DIR:-$CACHE/target}/release/ecs-defender-operator}
IMAGE=${2:-localhost/ecs-defender-operator:dev}
USER_ID=65532:65532

command -v buildah >/dev/null || { echo "buildah not found: apt-get install --no-install-recommends buildah" >&2; exit 1; }
[ -x "$BIN" ] || { echo "no binary at $BIN (make release)" >&2; exit 1; }

BUILDAH=(buildah --storage-driver vfs --root "$CACHE/buildah/root" --runroot "$CACHE/buildah/run")
ctr=$("${BUILDAH[@]}" from scratch)
trap '"${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT

"${BUILDAH[@]}" copy --quiet "$ctr" "$BIN" /usr/local/bin/ecs-defender-operator >/dev/null
# The shared libraries the binary links, at the paths the dynamic loader looks for them.
for lib in $(ldd "$BIN" | grep -o '/[^ ]*'); do
  "${BUILDAH[@]}" copy --quiet "$ctr" "$(readlink -f "$lib")" "$lib" >/dev/null
done
"${BUILDAH[@]}" copy --quiet "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
"${BUILDAH[@]}" config \
  --user "$USER_ID" \
  --entrypoint '["/usr/local/bin/ecs-defender-operator"]' \
  --port 8080 \
  --label org.opencontainers.image.title=ecs-defender-operator \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  "$ctr"
"${BUILDAH[@]}" commit --quiet "$ctr" "$IMAGE" >/dev/null
# The previous build's image, untagged now, would pile up in the cache with every run.
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true

# Run it: the image's own user, the binary's --help.
out=$("${BUILDAH[@]}" run --isolation chroot --user "$USER_ID" "$ctr" -- /usr/local/bin/ecs-defender-operator --help)
grep -q -- "--leader-elect" <<<"$out" || { echo "unexpected --help output:" >&2; echo "$out" >&2; exit 1; }
user=$("${BUILDAH[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' "$IMAGE")
[ "$user" = "$USER_ID" ] || { echo "image user is $user, want $USER_ID" >&2; exit 1; }
echo "image $IMAGE ($("${BUILDAH[@]}" images --noheading --format '{{.ID}}' "$IMAGE")) runs as $user: --help OK"
