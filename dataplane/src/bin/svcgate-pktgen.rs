//! svcgate-pktgen: a packet generator (`tx`) and counting receiver (`rx`)
//! on AF_PACKET rings; see docs/PKTGEN.md and `svcgate_dataplane::pktgen`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use svcgate_dataplane::pktgen::flows::{parse_cpu_list, FlowSpace, IpRange, PortRange};
use svcgate_dataplane::pktgen::frame::{FrameBuilder, Proto, Sizes, MAX_FRAME, MIN_FRAME};
use svcgate_dataplane::pktgen::ring::{ifindex, RxRingConfig};
use svcgate_dataplane::pktgen::{dev_mac, parse_mac, rx, tx};

#[derive(Parser, Debug)]
#[command(name = "svcgate-pktgen", version, about = "Packet generator and receiver on AF_PACKET rings")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProtoArg {
    Udp,
    TcpSyn,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send frames; prints `tx_packets=<n> tx_pps=<p> seconds=<s> ...` at the end.
    Tx(TxArgs),
    /// Count stamped frames; prints `rx_packets=<n> rx_pps=<p> lost=<l> ...` at the end.
    Rx(RxArgs),
}

#[derive(Parser, Debug)]
struct TxArgs {
    /// Interface to send on.
    #[arg(short = 'i', long)]
    dev: String,
    /// Destination address or range (a.b.c.d[-e.f.g.h] or a.b.c.d/len; an
    /// IPv6 one sends IPv6 frames, from --src-ip of the same family).
    #[arg(short = 'd', long)]
    dst_ip: IpRange,
    /// Destination MAC address.
    #[arg(short = 'm', long, value_parser = parse_mac)]
    dst_mac: [u8; 6],
    /// Source MAC address [default: the interface's].
    #[arg(long, value_parser = parse_mac)]
    src_mac: Option<[u8; 6]>,
    /// Source address or range [default: 198.18.0.1, or 2001:2::1 for an
    /// IPv6 --dst-ip].
    #[arg(long)]
    src_ip: Option<IpRange>,
    /// Source port or range (p[-q]).
    #[arg(long, default_value = "1024-65535")]
    src_port: PortRange,
    /// Destination port or range.
    #[arg(long, default_value = "9")]
    dst_port: PortRange,
    /// Frame size in bytes on the wire, FCS included (64 = 60 bytes written;
    /// IPv6 UDP needs 84 to carry the stamp).
    #[arg(short = 's', long, default_value_t = 64)]
    size: usize,
    /// Simple IMIX instead of --size: 64/594/1518-byte frames (with FCS) 7:4:1.
    #[arg(long)]
    imix: bool,
    /// Number of flows (RFC 4814-style pseudo-random 4-tuples from the ranges).
    #[arg(long, default_value_t = 1)]
    flows: usize,
    /// Split the flows between the threads (each thread sends only its
    /// share; with --flows = --threads one flow per thread).
    #[arg(long)]
    split_flows: bool,
    /// Seed of the flow set (same seed, same flows).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Total rate limit in frames per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Total frames over all threads (0: no limit).
    #[arg(short = 'n', long, default_value_t = 0)]
    count: u64,
    /// Seconds to run (0: no limit; without --count too: until SIGINT).
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
    /// Sending threads, one socket and TX ring each.
    #[arg(short = 't', long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=255))]
    threads: u16,
    /// CPUs to pin the threads to (taskset -c syntax; thread i on the i-th).
    #[arg(long)]
    cpu: Option<String>,
    /// Transport.
    #[arg(long, value_enum, default_value = "udp")]
    proto: ProtoArg,
    /// Frames written to the ring per kick (sendto).
    #[arg(short = 'b', long, default_value_t = 64)]
    burst: usize,
    /// Generator id carried in the payload [default: low byte of the pid].
    #[arg(long)]
    id: Option<u8>,
    /// TX ring slots per thread.
    #[arg(long, default_value_t = 4096)]
    ring_frames: usize,
    /// SO_SNDBUFFORCE bytes per socket (0: keep the default buffer).
    #[arg(long, default_value_t = 64 << 20)]
    sndbuf: usize,
    /// Let the kernel attach the ring page to the skb (zero-copy fragment,
    /// as trafgen does) instead of copying the frame into it (PACKET_VNET_HDR
    /// with hdr_len = frame; faster on veth, see docs/PKTGEN.md).
    #[arg(long)]
    zerocopy: bool,
    /// Print the settings and per-thread results to stderr.
    #[arg(short = 'v', long)]
    verbose: bool,
}

#[derive(Parser, Debug)]
struct RxArgs {
    /// Interface to receive on.
    #[arg(short = 'i', long)]
    dev: String,
    /// Seconds to run (0: until --count or SIGINT/SIGTERM).
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
    /// Stop after this many stamped frames (0: no limit).
    #[arg(short = 'n', long, default_value_t = 0)]
    count: u64,
    /// Join PACKET_FANOUT group <id> (hash mode), to spread over processes.
    #[arg(long)]
    fanout: Option<u16>,
    /// Ring blocks of 1 MiB.
    #[arg(long, default_value_t = 64)]
    blocks: usize,
}

fn duration(s: f64) -> Result<Option<Duration>, String> {
    if !(s >= 0.0 && s.is_finite()) {
        return Err(format!("bad duration {s}"));
    }
    Ok((s > 0.0).then(|| Duration::from_secs_f64(s)))
}

fn stop_flag() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("signal handler: {e}"))?;
    }
    Ok(stop)
}

fn run_tx(a: TxArgs) -> Result<(), String> {
    if !a.imix && !(MIN_FRAME..=MAX_FRAME).contains(&a.size) {
        return Err(format!("--size {} outside {MIN_FRAME}..={MAX_FRAME} (bytes with FCS)", a.size));
    }
    let sizes = if a.imix { Sizes::Imix } else { Sizes::Fixed(a.size) };
    let ifindex = ifindex(&a.dev).map_err(|e| e.to_string())?;
    let src_mac = match a.src_mac {
        Some(m) => m,
        None => dev_mac(&a.dev)?,
    };
    if a.flows == 0 || (a.split_flows && a.flows < usize::from(a.threads)) {
        return Err("--flows must be at least 1, and with --split-flows at least --threads".into());
    }
    let v6 = a.dst_ip.v6;
    let default_src = if v6 { "2001:2::1" } else { "198.18.0.1" };
    let src_ip = match a.src_ip {
        Some(r) => r,
        None => default_src.parse()?,
    };
    if src_ip.v6 != v6 {
        return Err(format!("--src-ip {src_ip} and --dst-ip {} are of different families", a.dst_ip));
    }
    let space = FlowSpace { src: src_ip, dst: a.dst_ip, sport: a.src_port, dport: a.dst_port };
    if space.size() < a.flows as u128 {
        eprintln!("warning: the ranges hold only {} distinct flows; --flows {} repeats them", space.size(), a.flows);
    }
    let flows = space.flows(a.flows, a.seed);
    let proto = match a.proto {
        ProtoArg::Udp => Proto::Udp,
        ProtoArg::TcpSyn => Proto::TcpSyn,
    };
    let builder = if v6 {
        FrameBuilder::new_v6(proto, a.dst_mac, src_mac, &flows)
    } else {
        FrameBuilder::new(proto, a.dst_mac, src_mac, &flows)
    };
    if a.imix && v6 {
        return Err("--imix is IPv4 only (its 64-byte frames cannot hold IPv6 UDP and the stamp)".into());
    }
    if !a.imix && a.size < builder.min_size() {
        return Err(format!(
            "--size {} is below {}, the smallest frame of this family and --proto",
            a.size,
            builder.min_size()
        ));
    }
    let builder = Arc::new(builder);
    let cpus = a.cpu.as_deref().map(parse_cpu_list).transpose()?.unwrap_or_default();
    let cfg = tx::TxConfig {
        ifindex,
        sizes,
        count: a.count,
        duration: duration(a.duration)?,
        rate: a.rate,
        burst: a.burst,
        threads: usize::from(a.threads),
        cpus,
        generator: a.id.unwrap_or(std::process::id() as u8),
        ring_frames: a.ring_frames.max(1),
        sndbuf: a.sndbuf,
        linear: !a.zerocopy,
        split_flows: a.split_flows,
    };
    if a.verbose {
        eprintln!(
            "tx dev={} generator={} threads={} cpus={:?} flows={} sizes={:?} proto={:?} rate={} count={} duration={:?} burst={}",
            a.dev, cfg.generator, cfg.threads, cfg.cpus, a.flows, sizes, proto, cfg.rate, cfg.count, cfg.duration, cfg.burst
        );
    }
    let stop = stop_flag()?;
    let results = tx::run(&cfg, builder, stop);
    let (mut pkts, mut stamped, mut bytes, mut wrong, mut secs) = (0u64, 0u64, 0u64, 0u64, 0f64);
    let mut err = None;
    for (t, r) in results.into_iter().enumerate() {
        match r {
            Ok(s) => {
                if a.verbose {
                    eprintln!("thread {t}: packets={} seconds={:.3}", s.packets, s.elapsed.as_secs_f64());
                }
                pkts += s.packets;
                stamped += s.stamped;
                bytes += s.bytes;
                wrong += s.wrong_format;
                secs = secs.max(s.elapsed.as_secs_f64());
            }
            Err(e) => err = Some(format!("thread {t}: {e}")),
        }
    }
    let pps = if secs > 0.0 { pkts as f64 / secs } else { 0.0 };
    let mbps = if secs > 0.0 { bytes as f64 * 8.0 / secs / 1e6 } else { 0.0 };
    println!("tx_packets={pkts} tx_pps={pps:.0} seconds={secs:.3} tx_mbps={mbps:.1} tx_stamped={stamped} wrong_format={wrong}");
    err.map_or(Ok(()), Err)
}

fn run_rx(a: RxArgs) -> Result<(), String> {
    let ifindex = ifindex(&a.dev).map_err(|e| e.to_string())?;
    let cfg = rx::RxConfig {
        ifindex,
        duration: duration(a.duration)?,
        count: a.count,
        ring: RxRingConfig { block_size: 1 << 20, blocks: a.blocks.max(2), retire_ms: 10, fanout: a.fanout },
    };
    let stop = stop_flag()?;
    let report = rx::run(&cfg, &stop, || {
        println!("rx_ready dev={}", a.dev);
        let _ = std::io::stdout().flush();
    })
    .map_err(|e| e.to_string())?;
    println!("{report}");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Tx(a) => run_tx(a),
        Cmd::Rx(a) => run_rx(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("svcgate-pktgen: {e}");
            ExitCode::FAILURE
        }
    }
}
