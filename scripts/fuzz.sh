#!/usr/bin/env bash
# Coverage-guided fuzzing of svcgate with AFL++ through cargo-afl, on stable
# Rust (outside CI: CI replays the corpus with `cargo test -p svcgate-fuzz`).
#
#   scripts/fuzz.sh                      # every target, 120 s each, one after another
#   scripts/fuzz.sh frame_sequence 600   # one target for 600 s
#   scripts/fuzz.sh tmin frame_sequence CRASH_FILE OUT_FILE   # minimise a crash
#   scripts/fuzz.sh merge frame_sequence # add what a run's queue covers beyond fuzz/corpus
#
# Targets: frame_pipeline frame_sequence manifest dns_query pktgen_stamp
# (docs/FUZZING.md). Installs what it needs when missing: Debian's afl++
# (afl-whatsup, afl-plot, afl-cmin... and the tools' dependencies) and
# cargo-afl, whose install builds the AFL++ it runs and the runtime its
# binaries link (the same AFL++ release, so the fork server protocols match).
# Builds into target/afl (its own RUSTFLAGS would otherwise rebuild target/),
# writes AFL's output to target/fuzz-out/<target> (FUZZ_OUT to change it;
# a second run resumes the first), and prints executions and findings.
# One target at a time, on one core (AFL_NO_AFFINITY: the machine is shared),
# at nice 19 (FUZZ_NICE to change it), so that builds and tests beside it
# come first. A target with a dictionary, fuzz/dict/<target>.dict, gets it
# (-x). FUZZ_NO_BUILD=1 runs the binaries as built.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(frame_pipeline frame_sequence manifest dns_query pktgen_stamp)
# The afl crate's version in Cargo.lock: cargo-afl must be the same release.
AFL_VERSION=$(awk '/^name = "afl"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
OUT=${FUZZ_OUT:-target/fuzz-out}
BIN_DIR=target/afl/release
NICE=${FUZZ_NICE:-19}

install() {
    if ! dpkg-query -W -f='${Status}' afl++ 2>/dev/null | grep -q "install ok installed"; then
        echo "fuzz.sh: installing afl++ from Debian" >&2
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo=sudo
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get update -qq >/dev/null
        $sudo apt-get install -y -qq afl++ make >/dev/null
    fi
    if ! cargo afl --version 2>/dev/null | grep -q "$AFL_VERSION"; then
        echo "fuzz.sh: installing cargo-afl $AFL_VERSION (builds AFL++; a few minutes)" >&2
        cargo install cargo-afl --locked --version "$AFL_VERSION" >&2
    fi
    # The runtime is built per Rust version: a toolchain update needs it again.
    if cargo afl fuzz -h 2>&1 | grep -q "runtime was not built"; then
        cargo afl config --build >&2
    fi
}

build() {
    [ -n "${FUZZ_NO_BUILD:-}" ] && return 0
    CARGO_TARGET_DIR=target/afl cargo afl build --release --locked -p svcgate-fuzz --features afl --bins >&2
}

stat() { # stat FILE KEY
    awk -F' *: *' -v k="$2" '$1 == k { print $2 }' "$1"
}

run() { # run TARGET SECONDS
    local t=$1 secs=$2 dir="$OUT/$1"
    mkdir -p "$OUT"
    local dict=()
    [ -f "fuzz/dict/$t.dict" ] && dict=(-x "fuzz/dict/$t.dict")
    echo "fuzz.sh: $t for ${secs}s -> $dir (nice $NICE${dict:+, ${dict[1]}})" >&2
    AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_AUTORESUME=1 \
        AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CRASHES=1 \
        nice -n "$NICE" cargo afl fuzz -V "$secs" -t 2000 -m none "${dict[@]}" -i "fuzz/corpus/$t" -o "$dir" -- "$BIN_DIR/afl_$t" \
        >"$OUT/$t.log" 2>&1 || { tail -n 30 "$OUT/$t.log" >&2; return 1; }
    local s="$dir/default/fuzzer_stats"
    printf '%s: execs=%s execs_per_sec=%s run_time_s=%s corpus=%s edges=%s bitmap_cvg=%s stability=%s crashes=%s hangs=%s\n' \
        "$t" "$(stat "$s" execs_done)" "$(stat "$s" execs_per_sec)" "$(stat "$s" run_time)" \
        "$(stat "$s" corpus_count)" "$(stat "$s" edges_found)" "$(stat "$s" bitmap_cvg)" "$(stat "$s" stability)" \
        "$(stat "$s" saved_crashes)" "$(stat "$s" saved_hangs)"
    find "$dir/default/crashes" "$dir/default/hangs" -type f ! -name README.txt 2>/dev/null | sed 's/^/  finding: /'
}

merge() { # merge TARGET: afl-cmin over the checked-in corpus and the run's
    # queue (files up to FUZZ_MERGE_MAX bytes, 8 KiB by default: the replay
    # runs in CI), then the queue files it keeps go to fuzz/corpus/<target>/
    # as afl-<sha1 prefix>. The checked-in files all stay (the seeds are
    # written by src/seeds.rs).
    local t=$1 max=${FUZZ_MERGE_MAX:-8192} tmp
    tmp=$(mktemp -d)
    mkdir "$tmp/in"
    local f h
    declare -A have=()
    for f in fuzz/corpus/"$t"/*; do
        h=$(sha1sum <"$f" | cut -c1-12)
        have[$h]=1
        cp "$f" "$tmp/in/corpus-$h"
    done
    for f in "$OUT/$t"/default/queue/id:*; do
        [ -f "$f" ] && [ "$(wc -c <"$f")" -le "$max" ] || continue
        h=$(sha1sum <"$f" | cut -c1-12)
        [ -n "${have[$h]:-}" ] && continue
        cp "$f" "$tmp/in/afl-$h"
    done
    # cargo-afl's own AFL++ (the runtime's release), not Debian's older
    # afl-showmap, which afl-cmin finds first in PATH; its afl-cmin.bash, as
    # the Python afl-cmin of 4.40c kept no file of these binaries' traces.
    local afl_bin
    afl_bin=${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs/rustc-$(rustc -vV | awk '/^release/ { r = $2 } /^commit-hash/ { c = substr($2, 1, 7) } END { print r "-" c }')/afl.rs-$AFL_VERSION/afl/bin
    PATH="$afl_bin:$PATH" AFL_PATH="$afl_bin" nice -n "$NICE" "$afl_bin/afl-cmin.bash" -t 2000 -m none -i "$tmp/in" -o "$tmp/out" -- "$BIN_DIR/afl_$t" \
        >"$OUT/$t.cmin.log" 2>&1 || { tail -n 20 "$OUT/$t.cmin.log" >&2; rm -rf "$tmp"; return 1; }
    local n=0 bytes=0
    for f in "$tmp"/out/afl-*; do
        [ -f "$f" ] || continue
        cp "$f" "fuzz/corpus/$t/"
        n=$((n + 1)) bytes=$((bytes + $(wc -c <"$f")))
    done
    echo "$t: $(ls "$tmp/in" | wc -l) files in, $(ls "$tmp/out" | wc -l) kept by afl-cmin, $n new in fuzz/corpus/$t ($bytes bytes)"
    rm -rf "$tmp"
}

case "${1:-all}" in
tmin)
    [ $# -eq 4 ] || { echo "usage: $0 tmin TARGET CRASH_FILE OUT_FILE" >&2; exit 2; }
    install
    build
    nice -n "$NICE" cargo afl tmin -i "$3" -o "$4" -- "$BIN_DIR/afl_$2"
    ;;
merge)
    [ $# -eq 2 ] || { echo "usage: $0 merge TARGET" >&2; exit 2; }
    install
    build
    merge "$2"
    ;;
all)
    install
    build
    for t in "${TARGETS[@]}"; do
        run "$t" "${2:-120}"
    done
    ;;
*)
    t=$1
    printf '%s\n' "${TARGETS[@]}" | grep -qx "$t" || { echo "unknown target $t (${TARGETS[*]})" >&2; exit 2; }
    install
    build
    run "$t" "${2:-120}"
    ;;
esac
