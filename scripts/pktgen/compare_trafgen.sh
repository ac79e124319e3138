#!/bin/bash
# svcgate-pktgen tx vs trafgen (netsniff-ng) on the same veth, same CPU, same
# frames (64-byte UDP, random source port), alternating, one after another.
#
# Usage: compare_trafgen.sh [seconds] [rounds] [mode...]
#   mode: default (veth without NAPI: the receiver's work runs in the
#         sender's context) and/or napi (GRO on + threaded NAPI on the
#         receiving veth, its kthread pinned to CPU 1, and TSO off on the
#         sending veth: veth hands a frame to the peer's NAPI only if the
#         sender has no TSO or the skb is a plain socket's, see
#         veth_skb_is_eligible_for_gro; packet-socket skbs are not)
# Offered pps = delta of the sender veth's tx_packets over [seconds], read
# after a 1 s warm-up; delivered = the receiving veth's rx_packets alike.
# Generators: trafgen; svcgate-pktgen (frames copied into the skb, the
# default); svcgate-pktgen --zerocopy (ring pages attached, as trafgen);
# with TESTPMD=1 also DPDK testpmd txonly on its AF_XDP PMD (AF_XDP TX).
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
  ip link add t0 netns pgcmp-tx type veth peer name r0 netns pgcmp-rx
  ip -n pgcmp-tx addr add 198.18.9.2/24 dev t0
  ip -n pgcmp-rx addr add 198.18.9.1/24 dev r0
  ip -n pgcmp-tx link set t0 up; ip -n pgcmp-rx link set r0 up
  if [ "$1" = napi ]; then
    ip netns exec pgcmp-rx ethtool -K r0 gro on >/dev/null
    ip netns exec pgcmp-rx sh -c 'echo 1 > /sys/class/net/r0/threaded'
    ip netns exec pgcmp-tx ethtool -K t0 tso off >/dev/null
    sleep 0.2
    for p in $(pgrep -f "napi/r0-"); do taskset -pc 1 "$p" >/dev/null; done
  fi
}

txcount() { ip netns exec pgcmp-tx cat /sys/class/net/t0/statistics/tx_packets; }
rxcount() { ip netns exec pgcmp-rx cat /sys/class/net/r0/statistics/rx_packets; }

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
  MAC=$(ip netns exec pgcmp-rx cat /sys/class/net/r0/address)
  cat >"$TMP/udp.trafgen" <<T
{ eth(da=$MAC), ipv4(saddr=198.18.9.2, daddr=198.18.9.1, ttl=64),
  udp(sport=drnd(), dport=9), fill(0x41, 18) }
T
  for _ in $(seq "$ROUNDS"); do
    measure trafgen trafgen --dev t0 --conf "$TMP/udp.trafgen" --cpus 1 -q
    measure svcgate-pktgen "$BIN" tx -i t0 -d 198.18.9.1 -m "$MAC" --src-ip 198.18.9.2 --flows 1000 --duration $((SECS + 2))
    measure svcgate-pktgen-zerocopy "$BIN" tx -i t0 -d 198.18.9.1 -m "$MAC" --src-ip 198.18.9.2 --flows 1000 --duration $((SECS + 2)) --zerocopy
    if [ "${TESTPMD:-0}" = 1 ]; then
      # main lcore on the other CPU, the txonly lcore on $CPU; stdin kept open
      PIN=env WARMUP=4 measure testpmd-afxdp-txonly dpdk-testpmd --no-huge -m 1024 --no-pci -l "1,$CPU" --main-lcore 1 \
        --vdev net_af_xdp0,iface=t0,start_queue=0,queue_count=1 -- --forward-mode=txonly --eth-peer=0,"$MAC" \
        --tx-ip=198.18.9.2,198.18.9.1 --tx-udp=1024,9 --txpkts=60 --auto-start --nb-cores=1 < <(sleep $((SECS + 8)))
    fi
  done
done
