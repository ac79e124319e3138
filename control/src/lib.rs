//! svcgate control plane.
//!
//! Sources (Kubernetes manifests on disk, the Kubernetes API) produce typed
//! k8s-openapi objects ([`manifest`], [`kube_source`]); [`resolve`] turns them
//! into the plain [`svcgate_common::model::DesiredState`] the way the API
//! server and the EndpointSlice controller would; the [`controller`] builds
//! [`svcgate_common::table::ServiceTable`]s from it and publishes them to the
//! workers through a [`svcgate_common::publish::Publisher`]; [`names`]
//! computes the cluster DNS records of the same resolution, published beside
//! them as a [`svcgate_dns::DnsTable`]; [`dns_server`] answers the DNS
//! queries the workers leave, over UDP and TCP, from the same table.

pub mod admin;
pub mod announce;
pub mod cidr;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod dataplane;
pub mod display;
pub mod dns_server;
pub mod error;
pub mod kube_source;
pub mod load;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod origin;
pub mod resolve;
pub mod watch;

pub use error::LoadError;
