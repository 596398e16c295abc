#!/usr/bin/env bash
# From a fresh Debian 12 machine to a running sensorsynth installation that starts on boot.
#
#   sudo deploy/install.sh                 # from a checkout of this repository
#   sudo PREFIX=/opt/sensorsynth deploy/install.sh --no-start
#
# What it does, in order (each step is idempotent, so rerunning it upgrades in place):
#   1. system packages: Python, PortAudio + ALSA (sound), JACK (optional headless card), libsndfile
#   2. two system users: `sensorsynth` (the server, in the `audio` group) and `sensorsynth-trainer` (the trainer,
#      which handles audio from strangers): each has its own state folder and numba cache
#   3. the code in $PREFIX with its own virtualenv (torch pinned by constraints.txt)
#   4. /etc/sensorsynth/sensorsynth.toml (kept if it exists; readable by the server only) and the models folder
#      /var/lib/sensorsynth-models (bundled instruments): written by the trainer, read by the server
#   5. the systemd units (server and trainer), checked with systemd-analyze, enabled and started
#   6. `sensorsynth doctor` with the installed config, so problems are named before anyone plays
#
# Who owns what (docs/security.md):
#   /var/lib/sensorsynth          sensorsynth:sensorsynth 0750   server state: numba cache, TLS, recordings
#   /var/lib/sensorsynth-trainer  sensorsynth-trainer     0700   trainer state: queue database, clips, numba cache
#   /var/lib/sensorsynth-models   sensorsynth-trainer:sensorsynth 2750   instruments: the trainer writes, the
#                                 server reads (setgid: every new file has group sensorsynth, mode 0640)
#   /etc/sensorsynth/sensorsynth.toml  root:sensorsynth 0640   the config and its token: the trainer cannot read it
set -euo pipefail

PREFIX="${PREFIX:-/opt/sensorsynth}"
STATE=/var/lib/sensorsynth
TRAINER_STATE=/var/lib/sensorsynth-trainer
MODELS=/var/lib/sensorsynth-models
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

echo "== 2/6 users"
id -u sensorsynth >/dev/null 2>&1 || useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin sensorsynth
usermod -a -G audio sensorsynth
id -u sensorsynth-trainer >/dev/null 2>&1 || useradd --system --home-dir "$TRAINER_STATE" \
  --shell /usr/sbin/nologin sensorsynth-trainer

echo "== 3/6 code in $PREFIX"
mkdir -p "$PREFIX"
if [ "$SRC" != "$PREFIX" ]; then
  cp -a "$SRC/pyproject.toml" "$SRC/constraints.txt" "$SRC/README.md" "$SRC/sensorsynth" "$SRC/models" "$PREFIX/"
fi
python3 -m venv "$PREFIX/.venv"
"$PREFIX/.venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/.venv/bin/pip" install --quiet -c "$PREFIX/constraints.txt" "$PREFIX"

echo "== 4/6 config and models"
install -d -m 0755 -o root -g root "$CONF"  # the file below is 0640 root:sensorsynth: not the trainer's to read
install -d -m 0750 -o sensorsynth -g sensorsynth "$STATE" "$STATE/numba-cache"
install -d -m 0700 -o sensorsynth-trainer -g sensorsynth-trainer "$TRAINER_STATE" "$TRAINER_STATE/numba-cache"
install -d -m 2750 -o sensorsynth-trainer -g sensorsynth "$MODELS"
[ -f "$CONF/sensorsynth.toml" ] || install -m 0640 -g sensorsynth "$SRC/deploy/sensorsynth.toml" "$CONF/sensorsynth.toml"
chgrp sensorsynth "$CONF/sensorsynth.toml" && chmod 0640 "$CONF/sensorsynth.toml"  # an older install's too
# An earlier installation kept models and the queue in the server's folder, shared by both services: copy the
# instruments over (the old folder stays, unused) and move the queue to the trainer.
if [ -d "$STATE/models" ]; then
  cp -n "$STATE"/models/*.instrument "$STATE"/models/*.learned.json "$MODELS/" 2>/dev/null || true
fi
if [ -f "$STATE/trainer.sqlite" ] && [ ! -f "$TRAINER_STATE/trainer.sqlite" ]; then
  mv "$STATE"/trainer.sqlite* "$TRAINER_STATE/"
fi
cp -n "$PREFIX"/models/*.instrument "$MODELS/" 2>/dev/null || true
chown -R sensorsynth:sensorsynth "$STATE"
chown -R sensorsynth-trainer:sensorsynth-trainer "$TRAINER_STATE"
chown -R sensorsynth-trainer:sensorsynth "$MODELS"
chmod -R u=rwX,g=rX,o= "$MODELS"
chmod g+s "$MODELS"
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
for unit in sensorsynth.service sensorsynth-trainer.service; do  # both rate OK (≤ 3.0); see docs/security.md
  systemd-analyze security --no-pager "$unit" 2>/dev/null | tail -1 || true
done
systemctl daemon-reload
if [ "$START" = 1 ]; then
  systemctl enable --now sensorsynth.service
  systemctl enable --now sensorsynth-trainer.service || echo "   (trainer not started: see journalctl -u sensorsynth-trainer)"
fi

echo "== 6/6 doctor"
runuser -u sensorsynth -- env NUMBA_CACHE_DIR="$STATE/numba-cache" "$PREFIX/.venv/bin/sensorsynth" doctor \
  "$MODELS" --config "$CONF/sensorsynth.toml" || true
echo "done: journalctl -fu sensorsynth   |   curl -s localhost:8765/health"
