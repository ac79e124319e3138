// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// svcgate XDP steering program.
//
// Redirects to the AF_XDP socket of the receiving queue only the frames
// svcgate must handle:
//   - (daddr, proto, dport) is a frontend (VIP:port, NodeIP:nodePort, LB IP:port);
//     the cluster DNS addresses' UDP port 53 is entered here too (answered by
//     the workers), and their TCP port 53 never is (the kernel's DNS server)
//   - daddr is an SNAT address and dport lies in the SNAT port range (replies
//     of SNAT'ed flows)
//   - (saddr, proto, sport) is a backend of a Service forwarded in dnat mode
//     (replies of flows that kept the client's address: they are addressed
//     to the client, so only their source tells them apart)
// The same three tests apply to IPv6 frames, against their own maps
// (frontends6, sources6, snat_addrs6; the SNAT port range is shared). An IPv6
// frame's transport header is found by walking at most MAX_EXT6 Hop-by-Hop,
// Routing and Destination Options headers (what the userspace walk,
// wire/ipv6.rs, follows too); IPv6 fragments (first ones included), packets
// still on a source route (segments left > 0), ESP/AH and anything longer
// are passed.
// Everything else -- ARP, ICMP, ICMPv6 (so Neighbor Discovery, router
// discovery and MLD always reach the kernel, which owns the neighbour cache
// svcgate reads), IPv4 non-first fragments, the node's own traffic -- is
// XDP_PASS'ed to the kernel untouched. A queue without a bound socket also
// passes (bpf_redirect_map's fallback action), so a stopped svcgate never
// blackholes the node.
//
// Compiled by dataplane/build.rs with `clang -O2 -g -target bpf`; the maps are
// BTF-defined and filled from Rust through aya (dataplane/src/xsk/steer.rs).
// Keep struct layouts in sync with that file.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_QUEUES 64
#define MAX_FRONTENDS 65536
#define MAX_SOURCES 262144
#define MAX_SNAT_ADDRS 64
// Extension headers walked before the transport header (a well-formed
// unfragmented packet has at most four: Hop-by-Hop, Destination Options,
// Routing, Destination Options).
#define MAX_EXT6 4

#define NH_HOP_BY_HOP 0
#define NH_ROUTING 43
#define NH_FRAGMENT 44
#define NH_ESP 50
#define NH_AH 51
#define NH_NONE 59
#define NH_ICMPV6 58
#define NH_DEST_OPTS 60

#ifndef ETH_P_8021Q
#define ETH_P_8021Q 0x8100
#endif
#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

// Frontend key: 8 bytes, everything in network byte order except the padding.
struct frontend_key {
	__be32 daddr;
	__be16 dport;
	__u8 proto;
	__u8 pad;
};

// IPv6 frontend key: 20 bytes, like frontend_key with a 16-byte address.
struct frontend6_key {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct addr6 {
	__u8 b[16];
};

// SNAT port range, host byte order, inclusive. lo > hi disables it.
struct snat_range {
	__u16 lo;
	__u16 hi;
};

// The first three count frames of every family; the IPv6 ones count IPv6
// frames again, by outcome.
enum {
	STAT_NOT_STEERED = 0, // passed: not service traffic (or not parsable)
	STAT_REDIRECTED = 1,  // redirected to the queue's socket
	STAT_NO_SOCKET = 2,   // service traffic, but no socket on this queue: passed
	STAT_V6_REDIRECTED = 3, // IPv6, redirected to the queue's socket
	STAT_V6_NOT_STEERED = 4, // IPv6 TCP/UDP (or other) not service traffic: passed
	STAT_V6_ICMP = 5,     // ICMPv6 (NDP, RA, MLD, errors, echo): passed
	STAT_V6_EXT = 6,      // IPv6 fragment, source route, ESP/AH, too many or truncated headers: passed
	STAT_MAX = 7,
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FRONTENDS);
	__type(key, struct frontend_key);
	__type(value, __u8);
} frontends SEC(".maps");

// Backends of dnat-mode Services, keyed like frontends but by source
// address and port.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SOURCES);
	__type(key, struct frontend_key);
	__type(value, __u8);
} sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SNAT_ADDRS);
	__type(key, __be32);
	__type(value, __u8);
} snat_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FRONTENDS);
	__type(key, struct frontend6_key);
	__type(value, __u8);
} frontends6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SOURCES);
	__type(key, struct frontend6_key);
	__type(value, __u8);
} sources6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SNAT_ADDRS);
	__type(key, struct addr6);
	__type(value, __u8);
} snat_addrs6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct snat_range);
} snat_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline int count(__u32 which, int action)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &which);
	if (c)
		*c += 1; // per-CPU slot: no atomics needed
	return action;
}

static __always_inline int snat_port(__be16 dport)
{
	__u32 zero = 0;
	struct snat_range *r = bpf_map_lookup_elem(&snat_ports, &zero);
	if (!r)
		return 0;
	__u16 port = bpf_ntohs(dport);
	return r->lo <= port && port <= r->hi;
}

static __always_inline int is_steered6(struct ipv6hdr *ip6, __u8 proto, __be16 sport, __be16 dport)
{
	struct frontend6_key key = {
		.port = dport,
		.proto = proto,
		.pad = 0,
	};
	__builtin_memcpy(key.addr, &ip6->daddr, 16);
	if (bpf_map_lookup_elem(&frontends6, &key))
		return 1;

	struct frontend6_key src = {
		.port = sport,
		.proto = proto,
		.pad = 0,
	};
	__builtin_memcpy(src.addr, &ip6->saddr, 16);
	if (bpf_map_lookup_elem(&sources6, &src))
		return 1;

	struct addr6 d;
	__builtin_memcpy(d.b, &ip6->daddr, 16);
	if (!bpf_map_lookup_elem(&snat_addrs6, &d))
		return 0;
	return snat_port(dport);
}

static __always_inline int is_steered(__be32 saddr, __be32 daddr, __u8 proto, __be16 sport, __be16 dport)
{
	struct frontend_key key = {
		.daddr = daddr,
		.dport = dport,
		.proto = proto,
		.pad = 0,
	};
	if (bpf_map_lookup_elem(&frontends, &key))
		return 1;

	struct frontend_key src = {
		.daddr = saddr,
		.dport = sport,
		.proto = proto,
		.pad = 0,
	};
	if (bpf_map_lookup_elem(&sources, &src))
		return 1;

	if (!bpf_map_lookup_elem(&snat_addrs, &daddr))
		return 0;
	return snat_port(dport);
}

static __always_inline int redirect(struct xdp_md *ctx, int v6)
{
	int action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	if (action != XDP_REDIRECT)
		return count(STAT_NO_SOCKET, action);
	if (v6)
		count(STAT_V6_REDIRECTED, action);
	return count(STAT_REDIRECTED, action);
}

// An IPv6 frame: walks the extension headers to TCP/UDP and looks the frame
// up in the IPv6 maps. Both passes are counted twice: once in the
// family-free STAT_NOT_STEERED, once by IPv6 reason.
static __always_inline int steer6(struct xdp_md *ctx, void *l3, void *data_end)
{
	struct ipv6hdr *ip6 = l3;
	if ((void *)(ip6 + 1) > data_end || ip6->version != 6) {
		count(STAT_V6_EXT, XDP_PASS);
		return count(STAT_NOT_STEERED, XDP_PASS);
	}
	__u8 nh = ip6->nexthdr;
	__u8 *p = (void *)(ip6 + 1);

#pragma unroll
	for (int i = 0; i < MAX_EXT6; i++) {
		if (nh != NH_HOP_BY_HOP && nh != NH_ROUTING && nh != NH_DEST_OPTS)
			break;
		// Hop-by-Hop only directly after the fixed header.
		if (nh == NH_HOP_BY_HOP && i != 0)
			goto ext;
		// Next header, length, and for Routing: type, segments left.
		if ((void *)(p + 4) > data_end)
			goto ext;
		// A packet still on a source route is not at its destination.
		if (nh == NH_ROUTING && p[3] != 0)
			goto ext;
		nh = p[0];
		p += ((__u32)p[1] + 1) * 8;
	}
	// The loop stops early only at another header: one of these here is a
	// fifth extension header.
	if (nh == NH_HOP_BY_HOP || nh == NH_ROUTING || nh == NH_DEST_OPTS)
		goto ext;

	if (nh == NH_ICMPV6) {
		// Neighbor Discovery, router discovery, MLD: the kernel's.
		count(STAT_V6_ICMP, XDP_PASS);
		return count(STAT_NOT_STEERED, XDP_PASS);
	}
	// Fragments, and what the walk does not look into (as wire/ipv6.rs
	// treats them): ESP, AH, No Next Header.
	if (nh == NH_FRAGMENT || nh == NH_ESP || nh == NH_AH || nh == NH_NONE)
		goto ext;
	if (nh != IPPROTO_TCP && nh != IPPROTO_UDP) {
		count(STAT_V6_NOT_STEERED, XDP_PASS);
		return count(STAT_NOT_STEERED, XDP_PASS);
	}

	__be16 *ports = (void *)p;
	if ((void *)(ports + 2) > data_end)
		goto ext;
	if (!is_steered6(ip6, nh, ports[0], ports[1])) {
		count(STAT_V6_NOT_STEERED, XDP_PASS);
		return count(STAT_NOT_STEERED, XDP_PASS);
	}
	return redirect(ctx, 1);

ext:
	count(STAT_V6_EXT, XDP_PASS);
	return count(STAT_NOT_STEERED, XDP_PASS);
}

SEC("xdp")
int svcgate_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return count(STAT_NOT_STEERED, XDP_PASS);

	__be16 proto = eth->h_proto;
	void *l3 = eth + 1;

	// One 802.1Q (or 802.1ad) tag.
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vh = l3;
		if ((void *)(vh + 1) > data_end)
			return count(STAT_NOT_STEERED, XDP_PASS);
		proto = vh->encap_proto;
		l3 = vh + 1;
	}

	if (proto == bpf_htons(ETH_P_IPV6))
		return steer6(ctx, l3, data_end);
	if (proto != bpf_htons(ETH_P_IP))
		return count(STAT_NOT_STEERED, XDP_PASS);

	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > data_end)
		return count(STAT_NOT_STEERED, XDP_PASS);
	if (ip->version != 4 || ip->ihl < 5)
		return count(STAT_NOT_STEERED, XDP_PASS);

	// Non-first fragments carry no L4 header: the kernel gets them.
	if (ip->frag_off & bpf_htons(0x1fff))
		return count(STAT_NOT_STEERED, XDP_PASS);

	__u8 l4proto = ip->protocol;
	if (l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP)
		return count(STAT_NOT_STEERED, XDP_PASS);

	void *l4 = (void *)ip + ip->ihl * 4;
	// TCP and UDP both start with source port, destination port.
	__be16 *ports = l4;
	if ((void *)(ports + 2) > data_end)
		return count(STAT_NOT_STEERED, XDP_PASS);

	if (!is_steered(ip->saddr, ip->daddr, l4proto, ports[0], ports[1]))
		return count(STAT_NOT_STEERED, XDP_PASS);

	return redirect(ctx, 0);
}

char _license[] SEC("license") = "Dual BSD/GPL";
