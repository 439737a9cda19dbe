#!/usr/bin/env bash
# The web console (/ui) in a real browser: scripts/browser-tests.py drives Debian's Chromium
# (chromium, chromium-driver) with Selenium against real distlog processes on ephemeral ports.
#
#   scripts/browser-tests.sh                       # builds the debug binary first
#   DISTLOG_BIN=target/debug/distlog scripts/browser-tests.sh
#   SCREENSHOT_DIR=shots scripts/browser-tests.sh  # where screenshots go [target/ui-screenshots]
#   scripts/browser-tests.sh --install-only        # only make the virtualenv (CI, in the background)
#
# Selenium is installed from PyPI (pinned) into a virtualenv under $CARGO_TARGET_DIR/tools
# (default target/tools), once. Without Chromium and its driver the tests are SKIPPED, loudly.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
SELENIUM_VERSION=4.51.0

log() { printf '[browser-tests %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

venv="$target_dir/tools/selenium-$SELENIUM_VERSION"
install_selenium() {
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
    log "installing selenium==$SELENIUM_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "selenium==$SELENIUM_VERSION"
  fi
}
if [ "${1:-}" = --install-only ]; then
  install_selenium
  exit 0
fi

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "=================================================================="
  echo "SKIPPED: browser tests of the web console: no chromium and chromedriver"
  echo "         (apt-get install chromium chromium-driver)"
  echo "=================================================================="
  exit 0
fi
install_selenium

if [ -z "${DISTLOG_BIN:-}" ]; then
  (cd "$root" && cargo build --quiet --bin distlog)
  export DISTLOG_BIN="$target_dir/debug/distlog"
fi
# Selenium Manager must not look for browsers or drivers on the internet: Debian's are used.
export SE_OFFLINE=true
log "$(chromium --version 2>/dev/null | head -n 1); binary $DISTLOG_BIN"
exec "$venv/bin/python" "$root/scripts/browser-tests.py"
