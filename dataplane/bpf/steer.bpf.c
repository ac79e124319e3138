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
// Everything else -- ARP, IPv6, ICMP, non-first fragments, the node's own
// traffic -- is XDP_PASS'ed to the kernel untouched. A queue without a bound
// socket also passes (bpf_redirect_map's fallback action), so a stopped
// svcgate never blackholes the node.
//
// Compiled by dataplane/build.rs with `clang -O2 -g -target bpf`; the maps are
// BTF-defined and filled from Rust through aya (dataplane/src/xsk/steer.rs).
// Keep struct layouts in sync with that file.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_QUEUES 64
#define MAX_FRONTENDS 65536
#define MAX_SOURCES 262144
#define MAX_SNAT_ADDRS 64

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

// SNAT port range, host byte order, inclusive. lo > hi disables it.
struct snat_range {
	__u16 lo;
	__u16 hi;
};

enum {
	STAT_NOT_STEERED = 0, // passed: not service traffic (or not parsable)
	STAT_REDIRECTED = 1,  // redirected to the queue's socket
	STAT_NO_SOCKET = 2,   // service traffic, but no socket on this queue: passed
	STAT_MAX = 3,
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
	__u32 zero = 0;
	struct snat_range *r = bpf_map_lookup_elem(&snat_ports, &zero);
	if (!r)
		return 0;
	__u16 port = bpf_ntohs(dport);
	return r->lo <= port && port <= r->hi;
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

	int action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	return count(action == XDP_REDIRECT ? STAT_REDIRECTED : STAT_NO_SOCKET, action);
}

char _license[] SEC("license") = "Dual BSD/GPL";
