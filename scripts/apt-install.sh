# Sourced by scripts/install-*.sh: install one Debian package with apt-get, as root or through
# passwordless sudo, quietly, keeping apt's log only to show its tail when something fails.
# Before sourcing, the caller sets SCRIPT (its name, for messages); it calls use_root before
# apt_install.
#
# Why one helper: both installers need the same root check, lock timeout and failure report, and
# a copy drifts. `apt-get update` runs only when the package is unknown or its install fails
# (stale lists name a version the mirror no longer has), so a rerun on a ready machine stays
# offline-quick.

fail() {
    echo "$SCRIPT: $*" >&2
    exit 1
}

# as_root: the command prefix that runs apt-get as root (empty when already root).
use_root() {
    local package=$1
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        as_root=(sudo -n)
    else
        fail "run this script as root (or with passwordless sudo) so it can apt-get install \
$package"
    fi
}

apt_install() {
    local package=$1 log
    log="$(mktemp -t "$SCRIPT.XXXXXX.log")"
    local apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive
               apt-get -q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
    if apt-cache show "$package" >/dev/null 2>&1 \
            && "${apt[@]}" install --no-install-recommends "$package" >"$log" 2>&1; then
        rm -f "$log"
        return 0
    fi
    if ! "${apt[@]}" update >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -f "$log"
        fail "apt-get update failed (log above)"
    fi
    if ! "${apt[@]}" install --no-install-recommends "$package" >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -f "$log"
        fail "apt-get install $package failed (log above)"
    fi
    rm -f "$log"
}
