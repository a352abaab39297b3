#!/usr/bin/env bash
# Make `prometheus` and `promtool` available for the test suite (tests/prometheus_helper.py starts a
# real Prometheus; tests/test_deploy.py runs promtool on deploy/).
#
# Idempotent and quiet: when both binaries already run it prints nothing and exits 0 at once.
# Otherwise it installs the Debian package `prometheus` (which ships both) with apt-get, as root or
# through passwordless sudo, without recommends and without starting the service: CI machines and
# containers have no init to start it with, and the tests start their own server anyway.
# Any failure exits non-zero with one line saying what to do, plus the tail of apt's log.
set -euo pipefail

have_binaries() {
    command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 \
        && prometheus --version >/dev/null 2>&1 && promtool --version >/dev/null 2>&1
}

fail() {
    echo "install-prometheus: $*" >&2
    exit 1
}

if have_binaries; then
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || fail "prometheus/promtool not found and apt-get is unavailable; install Prometheus \
(https://prometheus.io/download/) and put prometheus and promtool on PATH"

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    as_root=(sudo -n)
else
    fail "prometheus/promtool not found; run this script as root (or with passwordless sudo) \
so it can apt-get install prometheus"
fi

log="$(mktemp -t install-prometheus.XXXXXX.log)"
created_policy=""
cleanup() {
    if [ -n "$created_policy" ]; then
        "${as_root[@]}" rm -f /usr/sbin/policy-rc.d
    fi
    rm -f "$log"
}
trap cleanup EXIT

# policy-rc.d exiting 101 tells invoke-rc.d (called by the package's postinst) not to start the
# daemon. Docker images usually have one already; only add (and later remove) it when absent.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${as_root[@]}" chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
fi

apt_options=(-q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
export DEBIAN_FRONTEND=noninteractive

if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_options[@]}" update >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    fail "apt-get update failed (log above)"
fi
if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_options[@]}" install --no-install-recommends prometheus >>"$log" 2>&1; then
    tail -n 20 "$log" >&2
    fail "apt-get install prometheus failed (log above)"
fi

have_binaries || fail "apt-get installed prometheus but prometheus/promtool still do not run"
echo "install-prometheus: $(prometheus --version 2>&1 | head -n 1)"
