#!/usr/bin/env bash
# Side-by-side forwarding benchmark: svcgate against the dataplanes a user
# would otherwise pick, with the same generator, one after another in one run.
#
#   generator ns (CPU 0)          gateway ns (CPU 1)              sink ns
#   svcgate-pktgen tx  sgb-g0 ==veth== sgb-w0 [dataplane] sgb-w1 ==veth== sgb-s0  (counted, dropped)
#
# Dataplanes (--peers, default all, in this order):
#   svcgate   svcgate run: full NAT (DNAT to one of 4 Pods by Maglev, SNAT), AF_XDP
#   svcgate6  the same Service's IPv6 half (NAT66), at --key-flows only, 84-byte
#             frames (the smallest IPv6 UDP frame that carries the stamp)
#   testpmd   DPDK testpmd over its AF_XDP PMD, plain MAC forwarding (no NAT)
#   nft       the kernel with kube-proxy nftables-mode rules: DNAT + masquerade, conntrack
#   kernel    plain kernel routing of the VIP to one Pod
# For each flow count (--flows, default 1 1000 65536 1000000) and 64-byte
# frames: offered pps, forwarded pps, loss, latency p50/p99, cycles per packet
# (svcgate's own TSC counters; testpmd's --record-core-cycles), CPU split of
# both cores, and the gateway core's CPU time per forwarded packet (user +
# nice + system + irq + softirq jiffies of its /proc/stat line over the
# window, over the packets the sink counted: comparable per core even where
# the generator cannot overload a dataplane). Then the zero-loss rate (RFC 2544 binary search) of svcgate and
# testpmd at 65536 flows, a PNG plot and the results in docs/BENCHMARKS.md.
#
# The lab is made fair (docs/BENCHMARKS.md, "The lab"): on veth the
# receiving side's kernel work runs by default in the sender's context. Here
# the gateway's receiving veth runs in NAPI mode (GRO on with TSO off on its
# peer, or XDP attached), threaded, with the NAPI kthread pinned to the
# gateway's core: XDP, the copy into the UMEM and the kernel stack for the
# kernel peers are charged to the gateway's core, for every dataplane alike.
# The sink (the Pods' hosts, other machines in a cluster) receives on the
# generator's core (RPS): the gateway's core pays only the hand-off. The
# per-core CPU split printed under each row shows where the work went.
#
# Addresses: 198.18.0.0/15 and 2001:2::/48 only, inside the namespaces.
# Everything created is removed on exit, also on failure.
#
# Usage: sudo scripts/bench.sh [--secs N] [--flows "1 65536"] [--peers "svcgate svcgate6"]
#                              [--key-flows N] [--quick] [--no-zero-loss] [--no-docs] [--out DIR]
# The last line printed (at 65536 flows; core_ratio_nft: nft's gateway-core
# CPU time per forwarded packet over svcgate's; v6_core_ratio: svcgate6's
# over svcgate's):
#   ratio_testpmd=<x> ratio_nft=<y> cycles_ratio_testpmd=<z> core_ratio_nft=<w> v6_core_ratio=<v>
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=5
FLOWS="1 1000 65536 1000000"
PEERS="svcgate svcgate6 testpmd nft kernel"
ZERO_LOSS=1
DOCS=1
OUT=""
GEN_CPU=0
GW_CPU=1
KEY_FLOWS=65536
while [ $# -gt 0 ]; do
    case "$1" in
    --secs) SECS=$2; shift 2 ;;
    --flows) FLOWS=$2; shift 2 ;;
    --peers) PEERS=$2; shift 2 ;;
    --quick) SECS=2; FLOWS="1 65536"; ZERO_LOSS=0; DOCS=0; shift ;;
    --key-flows) KEY_FLOWS=$2; shift 2 ;;
    --no-zero-loss) ZERO_LOSS=0; shift ;;
    --no-docs) DOCS=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,42p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench.sh: needs root (network namespaces, XDP)" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "bench.sh: needs 2 CPUs (generator and gateway on their own cores)" >&2; exit 1; }

# --- set-up: packages and binaries -------------------------------------------
"$ROOT/scripts/setup.sh"
pkgs="nftables conntrack netsniff-ng fonts-dejavu-core"
case " $PEERS " in *" testpmd "*) pkgs="$pkgs dpdk-dev librte-net-af-xdp23" ;; esac
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    echo "== installing:$missing"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null
fi
BIN=$ROOT/target/release
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then # BENCH_NO_BUILD=1: reuse target/release (development)
    echo "== building (release)"
    (cd "$ROOT" && cargo build --release --locked -q -p svcgate-control -p svcgate-dataplane -p svcgate-suite --bins)
fi
PKTGEN=${PKTGEN:-$BIN/svcgate-pktgen}

TMP=$(mktemp -d /tmp/sgb.XXXXXX)
[ -n "$OUT" ] || OUT=$TMP
mkdir -p "$OUT"
NS_GEN=sgb-gen NS_GW=sgb-gw NS_SINK=sgb-sink
SVCGATE_PID="" TESTPMD_PID="" TESTPMD_FEED=""
cleanup() {
    set +e
    [ -n "$SVCGATE_PID" ] && kill "$SVCGATE_PID" 2>/dev/null && wait "$SVCGATE_PID" 2>/dev/null
    [ -n "$TESTPMD_FEED" ] && exec 7>&- 2>/dev/null
    [ -n "$TESTPMD_PID" ] && kill "$TESTPMD_PID" 2>/dev/null && wait "$TESTPMD_PID" 2>/dev/null
    pkill -f "svcgate run --config $TMP/" 2>/dev/null
    pkill -f "iface=sgb-w0" 2>/dev/null
    for n in $NS_GEN $NS_GW $NS_SINK; do ip netns del "$n" 2>/dev/null; done
    [ "$OUT" = "$TMP" ] || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
in_ns() { local n=$1; shift; ip netns exec "$n" "$@"; }
# (Background jobs call `ip netns exec` directly: it execs the command, so $!
# is the command's pid and kill reaches it, not a subshell's.)

# --- the lab -------------------------------------------------------------------
VIP=198.19.0.10 VPORT=8080 TPORT=80
PODS="198.18.2.2 198.18.2.3 198.18.2.4 198.18.2.5"
# The IPv6 twins (2001:2:0:N::/64 beside 198.18.N.0/24, as scripts/lab.sh).
VIP6=2001:2:0:9000::10
PODS6="2001:2:0:2::2 2001:2:0:2::3 2001:2:0:2::4 2001:2:0:2::5"
lab_up() {
    for n in $NS_GEN $NS_GW $NS_SINK; do
        ip netns del "$n" 2>/dev/null || true
        ip netns add "$n"
        ip -n "$n" link set lo up
        in_ns "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0
    done
    ip link add sgb-g0 netns $NS_GEN type veth peer name sgb-w0 netns $NS_GW
    ip link add sgb-w1 netns $NS_GW type veth peer name sgb-s0 netns $NS_SINK
    ip -n $NS_GEN addr add 198.18.1.2/24 dev sgb-g0
    ip -n $NS_GW addr add 198.18.1.1/24 dev sgb-w0
    ip -n $NS_GW addr add 198.18.2.1/24 dev sgb-w1
    for a in $PODS; do ip -n $NS_SINK addr add "$a/24" dev sgb-s0; done
    # nodad: usable at once.
    ip -n $NS_GEN addr add 2001:2:0:1::2/64 dev sgb-g0 nodad
    ip -n $NS_GW addr add 2001:2:0:1::1/64 dev sgb-w0 nodad
    ip -n $NS_GW addr add 2001:2:0:2::1/64 dev sgb-w1 nodad
    for a in $PODS6; do ip -n $NS_SINK addr add "$a/64" dev sgb-s0 nodad; done
    for l in "$NS_GEN sgb-g0" "$NS_GW sgb-w0" "$NS_GW sgb-w1" "$NS_SINK sgb-s0"; do
        set -- $l; ip -n "$1" link set "$2" up
    done
    ip -n $NS_GEN route add default via 198.18.1.1
    ip -n $NS_SINK route add default via 198.18.2.1
    ip -n $NS_GEN -6 route add default via 2001:2:0:1::1
    ip -n $NS_SINK -6 route add default via 2001:2:0:2::1
    in_ns $NS_GW sysctl -qw net.ipv4.ip_forward=1
    GW_MAC=$(in_ns $NS_GW cat /sys/class/net/sgb-w0/address)
    SINK_MAC=$(in_ns $NS_SINK cat /sys/class/net/sgb-s0/address)
    # Every dataplane finds the Pods' MAC resolved from the start.
    for a in $PODS $PODS6; do ip -n $NS_GW neigh replace "$a" lladdr "$SINK_MAC" dev sgb-w1 nud permanent; done
    # The sink counts (interface counters, and the pktgen receiver's packet
    # socket, which sees frames before the ingress hooks) and then drops
    # everything at the netdev ingress hook, the same cheap way whatever the
    # frame's addresses (NATed to a Pod, or routed to the VIP).
    in_ns $NS_SINK nft -f - <<N
table netdev sink {
  chain in { type filter hook ingress device sgb-s0 priority 0; policy drop; }
}
N
    # Fair lab (docs/BENCHMARKS.md, "The lab"). The gateway's receiving
    # veth runs in NAPI mode (GRO on; XDP attached does the same), threaded,
    # its kthread pinned to the gateway's core by pin_napi: XDP, the copy
    # into the UMEM and the kernel peers' whole stack are charged to the
    # gateway's core. veth hands a frame to its peer's NAPI only if the peer
    # runs XDP or the frame qualifies for GRO, which needs TSO off on the
    # sending side.
    # The sink stands for the Pods' hosts, which are other machines: its
    # receive is steered (RPS) to the generator's core, so the gateway's
    # core pays only the hand-off, as it would to a NIC. (Left in veth's
    # default, the sink's receive would run inside the gateway's transmit;
    # as a NAPI thread beside the generator it starves and stops the
    # gateway's transmit queue.)
    [ "${BENCH_FAIR:-1}" = 1 ] || return 0 # BENCH_FAIR=0: veth defaults (development)
    in_ns $NS_GEN ethtool -K sgb-g0 tso off >/dev/null
    in_ns $NS_GW ethtool -K sgb-w0 gro on >/dev/null
    in_ns $NS_GW sh -c "echo 1 > /sys/class/net/sgb-w0/threaded"
    in_ns $NS_SINK sh -c "printf '%x' $((1 << GEN_CPU)) > /sys/class/net/sgb-s0/queues/rx-0/rps_cpus"
}

# Pins the gateway veth's NAPI kthread (re-created whenever an XDP program
# is attached or detached) to the gateway's core.
pin_napi() {
    local pid
    for pid in $(pgrep "^napi/sgb-w0" || true); do
        taskset -pc $GW_CPU "$pid" >/dev/null
    done
    return 0
}

# --- counters --------------------------------------------------------------------
ctr() { in_ns "$1" cat "/sys/class/net/$2/statistics/$3"; }
# The last value of KEY in a pktgen result file (its `key=value` lines);
# empty when missing (a failed run), for the callers' defaults to apply.
kv() { { grep -o "$2=[0-9.]*" "$1" || true; } | tail -1 | cut -d= -f2; }
# /proc/stat: per CPU "user nice system idle iowait irq softirq steal".
cpu_sample() { awk '/^cpu[0-9]/ { printf "%s %d %d %d %d %d %d %d %d\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }' /proc/stat; }
cpu_split() { # before after cpuN -> "usr% sys% sirq% idle%"
    join <(echo "$1") <(echo "$2") | awk -v c="$3" '$1 == c {
        u = ($10 + $11) - ($2 + $3); s = $12 - $4; i = ($13 + $14) - ($5 + $6); q = ($15 + $16) - ($7 + $8); st = $17 - $9;
        t = u + s + i + q + st; if (t == 0) t = 1;
        printf "usr %d%% sys %d%% sirq %d%% idle %d%%", 100 * u / t, 100 * s / t, 100 * q / t, 100 * i / t }'
}
# Nanoseconds of CPU time core cpuN spent working (user + nice + system +
# irq + softirq; idle, iowait and steal left out) per forwarded packet
# between two samples: core_ns before after cpuN forwarded_pps secs
CLK_TCK=$(getconf CLK_TCK)
core_ns() {
    join <(echo "$1") <(echo "$2") | awk -v c="$3" -v pps="$4" -v secs="$5" -v hz="$CLK_TCK" '$1 == c {
        busy = ($10 + $11 + $12 + $15 + $16) - ($2 + $3 + $4 + $7 + $8);
        if (pps > 0 && secs > 0 && hz > 0) printf "%.1f", busy * 1e9 / hz / (pps * secs); else print "-" }'
}
# svcgate's busy cycles and received packets, summed over workers, from one
# scrape of its admin endpoint: "<busy_cycles> <rx>".
svc_counters() {
    in_ns $NS_GW curl -sf --max-time 2 http://127.0.0.1:9911/metrics | awk '
        index($0, "svcgate_worker_busy_cycles_total{") == 1 { b += $NF }
        index($0, "svcgate_worker_rx_packets_total{") == 1 { r += $NF }
        END { printf "%.0f %.0f\n", b, r }'
}
# The generator toward the VIP, from the generator's core: gen_tx FLOWS ARGS...
# (ARGS: --rate, --duration or --count, ...). FAMILY=6: toward the IPv6 VIP
# from the IPv6 twins of the same clients, 84-byte frames.
FAMILY=4
gen_tx() {
    local flows=$1 dst=$VIP src=198.18.1.2-198.18.1.254 size=64
    shift
    if [ "$FAMILY" = 6 ]; then dst=$VIP6 src=2001:2:0:1::2-2001:2:0:1::fe size=84; fi
    in_ns $NS_GEN taskset -c $GEN_CPU "$PKTGEN" tx --dev sgb-g0 --dst-mac "$GW_MAC" --dst-ip $dst --dst-port $VPORT \
        --src-ip $src --src-port 1024-65535 --flows "$flows" --size $size "$@"
}

TSV=$OUT/results.tsv
printf "dataplane\tflows\toffered_pps\tforwarded_pps\tloss_pct\tlat_p50_us\tlat_p99_us\tcycles_per_pkt\n" >"$TSV"
LOG=$OUT/bench.log
: >"$LOG"
say() { echo "$*" | tee -a "$LOG"; }

# Runs the generator for a warm-up (long enough to touch every flow about 3
# times at 1 Mpps) plus SECS, counts over the last SECS.
# measure NAME FLOWS [RATE] -> sets OFFERED FORWARDED LOSS P50 P99 CYC and appends a row unless RATE given.
measure() {
    local name=$1 flows=$2 rate=${3:-0} warm=$((1 + $2 / 300000))
    local total=$((warm + SECS))
    ip netns exec $NS_SINK taskset -c $GEN_CPU "$PKTGEN" rx --dev sgb-s0 --duration $((total + 1)) >"$TMP/rx.out" 2>"$TMP/rx.err" &
    local rx=$!
    sleep 0.3
    gen_tx "$flows" --rate "$rate" --duration $total >"$TMP/tx.out" 2>"$TMP/tx.err" &
    local tx=$!
    sleep "$warm"
    pin_napi
    local g0 s0 c0 b0 r0 g1 s1 c1 b1 r1
    g0=$(ctr $NS_GEN sgb-g0 tx_packets); s0=$(ctr $NS_SINK sgb-s0 rx_packets); c0=$(cpu_sample)
    case $name in svcgate*) read -r b0 r0 < <(svc_counters) ;; esac
    sleep "$SECS"
    g1=$(ctr $NS_GEN sgb-g0 tx_packets); s1=$(ctr $NS_SINK sgb-s0 rx_packets); c1=$(cpu_sample)
    case $name in svcgate*) read -r b1 r1 < <(svc_counters) ;; esac
    wait $tx || { say "generator failed: $(cat "$TMP/tx.err")"; }
    kill -INT $rx 2>/dev/null; wait $rx 2>/dev/null || true
    # Offered: the frames the generator handed to its veth per second, by
    # its own count over its run. The veth's tx_packets leaves out the
    # frames it dropped because the gateway's queue was full (the gateway's
    # ingress losses, a NIC's missed frames); its tx_dropped also folds in
    # drops on the peer's side, so neither counter alone is the offer.
    OFFERED=$(kv "$TMP/tx.out" tx_pps); OFFERED=${OFFERED:-$(((g1 - g0) / SECS))}
    FORWARDED=$(((s1 - s0) / SECS))
    LOSS=$(awk -v o="$OFFERED" -v f="$FORWARDED" 'BEGIN { l = o > 0 ? 100 * (o - f) / o : 0; if (l < 0) l = 0; printf "%.3f", l }')
    P50=$(kv "$TMP/rx.out" lat_p50_us); P50=${P50:--}
    P99=$(kv "$TMP/rx.out" lat_p99_us); P99=${P99:--}
    CYC=-
    case $name in svcgate*) [ $((r1 - r0)) -gt 0 ] && CYC=$(((b1 - b0) / (r1 - r0))) ;; esac
    GEN_SPLIT=$(cpu_split "$c0" "$c1" cpu$GEN_CPU); GW_SPLIT=$(cpu_split "$c0" "$c1" cpu$GW_CPU)
    CORE_NS=$(core_ns "$c0" "$c1" cpu$GW_CPU "$FORWARDED" "$SECS"); CORE_NS=${CORE_NS:--}
}

# Is the row a capacity? Loss (>= 1%) shows the dataplane was the limit.
# Without loss it may still be: veth can push back, slowing the generator
# instead of dropping, and the generator's core also carries the sink's
# receive. So a lossless row counts as a capacity only if the gateway's
# core had no idle time left (<= 5%); with idle time left, the generator
# was the limit. Sets BOUND to "overload", "saturated" or "generator".
row() { # name flows
    local bound="" idle
    idle=$(echo "$GW_SPLIT" | grep -o 'idle [0-9]*' | cut -d' ' -f2)
    BOUND=overload
    if awk -v l="$LOSS" 'BEGIN { exit !(l < 1) }'; then
        if [ "${idle:-100}" -le 5 ]; then
            BOUND=saturated; bound=" (lossless, gateway core ${idle}% idle: a capacity; veth held the generator back)"
        else
            BOUND=generator; bound=" (lossless, gateway core ${idle}% idle: the generator was the limit; not a capacity)"
        fi
    fi
    say "$(printf "%-10s flows %-8s offered %9d pps  forwarded %9d pps  loss %7s%%  p50 %8s us  p99 %8s us  cycles/pkt %6s%s" \
        "$1" "$2" "$OFFERED" "$FORWARDED" "$LOSS" "$P50" "$P99" "$CYC" "$bound")"
    say "           cpu$GEN_CPU (generator): $GEN_SPLIT   cpu$GW_CPU (gateway): $GW_SPLIT   gateway core per forwarded packet: $CORE_NS ns"
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$1" "$2" "$OFFERED" "$FORWARDED" "$LOSS" "$P50" "$P99" "$CYC" >>"$TSV"
}

# Zero-loss rate (RFC 2544 style): binary search on the offered rate. A
# trial sends a fixed number of frames (2 s worth) after a 1 s warm-up at
# the same rate, and the sink's receiver counts them by the sequence
# numbers in their payload: every frame must arrive (none missing in the
# sequence, as many received as sent, none dropped by the receiver's own
# ring), and the generator must have kept 98% of the rate asked. (Interface
# counters are not used here: frames dropped at the generator's veth and
# frames of other origin on either veth blur them by a few dozen.)
zero_loss() { # name hi -> ZL
    local name=$1 lo=0 hi=$2 mid i count pps got lost rdrops
    for i in 1 2 3 4 5 6 7 8; do
        mid=$(((lo + hi) / 2))
        [ "$mid" -gt 0 ] || break
        count=$((mid * 2))
        gen_tx $KEY_FLOWS --rate "$mid" --duration 1 >/dev/null 2>&1 || true
        sleep 0.3
        ip netns exec $NS_SINK taskset -c $GEN_CPU "$PKTGEN" rx --dev sgb-s0 --duration 4 >"$TMP/zl-rx.out" 2>/dev/null &
        local rx=$!
        sleep 0.3
        gen_tx $KEY_FLOWS --rate "$mid" --count $count >"$TMP/zl.out" 2>&1 || true
        wait $rx 2>/dev/null || true
        pps=$(kv "$TMP/zl.out" tx_pps)
        got=$(kv "$TMP/zl-rx.out" rx_packets)
        lost=$(kv "$TMP/zl-rx.out" lost)
        rdrops=$(kv "$TMP/zl-rx.out" ring_drops)
        if [ "${got:-0}" -ge "$count" ] && [ "${lost:-1}" -eq 0 ] && [ "${rdrops:-1}" -eq 0 ] &&
            [ "${pps:-0}" -ge $((mid * 98 / 100)) ]; then lo=$mid; else hi=$mid; fi
        say "  zero-loss search $name: $mid pps, sent $count at ${pps:-?} pps, received ${got:-?}, lost ${lost:-?}, receiver ring drops ${rdrops:-?}"
    done
    ZL=$lo
}

# --- the dataplanes ----------------------------------------------------------------
# The bench Service's EndpointSlice of one family: endpoint_slice NAME TYPE ADDR...
endpoint_slice() {
    local name=$1 type=$2
    shift 2
    printf 'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n'
    printf 'metadata: {name: %s, namespace: default, labels: {kubernetes.io/service-name: bench}}\n' "$name"
    printf 'addressType: %s\nports: [{name: udp, port: %s, protocol: UDP}]\nendpoints: [' "$type" "$TPORT"
    printf '{addresses: ["%s"], conditions: {ready: true}}, ' "$@" | sed 's/, $//'
    printf ']\n'
}
svcgate_start() {
    mkdir -p "$TMP/manifests"
    cat >"$TMP/manifests/bench.yaml" <<Y
apiVersion: v1
kind: Service
metadata: {name: bench, namespace: default}
spec:
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIPs: [$VIP, "$VIP6"]
  ports: [{name: udp, port: $VPORT, targetPort: $TPORT, protocol: UDP}]
---
$(endpoint_slice bench-v4 IPv4 $PODS)
---
$(endpoint_slice bench-v6 IPv6 $PODS6)
Y
    # 32 SNAT addresses x 64512 ports: room for the 1M-flow run; 4 IPv6
    # ones for the IPv6 run at --key-flows.
    local snat
    snat=$(for i in $(seq 100 131); do printf '"198.18.2.%d", ' "$i"; done
        for i in $(seq 100 103); do printf '"2001:2:0:2::%d", ' "$i"; done)
    snat=$(echo "$snat" | tr -d '\n' | sed 's/, $//')
    cat >"$TMP/svcgate.toml" <<T
manifests = "$TMP/manifests"
service_cidr = ["198.19.0.0/24", "2001:2:0:9000::/112"]
node_ips = ["198.18.1.1"]
admin_listen = "127.0.0.1:9911"
[dataplane]
interfaces = ["sgb-w0", "sgb-w1"]
queues = 1
cores = [$GW_CPU]
snat_addrs = [$snat]
snat_ports = [1024, 65535]
conntrack_capacity = ${CT_CAP:-4194304}
conntrack_capacity6 = ${CT_CAP6:-1048576}
# The NAPI thread feeding the worker shares its core (copy mode): the worker
# runs SCHED_FIFO and naps when its rings run dry, the NAPI thread runs in
# the naps (docs/BENCHMARKS.md, "Sharing the core with the NAPI thread").
busy_poll = false
worker_rt_priority = 10
idle_spins = 8
idle_sleep_us = 500
ring_size = 8192
T
    ip netns exec $NS_GW "$BIN/svcgate" run --config "$TMP/svcgate.toml" >"$OUT/svcgate.log" 2>&1 &
    SVCGATE_PID=$!
    local i
    # Ready (tables published) comes before the dataplane is up (the flow
    # table is allocated and faulted in first): wait for the latter.
    for i in $(seq 1 300); do
        grep -q "dataplane running" "$OUT/svcgate.log" 2>/dev/null && break
        kill -0 $SVCGATE_PID 2>/dev/null || { cat "$OUT/svcgate.log"; echo "bench.sh: svcgate exited" >&2; exit 1; }
        sleep 0.1
    done
    grep -q "dataplane running" "$OUT/svcgate.log" || { tail "$OUT/svcgate.log"; echo "bench.sh: svcgate's dataplane did not start" >&2; exit 1; }
    sleep 0.5
    pin_napi
}
svcgate_stop() {
    in_ns $NS_GW "$BIN/svcgate" status --admin 127.0.0.1:9911 >"$OUT/svcgate-status.txt" 2>&1 || true
    in_ns $NS_GW curl -sf --max-time 2 http://127.0.0.1:9911/metrics >"$OUT/svcgate-metrics.txt" 2>&1 || true
    kill -INT $SVCGATE_PID; wait $SVCGATE_PID 2>/dev/null || true; SVCGATE_PID=""
}

testpmd_start() {
    mkfifo "$TMP/testpmd.in"
    # testpmd reads commands from stdin; a fifo kept open on fd 7 drives it.
    # -l: main lcore on the generator's core (it only reads stdin), the
    # forwarding lcore on the gateway's.
    # stdbuf: line-buffered, so the figures printed at "stop" reach the log then.
    ip netns exec $NS_GW stdbuf -oL dpdk-testpmd --no-huge -m 1024 --no-pci -l $GEN_CPU,$GW_CPU --main-lcore $GEN_CPU \
        --vdev net_af_xdp0,iface=sgb-w0,start_queue=0,queue_count=1 \
        --vdev net_af_xdp1,iface=sgb-w1,start_queue=0,queue_count=1 \
        -- -i --forward-mode=mac --eth-peer=1,"$SINK_MAC" --nb-cores=1 --record-core-cycles \
        <"$TMP/testpmd.in" >"$OUT/testpmd.log" 2>&1 &
    TESTPMD_PID=$!
    exec 7>"$TMP/testpmd.in"
    TESTPMD_FEED=1
    local i
    for i in $(seq 1 100); do grep -q "testpmd>" "$OUT/testpmd.log" 2>/dev/null && break; sleep 0.1; done
    grep -q "testpmd>" "$OUT/testpmd.log" || { tail -20 "$OUT/testpmd.log"; echo "bench.sh: testpmd did not start" >&2; exit 1; }
    pin_napi
}
testpmd_cmd() { echo "$1" >&7; sleep 0.5; }
testpmd_stop() {
    testpmd_cmd quit
    exec 7>&-; TESTPMD_FEED=""
    wait $TESTPMD_PID 2>/dev/null || true; TESTPMD_PID=""
    rm -f "$TMP/testpmd.in"
}
# Stops forwarding and prints the "CPU cycles/packet=" figure testpmd
# prints at "stop" (for the forwarding since "start"), or "-".
testpmd_stop_cycles() {
    local before i
    before=$(grep -c 'CPU cycles/packet=' "$OUT/testpmd.log" || true)
    echo stop >&7
    for i in $(seq 1 50); do
        [ "$(grep -c 'CPU cycles/packet=' "$OUT/testpmd.log" || true)" -gt "$before" ] && break
        sleep 0.1
    done
    { grep -o 'CPU cycles/packet=[0-9.]*' "$OUT/testpmd.log" || echo '=-'; } | tail -1 | cut -d= -f2 | cut -d. -f1
}

nft_rules() {
    # kube-proxy's nftables proxier shape (pkg/proxy/nftables): service-ips
    # verdict map, a Service chain marking for masquerade and picking an
    # endpoint with numgen, one chain per endpoint doing dnat.
    local i=0 vm="" a t="ip kube-proxy"
    {
        echo "add table $t"
        echo "add chain $t mark-for-masquerade"
        echo "add rule $t mark-for-masquerade mark set mark or 0x4000"
        echo "add chain $t masquerading { type nat hook postrouting priority srcnat ; }"
        echo "add rule $t masquerading mark and 0x4000 == 0 return"
        echo "add rule $t masquerading mark set mark xor 0x4000"
        echo "add rule $t masquerading masquerade fully-random"
        echo "add map $t service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }"
        echo "add chain $t services"
        echo "add rule $t services ip daddr . meta l4proto . th dport vmap @service-ips"
        echo "add chain $t nat-prerouting { type nat hook prerouting priority dstnat ; }"
        echo "add rule $t nat-prerouting jump services"
        for a in $PODS; do
            echo "add chain $t endpoint-$i"
            echo "add rule $t endpoint-$i ip saddr $a jump mark-for-masquerade"
            echo "add rule $t endpoint-$i meta l4proto udp dnat to $a:$TPORT"
            vm="$vm${vm:+, }$i : goto endpoint-$i"; i=$((i + 1))
        done
        echo "add chain $t service-bench"
        echo "add rule $t service-bench ip daddr $VIP udp dport $VPORT ip saddr != 198.18.2.0/24 jump mark-for-masquerade"
        echo "add rule $t service-bench numgen random mod $i vmap { $vm }"
        echo "add element $t service-ips { $VIP . udp . $VPORT : goto service-bench }"
    } >"$TMP/kp.nft"
}

# --- run ---------------------------------------------------------------------------------
lab_up
{
    echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) vCPUs, Linux $(uname -r)"
    echo "Date: $(date -u +%Y-%m-%dT%H:%MZ), commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "Frames: 64 bytes (60 + FCS), UDP to $VIP:$VPORT (svcgate6: 84 bytes to [$VIP6]:$VPORT); ${SECS}s per measurement after a warm-up; generator on CPU $GEN_CPU, gateway on CPU $GW_CPU"
} | tee -a "$LOG"

# The generators alone, same veth, same core (issue 6: pktgen >= trafgen),
# in the lab as built (gateway's veth threaded) and with veth's defaults
# (where trafgen's TX ring does not stall).
say "== generators (no dataplane: the gateway drops frames to the unrouted VIP)"
cat >"$TMP/trafgen.cfg" <<T
{ eth(da=$GW_MAC), ipv4(saddr=198.18.1.2, daddr=$VIP, ttl=64), udp(sport=drnd(), dport=$VPORT), fill(0x41, 18) }
T
gen_rate() { # trafgen|pktgen -> pps
    local a b
    a=$(ctr $NS_GEN sgb-g0 tx_packets)
    if [ "$1" = trafgen ]; then
        in_ns $NS_GEN timeout -s INT $((SECS + 1)) taskset -c $GEN_CPU trafgen --dev sgb-g0 --conf "$TMP/trafgen.cfg" --cpus 1 -q >"$TMP/trafgen.out" 2>&1 || true
    else
        gen_tx $KEY_FLOWS --duration $((SECS + 1)) >"$TMP/tx.out" 2>&1
    fi
    b=$(ctr $NS_GEN sgb-g0 tx_packets)
    echo $(((b - a) / (SECS + 1)))
}
gen_pair() { # label
    local t p
    pin_napi
    t=$(gen_rate trafgen); p=$(gen_rate pktgen)
    say "$(printf "%-26s trafgen %9d pps   svcgate-pktgen %9d pps (%sx trafgen)" "$1" "$t" "$p" \
        "$(awk -v a="$p" -v b="$t" 'BEGIN { printf "%.2f", b ? a / b : 0 }')")"
}
gen_pair "lab as built (threaded):"
in_ns $NS_GW sh -c "echo 0 > /sys/class/net/sgb-w0/threaded"
in_ns $NS_GW ethtool -K sgb-w0 gro off >/dev/null
in_ns $NS_GEN ethtool -K sgb-g0 tso on >/dev/null
gen_pair "veth defaults:"
if [ "${BENCH_FAIR:-1}" = 1 ]; then
    in_ns $NS_GEN ethtool -K sgb-g0 tso off >/dev/null
    in_ns $NS_GW ethtool -K sgb-w0 gro on >/dev/null
    in_ns $NS_GW sh -c "echo 1 > /sys/class/net/sgb-w0/threaded"
fi

declare -A FWD CYCLES BOUNDS CORE
for peer in $PEERS; do
    say "== $peer"
    case $peer in
    svcgate | svcgate6) svcgate_start ;;
    testpmd) testpmd_start ;;
    nft)
        nft_rules
        in_ns $NS_GW nft -f "$TMP/kp.nft"
        in_ns $NS_GW sysctl -qw net.netfilter.nf_conntrack_udp_timeout=30 2>/dev/null || true
        ;;
    kernel) ip -n $NS_GW route replace $VIP/32 via 198.18.2.2 dev sgb-w1 ;;
    *) echo "bench.sh: unknown peer $peer" >&2; exit 2 ;;
    esac
    peer_flows=$FLOWS FAMILY=4
    if [ "$peer" = svcgate6 ]; then peer_flows=$KEY_FLOWS FAMILY=6; fi
    for f in $peer_flows; do
        case $peer in
        testpmd) testpmd_cmd start ;;
        nft) in_ns $NS_GW conntrack -F >/dev/null 2>&1 || true ;;
        esac
        measure "$peer" "$f"
        if [ "$peer" = testpmd ]; then CYC=$(testpmd_stop_cycles); CYC=${CYC:--}; fi
        row "$peer" "$f"
        FWD[$peer/$f]=$FORWARDED; CYCLES[$peer/$f]=$CYC; BOUNDS[$peer/$f]=$BOUND; CORE[$peer/$f]=$CORE_NS
    done
    if [ $ZERO_LOSS = 1 ] && { [ "$peer" = svcgate ] || [ "$peer" = testpmd ]; }; then
        [ "$peer" = testpmd ] && testpmd_cmd start
        zero_loss "$peer" $((${FWD[$peer/$KEY_FLOWS]:-1000000} * 12 / 10))
        [ "$peer" = testpmd ] && testpmd_cmd stop
        say "$peer zero-loss rate at $KEY_FLOWS flows: $ZL pps"
        printf "%s\tzero_loss\t%s\t%s\t0\t-\t-\t-\n" "$peer" "$ZL" "$ZL" >>"$OUT/zero_loss.tsv"
    fi
    FAMILY=4
    case $peer in
    svcgate | svcgate6) svcgate_stop ;;
    testpmd) testpmd_stop ;;
    nft) in_ns $NS_GW nft delete table ip kube-proxy ;;
    kernel) ip -n $NS_GW route del $VIP/32 ;;
    esac
done

# --- summary -------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
RT=$(ratio "${FWD[svcgate/$KEY_FLOWS]:-}" "${FWD[testpmd/$KEY_FLOWS]:-}")
RN=$(ratio "${FWD[svcgate/$KEY_FLOWS]:-}" "${FWD[nft/$KEY_FLOWS]:-}")
RC=$(ratio "${CYCLES[svcgate/$KEY_FLOWS]:-}" "${CYCLES[testpmd/$KEY_FLOWS]:-}")
RCN=$(ratio "${CORE[nft/$KEY_FLOWS]:-}" "${CORE[svcgate/$KEY_FLOWS]:-}")
RV6=$(ratio "${CORE[svcgate6/$KEY_FLOWS]:-}" "${CORE[svcgate/$KEY_FLOWS]:-}")
for peer in svcgate svcgate6 testpmd nft; do
    if [ "${BOUNDS[$peer/$KEY_FLOWS]:-}" = generator ]; then
        say "note: $peer lost <1% at $KEY_FLOWS flows: the generator, not $peer, was the bottleneck; its ratio is not a capacity"
    fi
done
say "ratio_testpmd=$RT ratio_nft=$RN cycles_ratio_testpmd=$RC core_ratio_nft=$RCN v6_core_ratio=$RV6"
if "$BIN/svcgate-bench-plot" "$TSV" "$OUT/bench.png" --title "svcgate vs peers, 64-byte UDP, veth" \
    --subtitle "$(head -1 "$LOG")" >/dev/null 2>>"$LOG"; then
    say "plot: $OUT/bench.png"
fi
if [ $DOCS = 1 ]; then
    cp "$OUT/bench.png" "$ROOT/docs/bench.png" 2>/dev/null || true
    python3 - "$ROOT/docs/BENCHMARKS.md" "$LOG" <<'P'
import sys
doc, log = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
begin, end = "<!-- bench.sh begin -->", "<!-- bench.sh end -->"
text = open(doc).read()
block = f"{begin}\nAs `scripts/bench.sh` printed it:\n\n```\n{log}\n```\n\n![forwarded pps and cycles per packet](bench.png)\n{end}"
if begin in text:
    head, rest = text.split(begin, 1)
    text = head + block + rest.split(end, 1)[1]
else:
    text = text.rstrip("\n") + "\n\n## Side by side (`scripts/bench.sh`)\n\n" + block + "\n"
open(doc, "w").write(text)
P
    say "results written to docs/BENCHMARKS.md"
fi
echo "ratio_testpmd=$RT ratio_nft=$RN cycles_ratio_testpmd=$RC core_ratio_nft=$RCN v6_core_ratio=$RV6"
