#!/usr/bin/env bash
# Installs what svcgate's build and tests need on a fresh Debian machine.
# Idempotent and quiet: packages already present are not reinstalled, and
# `apt-get update` runs only when something is missing.
#
#   clang, llvm      compile dataplane/bpf/steer.bpf.c to a BPF object (build.rs)
#   libbpf-dev       bpf_helpers.h / bpf_endian.h for that program
#   linux-libc-dev   linux/bpf.h, linux/if_ether.h, ...
#   libelf-dev       (libbpf-dev's headers expect it; harmless otherwise)
#   iproute2         ip netns / ip link / veth for the lab and the tests
#   ethtool          set veth channel counts in multi-queue tests
#   netcat-openbsd   handy in the lab (the tests use their own Rust client/server)
#   iputils-ping     ping to check the gateway stays reachable
#   curl             the demo's HTTP client
#   dnsutils         dig and nslookup: the demo's and the DNS netns tests' resolver clients
#   python3-dnspython  the second DNS implementation tests/dns_crosscheck.rs checks
#                    svcgate's answers with (scripts/dns-crosscheck.py)
#   fonts-dejavu-core  DejaVuSans.ttf, the font svcgate-bench-plot draws its text with
#   bird2            BIRD 2, the BGP daemon of the fleet lab (scripts/lab-fleet.sh,
#                    tests/fleet_e2e.rs): one instance per namespace, started by
#                    the lab with its own config and socket. The package's own
#                    service is kept from starting at install (policy-rc.d), so
#                    no BIRD runs in the host's namespace.
set -euo pipefail

PKGS=(clang llvm libbpf-dev linux-libc-dev libelf-dev iproute2 ethtool netcat-openbsd iputils-ping curl dnsutils python3-dnspython fonts-dejavu-core bird2)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "setup.sh: not root and no sudo: install ${PKGS[*]} by hand" >&2
        exit 1
    fi
fi

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >/dev/null
    # Services of packages installed here (bird2's) must not start: a
    # policy-rc.d that denies, unless the system has one already (container
    # images usually do), removed afterwards.
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# scripts/setup.sh: no service starts while it installs\nexit 101\n' |
            $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    status=0
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
    if [ -n "$own_policy" ]; then
        $SUDO rm -f /usr/sbin/policy-rc.d
    fi
    [ "$status" -eq 0 ] || exit "$status"
    # ...nor at the next boot: the lab runs its own BIRDs.
    if [[ " ${missing[*]} " == *" bird2 "* ]] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now bird.service >/dev/null 2>&1 || true
    fi
fi

if ! command -v clang >/dev/null 2>&1; then
    echo "setup.sh: clang still missing after install" >&2
    exit 1
fi
