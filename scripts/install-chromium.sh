#!/usr/bin/env bash
# Make Debian's `chromium` available for the browser test (tests/test_web_browser.py drives it
# through the playwright Python package with executable_path=/usr/bin/chromium, or $CHROMIUM_BIN
# when set; playwright's own browser download cannot work on machines that reach only package
# registries).
#
# Idempotent and quiet: when chromium already runs it prints nothing and exits 0 at once.
# Otherwise it installs the Debian package `chromium` (scripts/apt-install.sh). Any failure exits
# non-zero with one line saying what to do, plus the tail of apt's log.
set -euo pipefail

SCRIPT=install-chromium
# shellcheck source=apt-install.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh"

CHROMIUM=${CHROMIUM_BIN:-/usr/bin/chromium}

have_chromium() {
    [ -x "$CHROMIUM" ] && "$CHROMIUM" --version >/dev/null 2>&1
}

if have_chromium; then
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || fail "$CHROMIUM not found and apt-get is unavailable; install Chromium so that \
$CHROMIUM runs"
use_root chromium
apt_install chromium

have_chromium || fail "apt-get installed chromium but $CHROMIUM still does not run"
echo "$SCRIPT: $("$CHROMIUM" --version 2>/dev/null | head -n 1)"
