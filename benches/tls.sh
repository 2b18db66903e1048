#!/usr/bin/env bash
# TLS termination, fulcrum vs nginx vs HAProxy, with ../shared/bench/compare.sh in its
# three TLS modes, one after the other, each a full compare.sh run (same certificate,
# an ECDSA P-256 leaf from a throwaway CA that compare.sh makes; TLS 1.2 and 1.3; no
# session cache, no tickets; every proxy pinned to PROXY_CPUS, the load tool and the
# backend to LOAD_CPUS):
#   tls        HTTPS keep-alive (wrk)
#   tls-close  a full handshake per request (wrk with Connection: close; compare.sh
#              preloads its no_tls_resume shim into wrk, so no session is resumed)
#   tls-h2     h2 over TLS, ALPN h2 (h2load)
# Each prints compare.sh's markdown table (ratios to nginx in the same run).
#
# Usage: FULCRUM_BIN=target/release/fulcrum [MODES="tls tls-close tls-h2"] \
#        [compare.sh settings: DURATION, ROUNDS, CONNS, H2_STREAMS, TARGETS, ...] \
#        benches/tls.sh > tls.md
# Needs what compare.sh needs for the TLS modes (nginx, haproxy, wrk, h2load,
# openssl, cc; it installs missing ones with apt-get when run as root).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$ROOT/../shared/bench}
FULCRUM_BIN=${FULCRUM_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/fulcrum}
FULCRUM_BIN=$(realpath "$FULCRUM_BIN")
[ -x "$FULCRUM_BIN" ] || { echo "not executable: $FULCRUM_BIN (cargo build --release)" >&2; exit 1; }
[ -f "$BENCH/compare.sh" ] || { echo "no compare.sh in $BENCH (set BENCH)" >&2; exit 1; }
MODES=${MODES:-"tls tls-close tls-h2"}

for mode in $MODES; do
  case $mode in tls|tls-close|tls-h2) ;; *) echo "MODES: tls, tls-close, tls-h2 (got $mode)" >&2; exit 1 ;; esac
  echo "## MODE=$mode"
  echo
  MODE=$mode FULCRUM_BIN=$FULCRUM_BIN bash "$BENCH/compare.sh"
  echo
done
