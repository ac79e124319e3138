#!/bin/bash
#
# Simple example: one thread, one flow, UDP to port 9 (as the kernel's
# samples/pktgen/pktgen_sample01_simple.sh). Options: see parameters.sh.
#   ./pktgen_sample01_simple.sh -i eth0 -m 02:00:00:00:00:01 -d 198.18.0.42 -n 100000
basedir=$(dirname "$0")
# Without -n: 100000 frames, like the kernel's sample (-n 0: until Ctrl-C).
DEFAULT_COUNT=100000
# shellcheck source=scripts/pktgen/parameters.sh
source "${basedir}/parameters.sh"

exec taskset -c "$F_THREAD" "$PKTGEN" tx -i "$DEV" -m "$DST_MAC" -d "$DEST_IP" --src-ip "$SRC_IP" \
    --src-port 9 --dst-port "$DST_PORT" "${SIZE_ARGS[@]}" --flows 1 --proto "$PROTO" \
    --count "$TOTAL_COUNT" --duration "$DURATION" --rate "$RATE" --burst "$BURST" "${VERBOSE_ARGS[@]}"
