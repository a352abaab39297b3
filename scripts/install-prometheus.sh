#!/usr/bin/env bash
# Make `prometheus` and `promtool` available for the test suite (tests/prometheus_helper.py starts a
# real Prometheus; tests/test_deploy.py runs promtool on deploy/).
#
# Idempotent and quiet: when both binaries already run it prints nothing and exits 0 at once.
# Otherwise it installs the Debian package `prometheus` (which ships both; scripts/apt-install.sh)
# without starting the service: CI machines and containers have no init to start it with, and
# the tests start their own server anyway. Any failure exits non-zero with one line saying what
# to do, plus the tail of apt's log.
set -euo pipefail

SCRIPT=install-prometheus
# shellcheck source=apt-install.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh"

# PROMETHEUS_BIN / PROMTOOL_BIN name other builds, as they do for the tests.
PROMETHEUS=${PROMETHEUS_BIN:-prometheus}
PROMTOOL=${PROMTOOL_BIN:-promtool}

have_binaries() {
    command -v "$PROMETHEUS" >/dev/null 2>&1 && command -v "$PROMTOOL" >/dev/null 2>&1 \
        && "$PROMETHEUS" --version >/dev/null 2>&1 && "$PROMTOOL" --version >/dev/null 2>&1
}

if have_binaries; then
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || fail "prometheus/promtool not found and apt-get is unavailable; install Prometheus \
(https://prometheus.io/download/) and put prometheus and promtool on PATH"
use_root prometheus

# policy-rc.d exiting 101 tells invoke-rc.d (called by the package's postinst) not to start the
# daemon. Docker images usually have one already; only add (and later remove) it when absent.
created_policy=""
remove_policy() {
    if [ -n "$created_policy" ]; then
        "${as_root[@]}" rm -f /usr/sbin/policy-rc.d
    fi
}
trap remove_policy EXIT
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${as_root[@]}" chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
fi

apt_install prometheus

have_binaries || fail "apt-get installed prometheus but prometheus/promtool still do not run"
echo "$SCRIPT: $(prometheus --version 2>&1 | head -n 1)"
