#!/usr/bin/env bash
# Throughput cost of metrics + the access log, with ../shared/bench/compare.sh.
#
# compare.sh always renders its templates/fulcrum.toml (access_log = "off", admin on).
# This script runs it on temp copies of the bench dir, all with the same FULCRUM_BIN:
#   1. both off: `[admin] listen = "off"` (fulcrum then skips per-request counting:
#      nothing could scrape it) and access_log = "off"; this copy's compare.sh waits
#      for readiness on the proxy port, since there is no admin /readyz;
#   2. metrics on, access log off (the template as shipped);
#   3. both on: access_log = a file in LOG_DIR, format FORMAT.
#   (With BASELINE_BIN, also that build with the template as shipped, first.)
# Each run prints compare.sh's table (fulcrum's "vs nginx" column is the figure to
# compare across runs: it is normalized to nginx within the same run), then the
# access log's line count and size as a check that it was really written.
#
# Usage: FULCRUM_BIN=target/release/fulcrum [BASELINE_BIN=...] [FORMAT=combined|json]
#        [LOG_DIR=dir] [compare.sh settings: DURATION, ROUNDS, CONNS, ...] \
#        benches/metrics_cost.sh > metrics-cost.md
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$ROOT/../shared/bench}
FORMAT=${FORMAT:-combined}
: "${FULCRUM_BIN:?set FULCRUM_BIN to a release build of fulcrum}"
FULCRUM_BIN=$(realpath "$FULCRUM_BIN")
[ -x "$FULCRUM_BIN" ] || { echo "not executable: $FULCRUM_BIN" >&2; exit 1; }
[ -x "$BENCH/compare.sh" ] || [ -f "$BENCH/compare.sh" ] || { echo "no compare.sh in $BENCH" >&2; exit 1; }
case $FORMAT in combined|json) ;; *) echo "FORMAT must be combined or json" >&2; exit 1 ;; esac

WORK=$(mktemp -d)

LOG_DIR=${LOG_DIR:-$WORK/logs}
mkdir -p "$LOG_DIR"
LOG_DIR=$(realpath "$LOG_DIR")
cleanup() {
    rm -rf "$WORK"
}
trap cleanup EXIT

# Three copies of the bench dir: the template as shipped, metrics off, the log on.
cp -r "$BENCH" "$WORK/off"
cp -r "$BENCH" "$WORK/on"
cp -r "$BENCH" "$WORK/none"
TEMPLATE=$WORK/on/templates/fulcrum.toml
grep -q '^access_log = "off"' "$TEMPLATE" || { echo "template has no access_log = \"off\" line" >&2; exit 1; }
sed -i "s|^access_log = \"off\"|access_log = \"$LOG_DIR/access.log\"\naccess_log_format = \"$FORMAT\"|" "$TEMPLATE"
NONE=$WORK/none
grep -q '^listen = "127.0.0.1:@@ADMIN_PORT@@"' "$NONE/templates/fulcrum.toml" || { echo "template's admin listen line changed" >&2; exit 1; }
sed -i 's|^listen = "127.0.0.1:@@ADMIN_PORT@@"|listen = "off"|' "$NONE/templates/fulcrum.toml"
grep -q 'wait_http fulcrum "http://127.0.0.1:$ADMIN_PORT/readyz"' "$NONE/compare.sh" || { echo "compare.sh's fulcrum readiness line changed" >&2; exit 1; }
sed -i 's|wait_http fulcrum "http://127.0.0.1:$ADMIN_PORT/readyz"|wait_http fulcrum "http://127.0.0.1:$FULCRUM_PORT/"|' "$NONE/compare.sh"

run() { # title, bench dir, binary
    echo "## $1"
    echo
    FULCRUM_BIN=$3 bash "$2/compare.sh"
    echo
}

echo "# fulcrum: cost of metrics and access log ($(date -u +%Y-%m-%dT%H:%MZ))"
echo
if [ -n "${BASELINE_BIN:-}" ]; then
    run "Baseline build ($BASELINE_BIN), template as shipped" "$WORK/off" "$(realpath "$BASELINE_BIN")"
fi
run "Both off: admin (and so metrics) off, access log off" "$NONE" "$FULCRUM_BIN"
run "Metrics on, access log off" "$WORK/off" "$FULCRUM_BIN"
run "Metrics on, access log on ($FORMAT, to $LOG_DIR/access.log)" "$WORK/on" "$FULCRUM_BIN"
if [ -f "$LOG_DIR/access.log" ]; then
    echo "access log written: $(wc -l < "$LOG_DIR/access.log") lines, $(du -h "$LOG_DIR/access.log" | cut -f1)"
else
    echo "access log NOT written: check the run's fulcrum log" >&2
    exit 1
fi
