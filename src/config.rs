//! Command line and YAML file → validated `Config`. (stub: being written)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The validated configuration rpcdns runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub etcd: EtcdConfig,
    pub dns: DnsConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConfig {
    /// `HOST:PORT` strings, at least one.
    pub endpoints: Vec<String>,
    /// Only keys starting with this are read and watched ("" = all).
    pub prefix: String,
    /// Glob patterns for service keys (default `["*.rpc"]`).
    pub patterns: Vec<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls: Option<TlsConfig>,
    pub dial_timeout: Duration,
}

/// A secret string: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// Apex, lower-cased, absolute (`svc.local.`).
    pub zone: String,
    pub listen: Vec<SocketAddr>,
    pub ttl: u32,
    pub negative_ttl: u32,
    pub max_udp_payload: u16,
    pub upstream: Vec<SocketAddr>,
    pub allow_recursion_from: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing` filter directive (`info`, `rpcdns=debug`).
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}
