//! Stage 1 of the configuration: the YAML file as written ([`RawConfig`]),
//! every leaf a [`Spanned`] value with its line and column, unknown keys
//! rejected; and the errors of the YAML parser turned into messages that
//! name the key and the line.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, MessageFormatter, Spanned};

use super::{ConfigError, FilePos};

// ---------------------------------------------------------------------------
// Stage 1: RawConfig, the YAML as written
// ---------------------------------------------------------------------------

/// Any YAML node, as written. Mappings are only recorded as such: no leaf of
/// the config is a mapping, so their contents are never needed.
///
/// No `Debug`: a `RawValue` may hold the password.
#[derive(Clone, PartialEq)]
pub(super) enum RawValue {
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
    pub(super) fn describe(&self) -> String {
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
    pub(super) fn kind(&self) -> &'static str {
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

pub(super) type Leaf = Option<Spanned<RawValue>>;

pub(super) const ROOT_KEYS: &[&str] = &[
    "etcd", "dns", "http", "log", "grpc", "sources", "overlay", "state",
];
pub(super) const ETCD_KEYS: &[&str] = &[
    "endpoints",
    "prefix",
    "patterns",
    "username",
    "password",
    "tls",
    "dial_timeout",
];
pub(super) const TLS_KEYS: &[&str] = &["ca_file", "cert_file", "key_file"];
pub(super) const DNS_KEYS: &[&str] = &[
    "zone",
    "listen",
    "ttl",
    "negative_ttl",
    "max_udp_payload",
    "upstream",
    "allow_recursion_from",
    "reverse_zones",
    "cookie_secret",
    "rrl",
];
pub(super) const RRL_KEYS: &[&str] = &[
    "responses_per_second",
    "slip",
    "ipv4_prefix_length",
    "ipv6_prefix_length",
    "exempt",
];
pub(super) const HTTP_KEYS: &[&str] = &["listen"];
pub(super) const LOG_KEYS: &[&str] = &["level", "format"];
pub(super) const GRPC_KEYS: &[&str] = &["service_config", "overrides"];
pub(super) const SOURCE_KEYS: &[&str] = &["format", "prefix", "patterns", "suffix"];
pub(super) const OVERLAY_KEYS: &[&str] = &["prefix"];
pub(super) const STATE_KEYS: &[&str] = &["dir", "max_bytes"];
pub(super) const GRPC_OVERRIDE_KEYS: &[&str] = &["pattern", "service_config"];

/// Maps the key list in serde's "unknown field" error back to the section it
/// belongs to. The field lists of the structs below must equal these
/// constants; the unknown-key tests fail if one drifts.
fn section_of(expected: &[&str]) -> Option<&'static str> {
    [
        (ROOT_KEYS, ""),
        (ETCD_KEYS, "etcd."),
        (TLS_KEYS, "etcd.tls."),
        (DNS_KEYS, "dns."),
        (RRL_KEYS, "dns.rrl."),
        (HTTP_KEYS, "http."),
        (LOG_KEYS, "log."),
        (GRPC_KEYS, "grpc."),
        (GRPC_OVERRIDE_KEYS, "grpc.overrides[]."),
        (SOURCE_KEYS, "sources[]."),
        (OVERLAY_KEYS, "overlay."),
        (STATE_KEYS, "state."),
    ]
    .into_iter()
    .find(|(keys, _)| *keys == expected)
    .map(|(_, prefix)| prefix)
}

/// The whole file.
#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with the sections etcd, dns, http, log, grpc, sources, overlay and state"
)]
pub(super) struct RawConfig {
    pub(super) etcd: Option<RawEtcd>,
    pub(super) dns: Option<RawDns>,
    pub(super) http: Option<RawHttp>,
    pub(super) log: Option<RawLog>,
    pub(super) grpc: Option<RawGrpc>,
    pub(super) sources: Option<Spanned<Option<Vec<Spanned<RawSource>>>>>,
    pub(super) overlay: Option<RawOverlay>,
    pub(super) state: Option<RawState>,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the state section: a mapping of dir, max_bytes"
)]
pub(super) struct RawState {
    pub(super) dir: Leaf,
    pub(super) max_bytes: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the overlay section: a mapping of prefix"
)]
pub(super) struct RawOverlay {
    pub(super) prefix: Leaf,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an entry of sources: a mapping of format, prefix, patterns, suffix"
)]
pub(super) struct RawSource {
    pub(super) format: Leaf,
    pub(super) prefix: Leaf,
    pub(super) patterns: Leaf,
    pub(super) suffix: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the etcd section: a mapping of endpoints, prefix, patterns, username, password, tls, dial_timeout"
)]
pub(super) struct RawEtcd {
    pub(super) endpoints: Leaf,
    pub(super) prefix: Leaf,
    pub(super) patterns: Leaf,
    pub(super) username: Leaf,
    pub(super) password: Leaf,
    pub(super) tls: Option<Spanned<RawTls>>,
    pub(super) dial_timeout: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the etcd.tls section: a mapping of ca_file, cert_file, key_file"
)]
pub(super) struct RawTls {
    pub(super) ca_file: Leaf,
    pub(super) cert_file: Leaf,
    pub(super) key_file: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the dns section: a mapping of zone, listen, ttl, negative_ttl, max_udp_payload, upstream, allow_recursion_from, reverse_zones, cookie_secret, rrl"
)]
pub(super) struct RawDns {
    pub(super) zone: Leaf,
    pub(super) listen: Leaf,
    pub(super) ttl: Leaf,
    pub(super) negative_ttl: Leaf,
    pub(super) max_udp_payload: Leaf,
    pub(super) upstream: Leaf,
    pub(super) allow_recursion_from: Leaf,
    pub(super) reverse_zones: Leaf,
    pub(super) cookie_secret: Leaf,
    pub(super) rrl: Option<Spanned<RawRrl>>,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the dns.rrl section: a mapping of responses_per_second, slip, ipv4_prefix_length, ipv6_prefix_length, exempt"
)]
pub(super) struct RawRrl {
    pub(super) responses_per_second: Leaf,
    pub(super) slip: Leaf,
    pub(super) ipv4_prefix_length: Leaf,
    pub(super) ipv6_prefix_length: Leaf,
    pub(super) exempt: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the http section: a mapping of listen"
)]
pub(super) struct RawHttp {
    pub(super) listen: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the log section: a mapping of level, format"
)]
pub(super) struct RawLog {
    pub(super) level: Leaf,
    pub(super) format: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the grpc section: a mapping of service_config, overrides"
)]
pub(super) struct RawGrpc {
    pub(super) service_config: Leaf,
    pub(super) overrides: Option<Spanned<Option<Vec<Spanned<RawGrpcOverride>>>>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an entry of grpc.overrides: a mapping of pattern, service_config"
)]
pub(super) struct RawGrpcOverride {
    pub(super) pattern: Leaf,
    pub(super) service_config: Leaf,
}

/// Parses the YAML text into `RawConfig`; errors carry `file:line:column`.
pub(super) fn parse_raw(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
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

pub(super) fn file_pos(file: &str, loc: Location) -> FilePos {
    FilePos {
        file: file.to_owned(),
        line: loc.line(),
        column: loc.column(),
    }
}
