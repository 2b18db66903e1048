#!/usr/bin/env bash
# Memory per idle client connection: nginx and fulcrum side by side (the hardening
# issue's "memory per idle connection"; docs/performance.md has the figures).
#
# Each proxy runs alone on 127.0.0.1 in front of compare.sh's backend nginx
# (../shared/bench/templates: one worker answering 200 with a BODY_BYTES body,
# upstream keep-alive), one worker each (nginx `worker_processes 1`, fulcrum
# `worker_threads = 1`, as compare.sh runs them), access logs off. For each count
# in COUNTS, benches/idle_memory.py opens that many client connections; in MODE
# `request` each makes one keep-alive GET and reads its answer, then stays idle
# (`none`: connected, nothing sent). It prints the proxy's RSS before, with the
# connections open (settled), KiB per connection, and RSS once they are all closed
# (polled until it stops falling). nginx's RSS is its master's and worker's.
#
# Usage: [FULCRUM_BIN=target/release/fulcrum] [COUNTS=5000,10000] [MODE=request]
#        [TARGETS="nginx fulcrum"] [BODY_BYTES=1024] [BENCH=../shared/bench]
#        benches/idle_memory.sh
#   Without FULCRUM_BIN, `cargo build --release` builds this checkout first.
#   Needs nginx, curl, python3 and `ulimit -n` above the largest count plus a few
#   hundred (fulcrum and the client each hold one descriptor per connection).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$ROOT/../shared/bench}
[ -d "$BENCH" ] || BENCH=$ROOT/../../shared/bench
TEMPLATES=$BENCH/templates
HARNESS=(python3 "$BENCH/harness.py")
COUNTS=${COUNTS:-5000,10000}
MODE=${MODE:-request}
TARGETS=${TARGETS:-nginx fulcrum}
BODY_BYTES=${BODY_BYTES:-1024}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
for t in "$NGINX" curl python3; do
    command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
[ -f "$TEMPLATES/fulcrum.toml" ] || { echo "no templates in $TEMPLATES (set BENCH=)" >&2; exit 1; }
[[ $MODE == request || $MODE == none ]] || { echo "MODE is request or none" >&2; exit 1; }
max=$(tr ',' '\n' <<<"$COUNTS" | sort -n | tail -1)
[ "$(ulimit -n)" -gt $((max + 200)) ] || ulimit -n $((max + 1000)) ||
    { echo "ulimit -n $(ulimit -n) is too low for $max connections" >&2; exit 1; }
if [[ " $TARGETS " == *" fulcrum "* && -z "${FULCRUM_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --release >&2)
    FULCRUM_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/fulcrum
fi

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

read -r B1 B2 B3 DIRECT PORT ADMIN < <("${HARNESS[@]}" free-ports 6)
mkdir -p "$D/be/tmp" "$D/nginx/tmp"
"${HARNESS[@]}" render "$TEMPLATES/backend-nginx.conf" "$D/be/nginx.conf" \
    DIR="$D/be" B1="$B1" B2="$B2" B3="$B3" DIRECT="$DIRECT" DIRECT_OPTS="" \
    ANSWER="return 200 \"$(head -c "$BODY_BYTES" /dev/zero | tr '\0' x)\";"
"$NGINX" -c "$D/be/nginx.conf" -p "$D/be" 2>"$D/be/stderr.log" & PIDS+=($!)
"${HARNESS[@]}" wait-http "http://127.0.0.1:$B1/" 10 "$!" "$BODY_BYTES"

# until_ready URL PID: the proxy answers the bench's request with the backend's body.
until_ready() { "${HARNESS[@]}" wait-http "$1" 30 "$2" "$BODY_BYTES"; }

# run NAME PIDS: the client against the proxy on $PORT, one line per count.
run() {
    python3 "$ROOT/benches/idle_memory.py" "$PORT" "$2" "$COUNTS" "$MODE" |
        while IFS=$'\t' read -r n before open per after; do
            awk -v t="$1" -v m="$MODE" -v n="$n" -v b="$before" -v o="$open" -v p="$per" -v a="$after" \
                'BEGIN { printf "| %s | %s | %d | %.1f MiB | %.1f MiB | %s | %.1f MiB |\n", t, m, n, b / 1024, o / 1024, p, a / 1024 }'

        done
}

echo "| proxy | connections made | count | RSS before | RSS open | KiB / connection | RSS after close |"
echo "|---|---|---:|---:|---:|---:|---:|"
for target in $TARGETS; do
    case $target in
    nginx)
        # compare.sh's proxy config; its limits raised for the counts here (nginx
        # closes idle keep-alive connections when fewer than 1/16 of its
        # worker_connections are free: twice the count keeps it from that).
        "${HARNESS[@]}" render "$TEMPLATES/proxy-nginx.conf" "$D/nginx/nginx.conf" \
            WORKERS=1 DIR="$D/nginx" PORT="$PORT" LISTEN_OPTS="" TLS_LINES="" \
            B1="$B1" B2="$B2" B3="$B3"
        sed -i "s/worker_rlimit_nofile [0-9]*;/worker_rlimit_nofile $((max * 2 + 1000));/;
            s/worker_connections [0-9]*;/worker_connections $((max * 2 + 500));/" "$D/nginx/nginx.conf"
        "$NGINX" -c "$D/nginx/nginx.conf" -p "$D/nginx" 2>"$D/nginx/stderr.log" & pid=$!
        PIDS+=("$pid")
        until_ready "http://127.0.0.1:$PORT/" "$pid"
        pids=$(pgrep -d, -P "$pid" || true)
        log "nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') (pids $pid,$pids)"
        run nginx "$pid,$pids"
        ;;
    fulcrum)
        "${HARNESS[@]}" render "$TEMPLATES/fulcrum.toml" "$D/fulcrum.toml" \
            WORKERS=1 ADMIN_PORT="$ADMIN" PORT="$PORT" HTTP2_LINE="" TLS_LINE="" \
            B1="$B1" B2="$B2" B3="$B3"
        RUST_LOG=warn "$FULCRUM_BIN" --config "$D/fulcrum.toml" 2>"$D/fulcrum.log" & pid=$!
        PIDS+=("$pid")
        until_ready "http://127.0.0.1:$PORT/" "$pid"
        log "fulcrum $FULCRUM_BIN (pid $pid)"
        run fulcrum "$pid"
        ;;
    *) echo "unknown target $target" >&2; exit 1 ;;
    esac
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done
