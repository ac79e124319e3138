//! The svcgate binary: `svcgate validate`, `svcgate run`, `svcgate status`,
//! `svcgate dns export`.

/// mimalloc, not glibc malloc: see control/Cargo.toml (a first change after a
/// full build faulting in fresh heap pages took milliseconds).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use svcgate_control::config::Config;
use svcgate_control::daemon::Daemon;
use svcgate_control::display;
use svcgate_control::load::load_paths;
use svcgate_control::resolve::{ResolveConfig, ServiceCidrs};

/// Writes to stdout; a reader that went away (`svcgate validate DIR | head`)
/// ends the program quietly, as `cat` does, rather than with the panic of
/// `print!` on a closed pipe. Other write errors are reported once.
fn emit(text: &str) {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("svcgate: cannot write to stdout: {e}");
            std::process::exit(2);
        }
    }
}

/// `print!` through [`emit`].
macro_rules! out {
    ($($t:tt)*) => { emit(&format!($($t)*)) };
}

/// `println!` through [`emit`].
macro_rules! outln {
    () => { emit("\n") };
    ($($t:tt)*) => { emit(&format!("{}\n", format_args!($($t)*))) };
}

/// svcgate: Kubernetes Services on a userspace AF_XDP dataplane.
#[derive(Debug, Parser)]
#[command(name = "svcgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load manifests without starting anything and print the Services and
    /// endpoints, or the errors (exit code 1 on errors, like `nginx -t`).
    Validate {
        #[command(flatten)]
        load: LoadArgs,
        /// Serve only Services labelled service.kubernetes.io/service-proxy-name
        /// with this value (default: only Services without that label, as kube-proxy).
        #[arg(long)]
        service_proxy_name: Option<String>,
    },
    /// Run the daemon: the controller, the admin endpoint and (when attached) the dataplane.
    Run {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Show the running daemon's Services, endpoints, DNS names and counters.
    Status {
        /// The daemon's admin address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
    /// Cluster DNS.
    Dns {
        #[command(subcommand)]
        command: DnsCommand,
    },
    /// Debugging aids (not a stable interface).
    #[command(hide = true)]
    Debug {
        #[command(subcommand)]
        command: DebugCommand,
    },
}

/// The manifests to load and how, as `validate` and `debug maglev` take them.
#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// Manifest files or directories (`.yaml`, `.yml`, `.json`; directories recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Where Services without a clusterIP get one (kubeadm's default
    /// range); dual-stack: `<IPv4 CIDR>,<IPv6 CIDR>` (or IPv6 first), as
    /// kube-apiserver's --service-cluster-ip-range.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: ServiceCidrs,
    /// A node IP NodePorts open on, IPv4 or IPv6 (repeatable).
    #[arg(long = "node-ip")]
    node_ips: Vec<IpAddr>,
}

#[derive(Debug, Subcommand)]
enum DebugCommand {
    /// Print every Service port's Maglev table digest (and with --slots the
    /// slots), as a gateway would build them from these manifests: two
    /// gateways with the same desired state print the same bytes.
    Maglev {
        #[command(flatten)]
        load: LoadArgs,
        /// Print each slot's backend too.
        #[arg(long)]
        slots: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DnsCommand {
    /// Print the cluster DNS records of manifests as an RFC 1035 zone file
    /// (for NSD or Knot to serve the same names svcgate answers). Objects
    /// with errors are left out and the errors printed (exit code 1).
    Export {
        /// Manifest files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The cluster domain.
        #[arg(long, default_value = svcgate_control::config::DEFAULT_DNS_ZONE)]
        zone: String,
        /// TTL of the records, in seconds.
        #[arg(long, default_value_t = svcgate_control::config::DEFAULT_DNS_TTL)]
        ttl: u32,
        /// Where Services without a clusterIP get one (as `validate`).
        #[arg(long, default_value = "10.96.0.0/12")]
        service_cidr: ServiceCidrs,
        /// An address of the name server `ns.dns.<zone>`, IPv4 or IPv6
        /// (repeatable): the apex NS record's address records.
        #[arg(long = "address")]
        addresses: Vec<IpAddr>,
        /// Print a reverse zone (in-addr.arpa, ip6.arpa) instead of the cluster domain.
        #[arg(long, value_enum)]
        reverse: Option<Reverse>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Reverse {
    /// in-addr.arpa.
    V4,
    /// ip6.arpa.
    V6,
}

fn init_logs(default: &str) {
    // netlink-packet-route warns on every dump about attributes newer
    // kernels added (IFLA_INET6_CONF sizes); they are harmless and would
    // flood the log at each next-hop refresh. RUST_LOG can still raise it.
    let quiet = "netlink_packet_route=error";
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if v.contains("netlink_packet_route") => tracing_subscriber::EnvFilter::new(v),
        Ok(v) => tracing_subscriber::EnvFilter::new(format!("{v},{quiet}")),
        Err(_) => tracing_subscriber::EnvFilter::new(format!("{default},{quiet}")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn validate(
    paths: &[PathBuf],
    service_cidr: ServiceCidrs,
    node_ips: Vec<IpAddr>,
    service_proxy_name: Option<String>,
) -> ExitCode {
    let mut cfg = ResolveConfig::new(service_cidr, node_ips);
    cfg.service_proxy_name = service_proxy_name;
    let report = load_paths(paths, &cfg);
    let (_, warnings) = svcgate_common::table::ServiceTable::build(&report.resolved.desired, 1);
    let (svcs, eps) = display::rows(&report.resolved.desired);
    out!("{}", display::services_table(&svcs));
    outln!();
    out!("{}", display::endpoints_table(&eps));
    // A cluster's dump may hold hundreds of objects of other kinds: the
    // first few by name, the rest counted by kind.
    const SKIPPED_SHOWN: usize = 10;
    for s in report.skipped.iter().take(SKIPPED_SHOWN) {
        eprintln!("skipped: {} {} {:?} at {}: a kind svcgate does not serve", s.api_version, s.kind, s.name, s.origin);
    }
    if report.skipped.len() > SKIPPED_SHOWN {
        let mut kinds: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for s in &report.skipped[SKIPPED_SHOWN..] {
            *kinds.entry(s.kind.as_str()).or_default() += 1;
        }
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        eprintln!(
            "skipped: {} more objects of kinds svcgate does not serve ({})",
            report.skipped.len() - SKIPPED_SHOWN,
            kinds.join(", ")
        );
    }
    for n in &report.resolved.external_names {
        eprintln!("note: Service {n} is of type ExternalName: DNS only, nothing to serve");
    }
    for o in &report.resolved.other_proxy {
        eprintln!("note: {o}");
    }
    for w in &report.resolved.warnings {
        eprintln!("warning: {w}");
    }
    let errors = report.errors.len() + warnings.len();
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    for w in &warnings {
        eprintln!("error: {w}");
    }
    if errors == 0 {
        let warned = match report.resolved.warnings.len() {
            0 => String::new(),
            n => format!(", {n} warning(s)"),
        };
        eprintln!("svcgate: the manifests are ok ({} Services{warned})", report.resolved.desired.services.len());
        ExitCode::SUCCESS
    } else {
        eprintln!("svcgate: {errors} error(s); the objects named above would not be applied, the rest would");
        ExitCode::FAILURE
    }
}

fn dns_export(
    paths: &[PathBuf],
    zone: &str,
    ttl: u32,
    service_cidr: ServiceCidrs,
    addresses: Vec<IpAddr>,
    reverse: Option<Reverse>,
) -> ExitCode {
    use svcgate_control::config::{parse_zone, DnsSettings, MAX_DNS_TTL};
    use svcgate_dns::zone::{Zone, ZoneKind};
    let zone = match parse_zone(zone) {
        Ok(z) => z,
        Err(e) => {
            eprintln!("svcgate: --zone: {e}");
            return ExitCode::from(2);
        }
    };
    if ttl > MAX_DNS_TTL {
        eprintln!("svcgate: --ttl: {ttl} is out of range: 0 to {MAX_DNS_TTL} seconds");
        return ExitCode::from(2);
    }
    let report = load_paths(paths, &ResolveConfig::new(service_cidr, Vec::<IpAddr>::new()));
    let view = svcgate_control::names::view_of(&report.resolved);
    let settings = DnsSettings { zone, ttl, addresses: addresses.clone(), service: None };
    let config = svcgate_control::names::dns_config(&settings, &addresses, 1);
    let z = Zone::build(&view, &config);
    let kind = match reverse {
        None => ZoneKind::Cluster,
        Some(Reverse::V4) => ZoneKind::ReverseV4,
        Some(Reverse::V6) => ZoneKind::ReverseV6,
    };
    out!("{}", z.zone_file(kind, &config));
    for s in z.skipped() {
        eprintln!("warning: left out of the zone: {s}");
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("svcgate: {} error(s); the objects named above are not in the zone", report.errors.len());
        ExitCode::FAILURE
    }
}

/// A start-up step of `svcgate run` failed: the error to the log and to
/// stderr, the dataplane (if it was up) stopped, exit code 2.
fn give_up(e: &dyn std::fmt::Display, dataplane: Option<svcgate_control::dataplane::Running>) -> ExitCode {
    tracing::error!("{e}");
    eprintln!("svcgate: {e}");
    if let Some(dp) = dataplane {
        dp.shutdown();
    }
    ExitCode::from(2)
}

fn run(path: &std::path::Path) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("svcgate: {e}");
            return ExitCode::from(2);
        }
    };
    // The privileged part first, on this thread alone: the dataplane
    // (XDP, AF_XDP sockets, TUN devices) around the controller's table
    // publisher. Then this thread gives up every capability before any
    // other thread of the daemon exists, so that the async runtime, the
    // admin endpoint and the sources inherit none; the dataplane's own
    // threads drop theirs (the housekeeping thread keeps CAP_NET_ADMIN).
    let controller = Daemon::controller_for(&cfg);
    // [announce]: what a previous process left announced goes first, before
    // the dataplane brings back the device its routes depend on.
    svcgate_control::announce::before_dataplane(cfg.announce.as_ref());
    let dataplane = match svcgate_control::dataplane::DataplaneConfig::from_table(&cfg.dataplane) {
        Ok(None) => None,
        Ok(Some(dp)) => match svcgate_control::dataplane::start(
            &dp,
            controller.tables(),
            controller.dns_settings().map(|_| controller.dns_tables()),
        ) {
            Ok(running) => {
                tracing::info!(interfaces = ?dp.interfaces, queues = dp.queues, "dataplane running");
                Some(running)
            }
            Err(e) => return give_up(&e, None),
        },
        Err(e) => {
            eprintln!("svcgate: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    // Whether there was anything to drop: a user without capabilities (a
    // controller-only run) cannot trim its bounding set and needs not.
    let had_caps = svcgate_dataplane::privileges::thread_caps()
        .map_or(true, |c| c.permitted != svcgate_dataplane::privileges::CapSet::EMPTY);
    match svcgate_control::dataplane::drop_capabilities(controller.dns_settings().is_some()) {
        Ok(r) if r.bounding_trimmed => tracing::info!("capabilities dropped after start-up"),
        Ok(_) if !had_caps => tracing::debug!("no capabilities to drop"),
        Ok(_) => tracing::warn!(
            "capabilities dropped after start-up, but the bounding set could not be trimmed (no CAP_SETPCAP): \
             the container's bounding set applies"
        ),
        Err(e) => return give_up(&e, dataplane),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("svcgate: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async {
        let daemon = match Daemon::start_with(&cfg, controller).await {
            Ok(d) => d,
            Err(e) => return give_up(&e, dataplane),
        };
        match &dataplane {
            Some(running) => daemon.attach_stats(running.stats()),
            None => tracing::warn!(
                admin = %daemon.admin_addr(),
                "no [dataplane] configured: running the controller and the admin endpoint only"
            ),
        }
        let announcer = svcgate_control::announce::start_for_run(cfg.announce.as_ref(), dataplane.is_some(), &daemon);
        wait_for_shutdown().await;
        tracing::info!("shutting down");
        // Graceful drain: withdraw the routes, keep forwarding a while.
        if let Some(a) = &announcer {
            a.drain(wait_for_shutdown()).await;
        }
        drop(announcer);
        if let Some(dp) = dataplane {
            dp.shutdown();
        }
        drop(daemon);
        ExitCode::SUCCESS
    })
}

async fn wait_for_shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

fn status(admin: SocketAddr) -> ExitCode {
    let report = match svcgate_control::admin::fetch_status(admin) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("svcgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let c = &report.control;
    out!("{}", display::services_table(&c.services));
    outln!();
    out!("{}", display::endpoints_table(&c.endpoints));
    outln!();
    match &c.dns {
        Some(d) => {
            let on = if d.addresses.is_empty() { "no address".to_string() } else { d.addresses.join(", ") };
            outln!("DNS: zone {} on {on}, table generation {}, {} names", d.zone, d.generation, d.names);
            out!("{}", display::dns_table(&d.rows));
        }
        None => outln!("DNS: off (no [dns] addresses or service configured)"),
    }
    outln!();
    // Per Service: packets and bytes summed over its ports.
    let rows: Vec<Vec<String>> = c
        .services
        .iter()
        .map(|s| {
            let (p, b) = report
                .stats
                .ports
                .iter()
                .filter(|x| x.namespace == s.namespace && x.name == s.name)
                .fold((0u64, 0u64), |(p, b), x| (p + x.packets, b + x.bytes));
            vec![s.name.clone(), p.to_string(), b.to_string()]
        })
        .collect();
    out!("{}", display::format_table(&["NAME", "PACKETS", "BYTES"], &rows));
    outln!();
    if !report.stats.workers.is_empty() {
        // Per worker: the forwarding core's cost, as testpmd's
        // --record-core-cycles prints it ("CPU cycles/packet").
        let rows: Vec<Vec<String>> = report
            .stats
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                vec![
                    i.to_string(),
                    w.rx.to_string(),
                    w.tx.to_string(),
                    w.dropped.to_string(),
                    format!("{:.0}%", w.busy_ratio * 100.0),
                    format!("{:.0}", w.cycles_per_packet),
                ]
            })
            .collect();
        out!("{}", display::format_table(&["WORKER", "RX", "TX", "DROPPED", "BUSY", "CYCLES/PKT"], &rows));
        outln!("(TSC at {} MHz)", report.stats.tsc_mhz);
        outln!();
    }
    let since = report.since_last_sync_secs.map_or_else(|| "never".to_string(), |s| format!("{s:.1}s ago"));
    outln!(
        "generation {}, last sync {since}, {}, dataplane {}",
        c.generation,
        if report.ready { "ready" } else { "NOT ready" },
        if report.dataplane_attached { "attached" } else { "not attached" }
    );
    if let Some(a) = &report.announce {
        let state = if a.draining {
            "draining (withdrawn for shutdown)"
        } else if a.waiting_for_sync {
            "waiting for the first sync"
        } else if a.announced == a.desired {
            "in sync"
        } else {
            "pending"
        };
        outln!(
            "announce: {} route(s) via BIRD at {}, {state}; {} reload(s), {} error(s)",
            a.announced.len(),
            a.bird_socket,
            a.reloads_total,
            a.errors_total
        );
        if !a.announced.is_empty() {
            outln!("announced: {}", a.announced.join(", "));
        }
        if let Some(e) = &a.last_error {
            outln!("announce error (retrying): {e}");
        }
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    for line in display::source_lines(&c.source, now) {
        outln!("{line}");
    }
    for w in &c.warnings {
        outln!("warning: {w}");
    }
    for e in &c.errors {
        outln!("error: {e}");
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { load: LoadArgs { paths, service_cidr, node_ips }, service_proxy_name } => {
            init_logs("warn");
            validate(&paths, service_cidr, node_ips, service_proxy_name)
        }
        Command::Run { config } => {
            init_logs("info");
            run(&config)
        }
        Command::Status { admin } => status(admin),
        Command::Debug {
            command: DebugCommand::Maglev { load: LoadArgs { paths, service_cidr, node_ips }, slots },
        } => {
            init_logs("warn");
            let report = load_paths(&paths, &ResolveConfig::new(service_cidr, node_ips));
            let (table, _) = svcgate_common::table::ServiceTable::build(&report.resolved.desired, 1);
            out!("{}", display::maglev_dump(&table, slots));
            for e in &report.errors {
                eprintln!("error: {e}");
            }
            if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Dns { command: DnsCommand::Export { paths, zone, ttl, service_cidr, addresses, reverse } } => {
            init_logs("warn");
            dns_export(&paths, &zone, ttl, service_cidr, addresses, reverse)
        }
    }
}
