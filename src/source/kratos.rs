//! kratos's etcd registry (`contrib/registry/etcd`): what one key/value
//! means.
//!
//! kratos writes one key per instance, `<namespace>/<name>/<id>` (the
//! namespace is `/microservices` unless the app sets another; nothing is
//! escaped), under a lease of 15 s. The value is its
//! `registry.ServiceInstance` in JSON:
//!
//! ```json
//! {"id":"5b7e1c2a-5a1d-11ef-9d36-0242ac120005","name":"helloworld",
//!  "version":"v1.0.0","metadata":{"weight":"20"},
//!  "endpoints":["http://10.0.0.5:8000","grpc://10.0.0.5:9000"]}
//! ```
//!
//! Each endpoint becomes one registration of the instance, with its
//! scheme: `grpc`, `grpcs` (TLS), `http` or `https`, answered at
//! `_<scheme>._tcp.<name>`. kratos v2.0.4 to v2.3.0 marked TLS with
//! `?isSecure=true` instead: that reads as `grpcs` or `https`. An
//! endpoint that cannot be served (another scheme, no port, a path) is
//! left out, the instance's others are kept. The weight is the
//! metadata's `weight`, as kratos's weighted round robin reads it: an
//! integer, 100 when absent, not a number or not positive (kratos's
//! default), at most 65535.
//!
//! Read from kratos v2.9.2 and v3.0.0 (`registry.go`, `service.go`,
//! `registry/registry.go`, `internal/endpoint`, `selector`). Pure: no I/O.

use std::collections::HashMap;

use serde::Deserialize;

use crate::ops::metrics::SkipReason;
use crate::source::gozero::{Classified, parse_endpoint};
use crate::zone::{Endpoint, Registration, SRV_PRIORITY};

/// Longer values are not one kratos instance; reading them must not cost
/// us memory.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// The SRV weight of an instance without a usable `weight` (kratos's
/// `defaultWeight`).
pub const DEFAULT_WEIGHT: u16 = 100;
/// The schemes kratos writes.
pub const SCHEMES: [&str; 4] = ["grpc", "grpcs", "http", "https"];

/// The part of `registry.ServiceInstance` rpcdns reads.
#[derive(Deserialize)]
struct Instance {
    id: String,
    name: String,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    endpoints: Option<Vec<String>>,
}

/// Classifies one key/value under a kratos source whose prefix is
/// `prefix` (the namespace and its `/`).
pub fn classify(key: &[u8], value: &[u8], prefix: &[u8]) -> Classified {
    let Some(rest) = key.strip_prefix(prefix) else {
        return Classified::Ignored;
    };
    // kratos writes `<name>/<id>` there, and nothing else.
    if !rest.contains(&b'/') {
        return Classified::Ignored;
    }
    if value.len() > MAX_VALUE_LEN {
        return Classified::Skipped(SkipReason::ValueTooLong);
    }
    let Ok(instance) = serde_json::from_slice::<Instance>(value) else {
        return Classified::Skipped(SkipReason::BadJson);
    };
    // The key is `<name>/<id>` of this very value (kratos itself drops a
    // value whose name is not the one it asked for).
    if instance.name.is_empty()
        || instance.id.is_empty()
        || rest != format!("{}/{}", instance.name, instance.id).as_bytes()
    {
        return Classified::Skipped(SkipReason::BadJson);
    }
    let weight = instance
        .metadata
        .as_ref()
        .and_then(|m| m.get("weight"))
        .and_then(|w| w.parse::<i64>().ok())
        .filter(|&w| w > 0)
        .map_or(DEFAULT_WEIGHT, |w| w.min(i64::from(u16::MAX)) as u16);
    let service = instance.name.to_ascii_lowercase();
    let metadata: Vec<(String, String)> = instance
        .metadata
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut registrations: Vec<Registration> = Vec::new();
    let mut seen: Vec<(&'static str, Endpoint)> = Vec::new();
    for text in instance.endpoints.iter().flatten() {
        let Some((scheme, endpoint)) = parse_url(text) else {
            continue;
        };
        // kratos uses the first endpoint of a scheme and drops repeats.
        if seen.iter().any(|(s, e)| *s == scheme && *e == endpoint) {
            continue;
        }
        seen.push((scheme, endpoint.clone()));
        registrations.push(Registration {
            service: service.clone(),
            instance_id: instance.id.clone(),
            endpoint,
            priority: SRV_PRIORITY,
            weight,
            scheme: Some(scheme.into()),
            source: 0,
            metadata: metadata.clone(),
        });
    }
    if registrations.is_empty() {
        return Classified::Skipped(SkipReason::NoEndpoint);
    }
    Classified::Registrations(registrations)
}

/// Reads one kratos endpoint, `scheme://host:port` with at most a `/`
/// path and a query; `None` for anything rpcdns cannot serve.
fn parse_url(text: &str) -> Option<(&'static str, Endpoint)> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme = SCHEMES
        .into_iter()
        .find(|s| s.eq_ignore_ascii_case(scheme))?;
    if rest.contains('#') {
        return None;
    }
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    if !(path.is_empty() || path == "/") || authority.contains('@') {
        return None;
    }
    let endpoint = parse_endpoint(authority.as_bytes()).ok()?;
    // kratos v2.0.4 to v2.3.0: TLS as `?isSecure=true` (Go's ParseBool).
    let secure = query.split('&').any(|pair| {
        matches!(
            pair.split_once('='),
            Some(("isSecure", "1" | "t" | "T" | "true" | "TRUE" | "True"))
        )
    });
    let scheme = match (scheme, secure) {
        ("grpc", true) => "grpcs",
        ("http", true) => "https",
        (scheme, _) => scheme,
    };
    Some((scheme, endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &[u8] = b"/microservices/";

    fn classify(key: &str, value: &str) -> Classified {
        super::classify(key.as_bytes(), value.as_bytes(), PREFIX)
    }

    fn registrations(key: &str, value: &str) -> Vec<Registration> {
        match classify(key, value) {
            Classified::Registrations(r) => r,
            other => panic!("{value}: {other:?}"),
        }
    }

    fn ip(addr: &str, port: u16) -> Endpoint {
        Endpoint::Ip {
            addr: addr.parse().unwrap(),
            port,
        }
    }

    /// The values kratos v2.9.2 / v3.0.0 writes (`json.Marshal` of the
    /// struct: five keys, in this order).
    #[test]
    fn instances_as_kratos_writes_them() {
        let r = registrations(
            "/microservices/helloworld/5b7e1c2a-5a1d-11ef-9d36-0242ac120005",
            r#"{"id":"5b7e1c2a-5a1d-11ef-9d36-0242ac120005","name":"helloworld","version":"v1.0.0","metadata":null,"endpoints":["http://10.0.0.5:8000","grpc://10.0.0.5:9000"]}"#,
        );
        let got: Vec<(&str, &Endpoint, u16, &str)> = r
            .iter()
            .map(|r| {
                (
                    r.service.as_str(),
                    &r.endpoint,
                    r.weight,
                    r.scheme.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("helloworld", &ip("10.0.0.5", 8000), 100, "http"),
                ("helloworld", &ip("10.0.0.5", 9000), 100, "grpc"),
            ]
        );
        assert!(
            r.iter()
                .all(|r| r.instance_id == "5b7e1c2a-5a1d-11ef-9d36-0242ac120005")
        );

        // Metadata with a weight; TLS gRPC; a dotted name.
        let r = registrations(
            "/microservices/user.service/user-1",
            r#"{"id":"user-1","name":"user.service","version":"","metadata":{"weight":"20","zone":"sh-a"},"endpoints":["grpcs://10.0.0.6:9000"]}"#,
        );
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].weight, r[0].scheme.as_deref()), (20, Some("grpcs")));
        assert_eq!(r[0].service, "user.service");

        // IPv6 and a host name.
        let r = registrations(
            "/microservices/helloworld/v6",
            r#"{"id":"v6","name":"helloworld","version":"v2","metadata":{},"endpoints":["grpc://[2001:db8::5]:9000","https://api.internal.example:8443"]}"#,
        );
        assert_eq!(r[0].endpoint, ip("2001:db8::5", 9000));
        assert_eq!(
            r[1].endpoint,
            Endpoint::Host {
                name: "api.internal.example".to_owned(),
                port: 8443
            }
        );

        // v2.0.4 to v2.3.0 marked TLS in the query.
        let r = registrations(
            "/microservices/x/legacy",
            r#"{"id":"legacy","name":"x","version":"","metadata":null,"endpoints":["grpc://10.0.0.5:9000?isSecure=true","http://10.0.0.5:8000?isSecure=false"]}"#,
        );
        let schemes: Vec<&str> = r.iter().map(|r| r.scheme.as_deref().unwrap()).collect();
        assert_eq!(schemes, vec!["grpcs", "http"]);
    }

    #[test]
    fn weights_as_kratos_reads_them() {
        for (weight, expected) in [
            ("20", 20),
            ("+7", 7),
            ("100000", 65535),
            ("0", 100),
            ("-5", 100),
            ("heavy", 100),
            (" 5", 100),
        ] {
            let value = format!(
                r#"{{"id":"i","name":"x","version":"","metadata":{{"weight":"{weight}"}},"endpoints":["grpc://10.0.0.1:1"]}}"#
            );
            assert_eq!(
                registrations("/microservices/x/i", &value)[0].weight,
                expected,
                "{weight:?}"
            );
        }
    }

    #[test]
    fn bad_endpoints_are_left_out_and_bad_values_skipped() {
        // The good endpoint stays; the others are not servable.
        let r = registrations(
            "/microservices/x/i",
            r#"{"id":"i","name":"x","version":"","metadata":null,"endpoints":["grpc:","tcp://10.0.0.1:1","http://10.0.0.1","http://u@10.0.0.1:1","http://10.0.0.1:1/api","http://10.0.0.1:1#f","grpc://0.0.0.0:9000","grpc://[fe80::1%25eth0]:1","GRPC://10.0.0.2:9000","grpc://10.0.0.2:9000","http://10.0.0.2:8000/"]}"#,
        );
        let got: Vec<(&str, &Endpoint)> = r
            .iter()
            .map(|r| (r.scheme.as_deref().unwrap(), &r.endpoint))
            .collect();
        assert_eq!(
            got,
            vec![
                ("grpc", &ip("10.0.0.2", 9000)),
                ("http", &ip("10.0.0.2", 8000))
            ]
        );

        let key = "/microservices/x/i";
        for (value, reason) in [
            ("grpc://10.0.0.1:1", SkipReason::BadJson),
            ("null", SkipReason::BadJson),
            (r#"{"id":"i","endpoints":[]}"#, SkipReason::BadJson),
            (
                r#"{"id":"j","name":"x","endpoints":["grpc://10.0.0.1:1"]}"#,
                SkipReason::BadJson,
            ),
            (
                r#"{"id":"i","name":"xy","endpoints":["grpc://10.0.0.1:1"]}"#,
                SkipReason::BadJson,
            ),
            (
                r#"{"id":"i","name":"x","metadata":null,"endpoints":[]}"#,
                SkipReason::NoEndpoint,
            ),
            (
                r#"{"id":"i","name":"x","endpoints":null}"#,
                SkipReason::NoEndpoint,
            ),
            (
                r#"{"id":"i","name":"x","endpoints":["grpc:"]}"#,
                SkipReason::NoEndpoint,
            ),
        ] {
            assert_eq!(classify(key, value), Classified::Skipped(reason), "{value}");
        }
        // Not under the namespace, or not `<name>/<id>`.
        let good = r#"{"id":"i","name":"x","endpoints":["grpc://10.0.0.1:1"]}"#;
        assert_eq!(classify("/other/x/i", good), Classified::Ignored);
        assert_eq!(classify("/microservices/x", good), Classified::Ignored);
    }
}
