#!/usr/bin/env bash
# Instructions per request (user space, callgrind): the figure in docs/performance.md.
#
# fulcrum runs under `valgrind --tool=callgrind` with compare.sh's config as shipped
# (../shared/bench/templates/fulcrum.toml: one worker thread, metrics on, access log
# off, round-robin over three backend ports with upstream keep-alive), in front of
# compare.sh's backend (templates/backend-nginx.conf: one nginx worker answering 200
# with a BODY_BYTES body, keep-alive). After a warm-up the counters are zeroed
# (`callgrind_control -z`), wrk runs DURATION at CONNS keep-alive connections, and
# the counters are dumped (`callgrind_control -d`): the dump's total Ir (all
# threads) divided by the requests wrk completed is the figure. Instruction counts
# hardly depend on what else the machine is doing, so this compares two builds on a
# busy machine. Hardly: fulcrum also runs ~140,000 instructions a second with no load
# (config watcher, timers), so the figure rises as callgrind's req/s fall (15,240 at
# 7,700 req/s, 15,340 at 1,700 on one build); the second figure, with that idle rate
# (measured first, IDLE) taken out, stays within ~0.3%. Compare builds on it.
#
# Pinning: wrk and the backend on CPU 0, fulcrum on CPU 1. Everything on 127.0.0.1,
# ports from the kernel, files in a mktemp dir; every process started here is
# stopped by its pid on exit.
#
# Usage: [FULCRUM_BIN=target/release/fulcrum] [DURATION=20s] [CONNS=16] [WARMUP=3s]
#        [BODY_BYTES=1024] [IDLE=5s] [CLOSE=0] [KEEP=dir] [BENCH=../shared/bench] benches/callgrind.sh
#   Without FULCRUM_BIN, `cargo build --release` builds this checkout first.
#   KEEP=dir copies the dumps there (for `callgrind_annotate dir/callgrind.out`).
#   IDLE: how long the idle rate is measured, after the warm-up (0: not at all).
#   BENCH is the compare.sh directory whose templates/ and harness.py are used.
#   CLOSE=1: every request says `Connection: close` (compare.sh's MODE=close), so the
#   figure includes each connection's accept, set-up and close.
# Needs: valgrind (callgrind_control), wrk, nginx, curl, python3, taskset
#   (apt-get install -y valgrind wrk nginx).
# Prints "instructions/request: N" last, the idle-less figure before it (progress on
# stderr).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$ROOT/../shared/bench}
TEMPLATES=$BENCH/templates
HARNESS=(python3 "$BENCH/harness.py")
DURATION=${DURATION:-20s}
CONNS=${CONNS:-16}
WARMUP=${WARMUP:-3s}
IDLE=${IDLE:-5s}
BODY_BYTES=${BODY_BYTES:-1024}
CLOSE=${CLOSE:-0}
WRK_HEADER=()
[ "$CLOSE" = 1 ] && WRK_HEADER=(-H "Connection: close")
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
for t in valgrind callgrind_control wrk "$NGINX" curl python3 taskset; do
    command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
[ -f "$TEMPLATES/fulcrum.toml" ] && [ -f "$TEMPLATES/backend-nginx.conf" ] ||
    { echo "no compare.sh templates in $TEMPLATES (set BENCH=path/to/shared/bench)" >&2; exit 1; }
[[ $IDLE =~ ^[0-9]+[smh]?$ ]] || { echo "IDLE must look like 5s, or 0" >&2; exit 1; }
[[ $BODY_BYTES =~ ^[1-9][0-9]*$ && $BODY_BYTES -le 4000 ]] ||
    { echo "BODY_BYTES must be 1..4000" >&2; exit 1; }
if [ -z "${FULCRUM_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release >&2)
    FULCRUM_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/fulcrum
fi
FULCRUM_BIN=$(realpath "$FULCRUM_BIN")
[ -x "$FULCRUM_BIN" ] || { echo "not executable: $FULCRUM_BIN" >&2; exit 1; }
[ -n "${KEEP:-}" ] && KEEP=$(realpath -m "$KEEP")

# Seconds in a wrk-style duration (5s, 2m, 1h, or a bare number).
seconds_of() {
    case $1 in
        *h) echo $((${1%h} * 3600)) ;; *m) echo $((${1%m} * 60)) ;; *s) echo "${1%s}" ;; *) echo "$1" ;;
    esac
}
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

D=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
B1=$(port); B2=$(port); B3=$(port); DIRECT=$(port); LB=$(port); ADMIN=$(port)

# The backend and fulcrum's config are compare.sh's templates, as it renders them
# (WORKERS=1, plain HTTP/1): the instruction figure and compare.sh's table measure
# the same setup.
mkdir -p "$D/be/tmp"
"${HARNESS[@]}" render "$TEMPLATES/backend-nginx.conf" "$D/be/nginx.conf" \
    DIR="$D/be" B1="$B1" B2="$B2" B3="$B3" DIRECT="$DIRECT" DIRECT_OPTS="" \
    ANSWER="return 200 \"$(head -c "$BODY_BYTES" /dev/zero | tr '\0' x)\";"
taskset -c 0 "$NGINX" -c "$D/be/nginx.conf" -p "$D/be" 2>"$D/be/stderr.log" & PIDS+=($!)
"${HARNESS[@]}" render "$TEMPLATES/fulcrum.toml" "$D/fulcrum.toml" \
    WORKERS=1 ADMIN_PORT="$ADMIN" PORT="$LB" HTTP2_LINE="" TLS_LINE="" B1="$B1" B2="$B2" B3="$B3"

for p in "$B1" "$B2" "$B3"; do
    for _ in $(seq 50); do curl -sf "127.0.0.1:$p/" >/dev/null && break; sleep 0.1; done
    [ "$(curl -sf "127.0.0.1:$p/" | wc -c)" = "$BODY_BYTES" ] ||
        { echo "backend on $p not answering; log:" >&2; cat "$D/be/error.log" "$D/be/stderr.log" >&2; exit 1; }
done

# `valgrind` execs the tool, so $! is the pid callgrind_control talks to.
cd "$D"
RUST_LOG=warn taskset -c 1 valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$D/callgrind.out" \
    "$FULCRUM_BIN" --config "$D/fulcrum.toml" 2>"$D/fulcrum.log" & FPID=$!; PIDS+=("$FPID")
for _ in $(seq 300); do
    curl -sf "127.0.0.1:$ADMIN/readyz" >/dev/null && break
    kill -0 "$FPID" 2>/dev/null || { echo "fulcrum exited; log:" >&2; tail -20 "$D/fulcrum.log" >&2; exit 1; }
    sleep 0.2
done
curl -sf "127.0.0.1:$ADMIN/readyz" >/dev/null || { echo "fulcrum never ready" >&2; exit 1; }
[ "$(curl -sf "127.0.0.1:$LB/" | wc -c)" = "$BODY_BYTES" ] || { echo "fulcrum does not proxy" >&2; exit 1; }
log "fulcrum $("$FULCRUM_BIN" --version 2>&1 | head -1) under callgrind (pid $FPID), proxy :$LB, admin :$ADMIN"

# fulcrum_http_requests_total summed over its labels: a check on wrk's count.
served() { curl -sf "127.0.0.1:$ADMIN/metrics" | awk '/^fulcrum_http_requests_total/ { s += $NF } END { printf "%d\n", s }'; }

# load DURATION OUT: wrk in the background, so that a signal stops the run at once.
load() {
    taskset -c 0 wrk -t1 -c"$CONNS" -d"$1" "${WRK_HEADER[@]}" "http://127.0.0.1:$LB/" >"$2" & PIDS+=($!)
    wait $!
}

# dump: callgrind_control -d; DUMP_IR is the new dump's total Ir (all threads). Dumps are
# callgrind.out.1, .2, ...; each holds what ran since the last zero or dump.
DUMPS=0
dump() {
    callgrind_control -d "$FPID" >>"$D/ctl.log" 2>&1 || { cat "$D/ctl.log" >&2; exit 1; }
    DUMPS=$((DUMPS + 1))
    DUMP=$D/callgrind.out.$DUMPS
    [ -f "$DUMP" ] || { echo "no $DUMP; control log:" >&2; cat "$D/ctl.log" >&2; exit 1; }
    DUMP_IR=$(awk '/^totals:/ { t = $2 } /^summary:/ { s = $2 } END { print (t != "" ? t : s) }' "$DUMP")
}

log "warm-up: wrk -t1 -c$CONNS -d$WARMUP"
load "$WARMUP" /dev/null
sleep 1 # let the warm-up's connections close
callgrind_control -z "$FPID" >"$D/ctl.log" 2>&1 || { cat "$D/ctl.log" >&2; exit 1; }
if [ "$IDLE" != 0 ]; then
    log "idle: $IDLE without load (fulcrum's timers and background work)"
    sleep "$IDLE"
    dump
    IDLE_IR=$DUMP_IR
    IDLE_DUMP=$DUMP
fi
S0=$(served)
callgrind_control -z "$FPID" >>"$D/ctl.log" 2>&1 || { cat "$D/ctl.log" >&2; exit 1; }
log "measuring: wrk -t1 -c$CONNS -d$DURATION"
load "$DURATION" "$D/wrk.txt"
dump
IR=$DUMP_IR
S1=$(served)

REQS=$(awk '/requests in/ { print $1 }' "$D/wrk.txt")
ERRS=$(awk '/Socket errors/ { gsub(",", ""); for (i = 4; i <= NF; i += 2) s += $i } /Non-2xx/ { s += $NF } END { print s + 0 }' "$D/wrk.txt")
RPS=$(awk '/Requests\/sec/ { print $2 }' "$D/wrk.txt")
[ -n "$IR" ] && [ -n "$REQS" ] && [ "$REQS" -gt 0 ] || { echo "could not read Ir or requests" >&2; cat "$D/wrk.txt" >&2; exit 1; }
if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    cp "$DUMP" "$KEEP/callgrind.out"
    [ -n "${IDLE_DUMP:-}" ] && cp "$IDLE_DUMP" "$KEEP/callgrind.idle.out"
    log "dumps kept in $KEEP: callgrind.out (the load), callgrind.idle.out (idle)"
fi

echo "wrk -t1 -c$CONNS -d$DURATION ${WRK_HEADER[*]}, body $BODY_BYTES B: $REQS requests ($RPS req/s under callgrind), errors $ERRS"
echo "fulcrum counted $((S1 - S0)) requests in the window; Ir $IR"
if [ "$IDLE" != 0 ]; then
    # The idle rate is a fixed cost per second: its share of a request grows as
    # callgrind's throughput falls (a busy machine). Less it, the figure is steadier.
    python3 -c "r = $IDLE_IR / $(seconds_of "$IDLE"); t = $(seconds_of "$DURATION")
print(f'idle: {r:,.0f} instructions/s, {r / $RPS:,.0f} of each request at this rate')
print(f'instructions/request without the idle rate: {round(($IR - r * t) / $REQS):,}')"
fi
python3 -c "print(f'instructions/request: {round($IR / $REQS):,}')"
