#!/usr/bin/env bash
# The test command: installs what the tests need (Debian/Ubuntu), starts a private PulseAudio
# with a null sink, builds optimized (profile `ci`), runs every test, then clippy and rustfmt.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -- FILTER ...   extra arguments go to `cargo test` (after its own `--`)
#
# Idempotent: packages already installed are not touched, a running test PulseAudio is reused.
# Environment: EARSHOT_SKIP_APT=1 skips the package step; EARSHOT_KEEP_PULSE=1 leaves the test
# PulseAudio running afterwards (faster reruns); EARSHOT_FUZZ_SECONDS sets the fuzz run per target.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PACKAGES=(
    libasound2-dev libasound2-plugins pkg-config gcc
    sip-tester baresip-core kamailio
    pulseaudio pulseaudio-utils alsa-utils sox espeak-ng
    libspandsp-dev libspeexdsp-dev libre-dev
    iproute2 util-linux tcpdump systemd
    python3-venv openssl
    chromium chromium-driver
)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

# Ubuntu ships some packages under other names; try these when the Debian name has no candidate.
alternative() {
    case "$1" in
        chromium) echo chromium-browser ;;
        chromium-driver) echo chromium-chromedriver ;;
        *) echo "" ;;
    esac
}

has_candidate() {
    apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [^(]'
}

install_packages() {
    local missing=() pkg alt
    for pkg in "${PACKAGES[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 && continue
        alt=$(alternative "$pkg")
        if [ -n "$alt" ] && dpkg -s "$alt" >/dev/null 2>&1; then continue; fi
        missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing: ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq || return 1
    local resolved=()
    for pkg in "${missing[@]}"; do
        alt=$(alternative "$pkg")
        if ! has_candidate "$pkg" && [ -n "$alt" ] && has_candidate "$alt"; then
            resolved+=("$alt")
        else
            resolved+=("$pkg")
        fi
    done
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        -o DPkg::Lock::Timeout=300 --no-install-recommends "${resolved[@]}"
}

# A private PulseAudio with a null sink as default, reachable through a filesystem socket (so
# tests re-executed inside `unshare --net` still reach it). It works as root and as a user.
PULSE_DIR="${TMPDIR:-/tmp}/earshot-test-pulse-$(id -u)"
PULSE_STARTED=0

pulse_ok() {
    PULSE_SERVER="unix:$PULSE_DIR/native" timeout 5 pactl info >/dev/null 2>&1
}

start_pulse() {
    export PULSE_SERVER="unix:$PULSE_DIR/native"
    if pulse_ok; then
        say "reusing test PulseAudio at $PULSE_SERVER"
        return 0
    fi
    mkdir -p "$PULSE_DIR" && chmod 700 "$PULSE_DIR" || return 1
    kill_our_pulse
    rm -rf "$PULSE_DIR/native" "$PULSE_DIR/pulse"
    # -n: no default.pa, so nothing probes real hardware or D-Bus; load only what tests need.
    XDG_RUNTIME_DIR="$PULSE_DIR" pulseaudio --daemonize=yes --exit-idle-time=-1 \
        --disallow-exit --log-target="file:$PULSE_DIR/pulseaudio.log" -n \
        --load="module-native-protocol-unix auth-anonymous=1 socket=$PULSE_DIR/native" \
        --load="module-null-sink sink_name=earshot_test" || {
        echo "pulseaudio failed to start; see $PULSE_DIR/pulseaudio.log" >&2
        return 1
    }
    local _
    for _ in $(seq 50); do pulse_ok && break; sleep 0.1; done
    pulse_ok || { echo "pulseaudio does not answer on $PULSE_SERVER" >&2; return 1; }
    pactl set-default-sink earshot_test || return 1
    PULSE_STARTED=1
    say "started test PulseAudio at $PULSE_SERVER (null sink earshot_test)"
}

# Stops the daemon recorded in our own pid file, if that pid still is a pulseaudio.
kill_our_pulse() {
    local pid
    pid=$(cat "$PULSE_DIR/pulse/pid" 2>/dev/null) || return 0
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = pulseaudio ]; then
        kill "$pid" 2>/dev/null
    fi
    return 0
}

stop_pulse() {
    if [ "$PULSE_STARTED" = 1 ] && [ "${EARSHOT_KEEP_PULSE:-0}" != 1 ]; then
        kill_our_pulse
    fi
}
trap stop_pulse EXIT

# The voice-agent peer of the agent-bridge tests (tests/agents/pipecat_agent.py, pipecat) runs
# in its own venv with the exact versions of tests/agents/requirements.txt, from PyPI. pip runs
# only when the requirements changed or the venv is broken. The tests find the interpreter in
# EARSHOT_AGENT_PYTHON.
AGENT_VENV="$PWD/target/agent-venv"
AGENT_REQUIREMENTS=tests/agents/requirements.txt

agent_venv() {
    local stamp="$AGENT_VENV/.requirements.sha256" sum
    if ! "$AGENT_VENV/bin/python" -c '' >/dev/null 2>&1; then
        python3 -m venv --clear "$AGENT_VENV" || return 1
    fi
    sum=$(sha256sum "$AGENT_REQUIREMENTS" | cut -d' ' -f1) || return 1
    if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ] ||
        ! "$AGENT_VENV/bin/python" -c 'import pipecat.serializers.twilio, pipecat.transports.websocket.fastapi, uvicorn' >/dev/null 2>&1; then
        rm -f "$stamp"
        "$AGENT_VENV/bin/python" -m pip install -q --disable-pip-version-check \
            -r "$AGENT_REQUIREMENTS" || return 1
        echo "$sum" >"$stamp"
    fi
    export EARSHOT_AGENT_PYTHON="$AGENT_VENV/bin/python"
}

FAILED=()
RESULTS=()
step() {
    local name=$1
    shift
    say "$name"
    local start=$SECONDS
    if "$@"; then
        RESULTS+=("ok    $name ($((SECONDS - start))s)")
    else
        RESULTS+=("FAIL  $name ($((SECONDS - start))s)")
        FAILED+=("$name")
    fi
}

summary() {
    echo >&2
    say "summary"
    printf '  %s\n' "${RESULTS[@]}" >&2
    if [ ${#FAILED[@]} -eq 0 ]; then
        say "all passed"
        exit 0
    fi
    say "FAILED: ${FAILED[*]}"
    exit 1
}

TEST_ARGS=()
if [ "${1:-}" = "--" ]; then
    shift
    TEST_ARGS=("--" "$@")
fi

if [ "${EARSHOT_SKIP_APT:-0}" != 1 ]; then
    step "system packages" install_packages
    [ ${#FAILED[@]} -eq 0 ] || summary
fi
step "test PulseAudio" start_pulse
step "agent venv" agent_venv
step "cargo build --profile ci --bins" cargo build --profile ci --bins
[ ${#FAILED[@]} -eq 0 ] || summary
step "cargo test --profile ci --all-targets" cargo test --profile ci --all-targets --no-fail-fast "${TEST_ARGS[@]}"
step "cargo clippy" cargo clippy --all-targets -- -D warnings
step "cargo fmt --check" cargo fmt --check
# Every fuzz target for EARSHOT_FUZZ_SECONDS (20) on corpora seeded from tests/data; a crash fails.
step "fuzz (fuzz/run.sh)" fuzz/run.sh
summary
