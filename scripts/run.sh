#!/usr/bin/env bash
# The run command: installs the ALSA headers cpal builds against (Debian/Ubuntu) if missing,
# then runs earshot in release mode with the repository's config.toml.
#
#   scripts/run.sh                  earshot run --config config.toml
#   scripts/run.sh -c other.toml    extra arguments are passed to `earshot run`
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
for pkg in libasound2-dev pkg-config; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    echo "==> installing: ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}"
fi

config=(--config config.toml)
for arg in "$@"; do
    case "$arg" in -c | --config | --config=*) config=() ;; esac
done
exec cargo run --release --bin earshot -- run "${config[@]}" "$@"
