#!/usr/bin/env bash
# CPU time per request of fulcrum with both off (admin API off, so no per-request
# counting, and no access log), metrics only, and with the access log on (combined
# and json), optionally also a baseline build. CPU time
# (utime+stime of the whole process, writer thread included, per request served)
# stays readable on a shared, noisy machine where req/s do not; compare.sh is the
# throughput figure (benches/metrics_cost.sh).
#
# Setup: wrk (CPU 0) -> fulcrum, 1 worker (CPU 1) -> one nginx backend with three
# ports answering 1 KiB (CPU 0). Everything on 127.0.0.1, ports from the kernel.
#
# Usage: FULCRUM_BIN=target/release/fulcrum [BASELINE_BIN=...] [DUR=5s] [ROUNDS=4] \
#        benches/metrics_cpu.sh
set -euo pipefail
: "${FULCRUM_BIN:?set FULCRUM_BIN to a release build of fulcrum}"
DUR=${DUR:-5s}
ROUNDS=${ROUNDS:-4}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
for t in wrk "$NGINX" taskset curl python3; do
    command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
D=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
B1=$(port); B2=$(port); B3=$(port); LB=$(port); ADMIN=$(port)
BODY=$(python3 -c 'print("x"*1024)')
mkdir -p "$D/be/tmp" "$D/logs"
cat > "$D/be/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $D/be/nginx.pid; error_log $D/be/error.log warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $D/be/tmp; proxy_temp_path $D/be/tmp;
 fastcgi_temp_path $D/be/tmp; uwsgi_temp_path $D/be/tmp; scgi_temp_path $D/be/tmp;
 keepalive_timeout 75s; keepalive_requests 1000000;
 server { listen 127.0.0.1:$B1; listen 127.0.0.1:$B2; listen 127.0.0.1:$B3;
  location / { return 200 "$BODY"; } } }
CONF
taskset -c 0 "$NGINX" -c "$D/be/nginx.conf" -p "$D/be" & PIDS+=($!)
cfg() { # access_log lines, [admin] listen
    cat <<CONF
[global]
worker_threads = 1
$1
[admin]
listen = "${2:-127.0.0.1:$ADMIN}"
[upstream.backend]
server = ["127.0.0.1:$B1", "127.0.0.1:$B2", "127.0.0.1:$B3"]
keepalive = 64
[[server]]
listen = ["127.0.0.1:$LB"]
[[server.location]]
path = "/"
proxy_pass = "http://backend"
CONF
}
cfg 'access_log = "off"' > "$D/off.toml"
cfg 'access_log = "off"' off > "$D/none.toml"
cfg "access_log = \"$D/logs/access.log\"" > "$D/combined.toml"
cfg "access_log = \"$D/logs/access.json\"
access_log_format = \"json\"" > "$D/json.toml"
TCK=$(getconf CLK_TCK)
run() { # name binary config
    RUST_LOG=warn taskset -c 1 "$2" --config "$3" 2>"$D/$1.err" & local p=$!
    local i
    # Ready when it proxies (the "none" run has no admin /readyz).
    for i in $(seq 100); do curl -sf "127.0.0.1:$LB/" >/dev/null && break; sleep 0.1; done
    taskset -c 0 wrk -t1 -c64 -d1s "http://127.0.0.1:$LB/" >/dev/null
    local t0 t1 out
    t0=$(awk '{print $14+$15}' "/proc/$p/stat")
    out=$(taskset -c 0 wrk -t1 -c64 -d"$DUR" "http://127.0.0.1:$LB/")
    t1=$(awk '{print $14+$15}' "/proc/$p/stat")
    kill "$p"; wait "$p" 2>/dev/null || true
    rm -f "$D"/logs/*
    local reqs
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    python3 -c "print('$1', round(($t1-$t0)/$TCK*1e6/$reqs, 2))" >> "$D/results"
}
rows=()
[ -n "${BASELINE_BIN:-}" ] && rows+=("baseline")
rows+=(none metrics log_combined log_json)
for r in $(seq "$ROUNDS"); do
    for row in "${rows[@]}"; do
        case $row in
            baseline) run baseline "$BASELINE_BIN" "$D/off.toml" ;;
            none) run none "$FULCRUM_BIN" "$D/none.toml" ;;
            metrics) run metrics "$FULCRUM_BIN" "$D/off.toml" ;;
            log_combined) run log_combined "$FULCRUM_BIN" "$D/combined.toml" ;;
            log_json) run log_json "$FULCRUM_BIN" "$D/json.toml" ;;
        esac
    done
    echo "round $r done" >&2
done
python3 - "$D/results" "${rows[@]}" <<'PY'
import statistics, sys
vals = {}
for line in open(sys.argv[1]):
    name, v = line.split()
    vals.setdefault(name, []).append(float(v))
rows = sys.argv[2:]
ref = statistics.median(vals[rows[0]])
print(f"| run | CPU µs/request, median | min–max | vs {rows[0]} |")
print("|---|---|---|---|")
for r in rows:
    m = statistics.median(vals[r])
    print(f"| {r} | {m:.2f} | {min(vals[r]):.2f}–{max(vals[r]):.2f} | {100*(m/ref-1):+.1f} % |")
PY
