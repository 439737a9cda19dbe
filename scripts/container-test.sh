#!/usr/bin/env bash
# The container tests: builds the image without a registry (scripts/docker-image.sh), then runs
# tests/containers.rs against it: the image's settings, deploy/compose.yaml's three-node cluster
# written and read through every node, `docker kill` of the leader under load, a node cut off with
# `docker network disconnect`, and a rolling `compose restart` under load.
# Without a Docker engine it says so loudly and exits 0 (DISTLOG_REQUIRE_DOCKER=1: exits 1).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
  echo "=================================================================="
  echo "SKIPPED: container tests (no Docker engine answers 'docker info')"
  echo "=================================================================="
  [ "${DISTLOG_REQUIRE_DOCKER:-0}" = 1 ] && exit 1
  exit 0
fi

if [ -z "${DISTLOG_COMPOSE:-}" ]; then
  if docker compose version >/dev/null 2>&1; then
    DISTLOG_COMPOSE="docker compose"
  elif command -v docker-compose >/dev/null; then
    DISTLOG_COMPOSE="docker-compose"
  else
    echo "container tests: neither 'docker compose' nor 'docker-compose' is installed" >&2
    exit 1
  fi
fi
export DISTLOG_COMPOSE
export DISTLOG_IMAGE=${DISTLOG_IMAGE:-distlog:test}

start=$(date +%s)
scripts/docker-image.sh "$DISTLOG_IMAGE"
echo "container tests: image $DISTLOG_IMAGE built in $(( $(date +%s) - start )) s; compose is '$DISTLOG_COMPOSE'"
# DISTLOG_CONTAINERS_TEST_BIN: the test binary, already built (CI runs it beside `cargo test`,
# which holds cargo's lock on the build directory for its whole run).
if [ -n "${DISTLOG_CONTAINERS_TEST_BIN:-}" ]; then
  "$DISTLOG_CONTAINERS_TEST_BIN" --ignored --test-threads=1 "$@"
else
  cargo test --test containers -- --ignored --test-threads=1 "$@"
fi
echo "container tests: done in $(( $(date +%s) - start )) s"
