#!/usr/bin/env bash
# The fleet, end to end (docs/FLEET.md): two svcgate gateways announce the
# bundled example's VIPs through BIRD to a router that spreads flows over
# them by ECMP (scripts/lab-fleet.sh), then one gateway is killed.
#
#   1. the lab: a client behind a BIRD router, two gateways (BIRD + svcgate
#      in dnat mode), three Pods;
#   2. the router's view: both BGP sessions, the LoadBalancer IP learnt from
#      both gateways (`birdc show route`) and installed with two next hops
#      (`ip route`);
#   3. curl through the LoadBalancer IP: the Pods answer, and see the client;
#   4. 100 held connections and a new-connection loop, then SIGKILL of
#      gateway a: the router's route loses it at once (its TUN device went
#      with the process), the held connections go on through gateway b;
#   5. SIGTERM of gateway b after restarting a: routes withdrawn first, then
#      the drain, then the exit.
# Everything is removed at the end, also on failure. Needs root.
# env: SVCGATE (a built binary: skips the release build), SG_FLEET_PREFIX
# (default sgdemoha), SG_FLEET_DRAIN (default 3 s).
# Addresses: 198.18.0.0/15 only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ "$(id -u)" -ne 0 ]; then
    echo "demo-ha.sh: needs root (network namespaces, XDP, AF_XDP)" >&2
    exit 1
fi
scripts/setup.sh
# SVCGATE=path uses that binary (e.g. target/debug/svcgate) instead of a release build.
if [ -z "${SVCGATE:-}" ]; then
    cargo build --release --locked -p svcgate-control
    SVCGATE=$ROOT/target/release/svcgate
fi
export SVCGATE
export SG_FLEET_PREFIX=${SG_FLEET_PREFIX:-sgdemoha}
export SG_FLEET_DIR=${SG_FLEET_DIR:-/tmp/$SG_FLEET_PREFIX}
export SG_FLEET_DRAIN=${SG_FLEET_DRAIN:-3}
P=$SG_FLEET_PREFIX
LB=198.19.0.100
cleanup() {
    scripts/lab-fleet.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

in_ns() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }
route() { ip -n "$P-rtr" route show "$LB"; }
hops() { route | grep -c "via" || true; }
wait_hops() { # count
    for _ in $(seq 200); do
        [ "$(hops)" = "$1" ] && return 0
        sleep 0.05
    done
    echo "the router's route to $LB never got $1 next hop(s):" >&2
    route >&2
    return 1
}
now_ms() { date +%s%3N; }

echo "== 1. lab: client 198.18.1.2 -> router (BIRD, AS 65000) -> gateways a 198.18.5.2 / b 198.18.6.2"
echo "        (BIRD + svcgate, dnat) -> Pods 198.18.3.10-12"
scripts/lab-fleet.sh up
scripts/lab-fleet.sh start-gw a
scripts/lab-fleet.sh start-gw b
wait_hops 2

echo
echo "== 2. the router learnt $LB from both gateways"
birdc -s "$SG_FLEET_DIR/rtr/bird.ctl" show protocols
birdc -s "$SG_FLEET_DIR/rtr/bird.ctl" show route "$LB/32" all | grep -E "unicast|via|as_path"
echo "-- its kernel (ECMP):"
route
echo "-- gateway a's svcgate:"
in_ns gwa "$SVCGATE" status | grep -E "^announce|^announced"

echo
echo "== 3. curl http://$LB/peer from the client (the Pod's name and the address it saw)"
for _ in $(seq 6); do in_ns cli curl -s -m 3 "http://$LB/peer" || echo "(failed)"; done

echo
echo "== 4. 100 held connections and a new-connection loop; then SIGKILL of gateway a"
in_ns cli python3 scripts/conn-hold.py "$LB" 80 100 198.18.1.2 5 >"$SG_FLEET_DIR/hold.out" &
hold=$!
for _ in $(seq 100); do [ -s "$SG_FLEET_DIR/hold.out" ] && break; sleep 0.1; done
echo "held: $(head -1 "$SG_FLEET_DIR/hold.out")"
sleep 0.3
for x in a b; do
    echo "flows tracked by gateway $x: $(in_ns "gw$x" curl -s http://127.0.0.1:9901/metrics | awk '$1 == "svcgate_conntrack_entries" { print $2 }')"
done
in_ns cli python3 scripts/conn-loop.py "$LB" 80 4 20 3 >"$SG_FLEET_DIR/loop.out" &
loop=$!
sleep 1
t0=$(now_ms)
kill -KILL "$(cat "$SG_FLEET_DIR/gwa/svcgate.pid")"
wait_hops 1
echo "router's route without gateway a after $(($(now_ms) - t0)) ms:"
route
wait "$loop" "$hold" || true
sleep 0.3
echo "new-connection loop: $(cat "$SG_FLEET_DIR/loop.out")"
echo "held connections, one more request each: $(tail -1 "$SG_FLEET_DIR/hold.out")"
echo "gateway b: $(in_ns gwb curl -s http://127.0.0.1:9901/metrics | grep -E "^svcgate_conntrack_(entries|events_total.event=.(new|picked_up).)" | tr "\n" " ")"
for _ in $(seq 3); do in_ns cli curl -s -m 3 "http://$LB/peer" || echo "(failed)"; done

echo
echo "== 5. gateway a back; then SIGTERM of gateway b (drain ${SG_FLEET_DRAIN} s)"
rm -f "$SG_FLEET_DIR/gwa/svcgate.pid"
scripts/lab-fleet.sh start-gw a
wait_hops 2
pid=$(cat "$SG_FLEET_DIR/gwb/svcgate.pid")
t0=$(now_ms)
kill -TERM "$pid"
wait_hops 1
echo "route withdrawn after $(($(now_ms) - t0)) ms, svcgate on b still running: $(ps -o pid=,comm= -p "$pid" || echo no)"
while ps -o stat= -p "$pid" 2>/dev/null | grep -qv Z; do sleep 0.1; done
echo "svcgate on b exited after $(($(now_ms) - t0)) ms"
grep -E "announce|shutting" "$SG_FLEET_DIR/gwb/svcgate.log" | tail -4
for _ in $(seq 3); do in_ns cli curl -s -m 3 "http://$LB/peer" || echo "(failed)"; done
echo
echo "demo-ha: done"
