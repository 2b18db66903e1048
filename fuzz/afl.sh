#!/usr/bin/env bash
# Coverage-guided fuzzing with AFL++ (docs/testing.md), one target at a time:
#   fuzz/afl.sh [TARGET...]          (default: every target; FUZZ_SECS=300 each)
# Builds the instrumented harness (needs `cargo install cargo-afl`), fuzzes each
# target without a network, reports executions, corpus sizes and crashes, and
# writes the minimised queue back into fuzz/corpus/TARGET (seeds keep their names,
# `crash-*` regression inputs are always kept).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECS:-300}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(request_head chunked response config template nginx_conf proxy_header)
fi
export CARGO_TARGET_DIR=$PWD/target/afl CARGO_INCREMENTAL=0
# A release build without fat LTO (which takes long and buys the fuzzer nothing).
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
export CARGO_PROFILE_RELEASE_DEBUG=0
cargo afl build --release -p fulcrum-fuzz --features afl --bin fulcrum-fuzz-afl
bin=$CARGO_TARGET_DIR/release/fulcrum-fuzz-afl
# cargo-afl's own AFL++ tools first (cmin calls afl-showmap, which must match it).
rustc_id=$(rustc -vV | sed -n 's/^release: //p')-$(rustc -vV | sed -n 's/^commit-hash: \(.......\).*/\1/p')
for d in "${XDG_DATA_HOME:-$HOME/.local/share}"/afl.rs/rustc-"$rustc_id"/afl.rs-*/afl/bin; do
    PATH=$d:$PATH
done
export AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
for t in "${targets[@]}"; do
    out=$CARGO_TARGET_DIR/out/$t
    rm -rf "$out.min"
    # FUZZ_REUSE=1: minimise what an earlier run found instead of fuzzing again.
    if [ "${FUZZ_REUSE:-0}" != 1 ] || [ ! -f "$out/default/fuzzer_stats" ]; then
        rm -rf "$out"
        mkdir -p "$out"
        # The config targets resolve host names: no network for any of them.
        unshare -n cargo afl fuzz -V "$secs" -t 5000 -i "fuzz/corpus/$t" -o "$out" \
            -- "$bin" "$t" >"$out/fuzz.log" 2>&1 || { tail -20 "$out/fuzz.log"; exit 1; }
    fi
    stats=$out/default/fuzzer_stats
    execs=$(awk -F' *: ' '$1=="execs_done"{print $2}' "$stats")
    paths=$(awk -F' *: ' '$1=="corpus_count"{print $2}' "$stats")
    crashes=$(find "$out/default/crashes" -type f -name 'id:*' | wc -l)
    hangs=$(find "$out/default/hangs" -type f -name 'id:*' | wc -l)
    before=$(find "fuzz/corpus/$t" -type f | wc -l)
    unshare -n cargo afl cmin -t 5000 -i "$out/default/queue" -o "$out.min" \
        -- "$bin" "$t" >"$out/cmin.log" 2>&1 || { tail -20 "$out/cmin.log"; exit 1; }
    # The seeds' names back; AFL++'s own finds named by their hash.
    keep=$(mktemp -d)
    cp "fuzz/corpus/$t"/crash-* "$keep/" 2>/dev/null || true
    for f in "$out.min"/*; do
        name=$(basename "$f")
        case $name in
            *orig:*) name=${name##*orig:} ;;
            *) name=afl-$(sha1sum "$f" | cut -c1-12) ;;
        esac
        cp "$f" "$keep/$name"
    done
    rm -rf "fuzz/corpus/$t"
    mv "$keep" "fuzz/corpus/$t"
    chmod 755 "fuzz/corpus/$t"
    after=$(find "fuzz/corpus/$t" -type f | wc -l)
    size=$(du -sb "fuzz/corpus/$t" | cut -f1)
    echo "$t: ${secs}s, $execs execs, queue $paths, crashes $crashes, hangs $hangs, corpus $before -> $after files, $size bytes"
    [ "$crashes" -eq 0 ] || ls "$out/default/crashes"
done
