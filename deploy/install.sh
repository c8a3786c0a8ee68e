#!/usr/bin/env bash
# Install the device service on a Debian-based edge device (x86-64 mini-PC, Jetson, Raspberry Pi 5).
#   sudo ./deploy/install.sh [SOURCE_DIR]
# Puts the code in /opt/edge with its own virtual environment, the config in /etc/edge, and enables
# edge.service, whose only writable folders are /var/lib/edge/clips and /var/lib/edge/spool (the outbox);
# systemd creates them (StateDirectory=). Model weights are fetched explicitly and
# checked against their sha256; nothing is downloaded at run time.
set -euo pipefail
src=$(cd "${1:-$(dirname "$0")/..}" && pwd)
[ "$(id -u)" = 0 ] || { echo "run as root (sudo)" >&2; exit 1; }

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv ffmpeg >/dev/null

id edge >/dev/null 2>&1 || useradd --system --home /var/lib/edge --shell /usr/sbin/nologin --groups video edge
usermod -a -G video edge  # USB cameras (/dev/video*); the unit sets no SupplementaryGroups=
install -d -m 0755 /opt/edge /etc/edge
cp -a "$src/edge" "$src/models" "$src/pyproject.toml" "$src/README.md" /opt/edge/
python3 -m venv /opt/edge/.venv
/opt/edge/.venv/bin/pip install -q --upgrade pip
/opt/edge/.venv/bin/pip install -q /opt/edge
XDG_CACHE_HOME=/opt/edge/cache /opt/edge/.venv/bin/edge models fetch yolox-nano-416 --dest /opt/edge/models-cache

if [ ! -f /etc/edge/edge.yaml ]; then
  install -m 0640 -g edge "$src/config/device-example.yaml" /etc/edge/edge.yaml
  echo "edit /etc/edge/edge.yaml (cameras, lines, mqtt), then: systemctl start edge"
fi
[ -f /etc/edge/mqtt-password ] || install -m 0600 /dev/null /etc/edge/mqtt-password
install -m 0644 "$src/deploy/edge.service" /etc/systemd/system/edge.service
systemctl daemon-reload
systemctl enable edge.service
echo "installed; set detector.model_dir: /opt/edge/models-cache and the broker in /etc/edge/edge.yaml,"
echo "keep mqtt.outbox_path in /var/lib/edge/spool and clips.store_dir at /var/lib/edge/clips (the only writable folders),"
echo "and allow the broker's, cameras' and DNS resolver's IP addresses: systemctl edit edge.service (deploy/README.md, Network)"
