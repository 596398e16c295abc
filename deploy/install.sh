#!/usr/bin/env bash
# From a fresh Debian 12 machine to a running sensorsynth installation that starts on boot.
#
#   sudo deploy/install.sh                 # from a checkout of this repository
#   sudo PREFIX=/opt/sensorsynth deploy/install.sh --no-start
#
# What it does, in order (each step is idempotent, so rerunning it upgrades in place):
#   1. system packages: Python, PortAudio + ALSA (sound), JACK (optional headless card), libsndfile
#   2. a system user `sensorsynth` in the `audio` group
#   3. the code in $PREFIX with its own virtualenv (torch pinned by constraints.txt)
#   4. /etc/sensorsynth/sensorsynth.toml (kept if it exists) and /var/lib/sensorsynth/models (bundled instruments)
#   5. the systemd units (server and trainer), checked with systemd-analyze, enabled and started
#   6. `sensorsynth doctor` with the installed config, so problems are named before anyone plays
set -euo pipefail

PREFIX="${PREFIX:-/opt/sensorsynth}"
STATE=/var/lib/sensorsynth
CONF=/etc/sensorsynth
START=1
[ "${1:-}" = "--no-start" ] && START=0
SRC="$(cd "$(dirname "$0")/.." && pwd)"

if [ "$(id -u)" != 0 ]; then echo "install.sh: run as root (sudo)" >&2; exit 2; fi

echo "== 1/6 system packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip libportaudio2 libsndfile1 \
  alsa-utils ca-certificates

echo "== 2/6 user"
id -u sensorsynth >/dev/null 2>&1 || useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin sensorsynth
usermod -a -G audio sensorsynth

echo "== 3/6 code in $PREFIX"
mkdir -p "$PREFIX"
if [ "$SRC" != "$PREFIX" ]; then
  cp -a "$SRC/pyproject.toml" "$SRC/constraints.txt" "$SRC/README.md" "$SRC/sensorsynth" "$SRC/models" "$PREFIX/"
fi
python3 -m venv "$PREFIX/.venv"
"$PREFIX/.venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/.venv/bin/pip" install --quiet -c "$PREFIX/constraints.txt" "$PREFIX"

echo "== 4/6 config and models"
mkdir -p "$CONF" "$STATE/models" "$STATE/numba-cache"
[ -f "$CONF/sensorsynth.toml" ] || install -m 0640 -g sensorsynth "$SRC/deploy/sensorsynth.toml" "$CONF/sensorsynth.toml"
cp -n "$PREFIX"/models/*.instrument "$STATE/models/" 2>/dev/null || true
chown -R sensorsynth:sensorsynth "$STATE"
# a token of its own for this box: into the example's commented line, or over an old placeholder (which the
# server refuses to start with)
if grep -qE '^# ws_token = ""|change-me-to-a-long-random-string' "$CONF/sensorsynth.toml"; then
  token="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
  sed -i -e "s/^# ws_token = \"\"/ws_token = \"$token\"/" -e "s/change-me-to-a-long-random-string/$token/" \
    "$CONF/sensorsynth.toml"
  echo "   a WebSocket token was generated into $CONF/sensorsynth.toml"
fi

echo "== 5/6 systemd units"
for unit in sensorsynth.service sensorsynth-trainer.service; do
  sed "s#/opt/sensorsynth#$PREFIX#g" "$SRC/deploy/systemd/$unit" > "/etc/systemd/system/$unit"
done
systemd-analyze verify /etc/systemd/system/sensorsynth.service /etc/systemd/system/sensorsynth-trainer.service
systemctl daemon-reload
if [ "$START" = 1 ]; then
  systemctl enable --now sensorsynth.service
  systemctl enable --now sensorsynth-trainer.service || echo "   (trainer not started: see journalctl -u sensorsynth-trainer)"
fi

echo "== 6/6 doctor"
runuser -u sensorsynth -- env NUMBA_CACHE_DIR="$STATE/numba-cache" "$PREFIX/.venv/bin/sensorsynth" doctor \
  --config "$CONF/sensorsynth.toml" || true
echo "done: journalctl -fu sensorsynth   |   curl -s localhost:8765/health"
