#!/usr/bin/env bash
# gRPC unary load through fulcrum (`protocol = "h2"`, h2c listener) and through
# nginx `grpc_pass` to the same tonic backend, same run, alternating rounds:
# calls/s, p50/p99 latency, CPU time per call of the proxy process (utime+stime,
# which stays readable on a shared, noisy machine where calls/s do not).
#
# Setup: load client (benches/grpc_load.rs, 4 h2c channels, CPU 0) -> proxy with one
# worker (CPU 1) -> one tonic backend (CPU 0). Everything on 127.0.0.1, ports from
# the kernel, 100-byte messages.
#
# Usage: FULCRUM_BIN=target/release/fulcrum LOAD_BIN=target/release/deps/grpc_load-HASH \
#        [SECS=5] [ROUNDS=3] [CONC=64] benches/grpc.sh
set -euo pipefail
: "${FULCRUM_BIN:?set FULCRUM_BIN to a release build of fulcrum}"
: "${LOAD_BIN:?set LOAD_BIN to the release build of benches/grpc_load.rs}"
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
CONC=${CONC:-64}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
for t in "$NGINX" taskset python3; do
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
taskset -c 0 "$LOAD_BIN" backend "$D/backend" & PIDS+=($!)
for _ in $(seq 100); do [ -s "$D/backend" ] && break; sleep 0.1; done
BE=$(cat "$D/backend")
FP=$(port); NP=$(port)
cat > "$D/fulcrum.toml" <<CONF
[global]
worker_threads = 1
[upstream.be]
server = ["$BE"]
protocol = "h2"
[[server]]
listen = ["127.0.0.1:$FP"]
http2 = true
[[server.location]]
path = "/"
proxy_pass = "http://be"
CONF
mkdir -p "$D/ng/tmp"
cat > "$D/ng/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $D/ng/nginx.pid; error_log $D/ng/error.log warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $D/ng/tmp; proxy_temp_path $D/ng/tmp;
 fastcgi_temp_path $D/ng/tmp; uwsgi_temp_path $D/ng/tmp; scgi_temp_path $D/ng/tmp;
 keepalive_requests 1000000; http2_max_requests 1000000;
 upstream be { server $BE; keepalive 128; keepalive_requests 1000000; }
 server { listen 127.0.0.1:$NP http2;
  location / { grpc_pass grpc://be; } } }
CONF
RUST_LOG=warn taskset -c 1 "$FULCRUM_BIN" --config "$D/fulcrum.toml" 2>"$D/fulcrum.err" & FPID=$!
PIDS+=($FPID)
taskset -c 1 "$NGINX" -c "$D/ng/nginx.conf" -p "$D/ng" 2>"$D/nginx.err" & PIDS+=($!)
sleep 1
# nginx's worker is the child of the master.
NPID=$(pgrep -P "$(cat "$D/ng/nginx.pid")" | head -1)
for r in $(seq "$ROUNDS"); do
    for row in fulcrum nginx; do
        case $row in
            fulcrum) addr="127.0.0.1:$FP"; pid=$FPID ;;
            nginx) addr="127.0.0.1:$NP"; pid=$NPID ;;
        esac
        out=$(taskset -c 0 "$LOAD_BIN" load "$addr" "$CONC" "$SECS" "$pid")
        echo "$row $out" >> "$D/results"
    done
    echo "round $r done" >&2
done
python3 - "$D/results" <<'PY'
import statistics, sys
vals = {}
for line in open(sys.argv[1]):
    name, *kv = line.split()
    d = dict(x.split("=") for x in kv)
    vals.setdefault(name, []).append({k: float(v) for k, v in d.items()})
med = lambda name, k: statistics.median(r[k] for r in vals[name])
print("| proxy | calls/s | p50 ms | p99 ms | CPU µs/call | calls/s vs nginx |")
print("|---|---|---|---|---|---|")
for name in ("fulcrum", "nginx"):
    print(f"| {name} | {med(name,'calls_per_s'):.0f} | {med(name,'p50_ms'):.2f} | "
          f"{med(name,'p99_ms'):.2f} | {med(name,'cpu_us_per_call'):.1f} | "
          f"{med(name,'calls_per_s')/med('nginx','calls_per_s'):.2f}× |")
print(f"(medians of {len(vals['nginx'])} rounds)")
PY
