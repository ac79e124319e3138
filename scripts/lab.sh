#!/usr/bin/env bash
# svcgate lab topology in network namespaces, dual-stack. Addresses:
# 198.18.0.0/15 and 2001:2::/48 only (the benchmarking ranges of RFC 2544 and
# RFC 5180).
#
#   ${P}-client               ${P}-gw                              ${P}-sw (bridge)    ${P}-b1..b3
#   c0 198.18.1.2/24     --- g0 198.18.1.1/24     (node IP)
#      2001:2:0:1::2/64         2001:2:0:1::1/64  (IPv6 node IP)
#                            g1 198.18.3.1/24     (SNAT) ----- sg0 ]- br0 -[ sb1 --- eth0 198.18.3.10/24  2001:2:0:3::10/64
#                               2001:2:0:3::1/64  (IPv6 SNAT)          [ sb2 --- eth0 198.18.3.11/24  2001:2:0:3::11/64
#                                                                      [ sb3 --- eth0 198.18.3.12/24  2001:2:0:3::12/64
#
# The IPv6 plan follows the IPv4 one: 198.18.N.0/24 is 2001:2:0:N::/64, the
# host part kept (.10 is ::10). Service CIDR 198.18.128.0/20 and
# 2001:2:0:8000::/112, LoadBalancer IPs 198.19.0.0/16 and 2001:2:0:9000::/64.
#
# These are the addresses of the bundled example (examples/): the Pods
# nginx-0..2, the service CIDR 198.18.128.0/20 and the LoadBalancer IP
# 198.19.0.100. The client routes the service CIDR and 198.19.0.0/16 via the
# gateway, as a router in front of gateway nodes would (and 2001:2:0:8000::/112
# and 2001:2:0:9000::/64 via 2001:2:0:1::1); the backends route everything
# (0.0.0.0/0 and ::/0) via the gateway. The gateway's kernel does not forward
# (ip_forward=0, IPv6 forwarding=0): only svcgate moves service traffic.
# IPv6 addresses are added `nodad` (usable at once, no duplicate address
# detection delay); the gateway's kernel answers neighbour solicitations for
# its own addresses (the XDP program passes ICMPv6 to it). TX checksum offload is
# off on every veth, because a frame that takes the AF_XDP path must carry a
# complete checksum.
#
# usage: scripts/lab.sh up [QUEUES]   (QUEUES per veth, default 1)
#        scripts/lab.sh down
#        scripts/lab.sh status
# env:   SG_LAB_PREFIX (default sglab) names the namespaces ${P}-client, ...
set -euo pipefail

P="${SG_LAB_PREFIX:-sglab}"
NS=("$P-client" "$P-gw" "$P-sw" "$P-b1" "$P-b2" "$P-b3")

down() {
    for ns in "${NS[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}

veth() { # ns_a a ns_b b queues
    ip link add "$2" netns "$1" numtxqueues "$5" numrxqueues "$5" type veth \
        peer name "$4" netns "$3" numtxqueues "$5" numrxqueues "$5"
    for end in "$1 $2" "$3 $4"; do
        set -- $end
        ip netns exec "$1" ethtool -K "$2" tx off >/dev/null 2>&1 || true
        ip -n "$1" link set "$2" up
    done
}

up() {
    local q="${1:-1}"
    down
    for ns in "${NS[@]}"; do
        ip netns add "$ns"
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0
        ip -n "$ns" link set lo up
    done
    veth "$P-client" c0 "$P-gw" g0 "$q"
    veth "$P-gw" g1 "$P-sw" sg0 "$q"
    ip -n "$P-sw" link add br0 type bridge
    ip -n "$P-sw" link set br0 up
    ip -n "$P-sw" link set sg0 master br0
    for i in 1 2 3; do
        veth "$P-b$i" eth0 "$P-sw" "sb$i" "$q"
        ip -n "$P-sw" link set "sb$i" master br0
        ip -n "$P-b$i" addr add "198.18.3.$((9 + i))/24" dev eth0
        ip -n "$P-b$i" route add default via 198.18.3.1
        ip -n "$P-b$i" addr add "2001:2:0:3::$((9 + i))/64" dev eth0 nodad
        ip -n "$P-b$i" -6 route add default via 2001:2:0:3::1
    done
    ip -n "$P-client" addr add 198.18.1.2/24 dev c0
    ip -n "$P-client" route add 198.18.128.0/20 via 198.18.1.1
    ip -n "$P-client" route add 198.19.0.0/16 via 198.18.1.1
    ip -n "$P-gw" addr add 198.18.1.1/24 dev g0
    ip -n "$P-gw" addr add 198.18.3.1/24 dev g1
    ip -n "$P-client" addr add 2001:2:0:1::2/64 dev c0 nodad
    ip -n "$P-client" -6 route add 2001:2:0:8000::/112 via 2001:2:0:1::1
    ip -n "$P-client" -6 route add 2001:2:0:9000::/64 via 2001:2:0:1::1
    ip -n "$P-gw" addr add 2001:2:0:1::1/64 dev g0 nodad
    ip -n "$P-gw" addr add 2001:2:0:3::1/64 dev g1 nodad
    # A new flow's first packet to a Pod whose neighbour is not resolved yet
    # goes to the gateway's kernel untranslated (pass_unknown_next_hop). With
    # no route to the destination, IPv4 drops it silently and the client
    # retransmits; IPv6 answers ICMPv6 "no route", failing the connection at
    # once. Blackhole routes make IPv6 drop silently too, as a gateway with
    # a route there (and forwarding off) would.
    ip -n "$P-gw" -6 route add blackhole 2001:2:0:8000::/112
    ip -n "$P-gw" -6 route add blackhole 2001:2:0:9000::/64
    ip netns exec "$P-gw" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
    echo "lab up: ${NS[*]} (queues=$q)"
}

status() {
    for ns in "${NS[@]}"; do
        if ip netns list | grep -qw "$ns"; then
            echo "== $ns"
            ip -n "$ns" -br addr show | grep -v '^lo'
        else
            echo "== $ns (absent)"
        fi
    done
}

case "${1:-}" in
    up) up "${2:-1}" ;;
    down) down; echo "lab down" ;;
    status) status ;;
    *) echo "usage: $0 up [QUEUES] | down | status" >&2; exit 2 ;;
esac
