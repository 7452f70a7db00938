#!/usr/bin/env bash
# edge-inspect: the one entry script.
#
#   ./deploy.sh demo    set up .venv and run the whole pipeline on synthetic tiles
#   ./deploy.sh test    set up .venv and run the test suite
#   ./deploy.sh setup   only set up .venv (host: training + calibration + edge + dev tools)
#
# The host venv takes torch==2.14.1 with torchvision==0.29.1 (the pair that imports together
# here); they are installed first in their own pip call so nothing pulls a bare torch.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
ROOT=$(pwd)
VENV="$ROOT/.venv"
PYTHON=${PYTHON:-python3}

say() { printf '[deploy] %s\n' "$*"; }
die() { printf 'deploy.sh: error: %s\n' "$*" >&2; exit 1; }

check_python() {
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found: install Python >= 3.11 or set PYTHON=/path/to/python3.11"
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); edge-inspect needs Python >= 3.11 (set PYTHON=...)"
}

setup_host() {
    check_python
    [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
    local pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
    local stamp="$VENV/.edge-inspect-installed"
    local want
    want=$(cat pyproject.toml deploy.sh | sha256sum | cut -c1-16)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say "reusing $VENV (up to date)"
        return
    fi
    if ! "$VENV/bin/python" -c 'import torch, torchvision, sys; sys.exit(0 if (torch.__version__.startswith("2.14.1") and torchvision.__version__.startswith("0.29.1")) else 1)' 2>/dev/null; then
        say "installing torch==2.14.1 torchvision==0.29.1 (a few minutes)"
        "${pip[@]}" install torch==2.14.1 torchvision==0.29.1
    fi
    say "installing edge-inspect[dev] (editable)"
    "${pip[@]}" install -e ".[dev]"
    echo "$want" > "$stamp"
}

ensure_socat() {
    command -v socat >/dev/null && return
    say "installing socat (real pty pairs for the serial tests)"
    apt_install socat || die "socat is missing: install it (sudo apt-get install socat); the serial tests need real pty pairs"
}

apt_install() {  # apt_install PKG...: install Debian packages when root with apt, else return 1
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
    if [ ! -f /var/lib/apt/.edge-inspect-updated ]; then
        apt-get update -qq >/dev/null && touch /var/lib/apt/.edge-inspect-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_avr() {  # optional: the firmware build test compiles for the ATmega328P when avr-gcc exists
    command -v avr-gcc >/dev/null && return
    say "installing gcc-avr (the bridge firmware's build check)"
    apt_install gcc-avr avr-libc binutils-avr || say "avr-gcc unavailable: the firmware build test will be skipped"
}

ensure_cc() {
    command -v gcc >/dev/null || command -v cc >/dev/null \
        || die "no C compiler: install gcc (sudo apt-get install gcc); the bridge firmware core is compiled in the tests"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    setup)
        setup_host ;;
    demo)
        setup_host
        export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
        "$VENV/bin/python" -m calibration.demo "$@" ;;
    test)
        setup_host
        ensure_socat
        ensure_cc
        ensure_avr
        "$VENV/bin/python" -m pytest "$@" ;;
    ""|-h|--help|help)
        sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' ;;
    *)
        die "unknown command '$cmd': use demo, test or setup (./deploy.sh --help)" ;;
esac
