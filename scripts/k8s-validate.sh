#!/usr/bin/env bash
# Renders every kustomization under deploy/kubernetes with `kubectl kustomize`
# and checks the result against the schemas of named Kubernetes versions with
# kubernetes-validate (strict: unknown fields are errors). Any failure fails
# the script.
#
#   scripts/k8s-validate.sh
#   K8S_VERSIONS="1.31.0 1.34.0" scripts/k8s-validate.sh   # other versions
#   KUBECTL=/path/to/kubectl scripts/k8s-validate.sh
#   scripts/k8s-validate.sh --install-only   # only make the virtualenv (CI, in the background)
#
# kubernetes-validate (which ships the schemas: nothing is downloaded when it
# runs) is installed from PyPI (pinned) into a virtualenv under
# $CARGO_TARGET_DIR/tools (default target/tools), once. kubectl is not
# installed by this script: Debian's kubernetes-client is 1.20, whose
# kustomize (v2) is too old for these files. Without kubectl the script says
# SKIPPED and exits 0.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
KUBERNETES_VALIDATE_VERSION=1.37.0
# The oldest version the manifests are meant for, and the newest the pinned
# kubernetes-validate knows.
read -r -a versions <<<"${K8S_VERSIONS:-1.30.0 1.37.0}"
kubectl="${KUBECTL:-kubectl}"

log() { printf '[k8s-validate %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

started=$(date +%s)
if ! command -v "$kubectl" >/dev/null; then
  log "################################################################"
  log "SKIPPED: kubectl is not installed; the Kubernetes manifests in"
  log "deploy/kubernetes were NOT rendered or validated."
  log "################################################################"
  exit 0
fi

venv="$target_dir/tools/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  log "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
[ "${1:-}" = --install-only ] && exit 0
log "$("$kubectl" version --client 2>/dev/null | tr '\n' ' ')"

work="$(mktemp -d "${TMPDIR:-/tmp}/k8s-validate.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Every directory with a kustomization: deploy/kubernetes itself, base/ and
# each overlay.
mapfile -t dirs < <(cd "$root" && find deploy/kubernetes -name kustomization.yaml -printf '%h\n' | sort)
[ "${#dirs[@]}" -gt 0 ] || { log "no kustomization.yaml under deploy/kubernetes"; exit 1; }

passed=0
failed=0
for dir in "${dirs[@]}"; do
  out="$work/$(echo "$dir" | tr / _).yaml"
  t0=$(date +%s%N)
  if ! "$kubectl" kustomize "$root/$dir" >"$out"; then
    log "FAIL $dir: kubectl kustomize could not render it"
    failed=$((failed + 1))
    continue
  fi
  kinds="$(grep -E '^kind: ' "$out" | sed 's/^kind: //' | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')"
  for version in "${versions[@]}"; do
    if "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$out"; then
      passed=$((passed + 1))
    else
      log "FAIL $dir against Kubernetes $version"
      failed=$((failed + 1))
    fi
  done
  log "$dir: rendered ($kinds), validated against ${versions[*]} in $((($(date +%s%N) - t0) / 1000000)) ms"
done

if [ "$failed" -gt 0 ]; then
  log "FAILED in $(($(date +%s) - started)) s: $failed of $((passed + failed)) checks"
  exit 1
fi
log "done in $(($(date +%s) - started)) s: ${#dirs[@]} kustomizations render and validate against Kubernetes ${versions[*]}"
