#!/usr/bin/env bash
# Soak under churn (issue 12, item 2), outside CI: svcgate's Gateway (AF_XDP
# workers, NAT pipeline, dnat mode) forwards stamped UDP from svcgate-pktgen
# (2,500 frames/s over 96 flows) and six TCP connections held open while the
# desired state changes five times a second: Pods leave the endpoints and
# come back, a Service is added and removed and its port changed, weights
# and session affinity are toggled. At the end it checks, per frame and per
# connection, at the Pods' sinks: no misroute (no frame reached a Pod after
# its removal was published), no established flow moved, the gateway's RSS
# and file descriptors flat. Prints the `SOAK ...` count lines; exits
# non-zero on any violation. Definitions and bounds: tests/soak_churn.rs and
# docs/SOAK.md.
#
# It is the CI test tests/soak_churn.rs (60 s there) run longer; the same as
#   SVCGATE_SOAK_SECS=600 cargo test --test soak_churn -- --nocapture
# with svcgate-pktgen built beside the test binary.
#
# Usage: sudo scripts/soak.sh [--secs N] [--step-ms MS] [--seed S] [--release]
#   --secs N      duration (default 600, at least 20)
#   --step-ms MS  one change every MS milliseconds (default 200)
#   --seed S      the churn's random seed (default: from the clock; printed)
#   --release     build and run optimised (default: the debug build CI runs)
# Needs root (network namespaces, XDP). Addresses: 198.18.0.0/15 only, inside
# namespaces named sgx-sk-*, links sk*; the test removes them, also when it
# fails; this script removes what an interrupted run left.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=600 STEP_MS=200 SEED="" PROFILE=()
while [ $# -gt 0 ]; do
    case "$1" in
    --secs) SECS=$2; shift 2 ;;
    --step-ms) STEP_MS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --release) PROFILE=(--release); shift ;;
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "soak.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "soak.sh: needs root (network namespaces, XDP)" >&2; exit 1; }
[ "$SECS" -ge 20 ] || { echo "soak.sh: --secs must be at least 20" >&2; exit 2; }

cd "$ROOT"
[ -x scripts/setup.sh ] && scripts/setup.sh
echo "== building ${PROFILE[*]:-debug}"
# The whole workspace, as scripts/test.sh builds it: a build of single
# packages would unify features differently and rebuild half the tree.
cargo build --locked -q "${PROFILE[@]}" --workspace --all-targets

# Namespaces and log directories of this run only (others may be running).
before_ns=$(ip netns list | awk '{print $1}' | grep '^sgx-sk-' || true)
before_logs=$(ls -d /tmp/svcgate-soak-* 2>/dev/null || true)
cleanup() {
    set +e
    for n in $(ip netns list | awk '{print $1}' | grep '^sgx-sk-'); do
        grep -qx "$n" <<<"$before_ns" || ip netns del "$n"
    done
    for d in $(ls -d /tmp/svcgate-soak-* 2>/dev/null); do
        grep -qx "$d" <<<"$before_logs" || rm -rf "$d"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== soak: ${SECS} s, a change every ${STEP_MS} ms"
export SVCGATE_SOAK_SECS=$SECS SVCGATE_SOAK_STEP_MS=$STEP_MS
[ -n "$SEED" ] && export SVCGATE_SOAK_SEED=$SEED
cargo test --locked -q "${PROFILE[@]}" -p svcgate-suite --test soak_churn -- --nocapture --test-threads=1 soak_churn
