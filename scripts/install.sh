#!/usr/bin/env bash
# Installs earshot as a systemd service: the release binary to /usr/local/bin, the unit to
# /etc/systemd/system, and the default configuration to /etc/earshot/config.toml — only if
# none is there yet, so an upgrade never overwrites the operator's settings.
#
#   scripts/install.sh            build, install, enable and (re)start
#   scripts/install.sh --no-start install only
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

if ! dpkg -s libasound2-dev pkg-config >/dev/null 2>&1; then
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libasound2-dev pkg-config
fi
cargo build --release --bin earshot

"${SUDO[@]}" install -m 0755 target/release/earshot /usr/local/bin/earshot
"${SUDO[@]}" install -m 0644 systemd/earshot.service /etc/systemd/system/earshot.service
"${SUDO[@]}" install -d -m 0755 /etc/earshot
if [ -e /etc/earshot/config.toml ]; then
    echo "keeping /etc/earshot/config.toml (the new default is config.toml in this folder)"
else
    "${SUDO[@]}" install -m 0644 config.toml /etc/earshot/config.toml
    echo "installed /etc/earshot/config.toml: edit it, then: systemctl restart earshot"
fi
/usr/local/bin/earshot check-config --config /etc/earshot/config.toml

if [ "${1:-}" != "--no-start" ] && [ -d /run/systemd/system ]; then
    "${SUDO[@]}" systemctl daemon-reload
    "${SUDO[@]}" systemctl enable earshot
    "${SUDO[@]}" systemctl restart earshot
    systemctl --no-pager status earshot | head -5
fi
