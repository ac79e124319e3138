#!/usr/bin/env bash
# svcgate's main job on the bundled example, end to end:
#   lab namespaces (client, gateway, three Pods running an HTTP server that
#   answers with its name and a UDP echo), svcgate on the gateway serving
#   examples/manifests over AF_XDP, then curl through the ClusterIP, the
#   NodePort and the LoadBalancer IP, and a UDP echo through its ClusterIP;
#   then cluster DNS: the client's resolv.conf names svcgate's DNS address
#   (198.18.128.53, on the gateway's lo) and the client runs `nslookup nginx`,
#   `curl nginx:8080`, `nslookup nginx-0.nginx-headless` and `dig SRV`;
#   then IPv6: nginx is dual-stack (PreferDualStack; the Pods have podIPs of
#   both families), so the client curls the same Service on its IPv6
#   clusterIP (`curl -6`), asks `dig AAAA nginx...`, and `svcgate status`
#   shows both of its addresses.
# Everything it creates is removed at the end, also on failure.
# Needs root (namespaces, XDP). Addresses: 198.18.0.0/15 and 2001:2::/48 only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: needs root (network namespaces, XDP, AF_XDP)" >&2
    exit 1
fi
scripts/setup.sh
cargo build --release --locked -p svcgate-control
SVCGATE=$ROOT/target/release/svcgate

export SG_LAB_PREFIX=sgdemo
P=$SG_LAB_PREFIX
LOG=$(mktemp -d)
DNS=198.18.128.53 # examples/svcgate.toml's [dns] addresses
RESOLV_DIR=/etc/netns/$P-client
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    scripts/lab.sh down >/dev/null
    rm -rf "$LOG" "$RESOLV_DIR"
}
trap cleanup EXIT INT TERM

in_ns() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }

echo "== 1. lab: client 198.18.1.2 -> gateway (g0 198.18.1.1 | g1 198.18.3.1) -> Pods 198.18.3.10-12"
echo "        and 2001:2:0:1::2 -> (g0 2001:2:0:1::1 | g1 2001:2:0:3::1) -> Pods 2001:2:0:3::10-12"
scripts/lab.sh up 1
for i in 1 2 3; do
    # Not through in_ns: `$!` must be the process itself (ip netns exec
    # execs it), not a subshell, so that cleanup can stop it.
    ip netns exec "$P-b$i" python3 scripts/lab-backend.py "nginx-$((i - 1))" &
    pids+=($!)
done

echo "== 2. the manifests, as svcgate loads them"
"$SVCGATE" validate examples/manifests --service-cidr 198.18.128.0/20,2001:2:0:8000::/112 \
    --node-ip 198.18.1.1 --node-ip 2001:2:0:1::1 || true

echo "== 3. svcgate run on the gateway (cluster DNS on $DNS, local on its lo)"
ip -n "$P-gw" addr add "$DNS/32" dev lo
ip netns exec "$P-gw" env RUST_LOG=info "$SVCGATE" run --config examples/svcgate.toml >"$LOG/svcgate.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    if in_ns gw curl -sf --max-time 1 http://127.0.0.1:9901/readyz >/dev/null 2>&1; then break; fi
    sleep 0.1
done
if ! in_ns gw curl -sf --max-time 1 http://127.0.0.1:9901/readyz >/dev/null; then
    echo "svcgate did not become ready:" >&2
    cat "$LOG/svcgate.log" >&2
    exit 1
fi
STATUS=$(in_ns gw "$SVCGATE" status)
# nginx's CLUSTER-IP is "IPv4,IPv6" (dual-stack, the primary family first).
CIPS=$(awk '$1 == "nginx" && $2 == "ClusterIP" { print $3 }' <<<"$STATUS")
CIP=${CIPS%%,*}
CIP6=${CIPS#*,}
ECHO_IP=$(awk '$1 == "udp-echo" && $2 == "ClusterIP" { print $3 }' <<<"$STATUS")

fail=0
through() { # label url
    local seen=""
    for _ in $(seq 30); do
        local r
        r=$(in_ns client curl -s --max-time 2 --connect-timeout 1 "$2" || true)
        [ -n "$r" ] && seen="$seen $r"
    done
    local uniq
    uniq=$(tr ' ' '\n' <<<"$seen" | grep -v '^$' | sort | uniq -c | tr '\n' ' ')
    echo "   $1 $2 -> $uniq"
    for b in nginx-0 nginx-1 nginx-2; do
        grep -qw "$b" <<<"$seen" || { echo "   !! $b never answered" >&2; fail=1; }
    done
}
echo "== 4. traffic from the client (30 connections each; answers counted by backend)"
through "ClusterIP   " "http://$CIP:8080/"
through "NodePort    " "http://198.18.1.1:30120/"
through "LoadBalancer" "http://198.19.0.100:80/"
UDP=$(in_ns client python3 -c "
import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)
s.connect(('$ECHO_IP',7)); s.send(b'hello'); print(s.recv(100).decode())" || true)
echo "   UDP echo     $ECHO_IP:7 -> ${UDP:-no answer}"
[ -n "$UDP" ] || fail=1

echo "== 5. names from the client (resolv.conf: search default.svc.cluster.local ..., ndots 5, nameserver $DNS)"
# `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf.
mkdir -p "$RESOLV_DIR"
printf 'search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver %s\noptions ndots:5\n' \
    "$DNS" >"$RESOLV_DIR/resolv.conf"
expect() { # label output needle
    echo "$2" | sed 's/^/   /'
    grep -q -- "$3" <<<"$2" || { echo "   !! $1: no $3" >&2; fail=1; }
}
echo "-- nslookup nginx"
expect "nslookup nginx" "$(in_ns client nslookup nginx 2>&1 || true)" "Address: $CIP"
echo "-- curl nginx:8080"
r=""
for _ in 1 2 3; do
    r=$(in_ns client curl -s --max-time 3 --connect-timeout 2 http://nginx:8080/ || true)
    [ -n "$r" ] && break
done
expect "curl nginx:8080" "$r" "nginx-"
echo "-- nslookup nginx-0.nginx-headless"
expect "nslookup nginx-0.nginx-headless" "$(in_ns client nslookup nginx-0.nginx-headless 2>&1 || true)" \
    "Address: 198.18.3.10"
echo "-- dig SRV _service0._tcp.nginx.default.svc.cluster.local"
expect "dig SRV" "$(in_ns client dig +noall +answer SRV _service0._tcp.nginx.default.svc.cluster.local 2>&1 || true)" \
    "SRV.*0 100 8080 nginx.default.svc.cluster.local."
echo "-- the workers' DNS counters (UDP answered in the dataplane; slow: passed to the daemon's server)"
in_ns gw curl -s --max-time 2 http://127.0.0.1:9901/metrics | grep '^svcgate_dns_queries_total' | sed 's/^/   /' || true

echo "== 6. IPv6: the same Service on its IPv6 clusterIP ($CIP6)"
if [ "$CIP6" = "$CIPS" ]; then
    echo "   !! nginx has no IPv6 clusterIP: $CIPS" >&2
    fail=1
else
    # The first connection to each Pod may time out while the gateway
    # resolves the Pod's IPv6 neighbour (NDP): a few warm-up requests first.
    for _ in 1 2 3 4 5 6; do in_ns client curl -6 -s --max-time 2 --connect-timeout 1 "http://[$CIP6]:8080/" >/dev/null || true; done
    through "ClusterIP v6" "http://[$CIP6]:8080/"
    echo "-- curl -6 'http://[$CIP6]:8080/peer' (the Pod sees the gateway's IPv6 SNAT address)"
    expect "curl -6 /peer" "$(in_ns client curl -6 -s --max-time 3 "http://[$CIP6]:8080/peer" 2>&1 || true)" \
        "nginx-[0-2] 2001:2:0:3::1$"
    echo "-- dig AAAA nginx.default.svc.cluster.local (through svcgate's DNS on $DNS)"
    expect "dig AAAA" "$(in_ns client dig +noall +answer AAAA nginx.default.svc.cluster.local 2>&1 || true)" \
        "AAAA.*$CIP6"
fi

echo "== 7. svcgate status (nginx: CLUSTER-IP of both families, endpoints of both)"
in_ns gw "$SVCGATE" status
if [ "$fail" -ne 0 ]; then
    echo "demo: FAILED (svcgate log below)" >&2
    tail -50 "$LOG/svcgate.log" >&2
    exit 1
fi
echo "demo: OK"
