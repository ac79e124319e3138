#!/usr/bin/env bash
# Cluster DNS benchmark (issue 11), side by side in one run: dnsperf (Debian)
# from the lab's client against
#   svcgate   `svcgate run` on the gateway: the AF_XDP worker answers the UDP
#             queries to the DNS address in their own frames (one worker,
#             pinned to the gateway core)
#   nsd       NSD (Debian), one server process pinned to the same core,
#             serving the zone `svcgate dns export` writes for the same
#             manifests (the kernel's UDP path; svcgate not running)
# with the same query file (every A and SRV name of the zone, in turn).
#
# The lab is scripts/lab.sh's (prefix sgdns): client 198.18.1.2 -> gateway;
# DNS addresses 198.18.128.53 (svcgate) and 198.18.128.54 (NSD), both on the
# gateway's lo, in the service CIDR the client routes via the gateway.
# dnsperf runs on CPU 0, the gateway's server on CPU 1. Addresses:
# 198.18.0.0/15 only. Everything it creates is removed on exit, also on
# failure. Run as root, outside CI (installs dnsperf and nsd if missing).
#
# Usage: sudo scripts/bench-dns.sh [--secs N] [--clients N] [--outstanding N]
#   --secs         length of each run (default 10)
#   --clients      dnsperf client sockets (default 4)
#   --outstanding  queries in flight (default 256)
# env: BENCH_NO_BUILD=1 reuses target/release/svcgate.
# Each row also gives CPU 1's busy share over the run and the queries per
# busy core (dnsperf on one core may be the limit before either server;
# its core's busy share is printed too). svcgate's worker polls, so its
# core counts as busy whatever the load: its per-core figure is a floor.
# The last line printed:
#   qps_ratio_nsd=<svcgate qps / nsd qps> core_ratio_nsd=<per busy core, svcgate's / nsd's>
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=10
CLIENTS=4
OUTSTANDING=256
while [ $# -gt 0 ]; do
    case "$1" in
    --secs) SECS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --outstanding) OUTSTANDING=$2; shift 2 ;;
    -h | --help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "bench-dns.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench-dns.sh: needs root (network namespaces, XDP)" >&2; exit 1; }

"$ROOT/scripts/setup.sh"
missing=""
for p in dnsperf nsd; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    echo "== installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -q --no-install-recommends $missing >/dev/null
    # The package's own service would listen on the host.
    command -v systemctl >/dev/null && systemctl disable --now nsd >/dev/null 2>&1 || true
fi
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    echo "== building svcgate (release)"
    (cd "$ROOT" && cargo build --release --locked -q -p svcgate-control)
fi
SVCGATE=$ROOT/target/release/svcgate

export SG_LAB_PREFIX=sgdns
P=$SG_LAB_PREFIX
NS_C=$P-client NS_GW=$P-gw
SG_DNS=198.18.128.53 NSD_DNS=198.18.128.54
TMP=$(mktemp -d /tmp/sgdns.XXXXXX)
chmod 755 "$TMP"
PID=""
cleanup() {
    set +e
    [ -n "$PID" ] && kill -INT "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    "$ROOT/scripts/lab.sh" down >/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$ROOT/scripts/lab.sh" up 1
ip -n $NS_GW addr add $SG_DNS/32 dev lo
ip -n $NS_GW addr add $NSD_DNS/32 dev lo

# The zone and the queries: every A and SRV name of the bundled example.
"$SVCGATE" dns export "$ROOT/examples/manifests" --service-cidr 198.18.128.0/20 >"$TMP/cluster.local.zone"
awk '$4 == "A" || $4 == "SRV" { print $1, $4 }' "$TMP/cluster.local.zone" | sort -u >"$TMP/queries"
[ -s "$TMP/queries" ] || { echo "bench-dns.sh: no A/SRV names in the zone" >&2; exit 1; }

LOG=$TMP/bench.log
say() { echo "$*" | tee -a "$LOG"; }
# Busy and total jiffies of CPU 1 (user nice system irq softirq steal / all).
cpu1() { cpun 1; }
cpun() { awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
# dnsperf against $1 on CPU 0: sets QPS LAT LOST BUSY (CPU 1's busy share).
perf_run() { # server name
    local b0 t0 b1 t1 g0 u0 g1 u1
    read -r b0 t0 < <(cpu1)
    read -r g0 u0 < <(cpun 0)
    ip netns exec $NS_C taskset -c 0 dnsperf -s "$1" -d "$TMP/queries" -l "$SECS" -c "$CLIENTS" -q "$OUTSTANDING" \
        >"$TMP/dnsperf-$2.out" 2>&1 || true
    read -r b1 t1 < <(cpu1)
    read -r g1 u1 < <(cpun 0)
    GEN_BUSY=$(awk -v b=$((g1 - g0)) -v t=$((u1 - u0)) 'BEGIN { printf "%.2f", (t > 0 ? b / t : 0) }')
    BUSY=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN { printf "%.2f", (t > 0 ? b / t : 0) }')
    QPS=$(awk '/Queries per second:/ { printf "%.0f", $4 }' "$TMP/dnsperf-$2.out")
    LAT=$(awk '/Average Latency/ { print $4 }' "$TMP/dnsperf-$2.out")
    LOST=$(awk '/Queries lost:/ { print $3 }' "$TMP/dnsperf-$2.out")
    local codes
    codes=$(awk '/Response codes:/ { $1 = $2 = ""; print }' "$TMP/dnsperf-$2.out")
    say "$(printf "%-8s %8s queries/s, average latency %s s, lost %s, response codes:%s; server core (CPU 1) busy %s: %s queries/s per busy core; dnsperf's core (CPU 0) busy %s" \
        "$2" "${QPS:-?}" "${LAT:-?}" "${LOST:-?}" "$codes" "$BUSY" "$(awk -v q="${QPS:-0}" -v b="$BUSY" 'BEGIN { printf "%.0f", (b > 0 ? q / b : 0) }')" "$GEN_BUSY")"
    grep -q "Queries per second" "$TMP/dnsperf-$2.out" || cat "$TMP/dnsperf-$2.out" | tee -a "$LOG"
}

{
    echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) vCPUs, Linux $(uname -r)"
    echo "Date: $(date -u +%Y-%m-%dT%H:%MZ), commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "dnsperf $(dpkg-query -W -f '${Version}' dnsperf), nsd $(dpkg-query -W -f '${Version}' nsd); dnsperf -c $CLIENTS -q $OUTSTANDING for ${SECS}s on CPU 0; $(wc -l <"$TMP/queries") names (A and SRV) in turn; servers on CPU 1"
} | tee -a "$LOG"

# --- svcgate: the worker answers in its frames.
cat >"$TMP/svcgate.toml" <<T
manifests = "$ROOT/examples/manifests"
service_cidr = "198.18.128.0/20"
node_ips = ["198.18.1.1"]
admin_listen = "127.0.0.1:9931"
[dns]
addresses = ["$SG_DNS"]
[dataplane]
interfaces = ["g0", "g1"]
queues = 1
cores = [1]
snat_addrs = ["198.18.3.1"]
conntrack_capacity = 65536
T
ip netns exec $NS_GW "$SVCGATE" run --config "$TMP/svcgate.toml" >"$TMP/svcgate.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
    ip netns exec $NS_GW curl -sf --max-time 1 http://127.0.0.1:9931/readyz >/dev/null 2>&1 && break
    sleep 0.1
done
ip netns exec $NS_C dig +short +tries=3 +time=1 @$SG_DNS nginx.default.svc.cluster.local >/dev/null ||
    { cat "$TMP/svcgate.log"; echo "bench-dns.sh: svcgate does not answer" >&2; exit 1; }
perf_run $SG_DNS svcgate
SG_QPS=$QPS SG_BUSY=$BUSY
ANSWERED=$(ip netns exec $NS_GW curl -sf --max-time 2 http://127.0.0.1:9931/metrics |
    awk '/^svcgate_dns_queries_total\{verdict="answered"/ { s += $NF } END { printf "%.0f", s }')
say "         svcgate's workers answered $ANSWERED queries"
kill -INT $PID; wait $PID 2>/dev/null || true; PID=""

# --- NSD, one server process on the same core.
cat >"$TMP/nsd.conf" <<N
server:
    ip-address: $NSD_DNS
    port: 53
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$TMP"
    database: ""
    zonelistfile: "$TMP/zone.list"
    xfrdfile: "$TMP/xfrd.state"
    xfrdir: "$TMP"
    pidfile: "$TMP/nsd.pid"
    logfile: "$TMP/nsd.log"
    verbosity: 0
    hide-version: yes
    # Debian's NSD limits responses to 200 per second per /24 (RRL):
    # off, as svcgate has no such limit.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: cluster.local
    zonefile: "$TMP/cluster.local.zone"
N
ip netns exec $NS_GW taskset -c 1 nsd -d -c "$TMP/nsd.conf" >>"$TMP/nsd.log" 2>&1 &
PID=$!
for _ in $(seq 50); do
    ip netns exec $NS_C dig +short +tries=1 +time=1 @$NSD_DNS nginx.default.svc.cluster.local 2>/dev/null | grep -q . && break
    sleep 0.2
done
ip netns exec $NS_C dig +short +tries=3 +time=1 @$NSD_DNS nginx.default.svc.cluster.local | grep -q . ||
    { cat "$TMP/nsd.log"; echo "bench-dns.sh: nsd does not answer" >&2; exit 1; }
perf_run $NSD_DNS nsd
NSD_QPS=$QPS NSD_BUSY=$BUSY
kill $PID 2>/dev/null; wait $PID 2>/dev/null || true; PID=""

R=$(awk -v a="${SG_QPS:-}" -v b="${NSD_QPS:-}" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }')
say "summary: svcgate ${SG_QPS:-?} queries/s, nsd ${NSD_QPS:-?} queries/s (CoreDNS's scaling guide: 33,669 qps on 2 vCPUs)"
C=$(awk -v a="${SG_QPS:-0}" -v ab="${SG_BUSY:-0}" -v b="${NSD_QPS:-0}" -v bb="${NSD_BUSY:-0}" \
    'BEGIN { if (ab + 0 == 0 || bb + 0 == 0 || b + 0 == 0) print "-"; else printf "%.2f", (a / ab) / (b / bb) }')
echo "qps_ratio_nsd=$R core_ratio_nsd=$C"
