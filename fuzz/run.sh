#!/usr/bin/env bash
# A short libFuzzer run of every fuzz target, on corpora seeded from tests/data (fuzz/seed.sh).
# Fails on the first crash, leak, timeout or out-of-memory (the input is left in
# fuzz/artifacts/<target>/). Used by scripts/test.sh; also the campaign command (fuzz/README.md).
#
#   fuzz/run.sh [TARGET...]      default: every target in fuzz/Cargo.toml
#
# Environment: EARSHOT_FUZZ_SECONDS (default 20) per target; EARSHOT_FUZZ_JOBS (default 1);
# EARSHOT_FUZZ_STABLE=1 takes the stable path even where nightly is installed.
# Installs cargo-fuzz (pinned) when missing. Uses the nightly toolchain when rustup has one,
# otherwise stable with RUSTC_BOOTSTRAP=1 and no sanitizer (cargo-fuzz needs unstable flags).
# Builds into $CARGO_TARGET_DIR/fuzz (default target/fuzz): never the main build's artifacts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_FUZZ_VERSION=0.13.2
SECONDS_EACH=${EARSHOT_FUZZ_SECONDS:-20}
JOBS=${EARSHOT_FUZZ_JOBS:-1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

FUZZ=(cargo fuzz) # the default toolchain (stable on the CI machine)
SANITIZER=()
if [ "${EARSHOT_FUZZ_STABLE:-0}" != 1 ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    FUZZ=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    SANITIZER=(--sanitizer none)
fi

fuzz/seed.sh

if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^earshot-fuzz$')
fi

# `cargo fuzz build` takes one target or all: build all, then run each.
"${FUZZ[@]}" build "${SANITIZER[@]}"

PARALLEL=()
if [ "$JOBS" -gt 1 ]; then
    PARALLEL=(-jobs="$JOBS" -workers="$JOBS")
fi

for target in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    echo "fuzz: $target for ${SECONDS_EACH}s" >&2
    log=$(mktemp)
    if ! "${FUZZ[@]}" run "${SANITIZER[@]}" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" "${PARALLEL[@]}" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        rm -f "$log"
        echo "fuzz: $target FAILED (input in fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    grep -E '^#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb' "$log" >&2 || true
    rm -f "$log"
done
