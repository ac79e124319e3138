//! The svcgate binary: `svcgate validate`, `svcgate run`, `svcgate status`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use svcgate_common::model::Ipv4Net;
use svcgate_control::display;
use svcgate_control::load::load_paths;
use svcgate_control::resolve::ResolveConfig;

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
        /// Manifest files or directories (`.yaml`, `.yml`, `.json`; directories recursively).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Where Services without a clusterIP get one (kubeadm's default range).
        #[arg(long, default_value = "10.96.0.0/12")]
        service_cidr: Ipv4Net,
        /// A node IP NodePorts open on (repeatable).
        #[arg(long = "node-ip")]
        node_ips: Vec<Ipv4Addr>,
    },
    /// Run the daemon: the controller, the admin endpoint and (when attached) the dataplane.
    Run {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Show the running daemon's Services, endpoints and counters.
    Status {
        /// The daemon's admin address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
}

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn validate(paths: &[PathBuf], service_cidr: Ipv4Net, node_ips: Vec<Ipv4Addr>) -> ExitCode {
    let cfg = ResolveConfig::new(service_cidr, node_ips);
    let report = load_paths(paths, &cfg);
    let (_, warnings) = svcgate_common::table::ServiceTable::build(&report.resolved.desired, 1);
    let (svcs, eps) = display::rows(&report.resolved.desired);
    print!("{}", display::services_table(&svcs));
    println!();
    print!("{}", display::endpoints_table(&eps));
    for s in &report.skipped {
        eprintln!("skipped: {} {} {:?} at {}: a kind svcgate does not serve", s.api_version, s.kind, s.name, s.origin);
    }
    for n in &report.resolved.external_names {
        eprintln!("note: Service {n} is of type ExternalName: DNS only, nothing to serve");
    }
    let errors = report.errors.len() + warnings.len();
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    for w in &warnings {
        eprintln!("error: {w}");
    }
    if errors == 0 {
        eprintln!("svcgate: the manifests are ok ({} Services)", report.resolved.desired.services.len());
        ExitCode::SUCCESS
    } else {
        eprintln!("svcgate: {errors} error(s); the objects named above would not be applied, the rest would");
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { paths, service_cidr, node_ips } => {
            init_logs("warn");
            validate(&paths, service_cidr, node_ips)
        }
        Command::Run { config } => {
            init_logs("info");
            eprintln!("svcgate run: not built yet ({})", config.display());
            ExitCode::from(2)
        }
        Command::Status { admin } => {
            eprintln!("svcgate status: not built yet ({admin})");
            ExitCode::from(2)
        }
    }
}
