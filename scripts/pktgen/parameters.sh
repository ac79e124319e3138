# shellcheck shell=bash
# Common option parsing for the svcgate-pktgen sample scripts, with the
# letters of the kernel's samples/pktgen/parameters.sh. Source it, then use
# the variables and "$PKTGEN" (the svcgate-pktgen binary, built if missing).
#
# Differences from the kernel's scripts: -s counts like the kernel's
# pkt_size (frame bytes without FCS, 60 = a 64-byte frame) and is passed on
# as --size (with FCS) = s + 4; -n is per thread, as there; -c (skb clones)
# and -a (append) have no meaning for a packet socket and are ignored; -w
# (inter-frame delay per thread, ns) becomes a total --rate; -6 (IPv6) is
# not supported. Extra letters: -F flows, -r total rate (pps), -T seconds,
# -P proto (udp|tcp-syn), -S source IP range, -M IMIX.

function usage() {
    echo ""
    echo "Usage: $0 [-vx] -i ethX -m DST_MAC [-d DEST_IP] ..."
    echo "  -i : (\$DEV)       output interface/device (required)"
    echo "  -s : (\$PKT_SIZE)  packet size without FCS, as the kernel's pktgen (60 = 64-byte frame)"
    echo "  -d : (\$DEST_IP)   destination IP; a range a-b or CIDR is also allowed"
    echo "  -m : (\$DST_MAC)   destination MAC-addr (required)"
    echo "  -p : (\$DST_PORT)  destination PORT; a range (e.g. 433-444) is also allowed"
    echo "  -t : (\$THREADS)   threads to start"
    echo "  -f : (\$F_THREAD)  index of first thread (zero indexed CPU number)"
    echo "  -c : (\$SKB_CLONE) ignored (no skb clones on a packet socket)"
    echo "  -n : (\$COUNT)     num messages to send per thread, 0 means indefinitely"
    echo "  -b : (\$BURST)     frames written to the TX ring per kick"
    echo "  -w : (\$DELAY)     Tx delay value per thread (ns), becomes --rate"
    echo "  -F : (\$FLOWS)     number of RFC 4814 flows"
    echo "  -r : (\$RATE)      total rate limit in pps (0: as fast as possible)"
    echo "  -T : (\$DURATION)  seconds to run (0: until -n or Ctrl-C)"
    echo "  -P : (\$PROTO)     udp or tcp-syn"
    echo "  -S : (\$SRC_IP)    source IP or range"
    echo "  -M : (\$IMIX)      simple IMIX (64/594/1518 at 7:4:1) instead of -s"
    echo "  -v : (\$VERBOSE)   verbose"
    echo "  -x : (\$DEBUG)     debug"
    echo ""
}

## --- Parse command line arguments / parameters ---
## echo "Commandline options:"
while getopts "s:i:d:m:p:f:t:c:n:b:w:F:r:T:P:S:Mvxh6a" option; do
    case $option in
        i) DEV=$OPTARG ;;
        s) PKT_SIZE=$OPTARG ;;
        d) DEST_IP=$OPTARG ;;
        m) DST_MAC=$OPTARG ;;
        p) DST_PORT=$OPTARG ;;
        f) F_THREAD=$OPTARG ;;
        t) THREADS=$OPTARG ;;
        c) SKB_CLONE=$OPTARG; echo "note: -c $SKB_CLONE ignored (no skb clones on a packet socket)" >&2 ;;
        n) COUNT=$OPTARG ;;
        b) BURST=$OPTARG ;;
        w) DELAY=$OPTARG ;;
        F) FLOWS=$OPTARG ;;
        r) RATE=$OPTARG ;;
        T) DURATION=$OPTARG ;;
        P) PROTO=$OPTARG ;;
        S) SRC_IP=$OPTARG ;;
        M) IMIX=yes ;;
        v) export VERBOSE=yes ;;
        x) export DEBUG=yes; set -x ;;
        6) echo "ERROR: IPv6 (-6) is not supported by svcgate-pktgen" >&2; exit 2 ;;
        a) echo "note: -a ignored (nothing to append to)" >&2 ;;
        h | ?) usage; exit 2 ;;
    esac
done
shift $((OPTIND - 1))

[ -z "${DEV:-}" ] && { usage; echo "ERROR: Please specify output device (-i)" >&2; exit 2; }
[ -z "${DST_MAC:-}" ] && { usage; echo "ERROR: Please specify destination MAC (-m)" >&2; exit 2; }
: "${PKT_SIZE:=60}"
: "${DEST_IP:=198.18.0.42}"
: "${DST_PORT:=9}"
: "${THREADS:=1}"
: "${F_THREAD:=0}"
: "${COUNT:=${DEFAULT_COUNT:-0}}"   # a sample may set DEFAULT_COUNT before sourcing
: "${BURST:=64}"
: "${DELAY:=0}"
: "${FLOWS:=1}"
: "${RATE:=0}"
: "${DURATION:=0}"
: "${PROTO:=udp}"
: "${SRC_IP:=198.18.0.1}"
: "${IMIX:=}"

L_THREAD=$((THREADS + F_THREAD - 1))
# The kernel's -n is per thread; svcgate-pktgen's --count is the total.
TOTAL_COUNT=$((COUNT * THREADS))
# -w: nanoseconds between frames of one thread.
if [ "$DELAY" -gt 0 ] && [ "$RATE" -eq 0 ]; then
    RATE=$((1000000000 * THREADS / DELAY))
fi
# SIZE_ARGS and VERBOSE_ARGS are used by the scripts that source this file.
# shellcheck disable=SC2034
if [ -n "$IMIX" ]; then
    SIZE_ARGS=(--imix)
else
    SIZE_ARGS=(--size $((PKT_SIZE + 4)))
fi
VERBOSE_ARGS=()
# shellcheck disable=SC2034
[ -n "${VERBOSE:-}" ] && VERBOSE_ARGS=(-v)

# The binary: $PKTGEN, else the workspace's release build (built if missing).
PKTGEN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${PKTGEN:-}" ]; then
    PKTGEN=$PKTGEN_ROOT/target/release/svcgate-pktgen
    if [ ! -x "$PKTGEN" ]; then
        echo "building $PKTGEN" >&2
        (cd "$PKTGEN_ROOT" && cargo build --release -p svcgate-dataplane --bin svcgate-pktgen) || exit 1
    fi
fi
# Used by the sample scripts that source this file.
export PKTGEN DEV DST_MAC DEST_IP DST_PORT SRC_IP THREADS F_THREAD L_THREAD TOTAL_COUNT BURST RATE DURATION FLOWS PROTO
