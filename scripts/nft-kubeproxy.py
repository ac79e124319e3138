#!/usr/bin/env python3
"""Generates a kube-proxy nftables-mode-shaped ruleset (or one endpoint change
of it) for the Services of svcgate's control bench (benches/control.rs).

Shape (as kube-proxy's nftables proxier writes it, pkg/proxy/nftables):
table ip kube-proxy with a `service-ips` verdict map keyed by
`ipv4_addr . inet_proto . inet_service`, the `services` chain dispatching
through it, one chain per Service port that marks for masquerade and picks an
endpoint with `numgen random mod N vmap { 0 : goto endpoint-..., ... }`, one
chain per endpoint doing `dnat to ip:port` (hairpin traffic marked), and the
`mark-for-masquerade` / `masquerading` chains.

Addresses: cluster IPs 198.18.0.16 + i (service CIDR 198.18.0.0/17), Pod IPs
in 198.19.0.0/16, as in the bench. Nothing is sent; nft only loads them.

Usage:
  nft-kubeproxy.py full N [--endpoints 10] [--first 0] [--no-table]
  nft-kubeproxy.py change I [--endpoints 10]   (replace endpoint 0 of Service I)
  nft-kubeproxy.py service VIP:PORT PROTO TARGET_PORT POD_IP... [--pod-cidr CIDR]
      the whole table for one Service port (scripts/bench-cps.sh: a ClusterIP
      to the lab's Pods; traffic from --pod-cidr is not masqueraded, as
      kube-proxy's --cluster-cidr)
"""
import argparse
import base64
import hashlib
import ipaddress
import sys

NS = "bench"
CLUSTER_BASE = int(ipaddress.IPv4Address("198.18.0.0")) + 16
POD_BASE = int(ipaddress.IPv4Address("198.19.0.0")) + 256


def cluster_ip(i):
    return str(ipaddress.IPv4Address(CLUSTER_BASE + i))


def pod_ip(n):
    return str(ipaddress.IPv4Address(POD_BASE + n % 65000))


def h(s):
    # kube-proxy: base32(sha256(name))[:8]
    return base64.b32encode(hashlib.sha256(s.encode()).digest()).decode()[:8]


def svc_chain(i, name=None):
    name = name or f"{NS}/svc-{i}/tcp/p0"
    return f"service-{h(name)}-{name}"


def ep_chain(i, ip, port, name=None):
    name = f"{name or f'{NS}/svc-{i}/tcp/p0'}__{ip}/{port}"
    return f"endpoint-{h(name)}-{name}"


def endpoints(i, eps):
    # The bench numbers Pod IPs with a running counter from 1.
    return [pod_ip(i * eps + k + 1) for k in range(eps)]


def service_rules(i, ips, out, vip=None, proto="tcp", port=1000, tport=8000, pod_cidr="198.19.0.0/16", name=None):
    chain = svc_chain(i, name)
    out.append(f"add chain ip kube-proxy {chain}")
    out.append(f"flush chain ip kube-proxy {chain}")
    out.append(
        f"add rule ip kube-proxy {chain} ip daddr {vip or cluster_ip(i)} {proto} dport {port} "
        f"ip saddr != {pod_cidr} jump mark-for-masquerade"
    )
    vmap = ", ".join(f"{k} : goto {ep_chain(i, ip, tport, name)}" for k, ip in enumerate(ips))
    out.append(f"add rule ip kube-proxy {chain} numgen random mod {len(ips)} vmap {{ {vmap} }}")


def endpoint_rules(i, ip, out, proto="tcp", tport=8000, name=None):
    chain = ep_chain(i, ip, tport, name)
    out.append(f"add chain ip kube-proxy {chain}")
    out.append(f"flush chain ip kube-proxy {chain}")
    out.append(f"add rule ip kube-proxy {chain} ip saddr {ip} jump mark-for-masquerade")
    out.append(f"add rule ip kube-proxy {chain} meta l4proto {proto} dnat to {ip}:{tport}")


def base(out):
    out += [
        "add table ip kube-proxy { comment \"rules for kube-proxy\" ; }",
        "add chain ip kube-proxy mark-for-masquerade",
        "flush chain ip kube-proxy mark-for-masquerade",
        "add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000",
        "add chain ip kube-proxy masquerading { type nat hook postrouting priority srcnat ; }",
        "flush chain ip kube-proxy masquerading",
        "add rule ip kube-proxy masquerading mark and 0x4000 == 0 return",
        "add rule ip kube-proxy masquerading mark set mark xor 0x4000",
        "add rule ip kube-proxy masquerading masquerade fully-random",
        "add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; "
        "comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }",
        "add chain ip kube-proxy services",
        "flush chain ip kube-proxy services",
        "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips",
        "add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority dstnat ; }",
        "flush chain ip kube-proxy nat-prerouting",
        "add rule ip kube-proxy nat-prerouting jump services",
        "add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }",
        "flush chain ip kube-proxy nat-output",
        "add rule ip kube-proxy nat-output jump services",
    ]


def main():
    if sys.argv[1:2] == ["service"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("mode", choices=["service"])
        ap.add_argument("frontend", help="VIP:PORT")
        ap.add_argument("proto", choices=["tcp", "udp"])
        ap.add_argument("target_port", type=int)
        ap.add_argument("pods", nargs="+")
        ap.add_argument("--pod-cidr", default="198.19.0.0/16")
        a = ap.parse_args()
        vip, port = a.frontend.rsplit(":", 1)
        name = f"{NS}/svc/{a.proto}/p0"
        out = []
        base(out)
        for ip in a.pods:
            endpoint_rules(0, ip, out, a.proto, a.target_port, name)
        service_rules(0, a.pods, out, vip, a.proto, port, a.target_port, a.pod_cidr, name)
        out.append(f"add element ip kube-proxy service-ips {{ {vip} . {a.proto} . {port} : goto {svc_chain(0, name)} }}")
        sys.stdout.write("\n".join(out) + "\n")
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["full", "change"])
    ap.add_argument("n", type=int)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--first", type=int, default=0, help="first Service index (full)")
    ap.add_argument("--no-table", action="store_true", help="omit the table and base chains (full)")
    a = ap.parse_args()
    out = []
    if a.mode == "full":
        if not a.no_table:
            base(out)
        for i in range(a.first, a.first + a.n):
            ips = endpoints(i, a.endpoints)
            for ip in ips:
                endpoint_rules(i, ip, out)
            service_rules(i, ips, out)
            out.append(
                f"add element ip kube-proxy service-ips {{ {cluster_ip(i)} . tcp . 1000 : goto {svc_chain(i)} }}"
            )
    else:
        # kube-proxy's incremental transaction for one endpoint replaced (a Pod
        # restarted with a new IP): new endpoint chain, rewritten service
        # chain, old endpoint chain deleted.
        i = a.n
        ips = endpoints(i, a.endpoints)
        old = ips[0]
        ips[0] = "198.19.254.250"
        endpoint_rules(i, ips[0], out)
        service_rules(i, ips, out)
        out.append(f"flush chain ip kube-proxy {ep_chain(i, old, 8000)}")
        out.append(f"delete chain ip kube-proxy {ep_chain(i, old, 8000)}")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
