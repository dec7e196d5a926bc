//! Stage 2 of the configuration: for every key the winning value (a flag,
//! the file, or the documented default), checked, into [`Config`]. Each
//! error names where the value came from.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde_saphyr::{Location, Spanned};

use super::raw::*;
use super::*;
use crate::zone::service_config::{DEFAULT_SERVICE_CONFIG, ServiceConfig};

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
pub(super) struct Item {
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
    pub(super) file: &'a str,
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
pub(super) fn build(text: Option<(&str, &str)>, cli: &Cli) -> Result<Config, ConfigError> {
    let (raw, file) = match text {
        Some((text, file)) => (parse_raw(text, file)?, file),
        None => (RawConfig::default(), ""),
    };
    let src = Sources { file };
    // Every section is read here (a field left unread is a dead-code
    // warning, as in the sections' own functions).
    let etcd = etcd_config(&src, cli, raw.etcd.unwrap_or_default())?;
    let dns = dns_config(&src, cli, raw.dns.unwrap_or_default())?;
    let http = http_config(&src, cli, raw.http.unwrap_or_default())?;
    let log = log_config(&src, cli, raw.log.unwrap_or_default())?;
    let grpc = grpc_config(&src, raw.grpc.unwrap_or_default())?;
    let sources = sources_config(&src, &etcd, raw.sources)?;
    let overlay_leaf = raw.overlay.unwrap_or_default().prefix;
    let overlay = match src.scalar("overlay.prefix", None, &overlay_leaf) {
        Some(item) => Some(non_empty_string(&item)?.to_owned()),
        None => None,
    };
    let state = state_config(&src, cli, raw.state.unwrap_or_default())?;
    Ok(Config {
        etcd,
        dns,
        http,
        log,
        grpc,
        sources,
        overlay,
        state,
    })
}

fn state_config(src: &Sources<'_>, cli: &Cli, raw: RawState) -> Result<StateConfig, ConfigError> {
    let dir = match src.scalar(
        "state.dir",
        cli.state_dir.as_deref().map(|d| ("--state-dir", d)),
        &raw.dir,
    ) {
        Some(item) => Some(PathBuf::from(non_empty_string(&item)?)),
        None => None,
    };
    let max_bytes = match src.scalar("state.max_bytes", None, &raw.max_bytes) {
        Some(item) => integer_in(&item, STATE_MAX_BYTES_RANGE, "octets")?,
        None => DEFAULT_STATE_MAX_BYTES,
    };
    Ok(StateConfig { dir, max_bytes })
}

/// `sources`: without it, go-zero alone from `etcd.prefix` and
/// `etcd.patterns`. A go-zero entry without `prefix` or `patterns` takes
/// them from there too (and so from their flags).
fn sources_config(
    src: &Sources<'_>,
    etcd: &EtcdConfig,
    raw: Option<Spanned<Option<Vec<Spanned<RawSource>>>>>,
) -> Result<Vec<SourceConfig>, ConfigError> {
    let go_zero = |prefix: Option<String>, patterns: Option<Vec<String>>, suffix| SourceConfig {
        format: Format::GoZero,
        prefix: prefix.unwrap_or_else(|| etcd.prefix.clone()),
        patterns: patterns.unwrap_or_else(|| etcd.patterns.clone()),
        suffix,
    };
    let Some(list) = raw else {
        return Ok(vec![go_zero(None, None, String::new())]);
    };
    let site = src.site("sources", list.referenced);
    let entries = list.value.unwrap_or_default();
    if entries.is_empty() {
        return Err(site.error("expected at least one source, found an empty list"));
    }
    if entries.len() > MAX_SOURCES {
        return Err(site.error(format!(
            "expected at most {MAX_SOURCES} sources, found {}",
            entries.len()
        )));
    }
    let mut sources: Vec<SourceConfig> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let key = format!("sources[{i}]");
        let raw = entry.value;
        let format_item = src
            .scalar(&format!("{key}.format"), None, &raw.format)
            .ok_or_else(|| {
                src.site(&format!("{key}.format"), entry.referenced)
                    .error("required in every source (gozero, kratos, gomicro or skydns)")
            })?;
        let format = parse_format(&format_item)?;
        let prefix = match src.scalar(&format!("{key}.prefix"), None, &raw.prefix) {
            Some(item) => Some(item.string("a key prefix (a string)")?.to_owned()),
            None => None,
        };
        let patterns = src.list(
            &format!("{key}.patterns"),
            ("", &[]),
            &raw.patterns,
            "glob patterns",
        )?;
        if format != Format::GoZero
            && let Some((site, _)) = &patterns
        {
            return Err(site.error(format!(
                "patterns select go-zero service keys; a {} source serves every service it finds",
                format.as_str()
            )));
        }
        let patterns = match patterns {
            Some(chosen) => Some(list_of(
                Some(chosen),
                true,
                "pattern",
                parse_pattern,
                Vec::new,
            )?),
            None => None,
        };
        let suffix = match src.scalar(&format!("{key}.suffix"), None, &raw.suffix) {
            Some(item) if format == Format::SkyDns => {
                return Err(item.site.error(
                    "a skydns source takes its names whole from its keys: it has no suffix",
                ));
            }
            Some(item) => parse_suffix(&item)?,
            None => String::new(),
        };
        let mut prefix = prefix;
        if format == Format::SkyDns {
            if let Some(same) = sources.iter().position(|s| s.format == Format::SkyDns) {
                return Err(src.site(&key, entry.referenced).error(format!(
                    "sources[{same}] is already a skydns source: one SkyDNS tree feeds the zone"
                )));
            }
            // CoreDNS's `path /skydns` and `/skydns/` are the same tree.
            if let Some(p) = &mut prefix
                && !p.ends_with('/')
            {
                p.push('/');
            }
        }
        let source = match format {
            Format::GoZero => go_zero(prefix, patterns, suffix),
            other => SourceConfig {
                format: other,
                prefix: prefix.unwrap_or_else(|| other.default_prefix().to_owned()),
                patterns: Vec::new(),
                suffix,
            },
        };
        if let Some(same) = sources
            .iter()
            .position(|s| s.format == source.format && s.prefix == source.prefix)
        {
            return Err(src.site(&key, entry.referenced).error(format!(
                "the same format and prefix as sources[{same}]: each key would be read twice"
            )));
        }
        sources.push(source);
    }
    Ok(sources)
}

fn parse_format(item: &Item) -> Result<Format, ConfigError> {
    const WHAT: &str = "a registration format: gozero, kratos, gomicro or skydns";
    let text = item.string(WHAT)?;
    Format::ALL
        .into_iter()
        .find(|f| f.as_str() == text.to_ascii_lowercase())
        .ok_or_else(|| item.expected(WHAT))
}

/// `sources[].suffix`: DNS labels (letters, digits, `-`, `_`), lower-cased.
fn parse_suffix(item: &Item) -> Result<String, ConfigError> {
    const WHAT: &str = "DNS labels such as micro or apps.micro (letters, digits, - and _)";
    let text = item.string(WHAT)?.to_ascii_lowercase();
    let text = text.trim_matches('.');
    if text.is_empty() {
        return Ok(String::new());
    }
    let valid = text.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if text.is_empty() || !valid || text.len() > 200 {
        return Err(item.expected(WHAT));
    }
    Ok(text.to_owned())
}

// Each section's function reads every field of its raw section: a field
// left unread is a dead-code warning, so a key cannot be parsed and then
// ignored.

fn etcd_config(src: &Sources<'_>, cli: &Cli, raw: RawEtcd) -> Result<EtcdConfig, ConfigError> {
    let endpoints = list_of(
        src.list(
            "etcd.endpoints",
            ("--etcd", &cli.etcd),
            &raw.endpoints,
            "HOST:PORT endpoints",
        )?,
        true,
        "endpoint",
        parse_endpoint,
        || vec![DEFAULT_ETCD.to_owned()],
    )?;

    let prefix = match src.scalar("etcd.prefix", None, &raw.prefix) {
        Some(item) => item.string("a string")?.to_owned(),
        None => String::new(),
    };

    let patterns = list_of(
        src.list(
            "etcd.patterns",
            ("--pattern", &cli.pattern),
            &raw.patterns,
            "glob patterns",
        )?,
        true,
        "pattern",
        parse_pattern,
        || vec![DEFAULT_PATTERN.to_owned()],
    )?;

    let username_item = src.scalar("etcd.username", None, &raw.username);
    let password_item = src.scalar("etcd.password", None, &raw.password);
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

    let tls = match raw.tls {
        None => None,
        Some(spanned) => Some(tls_config(
            src,
            spanned.value,
            src.site("etcd.tls", spanned.referenced),
        )?),
    };

    let dial_timeout = match src.scalar("etcd.dial_timeout", None, &raw.dial_timeout) {
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
    let zone = match src.scalar(
        "dns.zone",
        cli.zone.as_deref().map(|z| ("--zone", z)),
        &raw.zone,
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
        &raw.listen,
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

    let ttl = match src.scalar(
        "dns.ttl",
        cli.ttl.as_deref().map(|t| ("--ttl", t)),
        &raw.ttl,
    ) {
        Some(item) => parse_ttl(&item)?,
        None => DEFAULT_TTL,
    };
    let negative_ttl = match src.scalar("dns.negative_ttl", None, &raw.negative_ttl) {
        Some(item) => parse_ttl(&item)?,
        None => DEFAULT_NEGATIVE_TTL,
    };
    let max_udp_payload = match src.scalar("dns.max_udp_payload", None, &raw.max_udp_payload) {
        Some(item) => parse_max_udp_payload(&item)?,
        None => DEFAULT_MAX_UDP_PAYLOAD,
    };

    let upstream = list_of(
        src.list(
            "dns.upstream",
            ("--upstream", &cli.upstream),
            &raw.upstream,
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
            &raw.allow_recursion_from,
            "CIDRs",
        )?,
        false,
        "CIDR",
        parse_cidr,
        default_allow_recursion_from,
    )?;

    let reverse_zones = list_of(
        src.list("dns.reverse_zones", ("", &[]), &raw.reverse_zones, "CIDRs")?,
        false,
        "CIDR",
        parse_reverse_zone,
        Vec::new,
    )?;

    let cookie_secret = match src.scalar("dns.cookie_secret", None, &raw.cookie_secret) {
        Some(item) => Some(parse_cookie_secret(&item)?),
        None => None,
    };
    let rrl = rrl_config(
        src,
        raw.rrl.map(|spanned| spanned.value).unwrap_or_default(),
    )?;

    Ok(DnsConfig {
        zone,
        listen,
        ttl,
        negative_ttl,
        max_udp_payload,
        upstream,
        allow_recursion_from,
        reverse_zones,
        cookie_secret,
        rrl,
    })
}

fn rrl_config(src: &Sources<'_>, raw: RawRrl) -> Result<RrlConfig, ConfigError> {
    let number = |key: &str, leaf: &Leaf, range, unit, default| match src.scalar(key, None, leaf) {
        Some(item) => integer_in(&item, range, unit),
        None => Ok(default),
    };
    let prefix = |key: &str, leaf: &Leaf, max: u8, default: u8| match src.scalar(key, None, leaf) {
        Some(item) => integer_in(&item, 0..=max, "bits"),
        None => Ok(default),
    };
    Ok(RrlConfig {
        responses_per_second: number(
            "dns.rrl.responses_per_second",
            &raw.responses_per_second,
            RRL_RATE_RANGE,
            "responses",
            0,
        )?,
        slip: number(
            "dns.rrl.slip",
            &raw.slip,
            RRL_SLIP_RANGE,
            "responses",
            DEFAULT_RRL_SLIP,
        )?,
        ipv4_prefix_length: prefix(
            "dns.rrl.ipv4_prefix_length",
            &raw.ipv4_prefix_length,
            32,
            DEFAULT_RRL_IPV4_PREFIX_LENGTH,
        )?,
        ipv6_prefix_length: prefix(
            "dns.rrl.ipv6_prefix_length",
            &raw.ipv6_prefix_length,
            128,
            DEFAULT_RRL_IPV6_PREFIX_LENGTH,
        )?,
        exempt: list_of(
            src.list("dns.rrl.exempt", ("", &[]), &raw.exempt, "CIDRs")?,
            false,
            "CIDR",
            parse_cidr,
            || cidrs(DEFAULT_RRL_EXEMPT),
        )?,
    })
}

/// `dns.cookie_secret`: 32 hexadecimal digits. Errors never show the value.
fn parse_cookie_secret(item: &Item) -> Result<CookieKey, ConfigError> {
    const WHAT: &str = "32 hexadecimal digits (a 128-bit secret; `openssl rand -hex 16` makes one)";
    let text = match &item.value {
        RawValue::Str(s) => s.as_str(),
        other => {
            return Err(item
                .site
                .error(format!("expected {WHAT}, found {}", other.kind())));
        }
    };
    let digits: Option<Vec<u8>> = text
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .filter(|p| p.len() == 2)
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect();
    match digits.and_then(|d| <[u8; 16]>::try_from(d).ok()) {
        Some(key) => Ok(CookieKey(key)),
        None => Err(item.site.error(format!(
            "expected {WHAT}, found a string of {} characters",
            text.chars().count()
        ))),
    }
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
    cidrs(DEFAULT_ALLOW_RECURSION_FROM)
}

fn cidrs(texts: &[&str]) -> Vec<IpNet> {
    texts
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
pub(super) fn integer(item: &Item) -> Option<i128> {
    match &item.value {
        RawValue::Int(n) => Some(*n),
        RawValue::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn parse_ttl(item: &Item) -> Result<u32, ConfigError> {
    integer_in(item, TTL_RANGE, "seconds")
}

fn parse_max_udp_payload(item: &Item) -> Result<u16, ConfigError> {
    integer_in(item, MAX_UDP_PAYLOAD_RANGE, "octets")
}

/// An integer in `range`, or an error naming the range and its `unit`.
fn integer_in<T>(
    item: &Item,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<T, ConfigError>
where
    T: TryFrom<i128> + PartialOrd + std::fmt::Display,
{
    integer(item)
        .and_then(|n| T::try_from(n).ok())
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            item.expected(&format!(
                "an integer number of {unit} in {}..={}",
                range.start(),
                range.end()
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

/// A network whose reverse zone rpcdns serves: a CIDR whose prefix ends on
/// a label of the reverse name (an octet for IPv4, a nibble for IPv6).
fn parse_reverse_zone(item: &Item) -> Result<IpNet, ConfigError> {
    const WHAT: &str = "a CIDR such as 10.0.0.0/8 or fd00::/8";
    let net = item
        .string(WHAT)?
        .parse::<IpNet>()
        .map_err(|_| item.expected(WHAT))?;
    let step = match net {
        IpNet::V4(_) => 8,
        IpNet::V6(_) => 4,
    };
    if net.prefix_len() % step != 0 {
        return Err(item.site.error(format!(
            "a reverse zone's prefix length must be a multiple of {step} (one label per {}), found {net}",
            if step == 8 { "octet" } else { "nibble" }
        )));
    }
    Ok(net.trunc())
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
