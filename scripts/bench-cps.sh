#!/usr/bin/env bash
# Connection-rate and concurrency benchmark (issue 15), side by side in one
# run: new TCP connections per second through a ClusterIP with a real HTTP
# client (wrk, `Connection: close`: one connection per request) against
# real servers in the Pod namespaces (nginx), through
#   svcgate   `svcgate run` on the gateway (AF_XDP, DNAT + SNAT to ONE address)
#   nft       the gateway's kernel with kube-proxy's nftables rules (DNAT +
#             masquerade to the same address; scripts/nft-kubeproxy.py service)
# and then the most concurrent connections each holds through that one SNAT
# address (scripts/conn-hold.py processes from 16 client addresses, each
# connection answering a request and held; counted as ESTABLISHED client
# sockets with ss).
#
# The lab is scripts/lab.sh's (prefix sgcps): client 198.18.1.2 -> gateway
# (g0 198.18.1.1 | g1 198.18.3.1, the SNAT address) -> Pods 198.18.3.10-12.
# ClusterIP 198.18.128.50:80 -> Pods :80. Addresses: 198.18.0.0/15 only.
# Everything it creates is removed on exit, also on failure. Run as root,
# outside CI (it installs wrk, nginx, nftables and conntrack from Debian if
# missing). On a small shared VM the figures are indicative; compare the
# two dataplanes of one run, not runs.
#
# Usage: sudo scripts/bench-cps.sh [--secs N] [--conns N] [--concurrent N]
#                                  [--hold-secs N] [--peers "svcgate nft"]
#   --secs        length of each connection-rate run (default 20)
#   --conns       wrk connections in flight during the rate run (default 64)
#   --concurrent  connections to try to hold (default 60000)
#   --hold-secs   at most this long to open them (default 60)
#   --rate-only   skip the concurrency runs (concurrent= then prints 0)
#   --out DIR     keep the log, wrk's outputs and svcgate's log there
# env: BENCH_NO_BUILD=1 reuses target/release/svcgate; SVCGATE=<path> uses
#      that binary instead; SVCGATE_DATAPLANE="key = value;..." adds settings
#      to svcgate's [dataplane] table (e.g. "idle_spins = 64").
# The last line printed:
#   cps_ratio_nft=<svcgate cps / nft cps> concurrent=<connections svcgate held>
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=20
CONNS=64
CONCURRENT=60000
HOLD_SECS=60
PEERS="svcgate nft"
OUT=""
RATE_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
    --secs) SECS=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --concurrent) CONCURRENT=$2; shift 2 ;;
    --hold-secs) HOLD_SECS=$2; shift 2 ;;
    --peers) PEERS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --rate-only) RATE_ONLY=1; shift ;;
    -h | --help) sed -n '2,35p' "$0"; exit 0 ;;
    *) echo "bench-cps.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench-cps.sh: needs root (network namespaces, XDP)" >&2; exit 1; }

# --- set-up: packages and binaries -------------------------------------------
"$ROOT/scripts/setup.sh"
missing=""
for p in wrk nginx nftables conntrack; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    echo "== installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -q --no-install-recommends $missing >/dev/null
    # The package's own nginx service is not wanted (a container may have no
    # init; a VM's would listen on the host's port 80).
    command -v systemctl >/dev/null && systemctl disable --now nginx >/dev/null 2>&1 || true
fi
if [ -z "${SVCGATE:-}" ]; then
    if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
        echo "== building svcgate (release)"
        (cd "$ROOT" && cargo build --release --locked -q -p svcgate-control)
    fi
    SVCGATE=$ROOT/target/release/svcgate
fi

export SG_LAB_PREFIX=sgcps
P=$SG_LAB_PREFIX
NS_C=$P-client NS_GW=$P-gw
VIP=198.18.128.50 PORT=80
PODS="198.18.3.10 198.18.3.11 198.18.3.12"
SNAT=198.18.3.1
ADMIN=127.0.0.1:9921
TMP=$(mktemp -d /tmp/sgcps.XXXXXX)
chmod 755 "$TMP"
PIDS=()
SVCGATE_PID=""
cleanup() {
    set +e
    [ -n "$SVCGATE_PID" ] && kill -INT "$SVCGATE_PID" 2>/dev/null && wait "$SVCGATE_PID" 2>/dev/null
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    "$ROOT/scripts/lab.sh" down >/dev/null
    if [ -n "$OUT" ]; then mkdir -p "$OUT" && cp "$TMP"/*.log "$TMP"/*.out "$OUT"/ 2>/dev/null; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
in_ns() { local n=$1; shift; ip netns exec "$n" "$@"; }
# (Background jobs call `ip netns exec` directly: it execs the command, so $!
# is the command's pid and kill reaches it.)

# --- the lab: scripts/lab.sh, plus servers and sysctls -----------------------
"$ROOT/scripts/lab.sh" up 1
# The client's whole port range.
in_ns $NS_C sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
# ... and 16 more client addresses for the concurrency run (conn-hold.py
# binds each connection to one).
CLIENT_SRCS=""
for k in $(seq 10 25); do
    ip -n $NS_C addr add "198.18.1.$k/24" dev c0
    CLIENT_SRCS="$CLIENT_SRCS${CLIENT_SRCS:+,}198.18.1.$k"
done
i=0
for a in $PODS; do
    i=$((i + 1))
    ns=$P-b$i
    in_ns "$ns" sysctl -qw net.core.somaxconn=8192 net.ipv4.tcp_max_syn_backlog=8192
    mkdir -p "$TMP/nginx-$i"
    # Two workers per Pod (SO_REUSEPORT), each within the file limit a
    # process gets here, enough for a third of the connections held.
    nofile=$(ulimit -Hn)
    [ "$nofile" = unlimited ] && nofile=1048576
    cat >"$TMP/nginx-$i/nginx.conf" <<N
daemon off;
user root;
worker_processes 2;
worker_rlimit_nofile $((nofile - 100));
pid $TMP/nginx-$i/nginx.pid;
error_log $TMP/nginx-$i/error.log warn;
events { worker_connections $((nofile - 500)); multi_accept on; }
http {
    access_log off;
    keepalive_timeout 600s;
    keepalive_requests 10000000;
    client_body_temp_path $TMP/nginx-$i/body;
    proxy_temp_path $TMP/nginx-$i/proxy;
    fastcgi_temp_path $TMP/nginx-$i/fastcgi;
    uwsgi_temp_path $TMP/nginx-$i/uwsgi;
    scgi_temp_path $TMP/nginx-$i/scgi;
    server {
        listen $a:$PORT reuseport backlog=8192;
        location / { return 200 "pod-$i\n"; }
    }
}
N
    ip netns exec "$ns" nginx -e "$TMP/nginx-$i/error.log" -p "$TMP/nginx-$i" -c "$TMP/nginx-$i/nginx.conf" &
    PIDS+=($!)
done
for a in $PODS; do
    for _ in $(seq 50); do in_ns $NS_GW curl -sf --max-time 1 "http://$a:$PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
    in_ns $NS_GW curl -sf --max-time 1 "http://$a:$PORT/" >/dev/null || { cat "$TMP"/nginx-*/error.log; echo "bench-cps.sh: nginx on $a not answering" >&2; exit 1; }
done

# --- measurements ------------------------------------------------------------
LOG=$TMP/bench.log
say() { echo "$*" | tee -a "$LOG"; }
# wrk's figure from its output file: wrk_val FILE requests|rps|errors|non2xx
wrk_val() {
    case $2 in
    requests) awk '/requests in/ { n = $1 } END { print n + 0 }' "$1" ;;
    rps) awk '/^Requests\/sec:/ { printf "%.0f\n", $2 }' "$1" ;;
    errors) awk -F'[ ,]+' '/Socket errors:/ { e = $5 + $7 + $9 + $11 } END { print e + 0 }' "$1" ;;
    non2xx) awk '/Non-2xx/ { n = $NF } END { print n + 0 }' "$1" ;;
    esac
}
# ESTABLISHED client sockets to the VIP.
established() { in_ns $NS_C ss -Htn state established "( dst $VIP and dport = :$PORT )" | wc -l; }
metric() { # name-prefix: sum of svcgate's metric lines starting with it
    in_ns $NS_GW curl -sf --max-time 2 "http://$ADMIN/metrics" | awk -v m="$1" 'index($0, m) == 1 { s += $NF } END { printf "%.0f\n", s }'
}
gw_counters() {
    if [ "$1" = svcgate ]; then
        echo "conntrack_entries=$(metric svcgate_conntrack_entries) ports_exhausted=$(metric 'svcgate_drops_total{reason="ports_exhausted"}')"
    else
        echo "conntrack_entries=$(in_ns $NS_GW conntrack -C 2>/dev/null || echo ?) conntrack_drops=$(in_ns $NS_GW conntrack -S 2>/dev/null |
            awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^(drop|insert_failed|early_drop)=/) { split($i, kv, "="); s += kv[2] } } END { print s + 0 }')"
    fi
}

# Connection rate: wrk with Connection: close for SECS. Sets CPS FAILED.
rate_run() { # peer
    in_ns $NS_C wrk -t 2 -c "$CONNS" -d "${SECS}s" --timeout 5s -H "Connection: close" "http://$VIP:$PORT/" >"$TMP/wrk-$1.out" 2>&1 || true
    local req rps err n2
    req=$(wrk_val "$TMP/wrk-$1.out" requests); rps=$(wrk_val "$TMP/wrk-$1.out" rps)
    err=$(wrk_val "$TMP/wrk-$1.out" errors); n2=$(wrk_val "$TMP/wrk-$1.out" non2xx)
    CPS=${rps:-0}
    FAILED=$((${err:-0} + ${n2:-0}))
    say "$(printf "%-8s rate: %7s connections/s over %ss (%s requests, each its own connection), failed %s (socket errors %s, non-2xx %s); gateway %s" \
        "$1" "$CPS" "$SECS" "${req:-?}" "$FAILED" "${err:-0}" "${n2:-0}" "$(gw_counters "$1")")"
    grep -q "requests in" "$TMP/wrk-$1.out" || { say "wrk output:"; cat "$TMP/wrk-$1.out" | tee -a "$LOG"; }
}

# Concurrency: scripts/conn-hold.py processes (each within the file limit)
# open CONCURRENT keep-alive connections from the client's CLIENT_SRCS, each
# doing one request, and hold them; the most ESTABLISHED client sockets at
# once while they hold is the figure. Sets HELD.
hold_run() { # peer
    local per procs k pids=() best=0 n t f opened=0 failed=0 again=0 counters
    per=$(($(ulimit -Hn) - 1000))
    procs=$(((CONCURRENT + per - 1) / per))
    for k in $(seq 1 $procs); do
        n=$((CONCURRENT / procs + (k <= CONCURRENT % procs ? 1 : 0)))
        ip netns exec $NS_C python3 "$ROOT/scripts/conn-hold.py" $VIP $PORT "$n" "$CLIENT_SRCS" 10 >"$TMP/hold-$1-$k.out" 2>&1 &
        pids+=($!)
    done
    # Until every process has opened what it could (at most HOLD_SECS).
    for t in $(seq 1 "$HOLD_SECS"); do
        sleep 1
        [ "$(cat "$TMP"/hold-"$1"-*.out | grep -c '^opened=')" -ge "$procs" ] && break
        [ $((t % 10)) = 0 ] && say "         ${t}s: $(established) established ($(gw_counters "$1"))"
    done
    for t in 1 2 3; do
        n=$(established)
        [ "$n" -gt "$best" ] && best=$n
        sleep 1
    done
    counters=$(gw_counters "$1")
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    for f in "$TMP"/hold-"$1"-*.out; do
        opened=$((opened + $(grep -o '^opened=[0-9]*' "$f" | cut -d= -f2 || echo 0)))
        failed=$((failed + $(grep -o 'failed=[0-9]*' "$f" | head -1 | cut -d= -f2 || echo 0)))
        again=$((again + $(grep -o '^again_ok=[0-9]*' "$f" | cut -d= -f2 || echo 0)))
    done
    HELD=$best
    say "$(printf "%-8s concurrent: %s of %s connections established at once (%s opened with a request answered, %s failed, %s answered again 10 s later; %s client processes); gateway %s" \
        "$1" "$HELD" "$CONCURRENT" "$opened" "$failed" "$again" "$procs" "$counters")"
    grep -h '^opened=' "$TMP"/hold-"$1"-*.out | sed 's/^/         /' | tee -a "$LOG" >/dev/null
}

svcgate_start() {
    mkdir -p "$TMP/manifests"
    cat >"$TMP/manifests/bench.yaml" <<Y
apiVersion: v1
kind: Service
metadata: {name: cps, namespace: default}
spec:
  clusterIP: $VIP
  ports: [{name: http, port: $PORT, targetPort: $PORT, protocol: TCP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: cps, namespace: default}
subsets:
- addresses: [$(for a in $PODS; do printf '{ip: %s}, ' "$a"; done | sed 's/, $//')]
  ports: [{name: http, port: $PORT, protocol: TCP}]
Y
    # One worker and ONE SNAT address with the default port range (what
    # the issue measures): the bundled example's settings otherwise.
    cat >"$TMP/svcgate.toml" <<T
manifests = "$TMP/manifests"
service_cidr = "198.18.128.0/20"
node_ips = ["198.18.1.1"]
admin_listen = "$ADMIN"
[dataplane]
interfaces = ["g0", "g1"]
queues = 1
snat_addrs = ["$SNAT"]
conntrack_capacity = 262144
$(echo "${SVCGATE_DATAPLANE:-}" | tr ';' '\n' | sed 's/^ *//')
T
    # The gateway's kernel knows the client and the Pods from the start.
    for a in 198.18.1.2 ${CLIENT_SRCS//,/ } $PODS; do in_ns $NS_GW ping -c1 -W1 "$a" >/dev/null; done
    ip netns exec $NS_GW "$SVCGATE" run --config "$TMP/svcgate.toml" >>"$TMP/svcgate.log" 2>&1 &
    SVCGATE_PID=$!
    local i
    local before
    before=$(grep -c "dataplane running" "$TMP/svcgate.log" 2>/dev/null || true)
    for i in $(seq 1 300); do
        [ "$(grep -c "dataplane running" "$TMP/svcgate.log" 2>/dev/null || true)" -gt "${before:-0}" ] && break
        kill -0 $SVCGATE_PID 2>/dev/null || { cat "$TMP/svcgate.log"; echo "bench-cps.sh: svcgate exited" >&2; exit 1; }
        sleep 0.1
    done
    [ "$(grep -c "dataplane running" "$TMP/svcgate.log" || true)" -gt "${before:-0}" ] || { tail "$TMP/svcgate.log"; echo "bench-cps.sh: svcgate's dataplane did not start" >&2; exit 1; }
    for i in $(seq 1 50); do in_ns $NS_C curl -sf --max-time 1 "http://$VIP:$PORT/" >/dev/null 2>&1 && break; sleep 0.2; done
}
svcgate_stop() {
    kill -INT $SVCGATE_PID; wait $SVCGATE_PID 2>/dev/null || true; SVCGATE_PID=""
}
nft_start() {
    python3 "$ROOT/scripts/nft-kubeproxy.py" service "$VIP:$PORT" tcp "$PORT" $PODS --pod-cidr 198.18.3.0/24 >"$TMP/kp.nft"
    in_ns $NS_GW sysctl -qw net.ipv4.ip_forward=1
    in_ns $NS_GW nft -f "$TMP/kp.nft"
    in_ns $NS_GW conntrack -F >/dev/null 2>&1 || true
    local i
    for i in $(seq 1 20); do in_ns $NS_C curl -sf --max-time 1 "http://$VIP:$PORT/" >/dev/null 2>&1 && break; sleep 0.2; done
}
nft_stop() {
    in_ns $NS_GW nft delete table ip kube-proxy
    in_ns $NS_GW sysctl -qw net.ipv4.ip_forward=0
}

{
    echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) vCPUs, Linux $(uname -r), RLIMIT_NOFILE $(ulimit -Hn)"
    echo "Date: $(date -u +%Y-%m-%dT%H:%MZ), commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}') -t2 -c$CONNS Connection: close for ${SECS}s; nginx in 3 Pods; one SNAT address $SNAT; nothing pinned"
    echo "svcgate [dataplane] settings added: ${SVCGATE_DATAPLANE:-none}"
} | tee -a "$LOG"

declare -A RATE FAILS HOLD
for peer in $PEERS; do
    say "== $peer"
    # Each measurement on a fresh gateway: closed flows of one would hold
    # ports (120 s after a FIN, in both dataplanes) during the next.
    runs="hold_run rate_run"
    [ "$RATE_ONLY" = 1 ] && runs=rate_run && HELD=0
    for run in $runs; do
        case $peer in
        svcgate) svcgate_start ;;
        nft) nft_start ;;
        *) echo "bench-cps.sh: unknown peer $peer" >&2; exit 2 ;;
        esac
        $run "$peer"
        case $peer in
        svcgate) svcgate_stop ;;
        nft) nft_stop ;;
        esac
        sleep 2
    done
    RATE[$peer]=$CPS; FAILS[$peer]=$FAILED; HOLD[$peer]=$HELD
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
R=$(ratio "${RATE[svcgate]:-}" "${RATE[nft]:-}")
say "summary: svcgate ${RATE[svcgate]:-?} cps (${FAILS[svcgate]:-?} failed), nft ${RATE[nft]:-?} cps (${FAILS[nft]:-?} failed); held through one SNAT address: svcgate ${HOLD[svcgate]:-?}, nft ${HOLD[nft]:-?} (of $CONCURRENT tried)"
echo "cps_ratio_nft=$R concurrent=${HOLD[svcgate]:-0}"
