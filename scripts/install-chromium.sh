#!/usr/bin/env bash
# Make Debian's `chromium` available for the browser test (tests/test_web_browser.py drives it
# through the playwright Python package with executable_path=/usr/bin/chromium; playwright's own
# browser download cannot work on machines that reach only package registries).
#
# Idempotent and quiet: when chromium already runs it prints nothing and exits 0 at once.
# Otherwise it installs the Debian package `chromium` with apt-get (running `apt-get update` first
# only when the package is unknown to apt), as root or through passwordless sudo.
# Any failure exits non-zero with one line saying what to do, plus the tail of apt's log.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

have_chromium() {
    [ -x "$CHROMIUM" ] && "$CHROMIUM" --version >/dev/null 2>&1
}

fail() {
    echo "install-chromium: $*" >&2
    exit 1
}

if have_chromium; then
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || fail "$CHROMIUM not found and apt-get is unavailable; install Chromium so that \
$CHROMIUM runs"

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    as_root=(sudo -n)
else
    fail "$CHROMIUM not found; run this script as root (or with passwordless sudo) so it can \
apt-get install chromium"
fi

log="$(mktemp -t install-chromium.XXXXXX.log)"
trap 'rm -f "$log"' EXIT

apt_options=(-q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)

# A fresh container has empty package lists: update only then, so a rerun stays offline-quick.
if ! apt-cache show chromium >/dev/null 2>&1; then
    if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get "${apt_options[@]}" update >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        fail "apt-get update failed (log above)"
    fi
fi
if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_options[@]}" install --no-install-recommends chromium >>"$log" 2>&1; then
    tail -n 20 "$log" >&2
    fail "apt-get install chromium failed (log above)"
fi

have_chromium || fail "apt-get installed chromium but $CHROMIUM still does not run"
echo "install-chromium: $("$CHROMIUM" --version 2>/dev/null | head -n 1)"
