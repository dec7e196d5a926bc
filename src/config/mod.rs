//! Command line and YAML file → validated `Config`.
//!
//! Parsing happens in two stages (STYLE.md "Config"):
//!
//! 1. `RawConfig` mirrors the YAML file. Every section denies unknown keys,
//!    and every leaf is a `Spanned` `RawValue`: whatever the operator wrote,
//!    with the line and column it was written at. Type checks are left to the
//!    second stage on purpose: serde-saphyr's own type errors carry a location
//!    but not the key, while ours must name both (`dns.ttl`).
//! 2. Validation picks, for every key, the winning source (flag, then file,
//!    then the documented default), checks it, and produces [`Config`]. Each
//!    error names where the value came from: `file:line:column: dotted.key:
//!    what was expected, found what`, or `--flag: what was expected`.
//!
//! Locations point at the offending value (for a list element, at that
//! element), which is on the key's own line for `key: value`.
//!
//! Ranges and rules chosen here (the README repeats them):
//! - `ttl` and `negative_ttl`: 1..=86400 seconds. TTL 0 is legal DNS but tells
//!   every cache not to cache, so each lookup would reach rpcdns; one second
//!   already bounds staleness, and a day is the most a discovery record should
//!   be trusted for.
//! - `max_udp_payload`: 512..=4096 octets (RFC 1035's floor, and the largest
//!   size that is still common practice for EDNS).
//! - `dial_timeout`: 100ms..=5m.
//! - A key whose value is empty or `null` takes its default.

//!
//! - [`cli`]: the command line.
//! - `raw`: stage 1, the YAML as written.
//! - `validate`: stage 2, every key checked into [`Config`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::zone::service_config::ServiceConfig;

pub mod cli;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

pub use cli::{Cli, Command};
use validate::build;
pub use validate::{load, parse_duration, parse_zone};

// ---------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------

/// Default zone apex. `.local` is also the mDNS domain; the README explains
/// how to choose another zone when nss-mdns is in the way.
pub const DEFAULT_ZONE: &str = "svc.local.";
/// Default DNS listen address (UDP and TCP). Loopback and an unprivileged
/// port, so a default start needs no privileges and exposes nothing.
pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:5353";
/// Default HTTP listen address for `/metrics`, `/healthz`, `/readyz`,
/// `/debug/zone`; loopback as SPEC §7 asks.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9153";
/// Default etcd endpoint: a local single-node etcd.
pub const DEFAULT_ETCD: &str = "127.0.0.1:2379";
/// Default service-key pattern: go-zero's `*.rpc` convention.
pub const DEFAULT_PATTERN: &str = "*.rpc";
/// Default TTL of positive answers, in seconds: short, because instances come
/// and go with their leases (about 10 s).
pub const DEFAULT_TTL: u32 = 5;
/// Default SOA minimum, i.e. the TTL of negative answers, in seconds.
pub const DEFAULT_NEGATIVE_TTL: u32 = 5;
/// Default largest UDP response with EDNS, as DNS Flag Day 2020 advises.
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;
/// Default time allowed to connect to an etcd endpoint.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default log filter.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default log format.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;
/// Default `dns.allow_recursion_from`: loopback and the private ranges, so
/// that setting `upstream` never makes an open resolver (SPEC §7).
pub const DEFAULT_ALLOW_RECURSION_FROM: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
];
/// Port used for an `upstream` entry given without one.
pub const DEFAULT_UPSTREAM_PORT: u16 = 53;

/// Accepted `ttl` and `negative_ttl` values, in seconds (see the module doc).
pub const TTL_RANGE: std::ops::RangeInclusive<u32> = 1..=86_400;
/// Accepted `max_udp_payload` values, in octets.
pub const MAX_UDP_PAYLOAD_RANGE: std::ops::RangeInclusive<u16> = 512..=4096;
/// Shortest accepted `dial_timeout`.
pub const MIN_DIAL_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest accepted `dial_timeout`.
pub const MAX_DIAL_TIMEOUT: Duration = Duration::from_secs(300);

/// How `grpc.service_config` (or an override's) says "no TXT record".
pub const SERVICE_CONFIG_OFF: &str = "off";

/// Accepted `dns.rrl.responses_per_second`.
pub const RRL_RATE_RANGE: std::ops::RangeInclusive<u32> = 0..=1_000_000;
/// Accepted `dns.rrl.slip` (as BIND's `slip`).
pub const RRL_SLIP_RANGE: std::ops::RangeInclusive<u32> = 0..=10;
/// Default `dns.rrl.slip`: every other limited response is truncated.
pub const DEFAULT_RRL_SLIP: u32 = 2;
/// Default client networks: a /24 and a /56, as BIND and Knot group them.
pub const DEFAULT_RRL_IPV4_PREFIX_LENGTH: u8 = 24;
pub const DEFAULT_RRL_IPV6_PREFIX_LENGTH: u8 = 56;
/// Default `dns.rrl.exempt`: loopback.
pub const DEFAULT_RRL_EXEMPT: &[&str] = &["127.0.0.0/8", "::1/128"];

/// What `check-config` prints instead of the etcd password.
pub const REDACTED: &str = "<redacted>";

// ---------------------------------------------------------------------------
// Validated configuration
// ---------------------------------------------------------------------------

/// The validated configuration rpcdns runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub etcd: EtcdConfig,
    pub dns: DnsConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub grpc: GrpcConfig,
    /// The registration sources, in order: a key belongs to the first
    /// whose prefix it starts with and that recognises it. Without a
    /// `sources` list: go-zero alone, from `etcd.prefix` and
    /// `etcd.patterns`.
    pub sources: Vec<SourceConfig>,
    /// The key prefix of the overlay (weights, priorities and service
    /// configs for registrations that carry none); `None`: off.
    pub overlay: Option<String>,
    /// The on-disk copy of the zone.
    pub state: StateConfig,
}

/// `state`: where rpcdns keeps a copy of the last zone, to serve when it
/// starts while etcd is unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The directory (created at start); `None`: no copy.
    pub dir: Option<PathBuf>,
    /// The largest copy written or read, in octets.
    pub max_bytes: u64,
}

/// Default `state.max_bytes`: 256 MiB, a few million registrations.
pub const DEFAULT_STATE_MAX_BYTES: u64 = 256 << 20;
/// Accepted `state.max_bytes`: 1 KiB to 16 GiB.
pub const STATE_MAX_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=(16 << 30);

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
    /// Networks whose reverse zones (`in-addr.arpa`, `ip6.arpa`) rpcdns
    /// answers PTR in, for the instances' addresses; on octet (IPv4) or
    /// nibble (IPv6) boundaries, truncated to their network.
    pub reverse_zones: Vec<ipnet::IpNet>,
    /// The key of the DNS server cookies (RFC 7873, RFC 9018); `None`: a
    /// random one per process.
    pub cookie_secret: Option<CookieKey>,
    /// Response rate limiting.
    pub rrl: RrlConfig,
}

/// `dns.cookie_secret`: 16 octets, never shown by `Debug` nor printed by
/// `check-config`.
#[derive(Clone, PartialEq, Eq)]
pub struct CookieKey(pub [u8; 16]);

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// `dns.rrl`: response rate limiting over UDP, per client network and
/// answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlConfig {
    /// Responses per second to one network for one answer; 0: off.
    pub responses_per_second: u32,
    /// Every `slip`th limited response goes out truncated (TC), the others
    /// are dropped; 0: drop them all.
    pub slip: u32,
    /// The client networks: addresses are grouped by these prefixes.
    pub ipv4_prefix_length: u8,
    pub ipv6_prefix_length: u8,
    /// Clients never limited.
    pub exempt: Vec<ipnet::IpNet>,
}

/// Where registrations come from: one etcd key prefix read in one
/// framework's format, and how its service names map into the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    pub format: Format,
    /// Only keys starting with this belong to the source.
    pub prefix: String,
    /// go-zero only: the service keys served (globs).
    pub patterns: Vec<String>,
    /// Labels between a service name and the zone (`micro` serves
    /// `greeter` as `greeter.micro.svc.local`); empty: none.
    pub suffix: String,
}

/// The most sources one config may list.
pub const MAX_SOURCES: usize = 16;

/// The registration formats rpcdns reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// go-zero: `<service key>/<lease id>` → `host:port`.
    GoZero,
    /// kratos `contrib/registry/etcd`: `/microservices/<name>/<id>` → JSON
    /// `ServiceInstance` with its endpoints.
    Kratos,
    /// go-micro `registry/etcd`: `/micro/registry/<name>/<node id>` → JSON
    /// `Service` with its node.
    GoMicro,
    /// SkyDNS, as CoreDNS's `etcd` plugin reads it: `/skydns/<labels of
    /// the name, reversed>` → JSON `msg.Service` (host, port, text, ...).
    SkyDns,
}

impl Format {
    pub const ALL: [Format; 4] = [
        Format::GoZero,
        Format::Kratos,
        Format::GoMicro,
        Format::SkyDns,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::GoZero => "gozero",
            Format::Kratos => "kratos",
            Format::GoMicro => "gomicro",
            Format::SkyDns => "skydns",
        }
    }

    /// The prefix the framework writes under by default ("" for go-zero:
    /// its keys are the service keys themselves, and `etcd.prefix` applies).
    pub fn default_prefix(self) -> &'static str {
        match self {
            Format::GoZero => "",
            Format::Kratos => "/microservices/",
            Format::GoMicro => "/micro/registry/",
            Format::SkyDns => "/skydns/",
        }
    }
}

/// The gRPC service configs served as `_grpc_config` TXT records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcConfig {
    /// For every service no override matches; `None` = no record.
    pub service_config: Option<ServiceConfig>,
    /// First match wins.
    pub overrides: Vec<GrpcOverride>,
}

/// `grpc.overrides[i]`: the service config of the services whose key
/// matches `pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcOverride {
    pub pattern: String,
    /// `None` = no record for these services.
    pub service_config: Option<ServiceConfig>,
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

impl LogFormat {
    /// The spelling used in the file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl Default for Config {
    /// Every key at its documented default.
    fn default() -> Self {
        // The inputs are the DEFAULT_* constants above, so this cannot fail;
        // `defaults_are_valid` in the tests proves it.
        build(None, &Cli::default()).expect("the built-in defaults are valid")
    }
}

impl Config {
    /// Parses and validates a YAML document with no command-line overrides.
    /// `file_name` only labels errors.
    pub fn from_yaml_str(text: &str, file_name: &str) -> Result<Config, ConfigError> {
        build(Some((text, file_name)), &Cli::default())
    }

    /// The effective configuration as YAML, every key with its value, the
    /// password replaced by [`REDACTED`]. Feeding the output back to
    /// [`Config::from_yaml_str`] gives the same configuration (save the
    /// password).
    pub fn to_redacted_yaml(&self) -> String {
        let mut out = String::new();
        let e = &self.etcd;
        out.push_str("etcd:\n");
        yaml_list(
            &mut out,
            "endpoints",
            e.endpoints.iter().map(String::as_str),
        );
        yaml_kv(&mut out, "prefix", &quote(&e.prefix));
        yaml_list(&mut out, "patterns", e.patterns.iter().map(String::as_str));
        let username = e.username.as_deref().map_or("null".to_owned(), quote);
        yaml_kv(&mut out, "username", &username);
        let password = e
            .password
            .as_ref()
            .map_or("null".to_owned(), |_| quote(REDACTED));
        yaml_kv(&mut out, "password", &password);
        match &e.tls {
            None => yaml_kv(&mut out, "tls", "null"),
            Some(tls) => {
                out.push_str("  tls:\n");
                for (key, path) in [
                    ("ca_file", &tls.ca_file),
                    ("cert_file", &tls.cert_file),
                    ("key_file", &tls.key_file),
                ] {
                    let value = path
                        .as_ref()
                        .map_or("null".to_owned(), |p| quote(&p.to_string_lossy()));
                    out.push_str(&format!("    {key}: {value}\n"));
                }
            }
        }
        yaml_kv(&mut out, "dial_timeout", &format_duration(e.dial_timeout));

        let d = &self.dns;
        out.push_str("dns:\n");
        yaml_kv(&mut out, "zone", &quote(&d.zone));
        let listen: Vec<String> = d.listen.iter().map(ToString::to_string).collect();
        yaml_list(&mut out, "listen", listen.iter().map(String::as_str));
        yaml_kv(&mut out, "ttl", &d.ttl.to_string());
        yaml_kv(&mut out, "negative_ttl", &d.negative_ttl.to_string());
        yaml_kv(&mut out, "max_udp_payload", &d.max_udp_payload.to_string());
        let upstream: Vec<String> = d.upstream.iter().map(ToString::to_string).collect();
        yaml_list(&mut out, "upstream", upstream.iter().map(String::as_str));
        let nets: Vec<String> = d
            .allow_recursion_from
            .iter()
            .map(ToString::to_string)
            .collect();
        yaml_list(
            &mut out,
            "allow_recursion_from",
            nets.iter().map(String::as_str),
        );
        let reverse: Vec<String> = d.reverse_zones.iter().map(ToString::to_string).collect();
        yaml_list(
            &mut out,
            "reverse_zones",
            reverse.iter().map(String::as_str),
        );
        let cookie_secret = match d.cookie_secret {
            // Never printed; `null` reads back as "a random secret".
            Some(_) => "null  # set, not shown",
            None => "null",
        };
        yaml_kv(&mut out, "cookie_secret", cookie_secret);
        let r = &d.rrl;
        out.push_str("  rrl:\n");
        for (key, value) in [
            ("responses_per_second", r.responses_per_second.to_string()),
            ("slip", r.slip.to_string()),
            ("ipv4_prefix_length", r.ipv4_prefix_length.to_string()),
            ("ipv6_prefix_length", r.ipv6_prefix_length.to_string()),
        ] {
            out.push_str(&format!("    {key}: {value}\n"));
        }
        let exempt: Vec<String> = r.exempt.iter().map(|n| quote(&n.to_string())).collect();
        out.push_str(&format!("    exempt: [{}]\n", exempt.join(", ")));

        out.push_str("http:\n");
        yaml_kv(&mut out, "listen", &quote(&self.http.listen.to_string()));

        out.push_str("log:\n");
        yaml_kv(&mut out, "level", &quote(&self.log.level));
        yaml_kv(&mut out, "format", self.log.format.as_str());

        let service_config = |config: &Option<ServiceConfig>| {
            config
                .as_ref()
                .map_or(SERVICE_CONFIG_OFF.to_owned(), |c| quote(c.json()))
        };
        out.push_str("grpc:\n");
        yaml_kv(
            &mut out,
            "service_config",
            &service_config(&self.grpc.service_config),
        );
        if self.grpc.overrides.is_empty() {
            yaml_kv(&mut out, "overrides", "[]");
        } else {
            out.push_str("  overrides:\n");
            for o in &self.grpc.overrides {
                out.push_str(&format!("    - pattern: {}\n", quote(&o.pattern)));
                out.push_str(&format!(
                    "      service_config: {}\n",
                    service_config(&o.service_config)
                ));
            }
        }
        out.push_str("overlay:\n");
        let prefix = self.overlay.as_deref().map_or("null".to_owned(), quote);
        yaml_kv(&mut out, "prefix", &prefix);
        out.push_str("state:\n");
        let dir = self
            .state
            .dir
            .as_ref()
            .map_or("null".to_owned(), |d| quote(&d.display().to_string()));
        yaml_kv(&mut out, "dir", &dir);
        yaml_kv(&mut out, "max_bytes", &self.state.max_bytes.to_string());
        out.push_str("sources:\n");
        for source in &self.sources {
            out.push_str(&format!("  - format: {}\n", source.format.as_str()));
            out.push_str(&format!("    prefix: {}\n", quote(&source.prefix)));
            if source.format == Format::GoZero {
                let patterns: Vec<String> = source.patterns.iter().map(|p| quote(p)).collect();
                out.push_str(&format!("    patterns: [{}]\n", patterns.join(", ")));
            }
            out.push_str(&format!("    suffix: {}\n", quote(&source.suffix)));
        }
        out
    }
}

/// A YAML double-quoted scalar. JSON string syntax is a subset of YAML's
/// double-quoted style, so serde_json's escaping is exactly right.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

fn yaml_kv(out: &mut String, key: &str, value: &str) {
    out.push_str(&format!("  {key}: {value}\n"));
}

fn yaml_list<'a>(out: &mut String, key: &str, items: impl Iterator<Item = &'a str>) {
    let items: Vec<String> = items.map(quote).collect();
    if items.is_empty() {
        yaml_kv(out, key, "[]");
    } else {
        out.push_str(&format!("  {key}:\n"));
        for item in items {
            out.push_str(&format!("    - {item}\n"));
        }
    }
}

fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A position in a config file: `file:line:column`, with the parts that are
/// unknown (0) left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePos {
    pub file: String,
    /// 1-based; 0 when unknown.
    pub line: u64,
    /// 1-based; 0 when unknown.
    pub column: u64,
}

impl fmt::Display for FilePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if self.column > 0 {
                write!(f, ":{}", self.column)?;
            }
        }
        Ok(())
    }
}

/// Why the configuration was rejected. Never contains the etcd password: the
/// messages describe a bad password by its kind, never by its text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML, or its shape is wrong where no key applies.
    #[error("{at}: {message}")]
    Syntax { at: FilePos, message: String },
    /// A key in the file is unknown or its value is invalid.
    #[error("{at}: {key}: {message}")]
    Value {
        at: FilePos,
        /// Dotted key, with an index for list elements (`dns.listen[1]`).
        key: String,
        message: String,
    },
    /// A command-line flag's value is invalid.
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
}

impl ConfigError {
    /// The dotted key the error is about, when it is about one in the file.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Value { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The 1-based line in the file, when known.
    pub fn line(&self) -> Option<u64> {
        match self {
            ConfigError::Value { at, .. } | ConfigError::Syntax { at, .. } if at.line > 0 => {
                Some(at.line)
            }
            _ => None,
        }
    }

    /// The flag the error is about, when it is about one.
    pub fn flag(&self) -> Option<&'static str> {
        match self {
            ConfigError::Flag { flag, .. } => Some(flag),
            _ => None,
        }
    }
}
