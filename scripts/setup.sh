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
set -euo pipefail

PKGS=(clang llvm libbpf-dev linux-libc-dev libelf-dev iproute2 ethtool netcat-openbsd iputils-ping curl dnsutils python3-dnspython fonts-dejavu-core)

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
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v clang >/dev/null 2>&1; then
    echo "setup.sh: clang still missing after install" >&2
    exit 1
fi
