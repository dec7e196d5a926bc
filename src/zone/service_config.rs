//! gRPC service configs (gRFC A2) for the `_grpc_config.<name>` TXT
//! records: validated once at start, then encoded as the TXT text gRPC's
//! DNS resolvers look up. Pure; no I/O.
//!
//! A gRPC client that looks the record up applies the config it carries to
//! the channel (load-balancing policy, method timeouts, retries), and one
//! that finds a config it cannot use may fail the channel's calls, so a
//! config is checked against the service config schema here, where a
//! mistake is a configuration error at start rather than an outage at the
//! clients.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::names::Patterns;
use super::wire::{QNAME_OFFSET, WireBuilder, WireRrs, pointer, rrtype};

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/// The service config served when the file sets none: gRPC's own
/// `round_robin` policy, which every gRPC client has, so that calls spread
/// over every instance instead of sticking to the first address
/// (`pick_first`, the default without a config).
pub const DEFAULT_SERVICE_CONFIG: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

/// The first label of the name a gRPC client looks the config up at
/// (`_grpc_config.<target host>`, gRFC A2).
pub const GRPC_CONFIG_LABEL: &str = "_grpc_config";

/// What the TXT text starts with (gRFC A2: "the TXT record ... will have
/// the form `grpc_config=<json>`").
pub const TXT_PREFIX: &str = "grpc_config=";

/// The longest service config accepted, in octets of compact JSON: far
/// beyond any real config, and small enough that the TXT answer stays a
/// modest TCP message.
pub const MAX_SERVICE_CONFIG_LEN: usize = 8192;

/// A TXT character-string holds at most 255 octets (RFC 1035 §3.3).
pub const MAX_CHARACTER_STRING: usize = 255;

/// Load-balancing policies every gRPC client implements. A
/// `loadBalancingConfig` list must name one of them: clients pick the first
/// policy in the list that they know, and reject the whole config when
/// they know none (an older client meeting only a newer policy).
const UNIVERSAL_POLICIES: [&str; 2] = ["round_robin", "pick_first"];

/// gRPC status code names, in code order (`OK` = 0 … `UNAUTHENTICATED` = 16).
const STATUS_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

// ---------------------------------------------------------------------------
// ServiceConfig
// ---------------------------------------------------------------------------

/// A validated service config, kept as compact ASCII JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    json: String,
}

impl ServiceConfig {
    /// Parses and validates `text` (a JSON object in the `ServiceConfig`
    /// form of grpc/service_config/service_config.proto). The error says
    /// which field is wrong and why.
    pub fn parse(text: &str) -> Result<ServiceConfig, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            format!(
                "not valid JSON: {e} (line {} column {} of the JSON)",
                e.line(),
                e.column()
            )
        })?;
        validate(&value)?;
        let json = ascii_json(&value);
        if json.len() > MAX_SERVICE_CONFIG_LEN {
            return Err(format!(
                "the service config is {} octets as compact JSON, over the limit of {MAX_SERVICE_CONFIG_LEN}",
                json.len()
            ));
        }
        Ok(ServiceConfig { json })
    }

    /// The config as compact JSON (object keys sorted, non-ASCII escaped).
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The config as a JSON value, for `/debug/zone`.
    pub fn to_value(&self) -> Value {
        // Parsed from our own serialization of a `Value`: cannot fail.
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }

    /// The whole TXT text: `grpc_config=[{"serviceConfig":<config>}]`, one
    /// choice that applies to every client (gRFC A2: no `clientLanguage`,
    /// `percentage` or `clientHostname`).
    pub fn txt_text(&self) -> String {
        format!(r#"{TXT_PREFIX}[{{"serviceConfig":{}}}]"#, self.json)
    }

    /// The TXT RDATA: the text cut into character-strings of at most 255
    /// octets, each with its length octet. gRPC's resolvers join the
    /// strings of the record before parsing; the text is ASCII, so no cut
    /// falls inside a character.
    pub fn txt_rdata(&self) -> Vec<u8> {
        let text = self.txt_text();
        let mut rdata = Vec::with_capacity(text.len() + text.len() / MAX_CHARACTER_STRING + 1);
        for chunk in text.as_bytes().chunks(MAX_CHARACTER_STRING) {
            // chunks() yields at most 255 octets.
            rdata.push(chunk.len() as u8);
            rdata.extend_from_slice(chunk);
        }
        rdata
    }
}

/// Compact JSON with every non-ASCII character escaped (`\uXXXX`), so that
/// the TXT text is ASCII whatever the config holds: clients that decode
/// each character-string on its own (Node's `resolveTxt`) cannot see a
/// character cut in two.
fn ascii_json(value: &Value) -> String {
    // Serializing a `Value` cannot fail (its map keys are strings).
    let compact = serde_json::to_string(value).unwrap_or_default();
    let mut out = String::with_capacity(compact.len());
    for c in compact.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// Checks `value` against the service config schema: the fields of
/// `grpc.service_config.ServiceConfig` that gRPC clients read from DNS,
/// with the types and ranges gRFC A2 (service config), A6 (retries) and the
/// load-balancing rules give. Unknown fields are rejected: a misspelt
/// field is otherwise ignored by the clients, and the operator gets
/// `pick_first` without knowing why.
fn validate(value: &Value) -> Result<(), String> {
    let config = object(value, "the service config")?;
    known_fields(
        config,
        "the service config",
        &[
            "loadBalancingPolicy",
            "loadBalancingConfig",
            "methodConfig",
            "retryThrottling",
            "healthCheckConfig",
        ],
    )?;
    if let Some(policy) = config.get("loadBalancingPolicy") {
        let name = string(policy, "loadBalancingPolicy")?;
        if !UNIVERSAL_POLICIES.contains(&name) {
            return Err(format!(
                "loadBalancingPolicy: expected \"round_robin\" or \"pick_first\", found {policy}"
            ));
        }
    }
    if let Some(list) = config.get("loadBalancingConfig") {
        validate_lb_config(list)?;
    }
    if let Some(methods) = config.get("methodConfig") {
        validate_method_configs(methods)?;
    }
    if let Some(throttling) = config.get("retryThrottling") {
        let throttling = object(throttling, "retryThrottling")?;
        known_fields(throttling, "retryThrottling", &["maxTokens", "tokenRatio"])?;
        // gRFC A6: maxTokens in (0, 1000], tokenRatio > 0; both required.
        let max_tokens = required_number(throttling, "retryThrottling", "maxTokens")?;
        if !(max_tokens > 0.0 && max_tokens <= 1000.0) {
            return Err(format!(
                "retryThrottling.maxTokens: expected a number in (0, 1000], found {max_tokens}"
            ));
        }
        let ratio = required_number(throttling, "retryThrottling", "tokenRatio")?;
        if ratio <= 0.0 {
            return Err(format!(
                "retryThrottling.tokenRatio: expected a number above 0, found {ratio}"
            ));
        }
    }
    if let Some(health) = config.get("healthCheckConfig") {
        let health = object(health, "healthCheckConfig")?;
        known_fields(health, "healthCheckConfig", &["serviceName"])?;
        if let Some(name) = health.get("serviceName") {
            string(name, "healthCheckConfig.serviceName")?;
        }
    }
    Ok(())
}

fn validate_lb_config(list: &Value) -> Result<(), String> {
    let entries = array(list, "loadBalancingConfig")?;
    if entries.is_empty() {
        return Err(
            "loadBalancingConfig: expected at least one policy, found an empty list".into(),
        );
    }
    let mut names = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let what = format!("loadBalancingConfig[{i}]");
        let entry = object(entry, &what)?;
        let mut fields = entry.iter();
        let (Some((name, policy_config)), None) = (fields.next(), fields.next()) else {
            return Err(format!(
                "{what}: expected an object with exactly one policy name (e.g. {{\"round_robin\": {{}}}}), found {} fields",
                entry.len()
            ));
        };
        object(policy_config, &format!("{what}.{name}"))?;
        names.push(name.as_str());
    }
    if !names.iter().any(|name| UNIVERSAL_POLICIES.contains(name)) {
        return Err(format!(
            "loadBalancingConfig: none of {names:?} is round_robin or pick_first: a gRPC client that knows none of the listed policies rejects the whole config, so end the list with one of these two"
        ));
    }
    Ok(())
}

fn validate_method_configs(methods: &Value) -> Result<(), String> {
    let mut names_seen: BTreeSet<(String, String)> = BTreeSet::new();
    for (i, method) in array(methods, "methodConfig")?.iter().enumerate() {
        let what = format!("methodConfig[{i}]");
        let method = object(method, &what)?;
        known_fields(
            method,
            &what,
            &[
                "name",
                "waitForReady",
                "timeout",
                "maxRequestMessageBytes",
                "maxResponseMessageBytes",
                "retryPolicy",
                "hedgingPolicy",
            ],
        )?;
        let names = method
            .get("name")
            .ok_or_else(|| format!("{what}.name: required (the methods the entry applies to)"))?;
        for (j, name) in array(names, &format!("{what}.name"))?.iter().enumerate() {
            let at = format!("{what}.name[{j}]");
            let name = object(name, &at)?;
            known_fields(name, &at, &["service", "method"])?;
            let service = optional_string(name, &at, "service")?.unwrap_or("");
            let method_name = optional_string(name, &at, "method")?.unwrap_or("");
            if service.is_empty() && !method_name.is_empty() {
                return Err(format!(
                    "{at}: a method needs its service (an empty service means every method of every service)"
                ));
            }
            if !names_seen.insert((service.to_owned(), method_name.to_owned())) {
                return Err(format!(
                    "{at}: service {service:?} method {method_name:?} is named twice in methodConfig"
                ));
            }
        }
        if let Some(wait) = method.get("waitForReady")
            && !wait.is_boolean()
        {
            return Err(format!(
                "{what}.waitForReady: expected true or false, found {wait}"
            ));
        }
        if let Some(timeout) = method.get("timeout") {
            duration(timeout, &format!("{what}.timeout"))?;
        }
        for field in ["maxRequestMessageBytes", "maxResponseMessageBytes"] {
            if let Some(bytes) = method.get(field) {
                non_negative_integer(bytes, &format!("{what}.{field}"))?;
            }
        }
        if method.contains_key("retryPolicy") && method.contains_key("hedgingPolicy") {
            return Err(format!(
                "{what}: retryPolicy and hedgingPolicy cannot both be set (gRFC A6)"
            ));
        }
        if let Some(retry) = method.get("retryPolicy") {
            validate_retry_policy(retry, &format!("{what}.retryPolicy"))?;
        }
        if let Some(hedging) = method.get("hedgingPolicy") {
            validate_hedging_policy(hedging, &format!("{what}.hedgingPolicy"))?;
        }
    }
    Ok(())
}

/// gRFC A6 retry policy: every field required.
fn validate_retry_policy(retry: &Value, what: &str) -> Result<(), String> {
    let retry = object(retry, what)?;
    known_fields(
        retry,
        what,
        &[
            "maxAttempts",
            "initialBackoff",
            "maxBackoff",
            "backoffMultiplier",
            "retryableStatusCodes",
        ],
    )?;
    max_attempts(retry, what)?;
    for field in ["initialBackoff", "maxBackoff"] {
        let value = retry
            .get(field)
            .ok_or_else(|| format!("{what}.{field}: required"))?;
        if duration(value, &format!("{what}.{field}"))? <= 0.0 {
            return Err(format!(
                "{what}.{field}: expected a duration above 0s, found {value}"
            ));
        }
    }
    let multiplier = required_number(retry, what, "backoffMultiplier")?;
    if multiplier <= 0.0 {
        return Err(format!(
            "{what}.backoffMultiplier: expected a number above 0, found {multiplier}"
        ));
    }
    let codes = retry
        .get("retryableStatusCodes")
        .ok_or_else(|| format!("{what}.retryableStatusCodes: required"))?;
    let codes_what = format!("{what}.retryableStatusCodes");
    if status_codes(codes, &codes_what)? == 0 {
        return Err(format!("{codes_what}: expected at least one status code"));
    }
    Ok(())
}

/// gRFC A6 hedging policy.
fn validate_hedging_policy(hedging: &Value, what: &str) -> Result<(), String> {
    let hedging = object(hedging, what)?;
    known_fields(
        hedging,
        what,
        &["maxAttempts", "hedgingDelay", "nonFatalStatusCodes"],
    )?;
    max_attempts(hedging, what)?;
    if let Some(delay) = hedging.get("hedgingDelay") {
        duration(delay, &format!("{what}.hedgingDelay"))?;
    }
    if let Some(codes) = hedging.get("nonFatalStatusCodes") {
        status_codes(codes, &format!("{what}.nonFatalStatusCodes"))?;
    }
    Ok(())
}

/// gRFC A6: `maxAttempts` is required and MUST be greater than 1 (clients
/// cap it at 5).
fn max_attempts(policy: &Map<String, Value>, what: &str) -> Result<(), String> {
    let attempts = policy
        .get("maxAttempts")
        .ok_or_else(|| format!("{what}.maxAttempts: required"))?;
    match attempts.as_u64() {
        Some(n) if n >= 2 => Ok(()),
        _ => Err(format!(
            "{what}.maxAttempts: expected an integer of at least 2, found {attempts}"
        )),
    }
}

/// A list of status codes, by name (`"UNAVAILABLE"`) or number; returns
/// how many.
fn status_codes(codes: &Value, what: &str) -> Result<usize, String> {
    let codes = array(codes, what)?;
    for (i, code) in codes.iter().enumerate() {
        let known = match code {
            Value::String(name) => STATUS_CODES[1..].contains(&name.as_str()),
            Value::Number(n) => n.as_u64().is_some_and(|n| (1..17).contains(&n)),
            _ => false,
        };
        if !known {
            return Err(format!(
                "{what}[{i}]: expected a gRPC status code other than OK (a name such as \"UNAVAILABLE\", or 1..=16), found {code}"
            ));
        }
    }
    Ok(codes.len())
}

/// A protobuf JSON duration (`"1.5s"`: decimal seconds, at most nine
/// fractional digits, then `s`); returns the seconds.
fn duration(value: &Value, what: &str) -> Result<f64, String> {
    let bad = || {
        format!(
            "{what}: expected a duration such as \"1.5s\" (seconds, a string ending in s), found {value}"
        )
    };
    let text = value.as_str().ok_or_else(bad)?;
    let number = text.strip_suffix('s').ok_or_else(bad)?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(fraction)
        || fraction.len() > 9
        || (number.contains('.') && fraction.is_empty())
    {
        return Err(bad());
    }
    number.parse::<f64>().map_err(|_| bad())
}

fn non_negative_integer(value: &Value, what: &str) -> Result<(), String> {
    // Protobuf JSON writes 64-bit integers as strings or numbers.
    let ok = match value {
        Value::Number(n) => n.as_u64().is_some(),
        Value::String(s) => s.parse::<u64>().is_ok(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected a non-negative integer, found {value}"
        ))
    }
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("{what}: expected a JSON object, found {}", kind(value)))
}

fn array<'a>(value: &'a Value, what: &str) -> Result<&'a Vec<Value>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("{what}: expected a JSON list, found {}", kind(value)))
}

fn string<'a>(value: &'a Value, what: &str) -> Result<&'a str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("{what}: expected a string, found {}", kind(value)))
}

fn optional_string<'a>(
    map: &'a Map<String, Value>,
    what: &str,
    field: &str,
) -> Result<Option<&'a str>, String> {
    map.get(field)
        .map(|value| string(value, &format!("{what}.{field}")))
        .transpose()
}

fn required_number(map: &Map<String, Value>, what: &str, field: &str) -> Result<f64, String> {
    let value = map
        .get(field)
        .ok_or_else(|| format!("{what}.{field}: required"))?;
    value
        .as_f64()
        .ok_or_else(|| format!("{what}.{field}: expected a number, found {}", kind(value)))
}

fn known_fields(map: &Map<String, Value>, what: &str, known: &[&str]) -> Result<(), String> {
    match map.keys().find(|key| !known.contains(&key.as_str())) {
        None => Ok(()),
        Some(key) => Err(format!(
            "{what}: unknown field {key:?} (expected one of: {})",
            known.join(", ")
        )),
    }
}

/// How an error shows a value: short, and never a whole nested object.
fn kind(value: &Value) -> String {
    match value {
        Value::Object(_) => "an object".to_owned(),
        Value::Array(_) => "a list".to_owned(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// The zone's configs, encoded
// ---------------------------------------------------------------------------

/// The gRPC service configs (gRFC A2) the zone serves as TXT at
/// `_grpc_config.<service>` and `_grpc_config.<port name>`: a default and
/// per-service overrides by service-key glob, the first matching override
/// winning. Each config is encoded once, at start, as its whole TXT
/// record; services share it.
#[derive(Debug, Clone, Default)]
pub struct GrpcConfigs {
    default: Option<Arc<ServiceConfigTxt>>,
    overrides: Vec<(Patterns, Option<Arc<ServiceConfigTxt>>)>,
}

/// One service config and its TXT record, ready to copy.
#[derive(Debug)]
pub struct ServiceConfigTxt {
    config: ServiceConfig,
    /// The TXT record, its owner a pointer to the question.
    txt: WireRrs,
}

impl ServiceConfigTxt {
    pub(crate) fn new(config: ServiceConfig, ttl: u32) -> Arc<ServiceConfigTxt> {
        let mut txt = WireBuilder::default();
        txt.push(
            &[&pointer(QNAME_OFFSET)],
            rrtype::TXT,
            ttl,
            &[&config.txt_rdata()],
        );
        Arc::new(ServiceConfigTxt {
            config,
            txt: txt.finish(),
        })
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The TXT record.
    pub fn txt(&self) -> &WireRrs {
        &self.txt
    }
}

impl GrpcConfigs {
    /// `default` for every service no override matches; `overrides` are
    /// (service-key glob, config or `None` for no record), first match
    /// wins. `ttl` is the TXT record's TTL.
    pub fn new(
        default: Option<ServiceConfig>,
        overrides: Vec<(String, Option<ServiceConfig>)>,
        ttl: u32,
    ) -> Result<GrpcConfigs, String> {
        let overrides = overrides
            .into_iter()
            .map(|(glob, config)| {
                let pattern = Patterns::new(&[&glob]).map_err(|e| format!("{glob:?}: {e}"))?;
                Ok((pattern, config.map(|c| ServiceConfigTxt::new(c, ttl))))
            })
            .collect::<Result<_, String>>()?;
        Ok(GrpcConfigs {
            default: default.map(|c| ServiceConfigTxt::new(c, ttl)),
            overrides,
        })
    }

    /// The config of the service with key `service` (lower-case), if any.
    pub fn for_service(&self, service: &str) -> Option<Arc<ServiceConfigTxt>> {
        self.overrides
            .iter()
            .find(|(pattern, _)| pattern.matches(service))
            .map_or(self.default.as_ref(), |(_, config)| config.as_ref())
            .cloned()
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        ServiceConfig::parse(text).expect_err(text)
    }

    #[test]
    fn the_default_is_valid_and_compact() {
        let config = ServiceConfig::parse(DEFAULT_SERVICE_CONFIG).unwrap();
        assert_eq!(config.json(), DEFAULT_SERVICE_CONFIG);
        assert_eq!(
            config.txt_text(),
            r#"grpc_config=[{"serviceConfig":{"loadBalancingConfig":[{"round_robin":{}}]}}]"#
        );
        let spaced =
            ServiceConfig::parse("{ \"loadBalancingConfig\" : [ { \"round_robin\" : { } } ] }\n")
                .unwrap();
        assert_eq!(spaced, config, "whitespace does not reach the TXT record");
    }

    #[test]
    fn a_full_config_passes() {
        let text = r#"{
            "loadBalancingConfig": [{"weighted_round_robin": {}}, {"round_robin": {}}],
            "methodConfig": [{
                "name": [{"service": "rpcdns.test.Who"}, {"service": "a.B", "method": "C"}],
                "timeout": "1.5s",
                "waitForReady": false,
                "maxRequestMessageBytes": 4194304,
                "maxResponseMessageBytes": "4194304",
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", 4]
                }
            }, {
                "name": [{}],
                "hedgingPolicy": {"maxAttempts": 2, "hedgingDelay": "0.05s", "nonFatalStatusCodes": ["UNAVAILABLE"]}
            }],
            "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
            "healthCheckConfig": {"serviceName": ""}
        }"#;
        ServiceConfig::parse(text).unwrap();
        ServiceConfig::parse(r#"{"loadBalancingPolicy": "round_robin"}"#).unwrap();
        ServiceConfig::parse("{}").unwrap();
    }

    #[test]
    fn mistakes_are_named() {
        for (text, needle) in [
            ("{", "not valid JSON"),
            (
                "[]",
                "the service config: expected a JSON object, found a list",
            ),
            (
                r#"{"loadBalancingConfigs": []}"#,
                "unknown field \"loadBalancingConfigs\"",
            ),
            (
                r#"{"loadBalancingPolicy": "ring_hash"}"#,
                "loadBalancingPolicy",
            ),
            (r#"{"loadBalancingConfig": []}"#, "empty list"),
            (
                r#"{"loadBalancingConfig": {"round_robin": {}}}"#,
                "expected a JSON list",
            ),
            (
                r#"{"loadBalancingConfig": [{"round_robin": {}, "pick_first": {}}]}"#,
                "exactly one policy name",
            ),
            (
                r#"{"loadBalancingConfig": [{"round_robin": 1}]}"#,
                "loadBalancingConfig[0].round_robin",
            ),
            (
                r#"{"loadBalancingConfig": [{"wrr": {}}]}"#,
                "none of [\"wrr\"]",
            ),
            (
                r#"{"methodConfig": [{"timeout": "1s"}]}"#,
                "methodConfig[0].name: required",
            ),
            (
                r#"{"methodConfig": [{"name": [{}], "timeout": "1"}]}"#,
                "methodConfig[0].timeout",
            ),
            (
                r#"{"methodConfig": [{"name": [{}], "timeout": "1.s"}]}"#,
                "duration",
            ),
            (
                r#"{"methodConfig": [{"name": [{}], "timeout": 1}]}"#,
                "duration",
            ),
            (
                r#"{"methodConfig": [{"name": [{"method": "M"}]}]}"#,
                "needs its service",
            ),
            (
                r#"{"methodConfig": [{"name": [{}]}, {"name": [{}]}]}"#,
                "named twice",
            ),
            (
                r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 1, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
                "maxAttempts: expected an integer of at least 2",
            ),
            (
                r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 2, "initialBackoff": "0s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
                "initialBackoff: expected a duration above 0s",
            ),
            (
                r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": []}}]}"#,
                "at least one status code",
            ),
            (
                r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE", "Unavailable"]}}]}"#,
                "retryableStatusCodes[1]",
            ),
            (
                r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 2}, "hedgingPolicy": {"maxAttempts": 2}}]}"#,
                "cannot both be set",
            ),
            (
                r#"{"retryThrottling": {"maxTokens": 0, "tokenRatio": 1}}"#,
                "maxTokens",
            ),
            (
                r#"{"retryThrottling": {"maxTokens": 10}}"#,
                "tokenRatio: required",
            ),
            (
                r#"{"healthCheckConfig": {"serviceName": 5}}"#,
                "serviceName: expected a string",
            ),
        ] {
            let message = err(text);
            assert!(message.contains(needle), "{text}: {message}");
        }
    }

    #[test]
    fn oversized_configs_are_refused() {
        let names: Vec<String> = (0..400)
            .map(|i| format!(r#"{{"service":"some.long.service.Name{i}"}}"#))
            .collect();
        let text = format!(r#"{{"methodConfig":[{{"name":[{}]}}]}}"#, names.join(","));
        assert!(err(&text).contains("over the limit"));
    }

    #[test]
    fn txt_rdata_is_cut_into_255_octet_strings_of_ascii() {
        let names: Vec<String> = (0..40)
            .map(|i| format!(r#"{{"service":"pkg.Svc{i}","method":"Ü"}}"#))
            .collect();
        let text = format!(
            r#"{{"loadBalancingConfig":[{{"round_robin":{{}}}}],"methodConfig":[{{"name":[{}],"timeout":"2s"}}]}}"#,
            names.join(",")
        );
        let config = ServiceConfig::parse(&text).unwrap();
        assert!(config.json().is_ascii());
        assert!(config.json().contains(r#""method":"\u00dc""#));
        let rdata = config.txt_rdata();
        let mut joined = Vec::new();
        let mut at = 0;
        let mut lengths = Vec::new();
        while at < rdata.len() {
            let len = usize::from(rdata[at]);
            lengths.push(len);
            joined.extend_from_slice(&rdata[at + 1..at + 1 + len]);
            at += 1 + len;
        }
        assert_eq!(at, rdata.len());
        assert!(lengths.len() > 2, "{lengths:?}");
        assert!(lengths[..lengths.len() - 1].iter().all(|&l| l == 255));
        assert_eq!(joined, config.txt_text().into_bytes());
        // What a client parses after the prefix is the config, unchanged.
        let parsed: Value =
            serde_json::from_slice(&joined[TXT_PREFIX.len()..]).expect("JSON after the prefix");
        assert_eq!(parsed[0]["serviceConfig"], config.to_value());
        assert_eq!(
            parsed[0]["serviceConfig"]["methodConfig"][0]["name"][0]["method"],
            "Ü"
        );
    }
}
