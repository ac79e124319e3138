//! `svcgate run`: the controller, its source and the admin endpoint.
//!
//! How a dataplane plugs in (kept deliberately small):
//! - tables: [`Daemon::tables`] is the [`Publisher`]; each worker takes a
//!   `Reader` with `tables().reader()` before it starts and calls
//!   `Reader::refresh` at every batch boundary. No trait to implement.
//! - counters: implement [`StatsSource`] and call [`Daemon::attach_stats`];
//!   `/metrics` and `/status` read it on each scrape.
//! - cluster DNS: [`Daemon::dns_tables`] is the [`Publisher`] of the DNS
//!   answer tables (`[dns]` in the config), read the same way;
//!   [`Daemon::dns_addresses`] the addresses queries are answered on. The
//!   daemon itself runs the control-path DNS server on those addresses
//!   ([`crate::dns_server`]), for TCP and what the workers leave.
//! - config: [`Daemon::dataplane_config`] is the config's `[dataplane]` table,
//!   untouched.

use std::sync::Arc;
use std::time::Duration;

use svcgate_common::publish::Publisher;
use svcgate_common::table::ServiceTable;
use svcgate_dns::DnsTable;

use crate::admin::{self, AdminError, AdminHandle, StatsSlot};
use crate::config::{Config, SourceConfig};
use crate::controller::Controller;
use crate::dns_server::{DnsServers, DNS_PORT};
use crate::metrics::StatsSource;
use crate::resolve::ResolveConfig;
use crate::watch::{self, WatchError, WatchHandle};

/// Starting the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The manifests directory.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// The admin endpoint.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The Kubernetes API source.
    #[error(transparent)]
    Kube(#[from] crate::kube_source::KubeSourceError),
}

/// A running daemon; dropping it stops the source and the admin endpoint.
#[derive(Debug)]
pub struct Daemon {
    controller: Arc<Controller>,
    stats: Arc<StatsSlot>,
    admin: AdminHandle,
    _watch: Option<WatchHandle>,
    _kube: Option<crate::kube_source::KubeHandle>,
    _dns: Option<DnsServers>,
    dataplane: toml::Table,
}

impl Daemon {
    /// Starts the source and the admin endpoint (inside a tokio runtime: the
    /// kube source runs on it).
    pub async fn start(cfg: &Config) -> Result<Self, DaemonError> {
        Self::start_with(cfg, Self::controller_for(cfg)).await
    }

    /// The controller `cfg` asks for, before anything starts: `svcgate run`
    /// hands its table publisher to the dataplane first, gives up its
    /// capabilities, then starts the daemon around it
    /// ([`Daemon::start_with`]), so that no thread of the daemon holds any.
    pub fn controller_for(cfg: &Config) -> Arc<Controller> {
        let mut rcfg = ResolveConfig::new(cfg.service_cidr, cfg.node_ips.clone());
        rcfg.service_proxy_name = cfg.service_proxy_name.clone();
        if cfg.source == SourceConfig::Kube {
            rcfg.check_cluster_ip_range = false;
        }
        Arc::new(Controller::new(rcfg).with_dns(cfg.dns.clone()))
    }

    /// [`Daemon::start`] around a controller from [`Daemon::controller_for`].
    pub async fn start_with(cfg: &Config, controller: Arc<Controller>) -> Result<Self, DaemonError> {
        let stats = Arc::new(StatsSlot::default());
        // Admin first: /readyz answers 503 while the first sync runs.
        let admin = admin::serve(cfg.admin_listen, Arc::clone(&controller), Arc::clone(&stats))?;
        let (watch, kube) = match &cfg.source {
            SourceConfig::Manifests(dir) => {
                (Some(watch::watch_dir(Arc::clone(&controller), dir, watch::DEFAULT_DEBOUNCE)?), None)
            }
            SourceConfig::Kube => (None, Some(crate::kube_source::start(Arc::clone(&controller)).await?)),
        };
        // The control-path DNS server follows the DNS addresses of each sync.
        let dns = cfg.dns.enabled().then(|| DnsServers::start(Arc::clone(&controller), DNS_PORT));
        Ok(Self { controller, stats, admin, _watch: watch, _kube: kube, _dns: dns, dataplane: cfg.dataplane.clone() })
    }

    /// The table publisher workers subscribe to (`.reader()`).
    pub fn tables(&self) -> Arc<Publisher<ServiceTable>> {
        self.controller.tables()
    }

    /// The publisher of the cluster DNS answer tables (`.reader()` per
    /// worker); only an empty zone when `[dns]` is not configured.
    pub fn dns_tables(&self) -> Arc<Publisher<DnsTable>> {
        self.controller.dns_tables()
    }

    /// The DNS tables for the dataplane's workers when `[dns]` is on.
    pub fn dns_tables_if_enabled(&self) -> Option<Arc<Publisher<DnsTable>>> {
        self.controller.dns_settings().map(|_| self.controller.dns_tables())
    }

    /// The addresses cluster DNS answers on (`dns.addresses` and the
    /// clusterIP of `dns.service`) as of the last sync; empty when off.
    pub fn dns_addresses(&self) -> Vec<std::net::IpAddr> {
        self.controller.dns_addresses()
    }

    /// The controller.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// Registers the dataplane's counters for `/metrics` and `/status`.
    pub fn attach_stats(&self, source: Arc<dyn StatsSource>) {
        self.stats.attach(source);
    }

    /// Registers the announcer's state for `/status` and `/metrics`.
    pub fn attach_announce(&self, state: Arc<crate::announce::AnnounceState>) {
        self.stats.attach_announce(state);
    }

    /// The config's `[dataplane]` table.
    pub fn dataplane_config(&self) -> &toml::Table {
        &self.dataplane
    }

    /// The admin endpoint's bound address.
    pub fn admin_addr(&self) -> std::net::SocketAddr {
        self.admin.addr()
    }

    /// Waits up to `timeout` for the first full sync.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let t0 = std::time::Instant::now();
        while !self.controller.is_ready() {
            if t0.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}
