#!/usr/bin/env bash
# The fleet lab: two svcgate gateways behind a BGP router doing ECMP, in
# network namespaces (docs/FLEET.md). Traffic is IPv4; the router also peers
# over IPv6 (2001:2:0:5::/64, 2001:2:0:6::/64) and learns the /128 routes of
# the IPv6 clusterIPs. Addresses: 198.18.0.0/15 and 2001:2::/48 only.
#
#  ${P}-cli            ${P}-rtr (BIRD, AS 65000)        ${P}-gwa (BIRD AS 65001 + svcgate)
#  c0 198.18.1.2 ---- rc 198.18.1.1                     g0 198.18.5.2 | g1 198.18.3.1 --+
#                      ra 198.18.5.1 ------------------ (eBGP)                          |   ${P}-sw (bridge)
#                      rb 198.18.6.1 ------------------ (eBGP)                          +-- br0 -- ${P}-p1..p3
#                                                        ${P}-gwb (BIRD AS 65002 + svcgate)  |     eth0 198.18.3.10-12
#                                                        g0 198.18.6.2 | g1 198.18.3.2 --+
#
# - The router learns each VIP from both gateways (BGP, `merge paths` in its
#   kernel protocol) and installs one route with two next hops; it hashes
#   flows over them by their 5-tuple (fib_multipath_hash_policy=1).
# - Each gateway's BIRD includes the routes file its svcgate writes
#   ([announce]); every route is `via "svcgate0q0"`, svcgate's TUN device,
#   so the routes go when the process dies. BIRD exports nothing to the
#   gateway's own kernel.
# - svcgate runs in dnat mode (the Pods see the client), both gateways
#   watching one copy ($DIR/manifests) of the bundled examples/manifests:
#   the Pods nginx-0..2 (scripts/lab-backend.py) at 198.18.3.10-12, the
#   LoadBalancer IP 198.19.0.100, ClusterIPs in
#   198.18.128.0/20 (announced too: kinds = cluster, loadbalancer, external).
# - The Pods' way back: an ECMP default route via both gateways. A reply
#   reaching the gateway that does not track its flow is handed to that
#   gateway's kernel (svcgate passes it to its TUN device, or, with svcgate
#   dead, no XDP program takes it), whose policy routing sends replies to
#   the client network to the other gateway over the Pod network; there
#   svcgate translates it. Only g1 and the TUN devices forward in the
#   gateways' kernels (g0 does not: only svcgate forwards client traffic);
#   the VIP ranges are blackholed there, as a pass to the kernel must not
#   loop back to the router.
#
# usage: scripts/lab-fleet.sh up | down | status | start-gw a|b | stop-gw a|b | start-bird a|b | stop-bird a|b
#   up        namespaces, links, the Pods' HTTP servers, the three BIRDs; writes
#             each gateway's svcgate config to $DIR/gw{a,b}/svcgate.toml
#   start-gw  starts `svcgate run` in that gateway (SVCGATE=path, default
#             target/debug/svcgate), logs to $DIR/gwX/svcgate.log
#   stop-gw   SIGTERM (graceful drain), waits for the exit
#   stop-bird / start-bird  that gateway's BIRD (svcgate must cope)
# env: SG_FLEET_PREFIX (default sgfleet): namespace names ${P}-cli, ...;
#      SG_FLEET_DIR (default /tmp/${P}): configs, sockets, pid files, logs;
#      SG_FLEET_DRAIN (default 5): drain_seconds of the gateways' [announce]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

P="${SG_FLEET_PREFIX:-sgfleet}"
DIR="${SG_FLEET_DIR:-/tmp/$P}"
DRAIN="${SG_FLEET_DRAIN:-5}"
case "$DIR" in
    /*/?*) ;;
    *) echo "lab-fleet.sh: SG_FLEET_DIR must be an absolute path below a directory, not ${DIR:-empty}" >&2; exit 2 ;;
esac
NS=("$P-cli" "$P-rtr" "$P-gwa" "$P-gwb" "$P-sw" "$P-p1" "$P-p2" "$P-p3")
CLIENT_NET=198.18.1.0/24

# Running and not a zombie (this script's background children are
# re-parented to whatever reaps them, maybe late).
alive() {
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "${st#Z}" = "$st" ]
}

kill_pidfile() { # file [signal]
    local f=$1 sig=${2:-TERM} pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f" 2>/dev/null || true)
    if [ -n "$pid" ] && alive "$pid"; then
        kill "-$sig" "$pid" 2>/dev/null || true
        for _ in $(seq 50); do alive "$pid" || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

down() {
    if [ -d "$DIR" ]; then
        # svcgate first, without its drain (SIGTERM would wait drain_seconds).
        for f in "$DIR"/*/svcgate.pid; do
            [ -e "$f" ] && kill_pidfile "$f" KILL
        done
        for f in "$DIR"/*/*.pid; do
            [ -e "$f" ] && kill_pidfile "$f"
        done
    fi
    for ns in "${NS[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$DIR"
}

veth() { # ns_a a ns_b b
    ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
    for end in "$1 $2" "$3 $4"; do
        set -- $end
        # A frame that takes the AF_XDP path must carry a complete checksum.
        ip netns exec "$1" ethtool -K "$2" tx off >/dev/null 2>&1 || true
        ip -n "$1" link set "$2" up
    done
}

router_conf() {
    cat <<EOF
# The router in front of the gateways: learns the VIPs from both over eBGP
# and installs them as ECMP routes (merge paths) in its kernel.
router id 198.18.1.1;
log "$DIR/rtr/bird.log" all;
protocol device { }
protocol kernel {
    ipv4 { import none; export all; };
    merge paths on limit 16;
}
protocol kernel {
    ipv6 { import none; export all; };
    merge paths on limit 16;
}
template bgp gwpeer {
    local as 65000;
    hold time 9;
    connect delay time 1;
    connect retry time 1;
    error wait time 1, 5;
    ipv4 { import all; export none; };
}
protocol bgp gwa from gwpeer { neighbor 198.18.5.2 as 65001; source address 198.18.5.1; }
protocol bgp gwb from gwpeer { neighbor 198.18.6.2 as 65002; source address 198.18.6.1; }
# IPv6: sessions of their own (the /128 routes of svcgate6; no IPv6 traffic
# in this lab, whose Pods are IPv4).
template bgp gwpeer6 {
    local as 65000;
    hold time 9;
    connect delay time 1;
    connect retry time 1;
    error wait time 1, 5;
    ipv6 { import all; export none; };
}
protocol bgp gwa6 from gwpeer6 { neighbor 2001:2:0:5::2 as 65001; source address 2001:2:0:5::1; }
protocol bgp gwb6 from gwpeer6 { neighbor 2001:2:0:6::2 as 65002; source address 2001:2:0:6::1; }
EOF
}

gateway_bird_conf() { # x as addr peer addr6 peer6
    cat <<EOF
# A gateway's BIRD: announces what svcgate writes to svcgate-routes.conf
# (protocol static svcgate4 / svcgate6, routes via svcgate's TUN device).
router id $3;
log "$DIR/gw$1/bird.log" all;
protocol device { }
include "$DIR/gw$1/svcgate-routes.conf";
protocol bgp uplink {
    local $3 as $2;
    neighbor $4 as 65000;
    hold time 9;
    connect delay time 1;
    connect retry time 1;
    error wait time 1, 5;
    ipv4 { import none; export where proto = "svcgate4"; };
}
protocol bgp uplink6 {
    local $5 as $2;
    neighbor $6 as 65000;
    hold time 9;
    connect delay time 1;
    connect retry time 1;
    error wait time 1, 5;
    ipv6 { import none; export where proto = "svcgate6"; };
}
EOF
}

svcgate_conf() { # x g0addr g1addr
    cat <<EOF
# svcgate on gateway $1 of the fleet lab (scripts/lab-fleet.sh).
manifests = "$DIR/manifests"
service_cidr = ["198.18.128.0/20", "2001:2:0:8000::/112"]
node_ips = ["$2"]
admin_listen = "127.0.0.1:9901"

[announce]
bird_socket = "$DIR/gw$1/bird.ctl"
routes_file = "$DIR/gw$1/svcgate-routes.conf"
kinds = ["loadbalancer", "external", "cluster"]
withdraw_without_endpoints = true
drain_seconds = $DRAIN

[dataplane]
interfaces = ["g0", "g1"]
queues = 1
mode = "dnat"
snat_addrs = ["$3"]
conntrack_capacity = 65536
EOF
}

gateway() { # x g0addr rtraddr g1addr peer_g1addr as g0addr6 rtraddr6
    local ns="$P-gw$1"
    ip -n "$ns" addr add "$2/24" dev g0
    ip -n "$ns" addr add "$7/64" dev g0 nodad
    ip -n "$ns" addr add "$4/24" dev g1
    ip -n "$ns" route add default via "$3"
    # Only g1 and the TUN devices svcgate creates (they inherit `default`)
    # forward; g0 does not.
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=0
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.default.forwarding=1 net.ipv4.conf.g1.forwarding=1
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0 \
        net.ipv4.conf.g1.send_redirects=0
    # Replies this gateway does not track go to the other gateway.
    ip -n "$ns" route add "$CLIENT_NET" via "$5" dev g1 table 100
    ip -n "$ns" rule add iif svcgate0q0 to "$CLIENT_NET" lookup 100 pref 100
    ip -n "$ns" rule add iif g1 to "$CLIENT_NET" lookup 100 pref 101
    ip -n "$ns" route add blackhole 198.18.128.0/20
    ip -n "$ns" route add blackhole 198.19.0.0/16
    mkdir -p "$DIR/gw$1"
    svcgate_conf "$1" "$2" "$4" >"$DIR/gw$1/svcgate.toml"
    # What svcgate withdraws at start; BIRD needs the file to exist.
    printf 'protocol static svcgate4 { ipv4; }\nprotocol static svcgate6 { ipv6; }\n' >"$DIR/gw$1/svcgate-routes.conf"
    gateway_bird_conf "$1" "$6" "$2" "$3" "$7" "$8" >"$DIR/gw$1/bird.conf"
    start_bird "$1"
}

start_bird() { # a|b
    ip netns exec "$P-gw$1" bird -c "$DIR/gw$1/bird.conf" -s "$DIR/gw$1/bird.ctl" -P "$DIR/gw$1/bird.pid"
}

up() {
    down
    command -v bird >/dev/null || { echo "lab-fleet.sh: bird (Debian bird2) is missing: scripts/setup.sh" >&2; exit 1; }
    mkdir -p "$DIR/rtr" "$DIR/pods"
    # Both gateways watch one copy of the example (tests change it).
    cp -r "$ROOT/examples/manifests" "$DIR/manifests"
    for ns in "${NS[@]}"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    veth "$P-cli" c0 "$P-rtr" rc
    veth "$P-rtr" ra "$P-gwa" g0
    veth "$P-rtr" rb "$P-gwb" g0
    veth "$P-gwa" g1 "$P-sw" sa
    veth "$P-gwb" g1 "$P-sw" sb
    ip -n "$P-sw" link add br0 type bridge
    ip -n "$P-sw" link set br0 up
    ip -n "$P-sw" link set sa master br0
    ip -n "$P-sw" link set sb master br0

    ip -n "$P-cli" addr add 198.18.1.2/24 dev c0
    ip -n "$P-cli" route add default via 198.18.1.1
    ip -n "$P-rtr" addr add 198.18.1.1/24 dev rc
    ip -n "$P-rtr" addr add 198.18.5.1/24 dev ra
    ip -n "$P-rtr" addr add 198.18.6.1/24 dev rb
    ip -n "$P-rtr" addr add 2001:2:0:5::1/64 dev ra nodad
    ip -n "$P-rtr" addr add 2001:2:0:6::1/64 dev rb nodad
    ip netns exec "$P-rtr" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
        net.ipv6.conf.all.forwarding=1

    gateway a 198.18.5.2 198.18.5.1 198.18.3.1 198.18.3.2 65001 2001:2:0:5::2 2001:2:0:5::1
    gateway b 198.18.6.2 198.18.6.1 198.18.3.2 198.18.3.1 65002 2001:2:0:6::2 2001:2:0:6::1

    for i in 1 2 3; do
        veth "$P-p$i" eth0 "$P-sw" "s$i"
        ip -n "$P-sw" link set "s$i" master br0
        ip -n "$P-p$i" addr add "198.18.3.$((9 + i))/24" dev eth0
        ip -n "$P-p$i" route add default nexthop via 198.18.3.1 nexthop via 198.18.3.2
        ip netns exec "$P-p$i" python3 "$ROOT/scripts/lab-backend.py" "nginx-$((i - 1))" --keep-alive \
            >"$DIR/pods/p$i.log" 2>&1 &
        echo $! >"$DIR/pods/p$i.pid"
    done

    router_conf >"$DIR/rtr/bird.conf"
    ip netns exec "$P-rtr" bird -c "$DIR/rtr/bird.conf" -s "$DIR/rtr/bird.ctl" -P "$DIR/rtr/bird.pid"
    echo "fleet lab up: ${NS[*]} (configs, sockets and logs in $DIR)"
}

start_gw() { # a|b
    local x=$1 bin="${SVCGATE:-$ROOT/target/debug/svcgate}"
    ip netns exec "$P-gw$x" env RUST_LOG="${RUST_LOG:-info}" "$bin" run --config "$DIR/gw$x/svcgate.toml" \
        >"$DIR/gw$x/svcgate.log" 2>&1 &
    echo $! >"$DIR/gw$x/svcgate.pid"
    for _ in $(seq 300); do
        if ip netns exec "$P-gw$x" curl -sf --max-time 1 http://127.0.0.1:9901/readyz >/dev/null 2>&1; then
            echo "svcgate on gw$x ready (pid $(cat "$DIR/gw$x/svcgate.pid"))"
            return 0
        fi
        sleep 0.1
    done
    echo "svcgate on gw$x did not become ready:" >&2
    cat "$DIR/gw$x/svcgate.log" >&2
    return 1
}

stop_gw() { # a|b
    local f="$DIR/gw$1/svcgate.pid" pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 600); do alive "$pid" || break; sleep 0.1; done
    rm -f "$f"
}

status() {
    for ns in "${NS[@]}"; do
        if ip netns list | grep -qw "$ns"; then
            echo "== $ns"
            ip -n "$ns" -br addr show | grep -v '^lo' || true
        else
            echo "== $ns (absent)"
        fi
    done
    if [ -S "$DIR/rtr/bird.ctl" ]; then
        echo "== router: BGP and routes"
        birdc -s "$DIR/rtr/bird.ctl" show protocols
        ip -n "$P-rtr" route show proto bird
    fi
}

case "${1:-}" in
    up) up ;;
    down) down; echo "fleet lab down" ;;
    status) status ;;
    start-gw) start_gw "${2:?a or b}" ;;
    stop-bird) kill_pidfile "$DIR/gw${2:?a or b}/bird.pid" ;;
    start-bird) start_bird "${2:?a or b}" ;;
    stop-gw) stop_gw "${2:?a or b}" ;;
    *) echo "usage: $0 up | down | status | start-gw a|b | stop-gw a|b | start-bird a|b | stop-bird a|b" >&2; exit 2 ;;
esac
