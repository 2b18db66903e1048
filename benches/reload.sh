#!/usr/bin/env bash
# Reload under load, fulcrum vs nginx: wrk for DURATION seconds at steady state,
# then again while the config is reloaded every INTERVAL seconds (alternating two
# valid configs that differ in one upstream server), for each proxy. Prints a
# table: req/s, p99 latency and errors (wrk socket errors + non-2xx) per run.
#
# Needs: wrk, nginx (apt-get install wrk nginx), a release build of fulcrum
# (cargo build --release; or set FULCRUM=/path/to/fulcrum).
# Tunables: DURATION (10), INTERVAL (0.1), CONNS (32), THREADS (2).
set -euo pipefail

DURATION=${DURATION:-10}
INTERVAL=${INTERVAL:-0.1}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FULCRUM=${FULCRUM:-${CARGO_TARGET_DIR:-$ROOT/target}/release/fulcrum}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
for tool in wrk "$NGINX" "$FULCRUM"; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/lb/nginx.pid" ] && kill "$(cat "$WORK/lb/nginx.pid")" 2>/dev/null || true
  [ -f "$WORK/be/nginx.pid" ] && kill "$(cat "$WORK/be/nginx.pid")" 2>/dev/null || true
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

# Free ports picked by the kernel.
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
B1=$(port); B2=$(port); B3=$(port); LB=$(port); ADMIN=$(port)

# Backends: one nginx with three tiny servers (never reloaded).
mkdir -p "$WORK/be" "$WORK/lb"
cat > "$WORK/be/nginx.conf" <<CONF
daemon on; pid $WORK/be/nginx.pid; error_log $WORK/be/error.log; worker_processes 1;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:$B1; location / { return 200 "b1\n"; } }
  server { listen 127.0.0.1:$B2; location / { return 200 "b2\n"; } }
  server { listen 127.0.0.1:$B3; location / { return 200 "b3\n"; } }
}
CONF
"$NGINX" -p "$WORK/be" -c "$WORK/be/nginx.conf"

fulcrum_conf() { # $1 = second server port
  cat <<CONF
[global]
worker_threads = 1
[admin]
listen = "127.0.0.1:$ADMIN"
[upstream.backend]
server = ["127.0.0.1:$B1", "127.0.0.1:$1"]
keepalive = 64
[[server]]
listen = ["127.0.0.1:$LB"]
[[server.location]]
path = "/"
proxy_pass = "http://backend"
CONF
}
nginx_conf() { # $1 = second server port
  cat <<CONF
daemon on; pid $WORK/lb/nginx.pid; error_log $WORK/lb/error.log; worker_processes 1;
events { worker_connections 4096; }
http { access_log off;
  upstream backend { server 127.0.0.1:$B1; server 127.0.0.1:$1; keepalive 64; }
  server { listen 127.0.0.1:$LB;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
}

# Runs wrk; prints "req/s p99 errors".
load() {
  local out
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$LB/")
  echo "$out" > "$WORK/wrk.last"
  local rps p99 sock non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  sock=$(awk '/Socket errors/ {gsub(",","");s=0;for(i=4;i<=NF;i+=2)s+=$i;print s}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  echo "$rps $p99 $(( ${sock:-0} + ${non2xx:-0} ))"
}

# Reloads every INTERVAL until killed, alternating configs. $1 = fulcrum|nginx.
reloader() {
  local i=0 n=0
  while true; do
    local second=$B2; (( i % 2 )) && second=$B3
    if [ "$1" = fulcrum ]; then
      fulcrum_conf "$second" > "$WORK/fulcrum.toml.tmp" && mv "$WORK/fulcrum.toml.tmp" "$WORK/fulcrum.toml"
      kill -HUP "$FPID"
    else
      nginx_conf "$second" > "$WORK/lb/nginx.conf.tmp" && mv "$WORK/lb/nginx.conf.tmp" "$WORK/lb/nginx.conf"
      "$NGINX" -p "$WORK/lb" -c "$WORK/lb/nginx.conf" -s reload 2>/dev/null
    fi
    i=$((i + 1)); n=$((n + 1)); echo "$n" > "$WORK/reloads"
    sleep "$INTERVAL"
  done
}

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

row() { printf "| %-8s | %-14s | %10s | %9s | %6s | %7s |\n" "$@"; }

declare -A R
for proxy in fulcrum nginx; do
  if [ "$proxy" = fulcrum ]; then
    fulcrum_conf "$B2" > "$WORK/fulcrum.toml"
    RUST_LOG=warn "$FULCRUM" --config "$WORK/fulcrum.toml" 2>"$WORK/fulcrum.log" &
    FPID=$!; PIDS+=("$FPID")
  else
    nginx_conf "$B2" > "$WORK/lb/nginx.conf"
    "$NGINX" -p "$WORK/lb" -c "$WORK/lb/nginx.conf"
  fi
  wait_port "$LB"
  wrk -t1 -c4 -d1s "http://127.0.0.1:$LB/" >/dev/null # warm up
  R[$proxy,steady]="$(load) 0"
  reloader "$proxy" & RPID=$!; PIDS+=("$RPID")
  R[$proxy,reload]="$(load)"
  kill "$RPID"; wait "$RPID" 2>/dev/null || true
  R[$proxy,reload]="${R[$proxy,reload]} $(cat "$WORK/reloads")"
  if [ "$proxy" = fulcrum ]; then
    fails=$(grep -c "reload failed" "$WORK/fulcrum.log" || true)
    [ "$fails" = 0 ] || echo "fulcrum: $fails failed reloads" >&2
    kill "$FPID"; wait "$FPID" 2>/dev/null || true
  else
    kill "$(cat "$WORK/lb/nginx.pid")"; rm -f "$WORK/lb/nginx.pid"; sleep 1
  fi
done

echo
echo "wrk -t$THREADS -c$CONNS -d${DURATION}s; reload every ${INTERVAL}s; fulcrum worker_threads=1, nginx worker_processes 1"
row proxy phase req/s p99 errors reloads
row -------- -------------- ---------- --------- ------ -------
for proxy in fulcrum nginx; do
  for phase in steady reload; do
    read -r rps p99 errs n <<<"${R[$proxy,$phase]}"
    row "$proxy" "$phase" "$rps" "$p99" "$errs" "$n"
  done
done
