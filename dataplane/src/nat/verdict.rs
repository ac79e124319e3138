//! What the pipeline decides for each frame, and why.
//!
//! The hot path never returns errors and never panics: every frame ends in one
//! [`Verdict`], and every pass or drop names a reason that the worker counts.

/// The fate of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame on `port`.
    Forward {
        /// Egress port (index into the caller's port list, see `NextHops`).
        port: u16,
    },
    /// Transmit the frame, rewritten in place into a reply (TCP RST, ICMP
    /// error) of `len` bytes, back out of the port it arrived on.
    Reply {
        /// New frame length.
        len: u16,
    },
    /// Hand the frame unchanged to the kernel (XDP_PASS semantics).
    Pass(PassReason),
    /// Drop the frame.
    Drop(DropReason),
}

macro_rules! reasons {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $v,)* }

        impl $name {
            /// Every reason, in counter order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// The number of reasons (size of a counter array).
            pub const COUNT: usize = Self::ALL.len();
            /// A short snake_case name for metrics labels.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }
        }
    };
}

reasons! {
    /// Why a frame went to the kernel.
    PassReason {
        /// Neither IPv4 nor IPv6 (ARP, LLDP, ...).
        NotIp => "not_ip",
        /// Not TCP or UDP (ICMP, ICMPv6 with neighbour discovery, ...).
        NotTcpUdp => "not_tcp_udp",
        /// An IPv4 or IPv6 fragment: svcgate does not reassemble, so
        /// fragments are not translated; the kernel gets them.
        Fragment => "fragment",
        /// An IPv6 packet whose extension headers svcgate does not take
        /// through: one it cannot look past (ESP, AH, Mobility, ...), a
        /// routing header with segments left (the checksum is over the
        /// final destination), or too many of them. The kernel decides.
        Ipv6Extension => "ipv6_extension",
        /// Not addressed to a frontend or the SNAT range.
        NotService => "not_service",
        /// Addressed to the SNAT range but matching no tracked flow (or not
        /// from the flow's backend). An SNAT address may also be the node's
        /// own address, whose connections use the same ports, so the kernel
        /// decides (and answers strangers with a RST, as it would).
        SnatNoFlow => "snat_no_flow",
        /// The next hop's MAC is not known yet; the kernel resolves it.
        UnknownNextHop => "unknown_next_hop",
        /// A UDP query to a DNS address that the workers' responder leaves
        /// to the control-path server (see `dns_hook`), which listens on
        /// that address in the kernel.
        DnsSlow => "dns_slow",
    }
}

reasons! {
    /// Why a frame was dropped.
    DropReason {
        /// Ethernet, IPv4 or L4 header truncated or inconsistent.
        Malformed => "malformed",
        /// TTL would reach zero (and no ICMP time exceeded could be sent).
        TtlExpired => "ttl_expired",
        /// The source is outside the Service's loadBalancerSourceRanges.
        SourceRange => "source_range",
        /// A TCP segment other than a SYN for a flow svcgate does not track.
        TcpNoFlow => "tcp_no_flow",
        /// A tracked TCP flow's backend was removed; the client got a RST.
        BackendGone => "backend_gone",
        /// No SNAT address and port of this worker's slice is free toward
        /// the chosen backend, and no flow without a reply could be
        /// reclaimed for one.
        PortsExhausted => "ports_exhausted",
        /// An IPv6 frame whose next hop's MAC is not known yet (its
        /// resolution was asked for, NDP being the kernel's). Dropped, not
        /// passed as IPv4's are: the kernel, which does not forward, would
        /// answer a VIP it has no route to with an ICMPv6 unreachable (IPv4
        /// drops it silently), and the client would give up instead of
        /// retransmitting once the neighbour is known.
        UnknownNextHop6 => "unknown_next_hop6",
        /// A flow to be masqueraded (snat mode) in a family the gateway has
        /// no SNAT address of (IPv6 without `snat_addrs` of IPv6).
        NoSnatAddress => "no_snat_address",
        /// Both candidate buckets of the flow's reply key in the shared
        /// reverse table were full (sized with 25% headroom over every
        /// worker's flow capacity, so this is rare).
        ReplyTableFull => "reply_table_full",
        /// No route to the backend or client.
        NoRoute => "no_route",
        /// A reject (RST / ICMP) or ICMP error could not be built in the buffer.
        NoRoomForReply => "no_room_for_reply",
        /// A UDP datagram to a DNS address that is not to be answered: bad
        /// headers or checksum, or a DNS response or malformed message (the
        /// DNS counters say which).
        DnsQuery => "dns_query",
        /// A packet of a flow adopted from the state directory (a restart)
        /// before the first service table was published: dropped, the flow
        /// kept (the client retransmits), rather than the flow forgotten
        /// for want of its frontend.
        NotSynced => "not_synced",
    }
}

/// One frame handed to the pipeline: its buffer (the whole UMEM chunk, so a
/// reply may grow it), the received length, the port it arrived on, and the
/// verdict slot the pipeline fills.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The frame buffer; `buf[..len]` is the received frame.
    pub buf: &'a mut [u8],
    /// Received length.
    pub len: usize,
    /// Ingress port.
    pub in_port: u16,
    /// Set by the pipeline.
    pub verdict: Verdict,
}

impl<'a> Frame<'a> {
    /// A frame of `len` bytes received on `in_port`.
    pub fn new(buf: &'a mut [u8], len: usize, in_port: u16) -> Self {
        Self { buf, len, in_port, verdict: Verdict::Pass(PassReason::NotService) }
    }
}
