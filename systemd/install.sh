#!/usr/bin/env bash
# Install studiod as a systemd service (Debian 12 / Raspberry Pi OS bookworm). Run as root
# from a clone of the repository:
#
#   sudo systemd/install.sh [--prefix DIR] [--config FILE] [--no-start] [--no-warm]
#   systemd/install.sh --render-unit [--prefix DIR]    # print the unit file, change nothing
#
# It creates the system user "studiod" (group studiod, member of "audio"), installs studiod
# into a virtual environment in PREFIX (default /opt/studiod; outside /home, which the
# unit's ProtectHome= hides), puts the unit in /etc/systemd/system, a config in
# /etc/studiod/studiod.toml unless one exists, compiles the numba kernels into
# /var/cache/studiod/numba as that user (so the first start is fast), then enables and
# starts the service. Running it again upgrades studiod and keeps the config and state.
set -euo pipefail

REPO=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
PREFIX=/opt/studiod
CONFIG=""
START=1
WARM=1
RENDER=0
UNIT_NAME=studiod.service

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
        --config) CONFIG=${2:?--config needs a file}; shift 2 ;;
        --no-start) START=0; shift ;;
        --no-warm) WARM=0; shift ;;
        --render-unit) RENDER=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

case "$PREFIX" in
    /*) ;;
    *) echo "install.sh: --prefix must be an absolute path" >&2; exit 2 ;;
esac
case "$PREFIX" in
    /home/*|/root/*|/run/user/*)
        echo "install.sh: $PREFIX is hidden from the service by ProtectHome=yes" >&2; exit 2 ;;
esac

render_unit() {
    sed "s|@PREFIX@|$PREFIX|g" "$REPO/systemd/studiod.service"
}

if [ "$RENDER" -eq 1 ]; then
    render_unit
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo $0 $*)" >&2
    exit 1
fi

log() { printf 'install.sh: %s\n' "$*" >&2; }

# 1. system packages the service needs at run time
missing=()
for pkg in python3-venv libportaudio2 libsndfile1; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. the service user: no login, no home, audio group for /dev/snd
if ! getent group studiod >/dev/null; then
    groupadd --system studiod
fi
if ! id -u studiod >/dev/null 2>&1; then
    useradd --system --gid studiod --groups audio --no-create-home \
        --home-dir /var/lib/studiod --shell /usr/sbin/nologin \
        --comment "studiod studio controller" studiod
    log "created system user studiod"
else
    usermod --append --groups audio studiod
fi

# 3. studiod into its own virtual environment (a regular, non-editable install)
log "installing studiod into $PREFIX/venv"
install -d -m 0755 "$PREFIX"
if [ ! -x "$PREFIX/venv/bin/python" ]; then
    python3 -m venv "$PREFIX/venv"
fi
"$PREFIX/venv/bin/python" -m pip install -q --upgrade pip
"$PREFIX/venv/bin/python" -m pip install -q --upgrade "$REPO"
install -m 0644 "$REPO/README.md" "$PREFIX/README.md"
install -d -m 0755 "$PREFIX/docs"
install -m 0644 "$REPO"/docs/*.md "$PREFIX/docs/"

# 4. config (kept if present)
install -d -m 0755 /etc/studiod
if [ ! -e /etc/studiod/studiod.toml ]; then
    if [ -n "$CONFIG" ]; then
        install -m 0644 "$CONFIG" /etc/studiod/studiod.toml
    else
        example=$(ls "$REPO"/examples/*.toml 2>/dev/null | head -n 1 || true)
        if [ -n "$example" ]; then
            install -m 0644 "$example" /etc/studiod/studiod.toml
            log "installed $example as /etc/studiod/studiod.toml: edit it for your interface"
        else
            log "no config: put one in /etc/studiod/studiod.toml before starting"
            START=0
        fi
    fi
fi

# 5. unit file
render_unit >"/etc/systemd/system/$UNIT_NAME"
chmod 0644 "/etc/systemd/system/$UNIT_NAME"
systemd-analyze verify "/etc/systemd/system/$UNIT_NAME"
systemctl daemon-reload

# 6. compile the kernels into the service's cache as the service user
if [ "$WARM" -eq 1 ]; then
    install -d -o studiod -g studiod -m 0750 /var/cache/studiod /var/cache/studiod/numba
    log "compiling the DSP kernels (a few minutes on a Raspberry Pi)"
    warm_config=()
    [ -e /etc/studiod/studiod.toml ] && warm_config=(--config /etc/studiod/studiod.toml)
    runuser -u studiod -- env NUMBA_CACHE_DIR=/var/cache/studiod/numba HOME=/var/cache/studiod \
        "$PREFIX/venv/bin/studiod" warmup "${warm_config[@]}"
fi

systemctl enable "$UNIT_NAME" >/dev/null
if [ "$START" -eq 1 ]; then
    systemctl restart "$UNIT_NAME"
    log "started: systemctl status studiod; journalctl -u studiod -f"
else
    log "enabled, not started: systemctl start studiod"
fi
