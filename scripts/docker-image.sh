#!/usr/bin/env bash
# Builds the distlog image without a registry: the base image from scripts/docker-base.sh, the
# binary from the host's `cargo build --release` (same Debian bookworm glibc as the image), handed
# to the Dockerfile's build stage through a build context that holds only the stripped binary.
#   scripts/docker-image.sh [TAG]          (default distlog:latest)
#   DISTLOG_IMAGE_BIN=target/debug/distlog DISTLOG_IMAGE_PROFILE=debug scripts/docker-image.sh TAG
#                                          (packages that binary instead of building a release one)
# With a registry, plain `docker build -t distlog .` builds the binary in rust:1-slim-bookworm.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-distlog:latest}

scripts/docker-base.sh
if [ -n "${DISTLOG_IMAGE_BIN:-}" ]; then
  # A binary built elsewhere (CI packages the debug binary its tests built, rather than spending
  # ~400 s of CPU on a release build of the same code): the image is labelled as such, and the
  # container tests hold only a release image to the size bound.
  binary=$DISTLOG_IMAGE_BIN
  [ -x "$binary" ] || { echo "docker-image: DISTLOG_IMAGE_BIN=$binary is not an executable" >&2; exit 1; }
  profile=${DISTLOG_IMAGE_PROFILE:-prebuilt}
else
  # Plain rustc: CI exports clippy-driver as the workspace's rustc wrapper for its test build
  # (.ci/run), and the shipped binary must not be compiled by it.
  env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS cargo build --release --bin distlog
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  binary=$target_dir/release/distlog
  profile=release
fi

context=$(mktemp -d "${TMPDIR:-/tmp}/distlog-image.XXXXXX")
trap 'rm -rf "$context"' EXIT
if command -v strip >/dev/null; then
  strip -o "$context/distlog" "$binary"
else
  cp "$binary" "$context/distlog"
fi

revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# DOCKER_BUILDKIT=0: the classic builder, which works without the buildx plugin (BuildKit works
# too where buildx is installed).
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
docker build -f Dockerfile -t "$TAG" \
  --build-arg BUILD_IMAGE=debian:bookworm-slim --build-arg PREBUILT=distlog \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg PROFILE="$profile" \
  "$context"
# The classic builder leaves the build stage behind as a dangling image (the base image plus the
# binary, ~100 MB), one more every run; so does a rebuild, the image that had $TAG before. Remove
# both kinds, and only them: dangling, and labelled by this Dockerfile (`prune` keeps any image a
# container still uses).
for label in io.distlog.stage=build org.opencontainers.image.title=distlog; do
  docker image prune -f --filter "label=$label" | sed -n "s/^Total reclaimed space: /docker-image: dangling $label images removed: /p"
done
echo "docker-image: $TAG is $(docker image inspect -f '{{.Size}}' "$TAG") bytes"
