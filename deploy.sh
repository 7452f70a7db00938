#!/usr/bin/env bash
# edge-inspect: the one entry script.
#
#   ./deploy.sh demo    set up .venv and run the whole pipeline on synthetic tiles
#   ./deploy.sh test    set up .venv and run the test suite
#   ./deploy.sh setup   only set up .venv (host: training + calibration + edge + dev tools)
#   ./deploy.sh install [--root DIR] --model tile.xml [--camera /dev/video0] [--serial /dev/ttyUSB0]
#                       [--plc URL] [--user NAME] [--watchdog-sec N]
#                       edge PC: /opt/edge-inspect (venv of the edge extra only, no torch), the
#                       model, /etc/edge-inspect/config.toml and a hardened systemd unit;
#                       --root stages everything under DIR (no user, no systemctl)
#   ./deploy.sh uninstall [--root DIR] [--purge]
#                       reverse install; logs and evidence stay unless --purge
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

ensure_systemd_analyze() {
    command -v systemd-analyze >/dev/null && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing systemd (systemd-analyze verify for the unit test)"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
    else
        die "systemd-analyze is missing: install systemd (sudo apt-get install systemd); the unit is verified in the tests"
    fi
}

# ---------------------------------------------------------------- edge install / uninstall
SERVICE=edge-inspect

install_paths() {  # $1: staging root ("" for the real system)
    local r=$1
    PREFIX=/opt/edge-inspect; CONF_DIR=/etc/edge-inspect; UNIT_DIR=/etc/systemd/system
    LOG_DIR=/var/log/edge-inspect; ARCHIVE_DIR=/var/lib/edge-inspect/archive
    R_PREFIX=$r$PREFIX; R_CONF=$r$CONF_DIR; R_UNIT=$r$UNIT_DIR; R_LOG=$r$LOG_DIR; R_ARCHIVE=$r$ARCHIVE_DIR
}

subst() {  # template -> file, replacing @KEY@ with the variables below
    sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@CONFIG@|$CONF_DIR/config.toml|g" -e "s|@MODEL@|$PREFIX/model/$MODEL_NAME|g" \
        -e "s|@CAMERA@|$CAMERA|g" -e "s|@CAMERA_DEV@|$CAMERA_DEV|g" -e "s|@SERIAL_DEV@|$SERIAL_DEV|g" \
        -e "s|@PLC@|$PLC|g" -e "s|@USER@|$SVC_USER|g" -e "s|@WATCHDOG_SEC@|$WATCHDOG_SEC|g" \
        -e "s|@LOG_DIR@|$LOG_DIR|g" -e "s|@ARCHIVE_DIR@|$ARCHIVE_DIR|g" "$1" > "$2"
}

edge_install() {
    local stage="" model="" ; CAMERA=/dev/video0; SERIAL_DEV=/dev/ttyUSB0; PLC=""; SVC_USER=edge-inspect; WATCHDOG_SEC=30
    while [ $# -gt 0 ]; do
        case "$1" in
            --root) stage=${2:?--root needs a folder}; shift 2 ;;
            --model) model=${2:?--model needs an .xml}; shift 2 ;;
            --camera) CAMERA=${2:?}; shift 2 ;;
            --serial) SERIAL_DEV=${2:?}; shift 2 ;;
            --plc) PLC=${2:?}; shift 2 ;;
            --user) SVC_USER=${2:?}; shift 2 ;;
            --watchdog-sec) WATCHDOG_SEC=${2:?}; shift 2 ;;
            *) die "install: unknown option '$1' (see ./deploy.sh --help)" ;;
        esac
    done
    [ -n "$model" ] || die "install: --model tile.xml is required (the IR written by edge-calibrate)"
    [ -f "$model" ] || die "install: model $model not found"
    [ -f "${model%.*}.bin" ] || die "install: model weights ${model%.*}.bin not found next to $model"
    [ -n "$PLC" ] || PLC="bridge:$SERIAL_DEV"
    case "$CAMERA" in /dev/*) CAMERA_DEV=$CAMERA ;; *[!0-9]*|"") CAMERA_DEV=/dev/video0 ;; *) CAMERA_DEV=/dev/video$CAMERA ;; esac
    if [ -n "$stage" ]; then
        mkdir -p "$stage"; stage=$(cd "$stage" && pwd)
    elif [ "$(id -u)" != 0 ]; then
        die "install: run as root (sudo ./deploy.sh install ...), or stage with --root DIR"
    fi
    check_python
    install_paths "$stage"
    MODEL_NAME=$(basename "$model")
    say "installing edge-inspect into ${stage:-/}$PREFIX"
    mkdir -p "$R_PREFIX/model" "$R_PREFIX/docs" "$R_CONF" "$R_UNIT" "$R_LOG" "$R_ARCHIVE"
    [ -x "$R_PREFIX/venv/bin/python" ] || "$PYTHON" -m venv "$R_PREFIX/venv"
    say "installing the edge extra (openvino, opencv-python-headless, numpy, pyserial; no torch)"
    "$R_PREFIX/venv/bin/python" -m pip install -q --disable-pip-version-check ${EDGE_PIP_ARGS:-} "$ROOT[edge]" \
        || die "install: pip could not install the edge extra into $R_PREFIX/venv"
    if "$R_PREFIX/venv/bin/python" -c 'import importlib.util, sys; sys.exit(0 if importlib.util.find_spec("torch") else 1)'; then
        die "install: torch ended up in the edge venv; the edge install must not pull it"
    fi
    cp "$model" "$R_PREFIX/model/$MODEL_NAME"
    cp "${model%.*}.bin" "$R_PREFIX/model/${MODEL_NAME%.*}.bin"
    [ -f docs/edge-runtime.md ] && cp docs/edge-runtime.md "$R_PREFIX/docs/"
    if [ -f "$R_CONF/config.toml" ]; then
        subst deploy/config.toml.in "$R_CONF/config.toml.new"
        say "kept the existing $CONF_DIR/config.toml; the new defaults are in config.toml.new"
    else
        subst deploy/config.toml.in "$R_CONF/config.toml"
    fi
    subst deploy/edge-inspect.service.in "$R_UNIT/$SERVICE.service"
    chmod 644 "$R_UNIT/$SERVICE.service" "$R_CONF/config.toml"
    printf '%s\n' "$PREFIX" "$CONF_DIR/config.toml" "$CONF_DIR/config.toml.new" "$UNIT_DIR/$SERVICE.service" > "$R_PREFIX/.install-manifest"
    if [ -z "$stage" ]; then
        if ! id "$SVC_USER" >/dev/null 2>&1; then
            useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$SVC_USER"
            echo "user:$SVC_USER" >> "$R_PREFIX/.install-manifest"
        fi
        usermod -a -G video,dialout "$SVC_USER"
        chown -R "$SVC_USER:$SVC_USER" "$LOG_DIR" "$ARCHIVE_DIR"
        chmod 750 "$LOG_DIR" "$ARCHIVE_DIR"
        if [ -d /run/systemd/system ]; then
            systemctl daemon-reload
            systemctl enable "$SERVICE.service"
            say "enabled $SERVICE.service; start it with: systemctl start $SERVICE"
        fi
    fi
    say "installed; check the config with: $PREFIX/venv/bin/edge-inspect --config $CONF_DIR/config.toml --check-config"
}

edge_uninstall() {
    local stage="" purge=0
    while [ $# -gt 0 ]; do
        case "$1" in
            --root) stage=${2:?--root needs a folder}; shift 2 ;;
            --purge) purge=1; shift ;;
            *) die "uninstall: unknown option '$1'" ;;
        esac
    done
    [ -n "$stage" ] || [ "$(id -u)" = 0 ] || die "uninstall: run as root, or give --root DIR"
    [ -z "$stage" ] || stage=$(cd "$stage" && pwd)
    install_paths "$stage"
    [ -d "$R_PREFIX" ] || [ "$purge" = 1 ] || die "uninstall: nothing installed under ${stage:-/}$PREFIX"
    local user=""
    user=$(sed -n 's/^user://p' "$R_PREFIX/.install-manifest" 2>/dev/null || true)
    if [ -z "$stage" ] && [ -d /run/systemd/system ]; then
        systemctl disable --now "$SERVICE.service" || true
    fi
    rm -f "$R_UNIT/$SERVICE.service"
    [ -z "$stage" ] && [ -d /run/systemd/system ] && systemctl daemon-reload
    rm -rf "$R_PREFIX"
    rm -f "$R_CONF/config.toml" "$R_CONF/config.toml.new"
    rmdir "$R_CONF" 2>/dev/null || true
    if [ "$purge" = 1 ]; then
        rm -rf "$R_LOG" "$R_ARCHIVE"
        rmdir "$stage/var/lib/edge-inspect" 2>/dev/null || true
    else
        say "kept the audit log ${stage}$LOG_DIR and the evidence ${stage}$ARCHIVE_DIR (remove them with --purge)"
    fi
    if [ -z "$stage" ] && [ -n "$user" ] && id "$user" >/dev/null 2>&1; then userdel "$user" || true; fi
    if [ -n "$stage" ]; then  # remove the empty staging folders we made
        for d in etc/systemd/system etc/systemd etc opt var/log var/lib var; do rmdir "$stage/$d" 2>/dev/null || true; done
    fi
    say "uninstalled edge-inspect from ${stage:-/}"
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
        ensure_systemd_analyze
        "$VENV/bin/python" -m pytest "$@" ;;
    install)
        edge_install "$@" ;;
    uninstall)
        edge_uninstall "$@" ;;
    ""|-h|--help|help)
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' ;;
    *)
        die "unknown command '$cmd': use demo, test, setup, install or uninstall (./deploy.sh --help)" ;;
esac
