#!/usr/bin/env bash
# Creates the base image the Dockerfile's runtime stage names, debian:bookworm-slim, without a
# registry: debootstrap a minimal Debian bookworm from the machine's apt mirror, trim it the way
# the official slim image is trimmed, and `docker import` it under that tag. Skips all of it when
# the tag already exists. Needs root (debootstrap) and a working `docker`.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${DISTLOG_BASE_IMAGE:-debian:bookworm-slim}
if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "docker-base: $TAG exists; nothing to do"
  exit 0
fi

command -v debootstrap >/dev/null || { apt-get update && apt-get install -y --no-install-recommends debootstrap; }

# The mirror apt already uses (deb822 .sources or one-line .list), else Debian's.
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}' | grep -v -- '-security' | head -n1 || true)
fi
if [ -z "$mirror" ]; then
  mirror=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' | grep -v -- '-security' | head -n1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

root=$(mktemp -d "${TMPDIR:-/tmp}/distlog-rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
echo "docker-base: debootstrap bookworm (minbase) from $mirror"
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null

# Trim as the slim images do: no docs, man pages, locales, apt lists or caches.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
  "$root"/usr/share/locale/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* \
  "$root"/var/cache/debconf/*-old "$root"/var/log/* "$root"/tmp/* "$root"/debootstrap
# apt inside the image uses the same mirror.
echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"

tar --numeric-owner -C "$root" -c . | docker import \
  -c 'CMD ["bash"]' -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -m "debootstrap --variant=minbase bookworm, trimmed (scripts/docker-base.sh)" - "$TAG" >/dev/null
echo "docker-base: imported $TAG ($(docker image inspect -f '{{.Size}}' "$TAG") bytes)"
