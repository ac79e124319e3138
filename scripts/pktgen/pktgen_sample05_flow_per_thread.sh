#!/bin/bash
#
# One flow per thread (as the kernel's
# samples/pktgen/pktgen_sample05_flow_per_thread.sh): -t threads, each
# sending only its own flow of a set of -t (or -F, split evenly) flows, so a
# receiver with RSS or a dataplane with per-flow state sees them apart.
#   ./pktgen_sample05_flow_per_thread.sh -i eth0 -m 02:00:00:00:00:01 -t 2 -f 0 -T 10
basedir=$(dirname "$0")
# shellcheck source=scripts/pktgen/parameters.sh
source "${basedir}/parameters.sh"

[ "$FLOWS" -lt "$THREADS" ] && FLOWS=$THREADS
[ "$SRC_IP" = 198.18.0.1 ] && SRC_IP=198.18.0.0/16

exec "$PKTGEN" tx -i "$DEV" -m "$DST_MAC" -d "$DEST_IP" --src-ip "$SRC_IP" \
    --src-port 1024-65535 --dst-port "$DST_PORT" "${SIZE_ARGS[@]}" --flows "$FLOWS" --split-flows --proto "$PROTO" \
    --threads "$THREADS" --cpu "$F_THREAD-$L_THREAD" \
    --count "$TOTAL_COUNT" --duration "$DURATION" --rate "$RATE" --burst "$BURST" "${VERBOSE_ARGS[@]}"
