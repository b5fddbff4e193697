#!/usr/bin/env bash
# SIP load benchmark: SIPp places CALLS concurrent calls with two-way G.711 RTP for
# SECONDS_PER_CALL each against one callee at a time, and prints failed calls, CPU and memory of
# the callee (and of its sound server, when it has one) for each.
#
#   scripts/bench-sip-load.sh                      200 calls x 60 s, every target
#   CALLS=50 SECONDS_PER_CALL=20 scripts/bench-sip-load.sh earshot baresip
#   scripts/bench-sip-load.sh latency              arrival-to-playout latency (see latency())
#   scripts/bench-sip-load.sh webhooks             webhook throughput (see webhooks())
#   scripts/bench-sip-load.sh flood                SIP flood during calls (see flood())
#
# Targets (arguments):
#   earshot        [audio] output = "none", recording off: signalling, RTP, jitter buffer, and
#                  the caller's audio decoded and played out into a detached speaker feed;
#   earshot-rec    the same with every call recorded (WAV, both directions);
#   earshot-agent  earshot-rec with every call bridged to a voice agent over the Twilio Media
#                  Streams protocol (tests/agents/echo_agent.py, which sends every caller frame
#                  straight back as agent audio); also prints the time messages spend inside
#                  earshot each way (from /metrics, histogram bucket bounds);
#   earshot-realtime  the same over the OpenAI Realtime protocol (tests/agents/echo_agent.py
#                  answers every append with an audio delta of the same audio);
#   earshot-pulse  recording off, every call mixed and played on a private PulseAudio null sink;
#   baresip        baresip 1.0 (Debian baresip-core), auto-answer, G.711, sending silence captured
#                  from ALSA's "null" device and playing every call on it, both paced to real
#                  time by benches/c/alsa_pace.c (LD_PRELOAD; see there). earshot without a
#                  greeting sends silence too;
#   baresip-pulse  (not run by default) the same, playing every call on the private PulseAudio.
# baresip cannot run without a player (no player, no decoder: it drops the audio); ALSA's "null"
# device alone is unpaced, so its player threads spin (measured: 147 % CPU for 10 calls); and
# PulseAudio accepts at most 64 clients, while baresip opens one per call (64 of 200 calls
# succeed); its file source (aufile) holds the whole WAV in memory per call and hangs the call
# up at the end of the file. The paced null device is the cheapest fair source and player.
# PulseAudio's own CPU and RSS are shown beside the callee's for the targets that use it.
# Environment: CALLS (200), SECONDS_PER_CALL (60), RATE (new calls per second, 20), KEEP=1 keeps
# the work directory, PERIOD_MS ([audio].period_ms, 10), LATENCY_SECONDS (latency run, 30),
# PROFILE (cargo profile of the earshot binary, release; "ci" reuses a test build), EARSHOT_BIN
# (measure this binary instead of building one), SIPP_RTP (pcap, or stream: SIPp's rtp_stream
# instead of its raw-socket pcap replay; see scenario()).
#
# What is measured, per target, from /proc/PID of the callee process:
#   idle RSS       VmRSS two seconds after it is ready, before any call;
#   CPU            utime+stime (all threads) consumed from SIPp's start to its end;
#   peak RSS       the highest VmRSS sampled every 0.5 s during the run (VmHWM printed too);
#   per call       CPU / CALLS, and (peak - idle) / CALLS;
#   steady state   CPU between two snapshots while every call is up (from 3 s after the ramp
#                  to 3 s before the first call ends), per call-second and per RTP packet in +
#                  out (50 a second each way per call: valid when no call failed).
# SIPp itself runs on the same two cores and is not counted. Everything is on loopback; every
# process started here is killed on exit; each run is bounded by `timeout`.
#
# Needs: sipp (sip-tester), baresip (baresip-core), pulseaudio, cc and libasound2-dev (the
# pacing shim), python3 (writes the pcap and WAV), ss (iproute2).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

PROFILE=${PROFILE:-release}
# EARSHOT_BIN: an earshot binary to measure as it is (not built), e.g. an older build to compare.
BUILT_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/earshot"
EARSHOT_BIN=${EARSHOT_BIN:-$BUILT_BIN}
# [sip].allow of earshot; the flood run narrows it to show a disallowed source.
SIP_ALLOW=${SIP_ALLOW:-'["127.0.0.0/8"]'}

build_earshot() {
    [ "$EARSHOT_BIN" = "$BUILT_BIN" ] || { say "measuring $EARSHOT_BIN as it is"; return 0; }
    say "building earshot ($PROFILE)"
    cargo build --profile "$PROFILE" --bin earshot >&2 || die "build failed"
}

if [ "${1:-}" = flood ]; then
    CALLS=${CALLS:-50}
    SECONDS_PER_CALL=${SECONDS_PER_CALL:-30}
fi
CALLS=${CALLS:-200}
SECONDS_PER_CALL=${SECONDS_PER_CALL:-60}
RATE=${RATE:-20}
SIP_PORT=25060       # callee
SIPP_PORT=25062      # SIPp's SIP port
MEDIA_PORT=26000     # SIPp's media port (its RTP comes from here; callees send here)
# earshot's RTP/RTCP port range: 30000-30999, or as many pairs as [calls].max_concurrent needs.
RTP_LAST=$((30000 + 2 * (CALLS + 50) + 99))
[ "$RTP_LAST" -lt 30999 ] && RTP_LAST=30999

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

WORK=$(mktemp -d /tmp/earshot-bench-XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    sleep 0.5
    for pid in "${PIDS[@]}"; do
        kill -9 "$pid" 2>/dev/null
    done
    if [ "${KEEP:-0}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in sipp python3 ss; do
    command -v "$tool" >/dev/null || die "$tool is not installed (scripts/test.sh installs what is needed)"
done

CLK_TCK=$(getconf CLK_TCK)

# utime+stime of a process (all its threads, live and exited), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# A /proc/PID/status field in kB.
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

port_free() { ! ss -Hlnu "sport = :$1" | grep -q . && ! ss -Hlnt "sport = :$1" | grep -q .; }

wait_udp_listen() { # PID PORT
    local i
    for i in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || return 1
        ss -Hlnu "sport = :$2" | grep -q . && return 0
        sleep 0.2
    done
    return 1
}

# Writes $1: a pcap of $2 ms of PCMU RTP (a 440 Hz + 1250 Hz tone), one packet per 20 ms, in
# the Ethernet/IPv4/UDP framing SIPp's play_pcap_audio reads (as tests/support/pcap.rs). With
# $3 = clicks, the audio is silence with a 5 ms full-scale click at the start of every second.
write_pcap() {
    python3 - "$1" "$2" "${3:-tone}" <<'PY'
import math, struct, sys
path, ms, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def ulaw(x):
    x = max(-32635, min(32635, int(x)))
    sign = 0x80 if x < 0 else 0
    x = abs(x) + 0x84
    exp = max(0, min(7, x.bit_length() - 8))
    mant = (x >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mant) & 0xFF

n = ms * 8
samples = []
for i in range(n):
    if kind == "clicks":
        samples.append(30000 if (i % 8000) < 40 else 0)
    else:
        t = i / 8000.0
        samples.append(0.3 * 20000 * math.sin(2 * math.pi * 440 * t) + 0.2 * 20000 * math.sin(2 * math.pi * 1250 * t))
codes = bytes(ulaw(s) for s in samples)

def csum(b):
    s = sum(struct.unpack("!10H", b))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF

out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
seq0, ts0, ssrc = 100, 1000, 0x12345678
for k in range(n // 160):
    rtp = struct.pack("!BBHII", 0x80, 0x80 if k == 0 else 0x00, (seq0 + k) & 0xFFFF, (ts0 + 160 * k) & 0xFFFFFFFF, ssrc)
    rtp += codes[160 * k:160 * (k + 1)]
    udp = struct.pack("!HHHH", 40000, 40000, 8 + len(rtp), 0) + rtp
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])))
    ip[10:12] = struct.pack("!H", csum(bytes(ip)))
    frame = bytes([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0]) + bytes(ip) + udp
    us = k * 20000
    out += struct.pack("<IIII", us // 1000000, us % 1000000, len(frame), len(frame)) + frame
open(path, "wb").write(out)
PY
}

# Fills the scenario's placeholders into $WORK/uac_load.xml. With SIPP_RTP=stream, SIPp sends
# the same tone from its rtp_stream (ordinary UDP sockets, one per call)
# instead of replaying the pcap: play_pcap_audio sends through one raw IPPROTO_UDP socket per
# call, and the kernel offers every UDP datagram on loopback to each of them (raw_local_deliver,
# in the sender's system time: 17 % of earshot's CPU at 500 calls, 29 % at 1000, and as much
# of baresip's), which also starves SIPp itself.
scenario() { # PCAP PCAP_MS
    local media=(-e "s|{{PCAP}}|$1|g")
    if [ "${SIPP_RTP:-pcap}" = stream ]; then
        python3 - "$WORK/load.ulaw" <<'PY'
import math, sys
def ulaw(x):
    x = max(-32635, min(32635, int(x)))
    sign = 0x80 if x < 0 else 0
    x = abs(x) + 0x84
    exp = max(0, min(7, x.bit_length() - 8))
    return ~(sign | (exp << 4) | ((x >> (exp + 3)) & 0x0F)) & 0xFF
# One second of the pcap's tone (440 Hz + 1250 Hz: whole periods in 1 s), looped by SIPp.
open(sys.argv[1], "wb").write(bytes(ulaw(0.3 * 20000 * math.sin(2 * math.pi * 440 * i / 8000)
    + 0.2 * 20000 * math.sin(2 * math.pi * 1250 * i / 8000)) for i in range(8000)))
PY
        media=(-e "s|<exec play_pcap_audio=\"{{PCAP}}\"/>|<exec rtp_stream=\"$WORK/load.ulaw,-1,0\"/>|"
            -e "s|m=audio \[media_port\]|m=audio [rtpstream_audio_port]|")
    fi
    sed "${media[@]}" -e "s|{{PCAP_MS}}|$2|g" -e "s|{{CALLEE}}|1000|g" \
        "$ROOT/tests/sipp/uac_load.xml" >"$WORK/uac_load.xml"
}


AGENT_PORT=25090

start_agent() { # [PROTOCOL]
    local python=${EARSHOT_AGENT_PYTHON:-$ROOT/target/agent-venv/bin/python}
    [ -x "$python" ] || die "no agent venv at $python (scripts/test.sh makes it)"
    "$python" "$ROOT/tests/agents/echo_agent.py" --port $AGENT_PORT --protocol "${1:-twilio}" >"$WORK/agent.log" 2>&1 &
    AGENT_PID=$!
    PIDS+=("$AGENT_PID")
    local _
    for _ in $(seq 100); do grep -q LISTENING "$WORK/agent.log" && return 0; sleep 0.1; done
    die "echo agent did not start: $(cat "$WORK/agent.log")"
}

start_earshot() { # NAME RECORDING(true|false) AUDIO_OUTPUT [AGENT_URL [PROTOCOL]]
    local dir="$WORK/$1"
    mkdir -p "$dir/recordings"
    local agent=""
    if [ -n "${4:-}" ]; then
        agent="[agent]
url = \"$4\"
max_concurrent = $((CALLS + 50))"
        if [ "${5:-}" = openai-realtime ]; then
            agent="$agent
protocol = \"openai-realtime\"
api_key = \"sk-bench-0123456789abcdef\""
        fi
    fi
    cat >"$dir/earshot.toml" <<EOF
[sip]
listen = "127.0.0.1:$SIP_PORT"
allow = $SIP_ALLOW
[rtp]
ports = "30000-$RTP_LAST"
[calls]
max_concurrent = $((CALLS + 50))
[audio]
output = "$3"
period_ms = ${PERIOD_MS:-10}
[recording]
enabled = $2
dir = "$dir/recordings"
[store]
path = "$dir/earshot.redb"
[http]
listen = "127.0.0.1:25080"
[log]
level = "info"
format = "text"
$agent
${EXTRA_TOML:-}
EOF
    "$EARSHOT_BIN" run --config "$dir/earshot.toml" >"$dir/log" 2>&1 </dev/null &
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    TARGET_LOG="$dir/log"
}

start_baresip() { # PLAYER (null|pulse)
    local dir="$WORK/baresip-$1" player preload=""
    player=alsa,$1
    cc -O2 -shared -fPIC -o "$WORK/alsa_pace.so" "$ROOT/benches/c/alsa_pace.c" -ldl -lasound ||
        die "cannot build benches/c/alsa_pace.c (install gcc and libasound2-dev)"
    preload="$WORK/alsa_pace.so"
    mkdir -p "$dir/cfg"
    # The cheapest fair media path baresip has: G.711 only, the paced ALSA null device as source
    # and as player (or PulseAudio as player); its default jitter buffer (5-10 frames) and audio
    # buffer. The menu module answers (answermode=auto); its status line is off.
    cat >"$dir/cfg/config" <<EOF
poll_method epoll
sip_listen 127.0.0.1:$SIP_PORT
call_max_calls $((CALLS + 100))
call_local_timeout 120
audio_player $player
audio_alert $player
audio_source alsa,null
rtp_ports 32000-33999
rtp_stats no
module_path /usr/lib/baresip/modules
module g711.so
module alsa.so
module_app account.so
module_app menu.so
statmode_default off
EOF
    echo "<sip:1000@127.0.0.1>;regint=0;audio_codecs=PCMU;answermode=auto" >"$dir/cfg/accounts"
    LD_PRELOAD="$preload" baresip -f "$dir/cfg" >"$dir/log" 2>&1 </dev/null &
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    TARGET_LOG="$dir/log"
}

stop_target() {
    if [ -n "${AGENT_PID:-}" ]; then
        kill "$AGENT_PID" 2>/dev/null
        AGENT_PID=""
    fi
    kill -TERM "$TARGET_PID" 2>/dev/null
    local i
    for i in $(seq 1 50); do
        kill -0 "$TARGET_PID" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -9 "$TARGET_PID" 2>/dev/null
}

# A private PulseAudio with one null sink, for the targets that play. Sets PULSE_PID.
start_pulse() {
    local dir="$WORK/pulse"
    mkdir -p "$dir" && chmod 700 "$dir"
    rm -rf "$dir/native" "$dir/pulse"
    XDG_RUNTIME_DIR="$dir" pulseaudio --daemonize=yes --exit-idle-time=-1 --disallow-exit \
        --log-target="file:$dir/log" -n \
        --load="module-native-protocol-unix auth-anonymous=1 socket=$dir/native" \
        --load="module-null-sink sink_name=bench" || die "pulseaudio did not start"
    export PULSE_SERVER="unix:$dir/native"
    local _
    for _ in $(seq 50); do timeout 5 pactl info >/dev/null 2>&1 && break; sleep 0.1; done
    PULSE_PID=$(cat "$dir/pulse/pid" 2>/dev/null)
    [ -n "$PULSE_PID" ] || die "no pulseaudio pid"
    PIDS+=("$PULSE_PID")
}

stop_pulse() {
    [ -n "${PULSE_PID:-}" ] || return 0
    kill "$PULSE_PID" 2>/dev/null
    PULSE_PID=""
    unset PULSE_SERVER
}

RESULTS=()
HOPS=()
STEADY=()

# Runs the load against one target and appends a result row.
run_target() { # NAME
    local name=$1
    for p in $SIP_PORT $SIPP_PORT $MEDIA_PORT; do
        port_free "$p" || die "port $p is in use"
    done
    PULSE_PID=""
    case "$name" in
        earshot) start_earshot earshot false none ;;
        earshot-rec) start_earshot earshot-rec true none ;;
        earshot-agent) start_agent; start_earshot earshot-agent true none "ws://127.0.0.1:$AGENT_PORT/" ;;
        earshot-realtime) start_agent openai-realtime
            start_earshot earshot-realtime true none "ws://127.0.0.1:$AGENT_PORT/v1/realtime" openai-realtime ;;
        earshot-pulse) start_pulse; start_earshot earshot-pulse false default ;;
        baresip) start_baresip null ;;
        baresip-pulse) start_pulse; start_baresip pulse ;;
        *) die "unknown target $name" ;;
    esac
    wait_udp_listen "$TARGET_PID" "$SIP_PORT" || { tail -20 "$TARGET_LOG"; die "$name did not start"; }
    sleep 2
    local idle_kb pulse_idle_kb=0
    idle_kb=$(status_kb "$TARGET_PID" VmRSS)
    [ -n "$PULSE_PID" ] && pulse_idle_kb=$(status_kb "$PULSE_PID" VmRSS)
    say "$name ready (pid $TARGET_PID), idle RSS ${idle_kb} kB; $CALLS calls x ${SECONDS_PER_CALL} s at $RATE/s"

    # RSS sampler.
    local samples="$WORK/$name.rss"
    local pulse_pid=${PULSE_PID:-$$}
    (while kill -0 "$TARGET_PID" 2>/dev/null; do
        echo "$(status_kb "$TARGET_PID" VmRSS) $(status_kb "$pulse_pid" VmRSS)"
        sleep 0.5
    done) >"$samples" &
    local sampler=$!
    PIDS+=("$sampler")

    # Steady state: CPU and RTP packets between two snapshots while every call is up.
    local steady="$WORK/$name.steady"
    : >"$steady"
    steady_probe "$TARGET_PID" "$steady" &
    local prober=$!
    PIDS+=("$prober")

    local cpu0 t0 cpu1 t1 pcpu0=0 pcpu1=0
    cpu0=$(cpu_ticks "$TARGET_PID")
    [ -n "$PULSE_PID" ] && pcpu0=$(cpu_ticks "$PULSE_PID")
    t0=$(date +%s.%N)
    local limit=$((SECONDS_PER_CALL + CALLS / RATE + 90))
    (cd "$WORK" && timeout --kill-after=5 "$limit" sipp -sf "$WORK/uac_load.xml" \
        -i 127.0.0.1 -mi 127.0.0.1 -p $SIPP_PORT -mp $MEDIA_PORT \
        -m "$CALLS" -l "$CALLS" -r "$RATE" -recv_timeout 30s \
        -nostdin -trace_err -error_file "$WORK/$name.sipp-errors.log" \
        -trace_stat -stf "$WORK/$name.stat.csv" -fd 5 \
        127.0.0.1:$SIP_PORT >"$WORK/$name.sipp.out" 2>&1)
    local sipp_rc=$?
    t1=$(date +%s.%N)
    cpu1=$(cpu_ticks "$TARGET_PID")
    [ -n "$PULSE_PID" ] && pcpu1=$(cpu_ticks "$PULSE_PID")
    local hwm_kb alive=yes
    hwm_kb=$(status_kb "$TARGET_PID" VmHWM)
    curl -s --max-time 5 http://127.0.0.1:25080/metrics >"$WORK/$name.metrics" 2>/dev/null
    kill -0 "$TARGET_PID" 2>/dev/null || alive=NO
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null

    kill "$prober" 2>/dev/null
    wait "$prober" 2>/dev/null
    STEADY+=("$(steady_row "$name" "$steady")")

    local ok failed peak_kb pulse_peak_kb=0
    ok=$(stat_col "$WORK/$name.stat.csv" 'SuccessfulCall(C)')
    failed=$(stat_col "$WORK/$name.stat.csv" 'FailedCall(C)')
    peak_kb=$(awk '$1 > m { m = $1 } END { print m + 0 }' "$samples")
    [ -n "$PULSE_PID" ] && pulse_peak_kb=$(awk '$2 > m { m = $2 } END { print m + 0 }' "$samples")
    local errors warns
    errors=$(grep -c -E ' ERROR |level=error|\[ERROR\]' "$TARGET_LOG" || true)
    warns=$(grep -c -E ' WARN |level=warn|\[WARN' "$TARGET_LOG" || true)
    stop_target
    stop_pulse
    cp "$TARGET_LOG" "$WORK/$name.log" 2>/dev/null
    RESULTS+=("$(awk -v n="$name" -v calls="$CALLS" -v ok="${ok:-0}" -v f="${failed:-0}" -v rc="$sipp_rc" \
        -v c0="$cpu0" -v c1="$cpu1" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
        -v idle="$idle_kb" -v peak="${peak_kb:-0}" -v hwm="${hwm_kb:-0}" -v alive="$alive" -v e="$errors" -v w="$warns" \
        -v p0="$pcpu0" -v p1="$pcpu1" -v pidle="$pulse_idle_kb" -v ppeak="$pulse_peak_kb" \
        'BEGIN { cpu = (c1 - c0) / hz; wall = t1 - t0; pcpu = (p1 - p0) / hz;
                 printf "%-13s %4d %6d %3s %7.1f %6.1f %8.1f %6.1f %8.1f %8.1f %8.1f %8.1f   %6.1f %7.1f %8.1f  %s %d/%d\n",
                 n, ok, f, rc, cpu, 100 * cpu / wall, 1000 * cpu / calls, wall,
                 idle / 1024, peak / 1024, hwm / 1024, (peak - idle) / calls,
                 pcpu, 1000 * pcpu / calls, (ppeak - pidle) / calls, alive, e, w }')")
    say "${RESULTS[-1]}"
    if grep -q '^earshot_agent_uplink_seconds_count [1-9]' "$WORK/$name.metrics" 2>/dev/null; then
        for hop in uplink downlink frame_out; do
            HOPS+=("$name  $(hop_quantiles "$WORK/$name.metrics" "earshot_agent_${hop}_seconds")")
        done
        HOPS+=("$(grep -E '^earshot_agent_(fallbacks_total|overrun|underruns|messages_dropped)' "$WORK/$name.metrics" | grep -v ' 0$' | tr '\n' ' ')")
    fi
    if [ "${failed:-0}" != 0 ] || [ "$sipp_rc" != 0 ]; then
        say "$name: SIPp exit $sipp_rc, failures; last errors:"
        tail -5 "$WORK/$name.sipp-errors.log" 2>/dev/null >&2
        grep -E 'ERROR|WARN' "$TARGET_LOG" | sort | uniq -c | sort -rn | head -5 >&2
    fi
}

# Writes two snapshots (time, CPU ticks of $1) to $2: 3 s after the last call should be up
# (CALLS / RATE s after SIPp starts) and 3 s before the first should end, when that window is
# at least 5 s long.
steady_probe() { # PID FILE
    local from=$((CALLS / RATE + 3)) to=$((SECONDS_PER_CALL - 3))
    [ "$to" -ge $((from + 5)) ] || return 0
    sleep "$from"
    echo "$(date +%s.%N) $(cpu_ticks "$1")" >>"$2"
    sleep $((to - from))
    echo "$(date +%s.%N) $(cpu_ticks "$1")" >>"$2"
}

# The steady-state row of target $1 from its snapshots $2: CPU per second and per call, and
# per RTP packet in + out, the packets being what the calls carry (CALLS x 50 each way a
# second; earshot's own counters move only when a call ends). Valid when no call failed.
steady_row() { # NAME FILE
    awk -v n="$1" -v hz="$CLK_TCK" -v calls="$CALLS" '
        NR == 1 { t0 = $1; c0 = $2 }
        NR == 2 { t1 = $1; c1 = $2 }
        END {
            if (NR < 2) { printf "%-13s (no steady window: SECONDS_PER_CALL too short)", n; exit }
            wall = t1 - t0; cpu = (c1 - c0) / hz; pk = 2 * 50 * calls * wall
            printf "%-13s %6.1f %6.2f %6.1f %10d %6.2f %8.2f", n, wall, cpu, 100 * cpu / wall, pk, 1e6 * cpu / pk, 1000 * cpu / wall / calls
        }' "$2"
}

# p50 and p99 of a Prometheus histogram $2 in the metrics text $1, as the upper bound of the
# bucket that holds them (the histogram's resolution), with its count.
hop_quantiles() {
    awk -v name="$2" '
        index($0, name "_bucket{le=\"") == 1 {
            split($0, a, "\""); le = a[2]; n = $2
            bounds[++k] = le; counts[k] = n
        }
        index($0, name "_count ") == 1 { total = $2 }
        END {
            p50 = "?"; p99 = "?"
            for (i = 1; i <= k; i++) {
                if (p50 == "?" && counts[i] >= 0.5 * total) p50 = bounds[i]
                if (p99 == "?" && counts[i] >= 0.99 * total) p99 = bounds[i]
            }
            printf "%-32s n=%d  p50 <= %s s  p99 <= %s s\n", name, total, p50, p99
        }' "$1"
}

# The last value of column $2 of SIPp's statistics CSV $1 (semicolon-separated).
stat_col() {
    [ -f "$1" ] || { echo 0; return; }
    awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
                           c { v = $c } END { print v + 0 }' "$1"
}

load() {
    local targets=("$@")
    [ ${#targets[@]} -eq 0 ] && targets=(earshot earshot-rec earshot-pulse baresip)
    build_earshot
    local pcap_ms=$((SECONDS_PER_CALL * 1000))
    write_pcap "$WORK/load.pcap" "$pcap_ms" tone
    scenario "$WORK/load.pcap" $((pcap_ms + 200))
    for t in "${targets[@]}"; do
        run_target "$t"
        sleep 3
    done
    echo
    echo "SIP load: $CALLS calls, ${SECONDS_PER_CALL} s of two-way PCMU each, $RATE new calls/s; $(nproc) cores, $(uname -r)"
    echo "cpu: utime+stime over the SIPp run; cpu % of one core; kB/call = (peak RSS - idle RSS) / calls;"
    echo "pulse columns: the private PulseAudio's CPU and RSS growth, for targets that play through it"
    printf '%-13s %4s %6s %3s %7s %6s %8s %6s %8s %8s %8s %8s   %6s %7s %8s  %s\n' \
        target ok failed rc "cpu s" "cpu %" "ms/call" "wall s" "idle MiB" "peak MiB" "HWM MiB" "kB/call" \
        "pa cpu" "pa ms/c" "pa kB/c" "alive err/warn"
    printf '%s\n' "${RESULTS[@]}"
    echo "steady state (every call up): CPU between two snapshots; packets in + out = calls x 100/s"
    printf '%-13s %6s %6s %6s %10s %6s %8s\n' target "wall s" "cpu s" "cpu %" packets "us/pkt" "ms/s/call"
    printf '%s\n' "${STEADY[@]}"
    if [ ${#HOPS[@]} -gt 0 ]; then
        echo "time inside earshot, agent calls (uplink: caller frame's tick -> written to the agent;"
        echo "downlink: agent message read -> audio queued; frame_out: tick -> RTP sent):"
        printf '%s\n' "${HOPS[@]}"
    fi
}

# Arrival-to-playout latency on a clean network, end to end, from outside the process:
#   - earshot plays to a private PulseAudio null sink ([audio] output = "default");
#   - one SIPp call sends LATENCY_SECONDS of PCMU silence with a 5 ms full-scale click at the
#     start of every second;
#   - tcpdump timestamps each click packet as it reaches earshot's RTP port (loopback);
#   - parec records the null sink's monitor; a sample appears there when the sink renders it.
#     The stream's sample index is mapped to wall time by the lower envelope of
#     (read time - samples read so far / rate), which removes the reader's scheduling delay.
#   - click onset time on the monitor - click packet arrival = arrival-to-render latency, a lower
#     bound of arrival-to-sound; PulseAudio's own latency for earshot's stream (the sink
#     input's "Sink Latency", the null sink's render-ahead) is sampled with pactl and added for
#     the arrival-to-playback estimate. Printed: p50, p90, min, max over all clicks.
latency() {
    local seconds=${LATENCY_SECONDS:-30}
    command -v tcpdump >/dev/null || die "tcpdump is not installed"
    command -v parec >/dev/null || die "parec (pulseaudio-utils) is not installed"
    build_earshot
    for p in $SIP_PORT $SIPP_PORT $MEDIA_PORT 25080; do port_free "$p" || die "port $p is in use"; done
    write_pcap "$WORK/clicks.pcap" $((seconds * 1000)) clicks
    scenario "$WORK/clicks.pcap" $((seconds * 1000 + 500))
    start_pulse
    start_earshot latency false default
    wait_udp_listen "$TARGET_PID" "$SIP_PORT" || { tail -20 "$TARGET_LOG"; die "earshot did not start"; }
    local spec rate channels
    spec=$(pactl list short sinks | awk '$2 == "bench" || NR == 1 {print $4, $5, $6; exit}')
    rate=$(echo "$spec" | awk '{sub("Hz", "", $3); print $3}')
    channels=$(echo "$spec" | awk '{sub("ch", "", $2); print $2}')
    timeout $((seconds + 60)) tcpdump -i lo -n -s 256 --immediate-mode -w "$WORK/arrivals.pcap" \
        'udp and dst portrange 30000-30999' 2>"$WORK/tcpdump.log" &
    PIDS+=("$!")
    local tcpdump_pid=$!
    timeout $((seconds + 60)) python3 - "$WORK/monitor" "$rate" "$channels" <<'PY' &
import os, subprocess, sys, time
out, rate, ch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
p = subprocess.Popen(["parec", "-d", "bench.monitor", "--raw", "--format=s16le",
                      "--rate=%d" % rate, "--channels=%d" % ch, "--latency-msec=5"],
                     stdout=subprocess.PIPE, bufsize=0)
fd = p.stdout.fileno()
total = 0
with open(out + ".raw", "wb") as raw, open(out + ".reads", "w") as reads:
    while True:
        b = os.read(fd, 4096)
        t = time.time()
        if not b:
            break
        raw.write(b)
        total += len(b)
        reads.write("%.6f %d\n" % (t, total))
PY
    PIDS+=("$!")
    local reader_pid=$!
    sleep 2
    say "one call: ${seconds} s of clicks (one per second) into earshot"
    (cd "$WORK" && timeout $((seconds + 60)) sipp -sf "$WORK/uac_load.xml" -i 127.0.0.1 -mi 127.0.0.1 \
        -p $SIPP_PORT -mp $MEDIA_PORT -m 1 -l 1 -nostdin -recv_timeout 30s \
        -trace_stat -stf "$WORK/latency.stat.csv" 127.0.0.1:$SIP_PORT >"$WORK/latency.sipp.out" 2>&1) &
    local sipp_pid=$!
    PIDS+=("$sipp_pid")
    # PulseAudio's view of earshot's stream, sampled while the call runs.
    local i
    for i in $(seq 1 $((seconds / 5))); do
        sleep 5
        pactl list sink-inputs | grep -E 'Latency' | tr -s ' \t' ' ' >>"$WORK/pa-latency.txt"
        pactl list sinks | grep -E 'Latency' | tr -s ' \t' ' ' | sed 's/^/sink /' >>"$WORK/pa-latency.txt"
    done
    wait "$sipp_pid"
    sleep 1
    curl -s "http://127.0.0.1:25080/metrics" >"$WORK/metrics.txt" 2>/dev/null
    kill "$reader_pid" "$tcpdump_pid" 2>/dev/null
    pkill -P "$reader_pid" parec 2>/dev/null
    sleep 1
    stop_target
    stop_pulse
    echo
    echo "SIPp: ok $(stat_col "$WORK/latency.stat.csv" 'SuccessfulCall(C)'), failed $(stat_col "$WORK/latency.stat.csv" 'FailedCall(C)')"
    python3 - "$WORK" "$rate" "$channels" <<'PY'
import struct, sys
work, rate, ch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

# Click packet arrivals (kernel timestamps on lo): RTP payloads that are not pure silence
# (0xFF in PCMU) and follow a silent packet.
data = open(work + "/arrivals.pcap", "rb").read()
magic = struct.unpack("<I", data[:4])[0]
nano = magic in (0xA1B23C4D,)
pos, arrivals, prev_loud = 24, [], False
while pos + 16 <= len(data):
    sec, frac, incl, _ = struct.unpack("<IIII", data[pos:pos + 16])
    pkt = data[pos + 16:pos + 16 + incl]
    pos += 16 + incl
    t = sec + frac / (1e9 if nano else 1e6)
    # Linux cooked or Ethernet framing on lo: find the IPv4 header.
    off = 14 if pkt[12:14] == b"\x08\x00" else 16
    ihl = (pkt[off] & 0x0F) * 4
    rtp = pkt[off + ihl + 8:]
    if len(rtp) < 12 + 40 or rtp[1] & 0x7F != 0:
        continue
    loud = any(b != 0xFF for b in rtp[12:52])
    if loud and not prev_loud:
        arrivals.append(t)
    prev_loud = loud

# Monitor stream: map sample index to wall time by the lower envelope of read times.
reads = [tuple(map(float, l.split())) for l in open(work + "/monitor.reads")]
frame = 2 * ch
offset = min(t - (n / frame) / rate for t, n in reads)
raw = open(work + "/monitor.raw", "rb").read()
samples = struct.unpack("<%dh" % (len(raw) // 2), raw[: len(raw) // 2 * 2])
onsets, quiet = [], rate  # need 0.5 s of quiet before an onset
for i in range(0, len(samples), ch):
    v = max(abs(samples[i + c]) for c in range(ch))
    if v > 3000 and quiet >= rate // 2:
        onsets.append(offset + (i // ch) / rate)
        quiet = 0
    elif v <= 3000:
        quiet += 1
    else:
        quiet = 0

lat = []
for o in onsets:
    before = [a for a in arrivals if a <= o and o - a < 1.0]
    if before:
        lat.append((o - before[-1]) * 1000)
pa = {"buffer": [], "input-sink": [], "sink": []}
for l in open(work + "/pa-latency.txt"):
    # " Buffer Latency: 25250 usec" / " Sink Latency: 602 usec" (earshot's sink input) and
    # "sink Latency: 4952 usec, configured 5000 usec" (the null sink itself).
    parts = l.split()
    if "Latency:" not in parts:
        continue
    v = float(parts[parts.index("Latency:") + 1]) / 1000
    kind = "sink" if l.startswith("sink") else "buffer" if "Buffer" in l else "input-sink"
    pa[kind].append(v)
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))] if xs else float("nan")
print("click packets seen arriving %d, click onsets on the monitor %d, paired %d"
      % (len(arrivals), len(onsets), len(lat)))
print("arrival -> rendered by the null sink (monitor), ms: p50 %.1f  p90 %.1f  min %.1f  max %.1f"
      % (pct(lat, .5), pct(lat, .9), min(lat, default=float("nan")), max(lat, default=float("nan"))))
print("PulseAudio, earshot's stream: buffer latency ms %s; sink latency ms %s"
      % (", ".join("%.1f" % v for v in pa["buffer"]), ", ".join("%.1f" % v for v in pa["input-sink"])))
print("PulseAudio null sink latency (render-ahead) ms: %s" % ", ".join("%.1f" % v for v in pa["sink"]))
if pa["sink"]:
    print("arrival -> playback estimate (monitor p50 + median null-sink latency %.1f ms): p50 %.1f ms"
          % (pct(pa["sink"], .5), pct(lat, .5) + pct(pa["sink"], .5)))
PY
    grep -E '^earshot_jitter_buffer_delay_ms_(sum|count)' "$WORK/metrics.txt" 2>/dev/null
    # earshot's own measurement: each played frame's packet arrival -> the host's playback
    # timestamp for its first sample (cpal), and the host's callback -> playback share.
    grep -E '^earshot_audio_(latency|queued|output_latency|period)_seconds|^earshot_audio_underruns' \
        "$WORK/metrics.txt" 2>/dev/null
}

# Webhook throughput: WEBHOOK_EVENTS (10 000) events queued, then delivered to a local receiver
# while calls run.
#   1. SIPp places WEBHOOK_EVENTS / 4 short recorded calls (1 s of audio each, 100 at once);
#      each owes call.started, call.answered, call.ended and recording.ready to one
#      [[webhook]] whose receiver is down: they wait in the outbox (retry every <= 1 s).
#   2. The receiver (tests/agents/webhook_receiver.py, which verifies every request with the
#      Standard Webhooks library) comes up while 50 two-way 30 s calls run; the time from then
#      to the last event delivered, and earshot's CPU and peak RSS over that drain, are printed,
#      with the calls' failures.
webhooks() {
    local events=${WEBHOOK_EVENTS:-10000}
    local calls=$((events / 4))
    local python=${EARSHOT_AGENT_PYTHON:-$ROOT/target/agent-venv/bin/python}
    [ -x "$python" ] || die "no agent venv at $python (scripts/test.sh makes it)"
    local hook_port=25095 secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    build_earshot
    CALLS=100
    EXTRA_TOML="[[webhook]]
url = \"http://127.0.0.1:$hook_port/hook\"
secret = \"$secret\"
allow_private = true
[webhooks]
retry_base_ms = 200
retry_cap_ms = 1000"
    write_pcap "$WORK/short.pcap" 1000 tone
    scenario "$WORK/short.pcap" 1200
    cp "$WORK/uac_load.xml" "$WORK/uac_short.xml"
    write_pcap "$WORK/long.pcap" 30000 tone
    scenario "$WORK/long.pcap" 30200
    start_earshot webhooks true none
    wait_udp_listen "$TARGET_PID" "$SIP_PORT" || { tail -20 "$TARGET_LOG"; die "earshot did not start"; }
    sleep 1
    local metric
    metric() { curl -s --max-time 5 http://127.0.0.1:25080/metrics | awk -v m="$1" '$1 == m {print $2 + 0}'; }
    say "phase 1: $calls short calls, receiver down"
    (cd "$WORK" && timeout 600 sipp -sf "$WORK/uac_short.xml" -i 127.0.0.1 -mi 127.0.0.1 \
        -p $SIPP_PORT -mp $MEDIA_PORT -m "$calls" -l 100 -r 50 -recv_timeout 30s -nostdin \
        -trace_stat -stf "$WORK/short.stat.csv" -fd 5 127.0.0.1:$SIP_PORT >"$WORK/short.sipp.out" 2>&1)
    local short_failed
    short_failed=$(stat_col "$WORK/short.stat.csv" 'FailedCall(C)')
    local _ pending=0
    for _ in $(seq 60); do
        pending=$(metric earshot_webhook_deliveries_pending)
        [ "${pending:-0}" -ge "$events" ] && break
        sleep 1
    done
    say "queued: $pending deliveries pending (short calls failed: $short_failed)"
    say "phase 2: receiver up, 50 calls running"
    (cd "$WORK" && timeout 120 sipp -sf "$WORK/uac_load.xml" -i 127.0.0.1 -mi 127.0.0.1 \
        -p $SIPP_PORT -mp $MEDIA_PORT -m 50 -l 50 -r 50 -recv_timeout 30s -nostdin \
        -trace_stat -stf "$WORK/long.stat.csv" -fd 5 127.0.0.1:$SIP_PORT >"$WORK/long.sipp.out" 2>&1) &
    local sipp_pid=$!
    sleep 2
    local samples="$WORK/webhooks.rss"
    (while kill -0 "$TARGET_PID" 2>/dev/null; do status_kb "$TARGET_PID" VmRSS; sleep 0.5; done) >"$samples" &
    local sampler=$!
    PIDS+=("$sampler")
    # The running calls' own started and answered events are queued by now too: the drain is
    # everything pending when the receiver comes up.
    local target cpu0 t0 cpu1 t1 delivered=0
    target=$(metric earshot_webhook_deliveries_pending)
    cpu0=$(cpu_ticks "$TARGET_PID")
    t0=$(date +%s.%N)
    "$python" "$ROOT/tests/agents/webhook_receiver.py" --port $hook_port --secret "$secret" \
        --out "$WORK/received.jsonl" >"$WORK/receiver.log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 1200); do
        delivered=$(metric earshot_webhook_deliveries_delivered_total)
        [ "${delivered:-0}" -ge "$target" ] && break
        sleep 0.5
    done
    t1=$(date +%s.%N)
    cpu1=$(cpu_ticks "$TARGET_PID")
    wait "$sipp_pid"
    kill "$sampler" 2>/dev/null
    local peak verified long_ok long_failed
    peak=$(awk '$1 > m { m = $1 } END { print m + 0 }' "$samples")
    verified=$(grep -c '"verified": true' "$WORK/received.jsonl" 2>/dev/null || echo 0)
    long_ok=$(stat_col "$WORK/long.stat.csv" 'SuccessfulCall(C)')
    long_failed=$(stat_col "$WORK/long.stat.csv" 'FailedCall(C)')
    stop_target
    echo
    echo "webhooks: $target deliveries queued ($events by $calls calls, the rest by the 50 calls that then ran during the drain); $(nproc) cores, $(uname -r)"
    awk -v d="$delivered" -v v="$verified" -v t0="$t0" -v t1="$t1" -v c0="$cpu0" -v c1="$cpu1" \
        -v hz="$CLK_TCK" -v peak="$peak" -v ok="$long_ok" -v f="$long_failed" -v sf="$short_failed" \
        'BEGIN { wall = t1 - t0; cpu = (c1 - c0) / hz;
                 printf "delivered %d (receiver verified %d requests in all) in %.1f s = %.0f/s; earshot CPU %.1f s (%.0f%% of a core), peak RSS %.1f MiB; calls during the drain: %d ok, %d failed; short calls failed: %d\n",
                 d, v, wall, d / wall, cpu, 100 * cpu / wall, peak / 1024, ok, f, sf }'
}

# SIP flood during calls: CALLS (50) recorded two-way calls of SECONDS_PER_CALL (30) s each
# from SIPp on 127.0.0.1, while a flooder on 127.0.0.2 sends FLOOD_RATE (10 000) distinct-branch
# OPTIONS a second for the calls' duration. Three runs: no flood (the baseline), the flooder
# allowed by [sip].allow (each OPTIONS parsed, bounded by the per-source transaction limit, the
# excess dropped), and the flooder outside [sip].allow (dropped on arrival). Per run: earshot's
# CPU and peak RSS, the datagrams sent and what /metrics says earshot did with them, CPU per
# datagram over the baseline, and whether the calls lost audio: SIPp's failed calls, the RTP
# packets earshot received against the packets SIPp sent (SECONDS_PER_CALL x 50 per call), RTP
# lost and concealed frames, and one recording per call.
flood() {
    local rate=${FLOOD_RATE:-10000}
    build_earshot
    local pcap_ms=$((SECONDS_PER_CALL * 1000))
    write_pcap "$WORK/load.pcap" "$pcap_ms" tone
    scenario "$WORK/load.pcap" $((pcap_ms + 200))
    local rows=() base_cpu=""
    local mode
    for mode in none allowed disallowed; do
        for p in $SIP_PORT $SIPP_PORT $MEDIA_PORT 25080; do port_free "$p" || die "port $p is in use"; done
        case $mode in
            disallowed) SIP_ALLOW='["127.0.0.1/32"]' ;;
            *) SIP_ALLOW='["127.0.0.0/8"]' ;;
        esac
        start_earshot "flood-$mode" true none
        wait_udp_listen "$TARGET_PID" "$SIP_PORT" || { tail -20 "$TARGET_LOG"; die "earshot did not start"; }
        sleep 2
        local idle_kb samples="$WORK/flood-$mode.rss"
        idle_kb=$(status_kb "$TARGET_PID" VmRSS)
        (while kill -0 "$TARGET_PID" 2>/dev/null; do status_kb "$TARGET_PID" VmRSS; sleep 0.5; done) >"$samples" &
        local sampler=$!
        PIDS+=("$sampler")
        local cpu0 t0 cpu1 t1
        cpu0=$(cpu_ticks "$TARGET_PID")
        t0=$(date +%s.%N)
        (cd "$WORK" && timeout --kill-after=5 $((SECONDS_PER_CALL + 120)) sipp -sf "$WORK/uac_load.xml" \
            -i 127.0.0.1 -mi 127.0.0.1 -p $SIPP_PORT -mp $MEDIA_PORT \
            -m "$CALLS" -l "$CALLS" -r "$RATE" -recv_timeout 30s -nostdin \
            -trace_stat -stf "$WORK/flood-$mode.stat.csv" -fd 5 \
            127.0.0.1:$SIP_PORT >"$WORK/flood-$mode.sipp.out" 2>&1) &
        local sipp_pid=$!
        PIDS+=("$sipp_pid")
        local sent=0
        if [ "$mode" != none ]; then
            sleep $((CALLS / RATE + 1))
            say "flood ($mode source): $rate OPTIONS/s for $((SECONDS_PER_CALL - CALLS / RATE - 2)) s"
            sent=$(timeout $((SECONDS_PER_CALL + 30)) python3 - 127.0.0.2 "127.0.0.1:$SIP_PORT" "$rate" \
                $((SECONDS_PER_CALL - CALLS / RATE - 2)) <<'PY'
import socket, sys, time
src, dst, rate, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
host, port = dst.rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.setblocking(False)
lport = s.getsockname()[1]
head = ("OPTIONS sip:earshot@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;rport;branch=z9hG4bKf" % (dst, src, lport)).encode()
tail = ("\r\nMax-Forwards: 70\r\nFrom: <sip:flood@%s>;tag=f\r\nTo: <sip:earshot@%s>\r\n"
        "Call-ID: flood-%d\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n" % (src, dst, lport)).encode()
sent, start, batch = 0, time.monotonic(), max(1, rate // 1000)
while True:
    now = time.monotonic() - start
    if now >= seconds:
        break
    due = int(now * rate)
    while sent < due:
        try:
            s.sendto(head + str(sent).encode() + tail, (host, int(port)))
        except BlockingIOError:
            pass
        sent += 1
    # Drain whatever earshot answers, so our own buffer never stalls the sender.
    try:
        while s.recv(65536):
            pass
    except (BlockingIOError, OSError):
        pass
    time.sleep(0.0005)
print(sent)
PY
            )
        fi
        wait "$sipp_pid"
        t1=$(date +%s.%N)
        cpu1=$(cpu_ticks "$TARGET_PID")
        sleep 2
        curl -s --max-time 5 http://127.0.0.1:25080/metrics >"$WORK/flood-$mode.metrics" 2>/dev/null
        kill "$sampler" 2>/dev/null
        wait "$sampler" 2>/dev/null
        stop_target
        local peak ok failed recordings
        peak=$(awk '$1 > m { m = $1 } END { print m + 0 }' "$samples")
        ok=$(stat_col "$WORK/flood-$mode.stat.csv" 'SuccessfulCall(C)')
        failed=$(stat_col "$WORK/flood-$mode.stat.csv" 'FailedCall(C)')
        recordings=$(find "$WORK/flood-$mode/recordings" -name '*.wav' | wc -l)
        local m="$WORK/flood-$mode.metrics"
        mval() { awk -v k="$1" '$1 == k { print $2 + 0 }' "$m"; }
        local cpu
        cpu=$(awk -v c0="$cpu0" -v c1="$cpu1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (c1 - c0) / hz }')
        [ "$mode" = none ] && base_cpu=$cpu
        rows+=("$(awk -v mode="$mode" -v sent="${sent:-0}" -v cpu="$cpu" -v base="${base_cpu:-$cpu}" \
            -v t0="$t0" -v t1="$t1" -v idle="$idle_kb" -v peak="$peak" -v ok="${ok:-0}" -v f="${failed:-0}" \
            -v rec="$recordings" -v recv="$(mval earshot_sip_messages_received_total)" \
            -v blocked="$(mval earshot_sip_blocked_total)" -v tx="$(mval earshot_sip_server_transactions)" \
            -v dropped="$(mval earshot_sip_overload_dropped_total)" \
            -v rtp="$(mval earshot_rtp_packets_received_total)" -v lost="$(mval earshot_rtp_packets_lost_total)" \
            -v conc="$(mval earshot_concealed_frames_total)" -v calls="$CALLS" -v secs="$SECONDS_PER_CALL" \
            'BEGIN { wall = t1 - t0; extra = cpu - base;
                     printf "%-10s %7d %7d %7d %6d %7d %6.2f %5.1f %8s %7.1f %7.1f  %3d/%-3d %3d %8d/%-8d %5d %5d\n",
                     mode, sent, recv, blocked, dropped, tx, cpu, 100 * cpu / wall,
                     (sent > 0 ? sprintf("%.1f", 1e6 * extra / sent) : "-"),
                     idle / 1024, peak / 1024, ok, f, rec, rtp, calls * secs * 50, lost, conc }')")
        say "${rows[-1]}"
        sleep 3
    done
    echo
    echo "SIP flood during calls: $CALLS recorded two-way calls x ${SECONDS_PER_CALL} s; $rate OPTIONS/s from 127.0.0.2; $(nproc) cores, $(uname -r), profile $PROFILE"
    echo "sent: flood datagrams; recv: SIP messages earshot parsed (calls' too); blocked: outside [sip].allow;"
    echo "dropped: over the per-source transaction bound; tx: server transactions at the end;"
    echo "us/dgram: earshot CPU over the no-flood run / datagrams sent; rtp: received / sent by SIPp"
    printf '%-10s %7s %7s %7s %6s %7s %6s %5s %8s %7s %7s  %7s %3s %17s %5s %5s\n' \
        flooder sent recv blocked drop tx "cpu s" "cpu%" us/dgram "idleMiB" "peakMiB" ok/fail rec rtp lost conc
    printf '%s\n' "${rows[@]}"
}

case "${1:-}" in
    latency) shift; latency "$@" ;;
    flood) shift; flood "$@" ;;
    webhooks) shift; webhooks "$@" ;;
    *) load "$@" ;;
esac
