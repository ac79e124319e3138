#!/usr/bin/env bash
# Control-plane bench (issue 4 item 7): svcgate's table build/publish against
# `nft -f` loading kube-proxy's nftables-mode ruleset for the same Services, in
# one run.
#
#   scripts/bench-control.sh [--quick] [--skip-nft-10k] [--no-svcgate]
#
# --quick         fewer svcgate repetitions, and the 10k nft ruleset is loaded
#                 in 1k-Service chunks (only to reach the state for the
#                 one-change measurement; not kube-proxy's one transaction,
#                 and not compared against the bar)
# --skip-nft-10k  same as --quick for nft only
# --no-svcgate    only the nft side
#
# The nft side runs inside a network namespace of its own (created here and
# removed on exit, also on failure). Every address in the rulesets is in
# 198.18.0.0/15; nothing is sent. Needs root. Every step is capped by timeout.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
SKIP10K=0
SVCGATE=1
for a in "$@"; do
    case "$a" in
        --quick) QUICK=1; SKIP10K=1 ;;
        --skip-nft-10k) SKIP10K=1 ;;
        --no-svcgate) SVCGATE=0 ;;
        -h|--help) sed -n 2,17p "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done
NFT10K_TIMEOUT=${NFT10K_TIMEOUT:-900}
NS="svcgate-ctlbench-$$"
WORK=$(mktemp -d /tmp/svcgate-ctlbench.XXXXXX)

cleanup() {
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! command -v nft >/dev/null; then
    echo "== installing Debian's nftables"
    timeout 300 apt-get install -y -q nftables >/dev/null || {
        timeout 300 apt-get update -q >/dev/null && timeout 300 apt-get install -y -q nftables >/dev/null
    }
fi
NFT=$(command -v nft)
echo "== $($NFT --version)"

# ---- svcgate ---------------------------------------------------------------
if [ "$SVCGATE" = 1 ]; then
    echo "== svcgate: cargo bench --bench control"
    export CTLBENCH_QUICK=$QUICK
    timeout 1800 cargo bench --bench control 2>&1 | tee "$WORK/svcgate.txt" | grep -v '^RESULT '
fi
res() { awk -v k="$1" '$1=="RESULT" && $2==k {print $3}' "$WORK/svcgate.txt" 2>/dev/null; }

# ---- nft, in a namespace of its own -----------------------------------------
ip netns add "$NS"
nsx() { ip netns exec "$NS" "$@"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }
GEN=scripts/nft-kubeproxy.py

timed_load() { # file timeout -> seconds (or "timeout"/"error")
    local t0 t1 rc=0
    t0=$(now)
    timeout "$2" ip netns exec "$NS" "$NFT" -f "$1" || rc=$?
    t1=$(now)
    if [ $rc = 124 ]; then echo timeout; elif [ $rc != 0 ]; then echo "error($rc)"; else elapsed "$t0" "$t1"; fi
}

echo "== nft: generating kube-proxy-shaped rulesets"
python3 $GEN full 1000 > "$WORK/kp-1k.nft"
python3 $GEN change 777 > "$WORK/kp-change.nft"
wc -l "$WORK"/kp-1k.nft | awk '{print "   1k ruleset: " $1 " lines"}'

nsx "$NFT" flush ruleset
NFT1K=$(timed_load "$WORK/kp-1k.nft" 300)
echo "nft -f, 1k Services x 10 endpoints: ${NFT1K} s"
nsx "$NFT" flush ruleset

NFT10K=skipped
if [ "$SKIP10K" = 0 ]; then
    python3 $GEN full 10000 > "$WORK/kp-10k.nft"
    wc -l "$WORK"/kp-10k.nft | awk '{print "   10k ruleset: " $1 " lines"}'
    echo "== nft -f of the 10k ruleset in one transaction (as kube-proxy does; slow: cap ${NFT10K_TIMEOUT} s)"
    NFT10K=$(timed_load "$WORK/kp-10k.nft" "$NFT10K_TIMEOUT")
    echo "nft -f, 10k Services x 10 endpoints: ${NFT10K} s"
fi
if [ "$SKIP10K" = 1 ] || [ "$NFT10K" = timeout ] || [[ "$NFT10K" == error* ]]; then
    nsx "$NFT" flush ruleset
    echo "== loading the 10k ruleset in 10 chunks of 1k (state for the one-change measurement only)"
    t0=$(now)
    for c in $(seq 0 9); do
        if [ "$c" = 0 ]; then extra=""; else extra="--no-table"; fi
        python3 $GEN full 1000 --first $((c * 1000)) $extra > "$WORK/chunk.nft"
        timeout 300 ip netns exec "$NS" "$NFT" -f "$WORK/chunk.nft"
    done
    t1=$(now)
    echo "   10k in 1k chunks: $(elapsed "$t0" "$t1") s (not comparable to one transaction)"
fi
N10K=$(nsx "$NFT" list chains ip 2>/dev/null | grep -c "chain service-" || true)
echo "   service chains loaded: $N10K"
NFTCHG=$(timed_load "$WORK/kp-change.nft" 300)
echo "nft -f, one Service's endpoint change at 10k: ${NFTCHG} s"
NFTCHG2=$(python3 $GEN change 4321 > "$WORK/kp-change2.nft"; timed_load "$WORK/kp-change2.nft" 300)
echo "nft -f, another Service's endpoint change at 10k: ${NFTCHG2} s"
nsx "$NFT" flush ruleset
ip netns del "$NS"

# ---- table -------------------------------------------------------------------
if [ "$SVCGATE" = 1 ]; then
    python3 - "$NFT1K" "$NFT10K" "$NFTCHG" "$(res full_1000)" "$(res full_10000)" "$(res change_p50)" \
        "$(res change_p99)" "$(res change_pub_p99)" "$(res restart400_max)" "$(res restart400_pub_max)" \
        "$(res table_mib)" "$(res change_all_p99)" <<'PY'
import sys
def f(x):
    try: return float(x)
    except ValueError: return None
nft1k, nft10k, nftchg, full1k, full10k, c50, c99, cp99, rmax, rpmax, mib, call99 = map(f, sys.argv[1:])
def ratio(a, b):
    return f"{a / b:,.0f}x" if a and b else "n/a"
def ok(c):
    return "MET" if c else ("MISSED" if c is not None else "n/a")
print()
print(f"{'measure':58} {'svcgate':>14} {'nft -f':>12} {'ratio':>10}  bar")
print(f"{'full build+publish, 1k Services x 10':58} {full1k:>11.1f} ms {nft1k if nft1k else 'n/a':>10} s {ratio(nft1k and nft1k*1e3, full1k):>10}")
print(f"{'full build+publish, 10k Services x 10':58} {full10k:>11.1f} ms {nft10k if nft10k else 'n/a':>10} s {ratio(nft10k and nft10k*1e3, full10k):>10}  >= 500x: {ok(nft10k and nft10k*1e3/full10k >= 500) if nft10k else 'n/a (10k nft load skipped)'}")
print(f"{'one EndpointSlice change at 10k, p50 (to seen)':58} {c50:>11.1f} us {nftchg if nftchg else 'n/a':>10} s {ratio(nftchg and nftchg*1e6, c50):>10}")
print(f"{'one EndpointSlice change at 10k, p99 (to seen)':58} {c99:>11.1f} us {nftchg if nftchg else 'n/a':>10} s {ratio(nftchg and nftchg*1e6, c99):>10}  <= 1 ms: {ok(c99 <= 1000)}; >= 1000x: {ok(nftchg and nftchg*1e6/c99 >= 1000)}")
print(f"{'one EndpointSlice change at 10k, p99 (to published)':58} {cp99:>11.1f} us")
if call99: print(f"{'  same via apply_objects (all objects re-resolved), p99':58} {call99/1e3:>11.1f} ms")
print(f"{'400-port rolling restart, slowest change (to seen)':58} {rmax:>11.1f} us {'':>12} {'':>10}  every <= 1 ms: {ok(rmax <= 1000)}")
print(f"{'400-port rolling restart, slowest change (to published)':58} {rpmax:>11.1f} us")
print(f"{'tables at 10k x 10 (estimate)':58} {mib:>10.1f} MiB {'':>12} {'':>10}  <= 64 MiB: {ok(mib <= 64)}")
PY
fi
