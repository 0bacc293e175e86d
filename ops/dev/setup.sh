# Sourced by ops/dev/test.sh and ops/dev/demo.sh: the set-up both need on a fresh Debian machine.
#   setup_venv      .venv with the package (strict editable install) and its dev tools
#   setup_prosody   the Debian package `prosody`, installed when missing (its system-wide
#                   server is stopped: ours run on their own ports, with ops/dev/prosody.cfg.lua)
#   setup_ejabberd  the Debian package `ejabberd`, installed when missing (its system-wide
#                   server is stopped and disabled: ours run with ops/dev/ejabberd.yml)
# The caller has cd'ed to the repository root and set `set -euo pipefail`.

log() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

setup_venv() {
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    .venv/bin/python -m pip install -q --disable-pip-version-check -U pip setuptools wheel
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation \
        -e '.[dev,bench]' --config-settings editable_mode=strict
}

setup_prosody() {
    if ! command -v prosody >/dev/null; then
        apt_install prosody
        # The package starts a system-wide server; the tests start their own on other ports.
        as_root sh -c 'command -v service >/dev/null && service prosody stop' >/dev/null 2>&1 || true
    fi
}

setup_ejabberd() {
    # /usr/sbin is not on every PATH.
    if [ ! -x /usr/sbin/ejabberdctl ] && ! command -v ejabberdctl >/dev/null; then
        apt_install ejabberd
        # The package starts a system-wide server holding 5222, 5269, 5280... and an epmd;
        # stop it for good (ours run on free loopback ports, without epmd).
        # (Each command may be missing or fail on a machine without systemd or SysV init.)
        as_root sh -c 'service ejabberd stop; update-rc.d ejabberd disable
            systemctl disable ejabberd' >/dev/null 2>&1 || true
    fi
}
