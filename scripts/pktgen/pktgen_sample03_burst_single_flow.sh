#!/bin/bash
#
# Multiple threads, one flow each the same, bursts of frames per kick (as the
# kernel's samples/pktgen/pktgen_sample03_burst_single_flow.sh): the highest
# frame rate, for a device under test that sees a single flow.
#   ./pktgen_sample03_burst_single_flow.sh -i eth0 -m 02:00:00:00:00:01 -t 2 -f 0 -T 10
basedir=$(dirname "$0")
# shellcheck source=scripts/pktgen/parameters.sh
source "${basedir}/parameters.sh"

[ "$BURST" = 64 ] && BURST=32   # the kernel sample's default burst

exec "$PKTGEN" tx -i "$DEV" -m "$DST_MAC" -d "$DEST_IP" --src-ip "$SRC_IP" \
    --src-port 9 --dst-port "$DST_PORT" "${SIZE_ARGS[@]}" --flows 1 --proto "$PROTO" \
    --threads "$THREADS" --cpu "$F_THREAD-$L_THREAD" \
    --count "$TOTAL_COUNT" --duration "$DURATION" --rate "$RATE" --burst "$BURST" "${VERBOSE_ARGS[@]}"
