#!/bin/bash
# svcgate-pktgen tx vs trafgen (netsniff-ng) on the same veth, same CPU, same
# frames (64-byte UDP, random source port), alternating, one after another.
#
# Usage: compare_trafgen.sh [seconds] [rounds] [mode...]
#   mode: default: veth without NAPI (the receiver's work runs in the
#           sender's context);
#         napi: GRO on + threaded NAPI on the receiving veth, its kthread
#           pinned to CPU 1 (as issue 6 item 4 describes);
#         napi-notso: the same and TSO off on the sending veth: only then do
#           packet-socket (and AF_XDP) frames take the peer's NAPI path, as
#           veth_xmit hands a frame to NAPI only if the sender has no TSO or
#           the skb belongs to a plain socket (veth_skb_is_eligible_for_gro).
# Offered pps = delta of the sender veth's tx_packets over [seconds], read
# after a 1 s warm-up; delivered = the receiving veth's rx_packets alike.
# Generators: trafgen (with -q, through the qdisc, and without, bypassing
# it); svcgate-pktgen (frames copied into the skb, the
# default); svcgate-pktgen --zerocopy (ring pages attached, as trafgen);
# with TESTPMD=1 also DPDK testpmd txonly on its AF_XDP PMD (AF_XDP TX;
# its EAL start-up did not finish within the warm-up on a loaded machine,
# then it reads 0).
# Needs root, netsniff-ng, taskset, ethtool.
# Namespaces pgcmp-tx / pgcmp-rx (198.18.9.0/24), removed on exit.
set -eu
SECS=${1:-5}
ROUNDS=${2:-3}
shift 2 2>/dev/null || shift $#
MODES=${*:-default napi}
CPU=${CPU:-0}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${PKTGEN_BIN:-$ROOT/target/release/svcgate-pktgen}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p svcgate-dataplane --bin svcgate-pktgen)
command -v trafgen >/dev/null || { echo "trafgen missing: apt-get install -y netsniff-ng" >&2; exit 1; }
TMP=$(mktemp -d)
cleanup() { ip netns del pgcmp-tx 2>/dev/null || true; ip netns del pgcmp-rx 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$TMP"; }
trap cleanup EXIT

setup() { # mode
  cleanup; mkdir -p "$TMP"
  ip netns add pgcmp-tx; ip netns add pgcmp-rx
  ip link add pgcmpt0 netns pgcmp-tx type veth peer name pgcmpr0 netns pgcmp-rx
  ip -n pgcmp-tx addr add 198.18.9.2/24 dev pgcmpt0
  ip -n pgcmp-rx addr add 198.18.9.1/24 dev pgcmpr0
  ip -n pgcmp-tx link set pgcmpt0 up; ip -n pgcmp-rx link set pgcmpr0 up
  if [ "$1" != default ]; then
    ip netns exec pgcmp-rx ethtool -K pgcmpr0 gro on >/dev/null
    ip netns exec pgcmp-rx sh -c 'echo 1 > /sys/class/net/pgcmpr0/threaded'
    ip netns exec pgcmp-tx ethtool -K pgcmpt0 tso off >/dev/null
    sleep 0.2
    for p in $(pgrep -f "napi/pgcmpr0-"); do taskset -pc 1 "$p" >/dev/null; done
  fi
}

txcount() { ip netns exec pgcmp-tx cat /sys/class/net/pgcmpt0/statistics/tx_packets; }
rxcount() { ip netns exec pgcmp-rx cat /sys/class/net/pgcmpr0/statistics/rx_packets; }

measure() { # name command...
  local name=$1; shift
  local pin=(taskset -c "$CPU")
  [ -z "${PIN:-}" ] || pin=("$PIN")
  # explicit stdin: a background job would get /dev/null (testpmd exits at EOF)
  ip netns exec pgcmp-tx timeout -s INT -k 2 $((SECS + ${WARMUP:-1} + 1)) "${pin[@]}" "$@" >"$TMP/out.$name" 2>&1 <&0 &
  local pid=$!
  sleep "${WARMUP:-1}"
  local a b c d
  a=$(txcount); c=$(rxcount); sleep "$SECS"; b=$(txcount); d=$(rxcount)
  wait "$pid" 2>/dev/null || true
  printf "%-8s %-24s offered %9d pps  delivered %9d pps\n" "$MODE" "$name" $(((b - a) / SECS)) $(((d - c) / SECS))
}

for MODE in $MODES; do
  setup "$MODE"
  MAC=$(ip netns exec pgcmp-rx cat /sys/class/net/pgcmpr0/address)
  cat >"$TMP/udp.trafgen" <<T
{ eth(da=$MAC), ipv4(saddr=198.18.9.2, daddr=198.18.9.1, ttl=64),
  udp(sport=drnd(), dport=9), fill(0x41, 18) }
T
  for _ in $(seq "$ROUNDS"); do
    # -q: trafgen through the qdisc layer (the command of issue 6 and
    # /work/shared/lab/peers.sh); without it trafgen bypasses the qdisc too.
    measure trafgen-q trafgen --dev pgcmpt0 --conf "$TMP/udp.trafgen" --cpus 1 -q
    measure trafgen-bypass trafgen --dev pgcmpt0 --conf "$TMP/udp.trafgen" --cpus 1
    measure svcgate-pktgen "$BIN" tx -i pgcmpt0 -d 198.18.9.1 -m "$MAC" --src-ip 198.18.9.2 --flows 1000 --duration $((SECS + 2))
    measure svcgate-pktgen-zerocopy "$BIN" tx -i pgcmpt0 -d 198.18.9.1 -m "$MAC" --src-ip 198.18.9.2 --flows 1000 --duration $((SECS + 2)) --zerocopy
    if [ "${TESTPMD:-0}" = 1 ]; then
      # main lcore on the other CPU, the txonly lcore on $CPU; stdin kept open
      PIN=env WARMUP=8 measure testpmd-afxdp-txonly dpdk-testpmd --file-prefix=pgcmp --no-huge -m 256 --no-pci -l "1,$CPU" --main-lcore 1 \
        --vdev net_af_xdp0,iface=pgcmpt0,start_queue=0,queue_count=1 -- --forward-mode=txonly --eth-peer=0,"$MAC" \
        --tx-ip=198.18.9.2,198.18.9.1 --tx-udp=1024,9 --txpkts=60 --auto-start --nb-cores=1 < <(sleep $((SECS + 12)))
    fi
  done
done
