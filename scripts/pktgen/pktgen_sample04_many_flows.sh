#!/bin/bash
#
# Many flows: -F RFC 4814-style pseudo-random 4-tuples (default 65536) from
# the source range (-S, default 198.18.0.0/16), source ports 1024-65535 and
# the destination (-d, -p), each frame picking its flow pseudo-randomly (as
# the kernel's samples/pktgen/pktgen_sample04_many_flows.sh, which randomises
# the source address).
#   ./pktgen_sample04_many_flows.sh -i eth0 -m 02:00:00:00:00:01 -d 198.19.0.10 -p 8080 -F 65536 -T 10
basedir=$(dirname "$0")
# shellcheck source=scripts/pktgen/parameters.sh
source "${basedir}/parameters.sh"

[ "$FLOWS" = 1 ] && FLOWS=65536
[ "$SRC_IP" = 198.18.0.1 ] && SRC_IP=198.18.0.0/16

exec "$PKTGEN" tx -i "$DEV" -m "$DST_MAC" -d "$DEST_IP" --src-ip "$SRC_IP" \
    --src-port 1024-65535 --dst-port "$DST_PORT" "${SIZE_ARGS[@]}" --flows "$FLOWS" --proto "$PROTO" \
    --threads "$THREADS" --cpu "$F_THREAD-$L_THREAD" \
    --count "$TOTAL_COUNT" --duration "$DURATION" --rate "$RATE" --burst "$BURST" "${VERBOSE_ARGS[@]}"
