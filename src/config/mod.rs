//! Command line and YAML file → validated `Config`.
//!
//! Parsing happens in two stages (STYLE.md "Config"):
//!
//! 1. `RawConfig` mirrors the YAML file. Every section denies unknown keys,
//!    and every leaf is a [`Spanned`] `RawValue`: whatever the operator wrote,
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

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, MessageFormatter, Spanned};

use crate::zone::service_config::{DEFAULT_SERVICE_CONFIG, ServiceConfig};

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

/// What `check-config` prints instead of the etcd password.
pub const REDACTED: &str = "<redacted>";

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// The command line. Flags override the file; the file is optional. Values
/// are kept as text here and checked by [`load`] with the same rules as the
/// file, so flag errors read like file errors (`--ttl: expected …`).
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "rpcdns",
    version,
    about = "DNS discovery bridge: serves go-zero etcd registrations as DNS",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// YAML config file (see config/rpcdns.yaml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// etcd endpoints, comma-separated [default: 127.0.0.1:2379].
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Zone apex [default: svc.local.].
    #[arg(long, value_name = "NAME")]
    pub zone: Option<String>,
    /// DNS listen address, UDP and TCP; repeat for several; replaces the
    /// file's list [default: 127.0.0.1:5353].
    #[arg(long = "dns-listen", value_name = "ADDR:PORT")]
    pub dns_listen: Vec<String>,
    /// HTTP listen address [default: 127.0.0.1:9153].
    #[arg(long = "http-listen", value_name = "ADDR:PORT")]
    pub http_listen: Option<String>,
    /// TTL of positive answers in seconds [default: 5].
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<String>,
    /// Service-key glob; repeat for several; replaces the file's list
    /// [default: *.rpc].
    #[arg(long, value_name = "GLOB")]
    pub pattern: Vec<String>,
    /// Upstream resolver for names outside the zone (port 53 when omitted);
    /// repeat for several; replaces the file's list [default: none].
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub upstream: Vec<String>,
    /// tracing filter directive, e.g. `info` or `rpcdns=debug`; RUST_LOG
    /// wins when set [default: info].
    #[arg(long = "log-level", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long = "log-format", value_name = "text|json")]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Validate FILE, print the effective configuration as YAML, and exit.
    CheckConfig {
        /// The YAML config file to check.
        file: PathBuf,
    },
}

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

// ---------------------------------------------------------------------------
// Stage 1: RawConfig, the YAML as written
// ---------------------------------------------------------------------------

/// Any YAML node, as written. Mappings are only recorded as such: no leaf of
/// the config is a mapping, so their contents are never needed.
///
/// No `Debug`: a `RawValue` may hold the password.
#[derive(Clone, PartialEq)]
enum RawValue {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawValue>>),
    Map,
}

impl RawValue {
    /// How an error message shows a found value (never for the password).
    fn describe(&self) -> String {
        match self {
            RawValue::Null => "null".to_owned(),
            RawValue::Bool(b) => b.to_string(),
            RawValue::Int(n) => n.to_string(),
            RawValue::Float(x) => x.to_string(),
            RawValue::Str(s) => format!("{s:?}"),
            RawValue::Seq(_) => "a list".to_owned(),
            RawValue::Map => "a mapping".to_owned(),
        }
    }

    /// The value's kind, for messages that must not show the value itself.
    fn kind(&self) -> &'static str {
        match self {
            RawValue::Null => "null",
            RawValue::Bool(_) => "a boolean",
            RawValue::Int(_) => "an integer",
            RawValue::Float(_) => "a number",
            RawValue::Str(_) => "a string",
            RawValue::Seq(_) => "a list",
            RawValue::Map => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawValueVisitor)
    }
}

struct RawValueVisitor;

impl<'de> Visitor<'de> for RawValueVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Int(i128::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawValue, E> {
        Ok(RawValue::Int(i128::from(v)))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawValue, E> {
        Ok(RawValue::Int(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
        RawValue::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawValue>>()? {
            items.push(item);
        }
        Ok(RawValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(RawValue::Map)
    }
}

type Leaf = Option<Spanned<RawValue>>;

const ROOT_KEYS: &[&str] = &["etcd", "dns", "http", "log", "grpc"];
const ETCD_KEYS: &[&str] = &[
    "endpoints",
    "prefix",
    "patterns",
    "username",
    "password",
    "tls",
    "dial_timeout",
];
const TLS_KEYS: &[&str] = &["ca_file", "cert_file", "key_file"];
const DNS_KEYS: &[&str] = &[
    "zone",
    "listen",
    "ttl",
    "negative_ttl",
    "max_udp_payload",
    "upstream",
    "allow_recursion_from",
];
const HTTP_KEYS: &[&str] = &["listen"];
const LOG_KEYS: &[&str] = &["level", "format"];
const GRPC_KEYS: &[&str] = &["service_config", "overrides"];
const GRPC_OVERRIDE_KEYS: &[&str] = &["pattern", "service_config"];

/// Maps the key list in serde's "unknown field" error back to the section it
/// belongs to. The field lists of the structs below must equal these
/// constants; the unknown-key tests fail if one drifts.
fn section_of(expected: &[&str]) -> Option<&'static str> {
    [
        (ROOT_KEYS, ""),
        (ETCD_KEYS, "etcd."),
        (TLS_KEYS, "etcd.tls."),
        (DNS_KEYS, "dns."),
        (HTTP_KEYS, "http."),
        (LOG_KEYS, "log."),
        (GRPC_KEYS, "grpc."),
        (GRPC_OVERRIDE_KEYS, "grpc.overrides[]."),
    ]
    .into_iter()
    .find(|(keys, _)| *keys == expected)
    .map(|(_, prefix)| prefix)
}

/// The whole file.
#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with the sections etcd, dns, http, log and grpc"
)]
struct RawConfig {
    etcd: Option<RawEtcd>,
    dns: Option<RawDns>,
    http: Option<RawHttp>,
    log: Option<RawLog>,
    grpc: Option<RawGrpc>,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the etcd section: a mapping of endpoints, prefix, patterns, username, password, tls, dial_timeout"
)]
struct RawEtcd {
    endpoints: Leaf,
    prefix: Leaf,
    patterns: Leaf,
    username: Leaf,
    password: Leaf,
    tls: Option<Spanned<RawTls>>,
    dial_timeout: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the etcd.tls section: a mapping of ca_file, cert_file, key_file"
)]
struct RawTls {
    ca_file: Leaf,
    cert_file: Leaf,
    key_file: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the dns section: a mapping of zone, listen, ttl, negative_ttl, max_udp_payload, upstream, allow_recursion_from"
)]
struct RawDns {
    zone: Leaf,
    listen: Leaf,
    ttl: Leaf,
    negative_ttl: Leaf,
    max_udp_payload: Leaf,
    upstream: Leaf,
    allow_recursion_from: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the http section: a mapping of listen"
)]
struct RawHttp {
    listen: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the log section: a mapping of level, format"
)]
struct RawLog {
    level: Leaf,
    format: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the grpc section: a mapping of service_config, overrides"
)]
struct RawGrpc {
    service_config: Leaf,
    overrides: Option<Spanned<Option<Vec<Spanned<RawGrpcOverride>>>>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an entry of grpc.overrides: a mapping of pattern, service_config"
)]
struct RawGrpcOverride {
    pattern: Leaf,
    service_config: Leaf,
}

/// Parses the YAML text into `RawConfig`; errors carry `file:line:column`.
fn parse_raw(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
    // An empty file (or one holding only comments) is a valid, all-default
    // config, but it is not a YAML mapping; handle it before the parser.
    let has_content = text.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#') && line != "---" && line != "..."
    });
    if !has_content {
        return Ok(RawConfig::default());
    }
    let options = serde_saphyr::options! {
        // YAML 1.1 booleans (`yes`, `on`) only surprise in a config file.
        strict_booleans: true,
        // Snippets would copy source lines, and so possibly the password,
        // into the error.
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options::<Option<RawConfig>>(text, options)
        .map(Option::unwrap_or_default)
        .map_err(|err| yaml_error(&err, text, file))
}

fn yaml_error(err: &serde_saphyr::Error, text: &str, file: &str) -> ConfigError {
    let err = err.without_snippet();
    let loc = err.location().unwrap_or(Location::UNKNOWN);
    let at = file_pos(file, loc);
    if let serde_saphyr::Error::SerdeUnknownField {
        field, expected, ..
    } = err
        && let Some(section) = section_of(expected)
    {
        return ConfigError::Value {
            at,
            key: format!("{section}{field}"),
            message: format!("unknown key (expected one of: {})", expected.join(", ")),
        };
    }
    let message = serde_saphyr::UserMessageFormatter.format_message(err);
    // The renderer normally strips control characters; calling the formatter
    // directly leaves that to us.
    let mut message: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    // A section given a scalar or a list (`etcd: 5`) is a shape error from
    // the deserializer, which knows the position but not the key.
    if let serde_saphyr::Error::Unexpected {
        expected: "mapping start",
        ..
    } = err
    {
        message = "expected a mapping (its keys indented below it)".to_owned();
    }
    match key_at(text, loc.line(), loc.column()) {
        Some(key) => ConfigError::Value { at, key, message },
        None => ConfigError::Syntax { at, message },
    }
}

/// The dotted key whose value (or whose own name) sits at `line:column` in
/// block-style YAML, found by reading the line and walking up to the less
/// indented parent keys. `None` when the text does not look like that
/// (flow style, a syntax error): the error then carries the position only.
fn key_at(text: &str, line: u64, column: u64) -> Option<String> {
    let is_key =
        |k: &str| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let lines: Vec<&str> = text.lines().collect();
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let this = *lines.get(index)?;
    let indent = this.len() - this.trim_start_matches(' ').len();
    let column = usize::try_from(column).ok()?.checked_sub(1)?;
    let before = this.get(..column)?;
    let key = match before.trim_end().strip_suffix(':') {
        // `key: <value here>`
        Some(key) => key.trim(),
        // `<key here>: …`
        None if before.trim().is_empty() => this.get(column..)?.split(':').next()?.trim(),
        None => return None,
    };
    if !is_key(key) {
        return None;
    }
    let mut path = vec![key];
    let mut indent = indent;
    for parent in lines[..index].iter().rev() {
        let trimmed = parent.trim_start_matches(' ');
        if indent == 0 {
            break;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let parent_indent = parent.len() - trimmed.len();
        if parent_indent >= indent {
            continue;
        }
        let (name, rest) = trimmed.split_once(':')?;
        let rest = rest.trim();
        if !is_key(name) || !(rest.is_empty() || rest.starts_with('#')) {
            return None;
        }
        path.push(name);
        indent = parent_indent;
    }
    if indent != 0 {
        return None;
    }
    path.reverse();
    Some(path.join("."))
}

fn file_pos(file: &str, loc: Location) -> FilePos {
    FilePos {
        file: file.to_owned(),
        line: loc.line(),
        column: loc.column(),
    }
}

// ---------------------------------------------------------------------------
// Stage 2: validation
// ---------------------------------------------------------------------------

/// Reads the config file named on the command line (if any), applies the
/// flags over it, and validates the result. For `check-config FILE`, FILE is
/// the config file.
pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
    let path = match &cli.command {
        Some(Command::CheckConfig { file }) => Some(file.as_path()),
        None => cli.config.as_deref(),
    };
    match path {
        None => build(None, cli),
        Some(path) => {
            let text = read_file(path)?;
            build(Some((&text, &path.display().to_string())), cli)
        }
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Where a value came from, so that its error can say so.
#[derive(Clone)]
enum Site {
    File { at: FilePos, key: String },
    Flag(&'static str),
}

impl Site {
    fn error(&self, message: impl Into<String>) -> ConfigError {
        match self {
            Site::File { at, key } => ConfigError::Value {
                at: at.clone(),
                key: key.clone(),
                message: message.into(),
            },
            Site::Flag(flag) => ConfigError::Flag {
                flag,
                message: message.into(),
            },
        }
    }
}

/// One value to check, with where it came from.
struct Item {
    value: RawValue,
    site: Site,
}

impl Item {
    /// "expected …, found …" for this value.
    fn expected(&self, what: &str) -> ConfigError {
        self.site
            .error(format!("expected {what}, found {}", self.value.describe()))
    }

    /// The value as a string, or an error naming `what` was expected.
    fn string(&self, what: &str) -> Result<&str, ConfigError> {
        match &self.value {
            RawValue::Str(s) => Ok(s),
            _ => Err(self.expected(what)),
        }
    }
}

/// Looks up keys in one file (or none) and in the flags.
struct Sources<'a> {
    file: &'a str,
}

impl Sources<'_> {
    fn site(&self, key: &str, loc: Location) -> Site {
        Site::File {
            at: file_pos(self.file, loc),
            key: key.to_owned(),
        }
    }

    /// The winning value of a scalar key: the flag, else the file, else none
    /// (the caller's default). A `null` in the file counts as unset.
    fn scalar(&self, key: &str, flag: Option<(&'static str, &str)>, leaf: &Leaf) -> Option<Item> {
        if let Some((name, text)) = flag {
            return Some(Item {
                value: RawValue::Str(text.to_owned()),
                site: Site::Flag(name),
            });
        }
        let leaf = leaf.as_ref()?;
        if leaf.value == RawValue::Null {
            return None;
        }
        Some(Item {
            value: leaf.value.clone(),
            site: self.site(key, leaf.referenced),
        })
    }

    /// The winning value of a list key. Flags replace the file's list; they
    /// never add to it (SPEC §2, §6). Returns the list's own site (for
    /// "must not be empty") and its elements.
    fn list(
        &self,
        key: &str,
        flag: (&'static str, &[String]),
        leaf: &Leaf,
        what: &str,
    ) -> Result<Option<(Site, Vec<Item>)>, ConfigError> {
        let (name, values) = flag;
        if !values.is_empty() {
            let items = values
                .iter()
                .map(|v| Item {
                    value: RawValue::Str(v.clone()),
                    site: Site::Flag(name),
                })
                .collect();
            return Ok(Some((Site::Flag(name), items)));
        }
        let Some(leaf) = leaf.as_ref() else {
            return Ok(None);
        };
        let site = self.site(key, leaf.referenced);
        match &leaf.value {
            RawValue::Null => Ok(None),
            RawValue::Seq(elements) => {
                let items = elements
                    .iter()
                    .enumerate()
                    .map(|(i, element)| Item {
                        value: element.value.clone(),
                        site: self.site(&format!("{key}[{i}]"), element.referenced),
                    })
                    .collect();
                Ok(Some((site, items)))
            }
            other => Err(site.error(format!(
                "expected a YAML list of {what}, found {}",
                other.describe()
            ))),
        }
    }
}

/// Validates a list, or falls back to `default`. Empty lists are rejected
/// when `non_empty`.
fn list_of<T>(
    chosen: Option<(Site, Vec<Item>)>,
    non_empty: bool,
    what: &str,
    parse: impl Fn(&Item) -> Result<T, ConfigError>,
    default: impl FnOnce() -> Vec<T>,
) -> Result<Vec<T>, ConfigError> {
    let Some((site, items)) = chosen else {
        return Ok(default());
    };
    if non_empty && items.is_empty() {
        return Err(site.error(format!("expected at least one {what}, found an empty list")));
    }
    items.iter().map(parse).collect()
}

/// The validation proper: `text` is `(yaml, file name)` when there is a file.
fn build(text: Option<(&str, &str)>, cli: &Cli) -> Result<Config, ConfigError> {
    let (raw, file) = match text {
        Some((text, file)) => (parse_raw(text, file)?, file),
        None => (RawConfig::default(), ""),
    };
    let src = Sources { file };
    let RawConfig {
        etcd,
        dns,
        http,
        log,
        grpc,
    } = raw;
    let etcd = etcd_config(&src, cli, etcd.unwrap_or_default())?;
    let dns = dns_config(&src, cli, dns.unwrap_or_default())?;
    let http = http_config(&src, cli, http.unwrap_or_default())?;
    let log = log_config(&src, cli, log.unwrap_or_default())?;
    let grpc = grpc_config(&src, grpc.unwrap_or_default())?;
    Ok(Config {
        etcd,
        dns,
        http,
        log,
        grpc,
    })
}

fn etcd_config(src: &Sources<'_>, cli: &Cli, raw: RawEtcd) -> Result<EtcdConfig, ConfigError> {
    let RawEtcd {
        endpoints,
        prefix,
        patterns,
        username,
        password,
        tls,
        dial_timeout,
    } = raw;

    let endpoints = list_of(
        src.list(
            "etcd.endpoints",
            ("--etcd", &cli.etcd),
            &endpoints,
            "HOST:PORT endpoints",
        )?,
        true,
        "endpoint",
        parse_endpoint,
        || vec![DEFAULT_ETCD.to_owned()],
    )?;

    let prefix = match src.scalar("etcd.prefix", None, &prefix) {
        Some(item) => item.string("a string")?.to_owned(),
        None => String::new(),
    };

    let patterns = list_of(
        src.list(
            "etcd.patterns",
            ("--pattern", &cli.pattern),
            &patterns,
            "glob patterns",
        )?,
        true,
        "pattern",
        parse_pattern,
        || vec![DEFAULT_PATTERN.to_owned()],
    )?;

    let username_item = src.scalar("etcd.username", None, &username);
    let password_item = src.scalar("etcd.password", None, &password);
    let username = match &username_item {
        Some(item) => Some(non_empty_string(item)?.to_owned()),
        None => None,
    };
    let password = match &password_item {
        // Never `item.expected(..)` here: that would print the value.
        Some(item) => match &item.value {
            RawValue::Str(s) if !s.is_empty() => Some(Secret(s.clone())),
            RawValue::Str(_) => {
                return Err(item
                    .site
                    .error("expected a non-empty string, found an empty one"));
            }
            other => {
                return Err(item.site.error(format!(
                    "expected a string (quote the password), found {}",
                    other.kind()
                )));
            }
        },
        None => None,
    };
    // etcd authenticates with the pair; one without the other would fail at
    // connect time with a far less helpful message.
    match (&username_item, &password_item) {
        (Some(item), None) => {
            return Err(item
                .site
                .error("etcd.password must be set too: etcd authentication needs both"));
        }
        (None, Some(item)) => {
            return Err(item
                .site
                .error("etcd.username must be set too: etcd authentication needs both"));
        }
        _ => {}
    }

    let tls = match tls {
        None => None,
        Some(spanned) => Some(tls_config(
            src,
            spanned.value,
            src.site("etcd.tls", spanned.referenced),
        )?),
    };

    let dial_timeout = match src.scalar("etcd.dial_timeout", None, &dial_timeout) {
        Some(item) => parse_dial_timeout(&item)?,
        None => DEFAULT_DIAL_TIMEOUT,
    };

    Ok(EtcdConfig {
        endpoints,
        prefix,
        patterns,
        username,
        password,
        tls,
        dial_timeout,
    })
}

fn tls_config(src: &Sources<'_>, raw: RawTls, site: Site) -> Result<TlsConfig, ConfigError> {
    let RawTls {
        ca_file,
        cert_file,
        key_file,
    } = raw;
    let path = |key: &str, leaf: &Leaf| -> Result<Option<PathBuf>, ConfigError> {
        match src.scalar(key, None, leaf) {
            Some(item) => Ok(Some(PathBuf::from(non_empty_string(&item)?))),
            None => Ok(None),
        }
    };
    let tls = TlsConfig {
        ca_file: path("etcd.tls.ca_file", &ca_file)?,
        cert_file: path("etcd.tls.cert_file", &cert_file)?,
        key_file: path("etcd.tls.key_file", &key_file)?,
    };
    // A client certificate is useless without its key and vice versa.
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        return Err(site.error("cert_file and key_file go together: set both or neither"));
    }
    Ok(tls)
}

fn dns_config(src: &Sources<'_>, cli: &Cli, raw: RawDns) -> Result<DnsConfig, ConfigError> {
    let RawDns {
        zone,
        listen,
        ttl,
        negative_ttl,
        max_udp_payload,
        upstream,
        allow_recursion_from,
    } = raw;

    let zone = match src.scalar(
        "dns.zone",
        cli.zone.as_deref().map(|z| ("--zone", z)),
        &zone,
    ) {
        Some(item) => {
            let text = item.string("a DNS name")?;
            parse_zone(text).map_err(|why| item.site.error(format!("{why}, found {text:?}")))?
        }
        None => DEFAULT_ZONE.to_owned(),
    };

    let listen_site_and_items = src.list(
        "dns.listen",
        ("--dns-listen", &cli.dns_listen),
        &listen,
        "ADDR:PORT addresses",
    )?;
    let listen = match listen_site_and_items {
        None => vec![default_socket(DEFAULT_DNS_LISTEN)],
        Some((site, items)) => {
            if items.is_empty() {
                return Err(site.error("expected at least one listen address, found an empty list"));
            }
            let mut addrs: Vec<SocketAddr> = Vec::with_capacity(items.len());
            for item in &items {
                let addr = parse_listen(item)?;
                // Binding the same address twice fails at startup; say so
                // here, with the line.
                if addrs.contains(&addr) {
                    return Err(item.site.error(format!("{addr} is listed twice")));
                }
                addrs.push(addr);
            }
            addrs
        }
    };

    let ttl = match src.scalar("dns.ttl", cli.ttl.as_deref().map(|t| ("--ttl", t)), &ttl) {
        Some(item) => parse_ttl(&item)?,
        None => DEFAULT_TTL,
    };
    let negative_ttl = match src.scalar("dns.negative_ttl", None, &negative_ttl) {
        Some(item) => parse_ttl(&item)?,
        None => DEFAULT_NEGATIVE_TTL,
    };
    let max_udp_payload = match src.scalar("dns.max_udp_payload", None, &max_udp_payload) {
        Some(item) => parse_max_udp_payload(&item)?,
        None => DEFAULT_MAX_UDP_PAYLOAD,
    };

    let upstream = list_of(
        src.list(
            "dns.upstream",
            ("--upstream", &cli.upstream),
            &upstream,
            "ADDR[:PORT] resolvers",
        )?,
        false,
        "upstream",
        parse_upstream,
        Vec::new,
    )?;

    let allow_recursion_from = list_of(
        src.list(
            "dns.allow_recursion_from",
            // SPEC §6 gives this key no flag: no values from the command line.
            ("", &[]),
            &allow_recursion_from,
            "CIDRs",
        )?,
        false,
        "CIDR",
        parse_cidr,
        default_allow_recursion_from,
    )?;

    Ok(DnsConfig {
        zone,
        listen,
        ttl,
        negative_ttl,
        max_udp_payload,
        upstream,
        allow_recursion_from,
    })
}

fn http_config(src: &Sources<'_>, cli: &Cli, raw: RawHttp) -> Result<HttpConfig, ConfigError> {
    let RawHttp { listen } = raw;
    let flag = cli.http_listen.as_deref().map(|l| ("--http-listen", l));
    let listen = match src.scalar("http.listen", flag, &listen) {
        Some(item) => parse_listen(&item)?,
        None => default_socket(DEFAULT_HTTP_LISTEN),
    };
    Ok(HttpConfig { listen })
}

fn log_config(src: &Sources<'_>, cli: &Cli, raw: RawLog) -> Result<LogConfig, ConfigError> {
    let RawLog { level, format } = raw;
    let flag = cli.log_level.as_deref().map(|l| ("--log-level", l));
    let level = match src.scalar("log.level", flag, &level) {
        Some(item) => parse_log_level(&item)?,
        None => DEFAULT_LOG_LEVEL.to_owned(),
    };
    let flag = cli.log_format.as_deref().map(|f| ("--log-format", f));
    let format = match src.scalar("log.format", flag, &format) {
        Some(item) => match &item.value {
            RawValue::Str(s) if s == "text" => LogFormat::Text,
            RawValue::Str(s) if s == "json" => LogFormat::Json,
            _ => return Err(item.expected("text or json")),
        },
        None => DEFAULT_LOG_FORMAT,
    };
    Ok(LogConfig { level, format })
}

fn grpc_config(src: &Sources<'_>, raw: RawGrpc) -> Result<GrpcConfig, ConfigError> {
    let RawGrpc {
        service_config,
        overrides,
    } = raw;
    let service_config = match src.scalar("grpc.service_config", None, &service_config) {
        Some(item) => parse_service_config(&item)?,
        None => Some(default_service_config()),
    };
    // `overrides:` left empty (null) is no overrides, like `[]`.
    let entries = overrides.and_then(|list| list.value).unwrap_or_default();
    let mut overrides = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let key = format!("grpc.overrides[{i}]");
        let RawGrpcOverride {
            pattern,
            service_config,
        } = entry.value;
        let required = |field: &str| {
            src.site(&format!("{key}.{field}"), entry.referenced)
                .error("required in every override")
        };
        let pattern = src
            .scalar(&format!("{key}.pattern"), None, &pattern)
            .ok_or_else(|| required("pattern"))?;
        let service_config = src
            .scalar(&format!("{key}.service_config"), None, &service_config)
            .ok_or_else(|| required("service_config"))?;
        overrides.push(GrpcOverride {
            pattern: parse_pattern(&pattern)?,
            service_config: parse_service_config(&service_config)?,
        });
    }
    Ok(GrpcConfig {
        service_config,
        overrides,
    })
}

// ---------------------------------------------------------------------------
// Value parsers
// ---------------------------------------------------------------------------

fn default_service_config() -> ServiceConfig {
    // A compile-time constant, checked by `defaults_are_valid`.
    ServiceConfig::parse(DEFAULT_SERVICE_CONFIG).expect("the default service config is valid")
}

/// A gRPC service config as a JSON string, or `off` for no TXT record.
fn parse_service_config(item: &Item) -> Result<Option<ServiceConfig>, ConfigError> {
    let text = match &item.value {
        RawValue::Str(text) => text,
        RawValue::Map => {
            return Err(item.site.error(
                "expected the service config as a JSON string: quote it (service_config: '{\"loadBalancingConfig\": [{\"round_robin\": {}}]}'), or off",
            ));
        }
        _ => return Err(item.expected("a JSON service config in a string, or off")),
    };
    if text.trim() == SERVICE_CONFIG_OFF {
        return Ok(None);
    }
    ServiceConfig::parse(text).map(Some).map_err(|why| {
        item.site
            .error(format!("invalid gRPC service config: {why}"))
    })
}

fn default_socket(text: &str) -> SocketAddr {
    // Only called with the DEFAULT_* constants, which are valid socket
    // addresses (`defaults_are_valid` checks them).
    text.parse().expect("default listen addresses are valid")
}

fn default_allow_recursion_from() -> Vec<IpNet> {
    DEFAULT_ALLOW_RECURSION_FROM
        .iter()
        // Compile-time constants, checked by `defaults_are_valid`.
        .map(|net| net.parse().expect("default CIDRs are valid"))
        .collect()
}

fn non_empty_string(item: &Item) -> Result<&str, ConfigError> {
    match &item.value {
        RawValue::Str(s) if !s.is_empty() => Ok(s),
        _ => Err(item.expected("a non-empty string")),
    }
}

/// An integer, given as a YAML integer or (from a flag, or quoted) as text.
fn integer(item: &Item) -> Option<i128> {
    match &item.value {
        RawValue::Int(n) => Some(*n),
        RawValue::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn parse_ttl(item: &Item) -> Result<u32, ConfigError> {
    integer(item)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| TTL_RANGE.contains(n))
        .ok_or_else(|| {
            item.expected(&format!(
                "an integer number of seconds in {}..={}",
                TTL_RANGE.start(),
                TTL_RANGE.end()
            ))
        })
}

fn parse_max_udp_payload(item: &Item) -> Result<u16, ConfigError> {
    integer(item)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| MAX_UDP_PAYLOAD_RANGE.contains(n))
        .ok_or_else(|| {
            item.expected(&format!(
                "an integer number of octets in {}..={}",
                MAX_UDP_PAYLOAD_RANGE.start(),
                MAX_UDP_PAYLOAD_RANGE.end()
            ))
        })
}

/// `dial_timeout`: integer seconds, or a whole number with a unit: `500ms`,
/// `5s`, `1m`.
fn parse_dial_timeout(item: &Item) -> Result<Duration, ConfigError> {
    let parsed = match &item.value {
        RawValue::Int(n) => u64::try_from(*n).ok().map(Duration::from_secs),
        RawValue::Str(s) => parse_duration(s),
        _ => None,
    };
    parsed
        .filter(|d| (MIN_DIAL_TIMEOUT..=MAX_DIAL_TIMEOUT).contains(d))
        .ok_or_else(|| {
            item.expected(&format!(
                "a duration from {} to {}: integer seconds or a whole number with ms, s or m (500ms, 5s, 1m)",
                format_duration(MIN_DIAL_TIMEOUT),
                format_duration(MAX_DIAL_TIMEOUT)
            ))
        })
}

/// Parses `500ms`, `5s`, `1m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return None;
    }
    let n: u64 = number.parse().ok()?;
    match unit.trim() {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

/// An etcd endpoint: `HOST:PORT`, IPv6 in brackets, no scheme (TLS is set by
/// `etcd.tls`, SPEC §6).
fn parse_endpoint(item: &Item) -> Result<String, ConfigError> {
    const WHAT: &str = "HOST:PORT (e.g. 127.0.0.1:2379, etcd-0.etcd:2379, [::1]:2379)";
    let text = item.string(WHAT)?;
    let problem = endpoint_problem(text);
    match problem {
        None => Ok(text.to_owned()),
        Some(why) => Err(item.site.error(format!(
            "expected {WHAT}, found {text:?}{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            }
        ))),
    }
}

/// Why `text` is not `HOST:PORT`, or `None` when it is. An empty reason means
/// "just not that shape".
fn endpoint_problem(text: &str) -> Option<&'static str> {
    if text.contains("://") {
        return Some("no scheme: TLS is turned on by etcd.tls");
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Some("the port is missing");
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Some("the port must be 1..=65535"),
        Ok(_) => {}
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ok = inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok());
        return if ok {
            None
        } else {
            Some("a bracketed host must be an IPv6 address")
        };
    }
    if host.contains(':') {
        return Some("write an IPv6 address in brackets: [::1]:2379");
    }
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if host_ok { None } else { Some("bad host") }
}

fn parse_pattern(item: &Item) -> Result<String, ConfigError> {
    let text = item.string("a glob pattern such as *.rpc")?;
    if text.is_empty() {
        return Err(item.expected("a non-empty glob pattern such as *.rpc"));
    }
    // Patterns match the service key, which is the part of the etcd key
    // before its first `/` (SPEC §2): a `/` could never match.
    if text.contains('/') {
        return Err(item.site.error(format!(
            "a pattern matches the service key, the part of the etcd key before its first `/`, so it cannot contain `/`, found {text:?}"
        )));
    }
    Ok(text.to_owned())
}

/// The zone apex: a DNS name (labels of 1..=63 letters, digits, `-`, `_`;
/// at most 253 octets), returned lower-cased and absolute.
pub fn parse_zone(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err("expected a DNS name such as svc.local. (not the root)".to_owned());
    }
    if name.len() > 253 {
        return Err("expected a DNS name of at most 253 octets".to_owned());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("expected a DNS name without empty labels".to_owned());
        }
        if label.len() > 63 {
            return Err("expected DNS labels of at most 63 octets".to_owned());
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(
                "expected a DNS name made of letters, digits, `-` and `_` between dots".to_owned(),
            );
        }
    }
    Ok(format!("{name}."))
}

/// A listen address: an IP address and a port (port 0 picks a free port,
/// which the tests use).
fn parse_listen(item: &Item) -> Result<SocketAddr, ConfigError> {
    const WHAT: &str = "ADDR:PORT with an IP address (e.g. 127.0.0.1:5353 or [::1]:5353)";
    let text = item.string(WHAT)?;
    text.parse().map_err(|_| item.expected(WHAT))
}

/// An upstream resolver: an IP address with an optional port (default 53).
/// No host names: resolving the resolver would need a resolver.
fn parse_upstream(item: &Item) -> Result<SocketAddr, ConfigError> {
    const WHAT: &str =
        "an IP address with an optional port (e.g. 10.0.0.2, 10.0.0.2:53, [fd00::2]:53)";
    let text = item.string(WHAT)?;
    let addr = if let Ok(addr) = text.parse::<SocketAddr>() {
        addr
    } else if let Ok(ip) = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text)
        .parse::<IpAddr>()
    {
        SocketAddr::new(ip, DEFAULT_UPSTREAM_PORT)
    } else {
        return Err(item.expected(WHAT));
    };
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return Err(item.expected(WHAT));
    }
    Ok(addr)
}

/// A CIDR (`10.0.0.0/8`) or a single address (a host route). Host bits are
/// cleared: `10.1.2.3/8` means `10.0.0.0/8`.
fn parse_cidr(item: &Item) -> Result<IpNet, ConfigError> {
    const WHAT: &str = "a CIDR such as 10.0.0.0/8 or fd00::/8, or an IP address";
    let text = item.string(WHAT)?;
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| item.expected(WHAT))
}

fn parse_log_level(item: &Item) -> Result<String, ConfigError> {
    const WHAT: &str = "a tracing filter directive such as info, warn or rpcdns=debug,info";
    let text = item.string(WHAT)?;
    if text.trim().is_empty() {
        return Err(item.expected(WHAT));
    }
    match tracing_subscriber::EnvFilter::try_new(text) {
        Ok(_) => Ok(text.to_owned()),
        Err(err) => Err(item
            .site
            .error(format!("expected {WHAT}, found {text:?} ({err})"))),
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "test.yaml";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_str(text, FILE)
    }

    fn err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(config) => panic!("expected an error for:\n{text}\ngot {config:?}"),
            Err(e) => e,
        }
    }

    fn cli(args: &[&str]) -> Cli {
        let mut argv = vec!["rpcdns"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli,
            Err(e) => panic!("bad test command line {args:?}: {e}"),
        }
    }

    fn config_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
    }

    fn config_files() -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(config_dir())
            .expect("config/ exists")
            .map(|entry| entry.expect("readable config/ entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "config/ holds no YAML file");
        files
    }

    // --- defaults ----------------------------------------------------------

    #[test]
    fn defaults_are_valid() {
        let config = Config::default();
        assert_eq!(config.etcd.endpoints, vec![DEFAULT_ETCD]);
        assert_eq!(config.etcd.prefix, "");
        assert_eq!(config.etcd.patterns, vec![DEFAULT_PATTERN]);
        assert_eq!(config.etcd.username, None);
        assert_eq!(config.etcd.password, None);
        assert_eq!(config.etcd.tls, None);
        assert_eq!(config.etcd.dial_timeout, Duration::from_secs(5));
        assert_eq!(config.dns.zone, "svc.local.");
        assert_eq!(config.dns.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(config.dns.ttl, 5);
        assert_eq!(config.dns.negative_ttl, 5);
        assert_eq!(config.dns.max_udp_payload, 1232);
        assert!(config.dns.upstream.is_empty());
        assert_eq!(config.dns.allow_recursion_from.len(), 6);
        assert!(
            config
                .dns
                .allow_recursion_from
                .iter()
                .any(|n| n.contains(&"192.168.1.1".parse::<IpAddr>().unwrap()))
        );
        assert!(
            !config
                .dns
                .allow_recursion_from
                .iter()
                .any(|n| n.contains(&"8.8.8.8".parse::<IpAddr>().unwrap()))
        );
        assert_eq!(config.http.listen, "127.0.0.1:9153".parse().unwrap());
        assert_eq!(config.log.level, "info");
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(
            config.grpc.service_config.as_ref().map(ServiceConfig::json),
            Some(DEFAULT_SERVICE_CONFIG)
        );
        assert!(config.grpc.overrides.is_empty());
        // Every default passes the same validation as user input.
        assert_eq!(parse("").unwrap(), config);
        assert_eq!(parse("# only a comment\n").unwrap(), config);
        assert_eq!(parse("etcd:\ndns:\n").unwrap(), config);
    }

    // --- the files in config/ ----------------------------------------------

    #[test]
    fn every_file_in_config_dir_parses() {
        for path in config_files() {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = Config::from_yaml_str(&text, &path.display().to_string()) {
                panic!("{} does not parse: {e}", path.display());
            }
        }
    }

    #[test]
    fn example_config_shows_the_defaults() {
        let text = std::fs::read_to_string(config_dir().join("rpcdns.yaml")).unwrap();
        assert_eq!(parse(&text).unwrap(), Config::default());
    }

    /// Keys shown commented out in the example.
    const OPTIONAL_KEYS: &[&str] = &[
        "username:",
        "password:",
        "tls:",
        "ca_file:",
        "cert_file:",
        "key_file:",
    ];

    #[test]
    fn example_config_optional_keys_parse_when_uncommented() {
        let text = std::fs::read_to_string(config_dir().join("rpcdns.yaml")).unwrap();
        let mut uncommented = 0;
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                let indent = line.len() - line.trim_start().len();
                let rest = &line[indent..];
                match rest.strip_prefix("# ") {
                    Some(body)
                        if OPTIONAL_KEYS
                            .iter()
                            .any(|k| body.trim_start().starts_with(k)) =>
                    {
                        uncommented += 1;
                        format!("{}{body}", &line[..indent])
                    }
                    _ => line.to_owned(),
                }
            })
            .collect();
        assert_eq!(
            uncommented,
            OPTIONAL_KEYS.len(),
            "every optional key is shown"
        );
        let config = parse(&lines.join("\n")).unwrap();
        assert!(config.etcd.username.is_some());
        assert!(config.etcd.password.is_some());
        let tls = config.etcd.tls.expect("tls set");
        assert!(tls.ca_file.is_some() && tls.cert_file.is_some() && tls.key_file.is_some());
    }

    #[test]
    fn every_key_of_every_section_appears_in_the_example() {
        let text = std::fs::read_to_string(config_dir().join("rpcdns.yaml")).unwrap();
        for key in ROOT_KEYS
            .iter()
            .chain(ETCD_KEYS)
            .chain(TLS_KEYS)
            .chain(DNS_KEYS)
            .chain(HTTP_KEYS)
            .chain(LOG_KEYS)
            .chain(GRPC_KEYS)
            .chain(GRPC_OVERRIDE_KEYS)
        {
            assert!(text.contains(&format!("{key}:")), "{key} is not documented");
        }
    }

    // --- unknown keys ------------------------------------------------------

    /// Inserts `bogus_key: 1` as the first key of `section` (nested one level
    /// deeper than the section header) and returns the text and its line.
    fn with_unknown_key(text: &str, section: &str) -> (String, u64) {
        let mut out = Vec::new();
        let mut line_no = 0;
        let header = format!("{section}:");
        let depth = section.matches('.').count();
        let header_last = header.rsplit('.').next().unwrap().to_owned();
        for line in text.lines() {
            out.push(line.to_owned());
            let indent = line.len() - line.trim_start().len();
            let matches = if depth == 0 {
                indent == 0 && line.trim_end() == header
            } else {
                indent == 2 && line.trim_end() == format!("  {header_last}")
            };
            if matches && line_no == 0 {
                out.push(format!("{}bogus_key: 1", " ".repeat(indent + 2)));
                line_no = out.len() as u64;
            }
        }
        assert!(line_no > 0, "section {section} not found");
        (out.join("\n"), line_no)
    }

    #[test]
    fn unknown_key_in_each_section_is_rejected_with_key_and_line() {
        let base = "etcd:\n  prefix: \"\"\n  tls:\n    ca_file: ca.pem\ndns:\n  ttl: 5\nhttp:\n  listen: 127.0.0.1:9153\nlog:\n  level: info\n";
        for section in ["etcd", "etcd.tls", "dns", "http", "log"] {
            let (text, line) = with_unknown_key(base, section);
            let e = err(&text);
            let key = format!("{section}.bogus_key");
            assert_eq!(e.key(), Some(key.as_str()), "{e}");
            assert_eq!(e.line(), Some(line), "{e}");
            let shown = e.to_string();
            assert!(shown.starts_with(&format!("{FILE}:{line}:")), "{shown}");
            assert!(shown.contains("unknown key (expected one of: "), "{shown}");
        }
        let e = err("dns:\n  ttl: 5\nbogus_key: 1\n");
        assert_eq!(e.key(), Some("bogus_key"));
        assert_eq!(e.line(), Some(3));
        assert!(e.to_string().contains("etcd, dns, http, log"), "{e}");
    }

    #[test]
    fn unknown_key_in_every_config_file_is_rejected() {
        for path in config_files() {
            let text = std::fs::read_to_string(&path).unwrap();
            for section in ["etcd", "dns", "http", "log"] {
                let (text, line) = with_unknown_key(&text, section);
                let e = Config::from_yaml_str(&text, "x.yaml").unwrap_err();
                assert_eq!(
                    e.key(),
                    Some(format!("{section}.bogus_key").as_str()),
                    "{e}"
                );
                assert_eq!(e.line(), Some(line), "{}: {e}", path.display());
            }
        }
    }

    #[test]
    fn misspelled_key_message_reads_well() {
        let e = err("# comment\ndns:\n  zone: svc.local.\n  tll: 5\n");
        assert_eq!(
            e.to_string(),
            "test.yaml:4:3: dns.tll: unknown key (expected one of: zone, listen, ttl, \
             negative_ttl, max_udp_payload, upstream, allow_recursion_from)"
        );
    }

    // --- type and value errors ---------------------------------------------

    /// Asserts that `yaml` is rejected at `key` on `line`, mentioning `needle`.
    fn rejects(yaml: &str, key: &str, line: u64, needle: &str) {
        let e = err(yaml);
        assert_eq!(e.key(), Some(key), "{yaml}\n→ {e}");
        assert_eq!(e.line(), Some(line), "{yaml}\n→ {e}");
        assert!(
            e.to_string().contains(needle),
            "{yaml}\n→ {e}\nmissing {needle:?}"
        );
    }

    #[test]
    fn ttl_errors_name_key_line_and_range() {
        let e = err("dns:\n  zone: svc.local.\n  ttl: abc\n");
        assert_eq!(
            e.to_string(),
            "test.yaml:3:8: dns.ttl: expected an integer number of seconds in 1..=86400, found \"abc\""
        );
        rejects("dns:\n  ttl: 0\n", "dns.ttl", 2, "found 0");
        rejects("dns:\n  ttl: 86401\n", "dns.ttl", 2, "1..=86400");
        rejects("dns:\n  ttl: -1\n", "dns.ttl", 2, "found -1");
        rejects("dns:\n  ttl: 1.5\n", "dns.ttl", 2, "found 1.5");
        rejects("dns:\n  ttl: [1]\n", "dns.ttl", 2, "found a list");
        rejects(
            "dns:\n  negative_ttl: 0\n",
            "dns.negative_ttl",
            2,
            "1..=86400",
        );
        assert_eq!(parse("dns:\n  ttl: 86400\n").unwrap().dns.ttl, 86400);
        assert_eq!(parse("dns:\n  ttl: \"30\"\n").unwrap().dns.ttl, 30);
    }

    #[test]
    fn max_udp_payload_range() {
        rejects(
            "dns:\n  max_udp_payload: 511\n",
            "dns.max_udp_payload",
            2,
            "512..=4096",
        );
        rejects(
            "dns:\n  max_udp_payload: 4097\n",
            "dns.max_udp_payload",
            2,
            "512..=4096",
        );
        assert_eq!(
            parse("dns:\n  max_udp_payload: 512\n")
                .unwrap()
                .dns
                .max_udp_payload,
            512
        );
        assert_eq!(
            parse("dns:\n  max_udp_payload: 4096\n")
                .unwrap()
                .dns
                .max_udp_payload,
            4096
        );
    }

    #[test]
    fn zone_is_validated_lowercased_and_made_absolute() {
        assert_eq!(
            parse("dns:\n  zone: Svc.Internal\n").unwrap().dns.zone,
            "svc.internal."
        );
        assert_eq!(
            parse("dns:\n  zone: a_b.c-d.\n").unwrap().dns.zone,
            "a_b.c-d."
        );
        rejects(
            "dns:\n  zone: \"svc..local\"\n",
            "dns.zone",
            2,
            "empty labels",
        );
        rejects("dns:\n  zone: \".\"\n", "dns.zone", 2, "not the root");
        rejects(
            "dns:\n  zone: \"svc local\"\n",
            "dns.zone",
            2,
            "letters, digits",
        );
        let long_label = "a".repeat(64);
        rejects(
            &format!("dns:\n  zone: {long_label}.local\n"),
            "dns.zone",
            2,
            "63",
        );
        let long_name = vec!["abcdefgh"; 29].join(".");
        assert!(long_name.len() > 253);
        rejects(
            &format!("dns:\n  zone: {long_name}\n"),
            "dns.zone",
            2,
            "253",
        );
        rejects(
            "dns:\n  zone: 5\n",
            "dns.zone",
            2,
            "expected a DNS name, found 5",
        );
    }

    #[test]
    fn endpoints_are_host_port_without_scheme() {
        let config = parse("etcd:\n  endpoints:\n    - etcd-0.etcd:2379\n    - \"[::1]:2379\"\n    - 10.0.0.1:2379\n").unwrap();
        assert_eq!(
            config.etcd.endpoints,
            vec!["etcd-0.etcd:2379", "[::1]:2379", "10.0.0.1:2379"]
        );
        rejects(
            "etcd:\n  endpoints:\n    - 10.0.0.1:2379\n    - etcd-1\n",
            "etcd.endpoints[1]",
            4,
            "the port is missing",
        );
        rejects(
            "etcd:\n  endpoints: [\"http://e:2379\"]\n",
            "etcd.endpoints[0]",
            2,
            "no scheme",
        );
        rejects(
            "etcd:\n  endpoints: [\"::1:2379\"]\n",
            "etcd.endpoints[0]",
            2,
            "brackets",
        );
        rejects(
            "etcd:\n  endpoints: [\"e:0\"]\n",
            "etcd.endpoints[0]",
            2,
            "1..=65535",
        );
        rejects(
            "etcd:\n  endpoints: [\":2379\"]\n",
            "etcd.endpoints[0]",
            2,
            "bad host",
        );
        rejects(
            "etcd:\n  endpoints: []\n",
            "etcd.endpoints",
            2,
            "at least one endpoint",
        );
        rejects(
            "etcd:\n  endpoints: 127.0.0.1:2379\n",
            "etcd.endpoints",
            2,
            "expected a YAML list",
        );
    }

    #[test]
    fn patterns_must_be_non_empty_and_slash_free() {
        rejects(
            "etcd:\n  patterns:\n    - \"\"\n",
            "etcd.patterns[0]",
            3,
            "non-empty",
        );
        rejects(
            "etcd:\n  patterns: []\n",
            "etcd.patterns",
            2,
            "at least one pattern",
        );
        rejects(
            "etcd:\n  patterns: [\"a/*\"]\n",
            "etcd.patterns[0]",
            2,
            "cannot contain `/`",
        );
        let config = parse("etcd:\n  patterns: [\"*.rpc\", \"*.api\"]\n").unwrap();
        assert_eq!(config.etcd.patterns, vec!["*.rpc", "*.api"]);
    }

    #[test]
    fn listen_addresses_are_validated() {
        rejects(
            "dns:\n  listen:\n    - localhost:53\n",
            "dns.listen[0]",
            3,
            "ADDR:PORT",
        );
        rejects(
            "dns:\n  listen:\n    - 127.0.0.1\n",
            "dns.listen[0]",
            3,
            "ADDR:PORT",
        );
        rejects(
            "dns:\n  listen: []\n",
            "dns.listen",
            2,
            "at least one listen address",
        );
        rejects(
            "dns:\n  listen: [\"127.0.0.1:53\", \"127.0.0.1:53\"]\n",
            "dns.listen[1]",
            2,
            "listed twice",
        );
        rejects(
            "http:\n  listen: \"[::1]\"\n",
            "http.listen",
            2,
            "ADDR:PORT",
        );
        let config = parse(
            "dns:\n  listen: [\"0.0.0.0:53\", \"[::]:53\"]\nhttp:\n  listen: \"0.0.0.0:0\"\n",
        )
        .unwrap();
        assert_eq!(config.dns.listen.len(), 2);
        assert_eq!(config.http.listen.port(), 0);
    }

    #[test]
    fn upstream_gets_default_port() {
        let config = parse(
            "dns:\n  upstream: [\"10.0.0.2\", \"10.0.0.3:5300\", \"fd00::2\", \"[fd00::3]\", \"[fd00::4]:54\"]\n",
        )
        .unwrap();
        let expect: Vec<SocketAddr> = [
            "10.0.0.2:53",
            "10.0.0.3:5300",
            "[fd00::2]:53",
            "[fd00::3]:53",
            "[fd00::4]:54",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(config.dns.upstream, expect);
        rejects(
            "dns:\n  upstream: [\"dns.google\"]\n",
            "dns.upstream[0]",
            2,
            "IP address",
        );
        rejects(
            "dns:\n  upstream: [\"10.0.0.2:0\"]\n",
            "dns.upstream[0]",
            2,
            "IP address",
        );
        let config = cli(&["--upstream", "1.1.1.1"]);
        assert_eq!(
            build(None, &config).unwrap().dns.upstream,
            vec!["1.1.1.1:53".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn allow_recursion_from_takes_cidrs() {
        let config = parse(
            "dns:\n  allow_recursion_from: [\"10.1.2.3/8\", \"192.0.2.1\", \"2001:db8::/32\"]\n",
        )
        .unwrap();
        let nets: Vec<String> = config
            .dns
            .allow_recursion_from
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, vec!["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"]);
        rejects(
            "dns:\n  allow_recursion_from:\n    - 10.0.0.0/8\n    - 10.0.0.0/33\n",
            "dns.allow_recursion_from[1]",
            4,
            "CIDR",
        );
        // An empty list is allowed: nobody may recurse.
        assert!(
            parse("dns:\n  allow_recursion_from: []\n")
                .unwrap()
                .dns
                .allow_recursion_from
                .is_empty()
        );
    }

    #[test]
    fn log_level_and_format_are_validated() {
        rejects(
            "log:\n  level: \"info,=\"\n",
            "log.level",
            2,
            "tracing filter directive",
        );
        rejects(
            "log:\n  level: \"\"\n",
            "log.level",
            2,
            "tracing filter directive",
        );
        rejects(
            "log:\n  format: xml\n",
            "log.format",
            2,
            "expected text or json, found \"xml\"",
        );
        let config = parse("log:\n  level: rpcdns=debug,warn\n  format: json\n").unwrap();
        assert_eq!(config.log.level, "rpcdns=debug,warn");
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn dial_timeout_takes_seconds_or_durations() {
        let timeout =
            |v: &str| parse(&format!("etcd:\n  dial_timeout: {v}\n")).map(|c| c.etcd.dial_timeout);
        assert_eq!(timeout("3").unwrap(), Duration::from_secs(3));
        assert_eq!(timeout("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(timeout("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(timeout("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(timeout("\"2s\"").unwrap(), Duration::from_secs(2));
        for bad in ["0", "50ms", "6m", "1.5", "5x", "s", "-1", "1h"] {
            let e = timeout(bad).unwrap_err();
            assert_eq!(e.key(), Some("etcd.dial_timeout"), "{bad}: {e}");
            assert!(e.to_string().contains("500ms, 5s, 1m"), "{e}");
        }
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("ms"), None);
    }

    #[test]
    fn tls_and_credentials() {
        let config = parse(
            "etcd:\n  username: root\n  password: hunter2\n  tls:\n    ca_file: /etc/ca.pem\n",
        )
        .unwrap();
        assert_eq!(config.etcd.username.as_deref(), Some("root"));
        assert_eq!(config.etcd.password, Some(Secret("hunter2".to_owned())));
        assert_eq!(
            config.etcd.tls.unwrap().ca_file,
            Some(PathBuf::from("/etc/ca.pem"))
        );
        // `tls: {}` turns TLS on with the system roots; no `tls` key leaves it off.
        assert!(parse("etcd:\n  tls: {}\n").unwrap().etcd.tls.is_some());
        rejects(
            "etcd:\n  tls:\n    cert_file: c.pem\n",
            "etcd.tls",
            3,
            "cert_file and key_file go together",
        );
        rejects(
            "etcd:\n  tls:\n    ca_file: \"\"\n",
            "etcd.tls.ca_file",
            3,
            "non-empty",
        );
        rejects(
            "etcd:\n  username: root\n",
            "etcd.username",
            2,
            "etcd.password must be set too",
        );
        rejects(
            "etcd:\n  password: x\n",
            "etcd.password",
            2,
            "etcd.username must be set too",
        );
        rejects("etcd:\n  tls: 5\n", "etcd.tls", 2, "expected a mapping");
    }

    #[test]
    fn shape_errors_carry_the_line() {
        rejects(
            "dns:\n  zone: a.\netcd: 5\n",
            "etcd",
            3,
            "expected a mapping",
        );
        rejects("dns: [1]\n", "dns", 1, "expected a mapping");
        rejects(
            "log:\n  # comment\n\n  level: info\nhttp: x\n",
            "http",
            5,
            "expected a mapping",
        );
        rejects("dns:\n  ttl: 5\n  ttl: 6\n", "dns.ttl", 3, "duplicate");
        let e = err("dns:\n  zone: [\n");
        assert!(e.line().is_some(), "{e}");
        assert!(e.to_string().starts_with("test.yaml:"), "{e}");
        let e = err("just text\n");
        assert!(e.to_string().contains("test.yaml:1:1: "), "{e}");
        assert!(e.to_string().contains("expected a mapping"), "{e}");
    }

    // --- secrets -----------------------------------------------------------

    #[test]
    fn password_never_in_debug_or_errors() {
        const PW: &str = "s3cr3t-pa55";
        let config = parse(&format!("etcd:\n  username: root\n  password: {PW}\n")).unwrap();
        assert!(!format!("{config:?}").contains(PW));
        assert!(!config.to_redacted_yaml().contains(PW));
        // Errors around the password: wrong type, missing username, a later
        // error in the same file, a syntax error on its line.
        for text in [
            "etcd:\n  username: root\n  password: 123456\n".to_owned(),
            format!("etcd:\n  password: {PW}\n"),
            format!("etcd:\n  username: root\n  password: {PW}\n  bogus: 1\n"),
            format!("etcd:\n  username: root\n  password: {PW}\n  password: {PW}\n"),
            format!("etcd:\n  username: root\n  password: [{PW}\n"),
            format!("etcd:\n  username: root\n  password: \"{PW}\n"),
        ] {
            let e = err(&text);
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(PW), "{shown}");
            assert!(!shown.contains("123456"), "{shown}");
        }
        rejects(
            "etcd:\n  username: root\n  password: 123456\n",
            "etcd.password",
            3,
            "quote the password",
        );
    }

    // --- command line ------------------------------------------------------

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "etcd:\n  endpoints: [\"a:1\", \"b:2\"]\n  patterns: [\"*.rpc\"]\ndns:\n  zone: file.\n  ttl: 7\n  negative_ttl: 9\n  listen: [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n  upstream: [\"10.0.0.1\"]\nhttp:\n  listen: 127.0.0.1:3\nlog:\n  level: debug\n  format: json\n",
        )
        .unwrap();
        let path = path.to_str().unwrap();

        let from_file = load(&cli(&["--config", path])).unwrap();
        assert_eq!(from_file.dns.ttl, 7);
        assert_eq!(from_file.etcd.endpoints, vec!["a:1", "b:2"]);

        let config = load(&cli(&[
            "--config",
            path,
            "--etcd",
            "x:1,y:2",
            "--etcd",
            "z:3",
            "--zone",
            "Flag",
            "--ttl",
            "11",
            "--dns-listen",
            "127.0.0.1:9",
            "--http-listen",
            "127.0.0.1:8",
            "--pattern",
            "*.api",
            "--pattern",
            "*.svc",
            "--upstream",
            "10.9.9.9:5353",
            "--log-level",
            "warn",
            "--log-format",
            "text",
        ]))
        .unwrap();
        // Lists are replaced, never merged.
        assert_eq!(config.etcd.endpoints, vec!["x:1", "y:2", "z:3"]);
        assert_eq!(config.etcd.patterns, vec!["*.api", "*.svc"]);
        assert_eq!(config.dns.listen, vec!["127.0.0.1:9".parse().unwrap()]);
        assert_eq!(config.dns.upstream, vec!["10.9.9.9:5353".parse().unwrap()]);
        assert_eq!(config.dns.zone, "flag.");
        assert_eq!(config.dns.ttl, 11);
        // No flag for negative_ttl: the file's value stays.
        assert_eq!(config.dns.negative_ttl, 9);
        assert_eq!(config.http.listen, "127.0.0.1:8".parse().unwrap());
        assert_eq!(config.log.level, "warn");
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn flags_without_file_replace_defaults() {
        let config = build(
            None,
            &cli(&[
                "--pattern",
                "*.api",
                "--dns-listen",
                "127.0.0.1:0",
                "--dns-listen",
                "[::1]:0",
            ]),
        )
        .unwrap();
        assert_eq!(config.etcd.patterns, vec!["*.api"]);
        assert_eq!(config.dns.listen.len(), 2);
        assert_eq!(config.etcd.endpoints, vec![DEFAULT_ETCD]);
    }

    #[test]
    fn flag_errors_name_the_flag() {
        let e = build(None, &cli(&["--ttl", "abc"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--ttl: expected an integer number of seconds in 1..=86400, found \"abc\""
        );
        let cases: &[(&[&str], &str)] = &[
            (&["--etcd", "http://x:1"], "--etcd"),
            (&["--zone", "a..b"], "--zone"),
            (&["--dns-listen", "nope"], "--dns-listen"),
            (&["--http-listen", "nope"], "--http-listen"),
            (&["--pattern", ""], "--pattern"),
            (&["--upstream", "nope"], "--upstream"),
            (&["--log-level", "info,="], "--log-level"),
            (&["--log-format", "xml"], "--log-format"),
        ];
        for (args, flag) in cases {
            let e = build(None, &cli(args)).unwrap_err();
            assert_eq!(e.flag(), Some(*flag), "{e}");
            assert!(
                e.to_string().starts_with(&format!("{flag}: expected")),
                "{e}"
            );
        }
        // A flag beats a bad file value: the file's value is never looked at.
        let config = build(Some(("dns:\n  ttl: 5\n", FILE)), &cli(&["--ttl", "6"])).unwrap();
        assert_eq!(config.dns.ttl, 6);
    }

    #[test]
    fn check_config_subcommand_takes_a_file() {
        let cli = cli(&["check-config", "some.yaml"]);
        assert!(
            matches!(&cli.command, Some(Command::CheckConfig { file }) if file == Path::new("some.yaml"))
        );
        assert!(Cli::try_parse_from(["rpcdns", "--ttl", "5", "check-config", "x"]).is_err());
        let e = load(&cli).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert_eq!(e.to_string(), "failed to read config file some.yaml");
    }

    #[test]
    fn grpc_service_configs_are_json_strings_or_off() {
        let config = parse(
            "grpc:\n  service_config: |\n    {\"loadBalancingConfig\": [\n      {\"round_robin\": {}}]}\n  overrides:\n    - pattern: \"legacy.*\"\n      service_config: off\n    - pattern: pay.rpc\n      service_config: '{\"loadBalancingPolicy\": \"pick_first\"}'\n",
        )
        .unwrap();
        assert_eq!(
            config.grpc.service_config.as_ref().map(ServiceConfig::json),
            Some(DEFAULT_SERVICE_CONFIG),
            "a block scalar, made compact"
        );
        assert_eq!(config.grpc.overrides.len(), 2);
        assert_eq!(config.grpc.overrides[0].pattern, "legacy.*");
        assert_eq!(config.grpc.overrides[0].service_config, None);
        assert_eq!(
            config.grpc.overrides[1]
                .service_config
                .as_ref()
                .map(ServiceConfig::json),
            Some(r#"{"loadBalancingPolicy":"pick_first"}"#)
        );
        let off = parse("grpc:\n  service_config: off\n  overrides: []\n").unwrap();
        assert_eq!(off.grpc.service_config, None);
        assert!(off.grpc.overrides.is_empty());
    }

    #[test]
    fn bad_grpc_service_configs_name_key_and_line() {
        rejects(
            "dns:\n  ttl: 5\ngrpc:\n  service_config: '{\"loadBalancingConfig\": [{\"rr\": {}}]}'\n",
            "grpc.service_config",
            4,
            "invalid gRPC service config: loadBalancingConfig: none of [\"rr\"]",
        );
        rejects(
            "grpc:\n  service_config: '{\"loadBalancingConfig\": '\n",
            "grpc.service_config",
            2,
            "not valid JSON",
        );
        rejects(
            "grpc:\n  service_config: {\"loadBalancingConfig\": [{\"round_robin\": {}}]}\n",
            "grpc.service_config",
            2,
            "quote it",
        );
        rejects(
            "grpc:\n  service_config: 5\n",
            "grpc.service_config",
            2,
            "expected a JSON service config in a string, or off, found 5",
        );
        rejects(
            "grpc:\n  overrides:\n    - pattern: a.rpc\n      service_config: off\n    - pattern: b/rpc\n      service_config: off\n",
            "grpc.overrides[1].pattern",
            5,
            "cannot contain `/`",
        );
        rejects(
            "grpc:\n  overrides:\n    - pattern: a.rpc\n",
            "grpc.overrides[0].service_config",
            3,
            "required in every override",
        );
        rejects(
            "grpc:\n  overrides:\n    - pattern: a.rpc\n      service_config: '[]'\n",
            "grpc.overrides[0].service_config",
            4,
            "expected a JSON object, found a list",
        );
        let e = err("grpc:\n  overrides:\n    - pattern: a.rpc\n      servce_config: off\n");
        assert_eq!(e.line(), Some(4), "{e}");
        assert!(e.to_string().contains("servce_config"), "{e}");
        assert!(e.to_string().contains("unknown key"), "{e}");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let e = load(&cli(&["--config", "/nonexistent/rpcdns.yaml"])).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/rpcdns.yaml"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }

    // --- check-config output -----------------------------------------------

    #[test]
    fn redacted_yaml_round_trips_and_hides_the_password() {
        let text = "etcd:\n  endpoints: [\"a:1\"]\n  prefix: \"pre\\\"fix\"\n  username: root\n  password: hunter2\n  tls:\n    ca_file: ca.pem\n    cert_file: c.pem\n    key_file: k.pem\n  dial_timeout: 1500ms\ndns:\n  zone: x.\n  upstream: [\"10.0.0.1\"]\n  allow_recursion_from: []\nlog:\n  format: json\ngrpc:\n  service_config: off\n  overrides:\n    - pattern: \"pay.*\"\n      service_config: '{\"loadBalancingPolicy\": \"round_robin\"}'\n    - pattern: x.rpc\n      service_config: off\n";
        let config = parse(text).unwrap();
        let yaml = config.to_redacted_yaml();
        assert!(!yaml.contains("hunter2"), "{yaml}");
        assert!(yaml.contains("password: \"<redacted>\""), "{yaml}");
        assert!(yaml.contains("username: \"root\""), "{yaml}");
        assert!(yaml.contains("dial_timeout: 1500ms"), "{yaml}");
        let mut back = parse(&yaml).unwrap();
        assert_eq!(back.etcd.password, Some(Secret(REDACTED.to_owned())));
        back.etcd.password = config.etcd.password.clone();
        assert_eq!(back, config);
        // Defaults print every key, and come back unchanged.
        let defaults = Config::default().to_redacted_yaml();
        for key in ETCD_KEYS
            .iter()
            .chain(DNS_KEYS)
            .chain(LOG_KEYS)
            .chain(GRPC_KEYS)
        {
            assert!(
                defaults.contains(&format!("  {key}:")),
                "{key} missing:\n{defaults}"
            );
        }
        assert!(defaults.contains("password: null"));
        assert_eq!(parse(&defaults).unwrap(), Config::default());
    }
}
