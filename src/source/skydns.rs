//! SkyDNS, as CoreDNS's `etcd` plugin reads it: what one key/value means.
//!
//! A key is the name it serves, its labels reversed under the prefix:
//! `/skydns/local/svc/db/x` is `x.db.svc.local`. The value is CoreDNS's
//! `msg.Service` in JSON, every field optional:
//!
//! ```json
//! {"host":"10.0.0.1","port":8080,"priority":10,"weight":20,
//!  "text":"...","ttl":60,"targetstrip":1,"group":"g1"}
//! ```
//!
//! `host` is an address (A or AAAA) or a host name (a CNAME, or an SRV
//! target); `port` -1 means no SRV record, absent means port 0 (as
//! CoreDNS). Numbers outside their DNS field are clamped (priority and
//! weight to 0..=65535, targetstrip to 0..=255); a priority of 0 is
//! CoreDNS's default of 10. Keys of names outside the zone belong to
//! another server and are ignored; a key whose labels are not a DNS name
//! (an empty or over-long label, a byte other than a letter, digit, `-`
//! or `_`), or the zone's own name, is skipped.
//!
//! Read from CoreDNS at commit 4b26cced (`plugin/etcd/msg/service.go`, `path.go`,
//! `etcd.go`). Pure: no I/O.

use std::net::IpAddr;

use serde::Deserialize;

use crate::ops::metrics::SkipReason;
use crate::source::gozero::{Classified, parse_host_name};
use crate::zone::names::{MAX_LABEL_LEN, MAX_NAME_LEN};
use crate::zone::skydns::{DEFAULT_PRIORITY, DEFAULT_TTL};
use crate::zone::{SkyHost, SkyRecord};

/// Longer values are not one SkyDNS record; reading them must not cost
/// us memory.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// CoreDNS's `msg.Service`, as its JSON may give it.
#[derive(Deserialize)]
struct Service {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<i64>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    weight: Option<i64>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    ttl: Option<u32>,
    #[serde(default)]
    targetstrip: Option<i64>,
    #[serde(default)]
    group: Option<String>,
}

/// Classifies one key/value under a SkyDNS source whose prefix is
/// `prefix` (ending in `/`); `zone` is the apex without its trailing dot.
pub fn classify(key: &[u8], value: &[u8], prefix: &[u8], zone: &str) -> Classified {
    let Some(rest) = key.strip_prefix(prefix) else {
        return Classified::Ignored;
    };
    let name = match name_of(rest, zone) {
        Ok(Some(name)) => name,
        Ok(None) => return Classified::Ignored,
        Err(reason) => return Classified::Skipped(reason),
    };
    match parse_value(value) {
        Ok(mut record) => {
            record.name = name.into();
            Classified::Sky(Box::new(record))
        }
        Err(reason) => Classified::Skipped(reason),
    }
}

/// The name a key (after the prefix) spells, relative to `zone`: `None`
/// when it is outside the zone.
fn name_of(rest: &[u8], zone: &str) -> Result<Option<String>, SkipReason> {
    let Ok(rest) = std::str::from_utf8(rest) else {
        return Ok(None);
    };
    let rest = rest.to_ascii_lowercase();
    let mut segments = rest.split('/');
    for zone_label in zone.rsplit('.') {
        if segments.next() != Some(zone_label) {
            return Ok(None);
        }
    }
    let mut labels: Vec<&str> = segments.collect();
    if labels.is_empty() {
        // The zone's own name: its SOA and NS are rpcdns's.
        return Err(SkipReason::InvalidServiceKey);
    }
    let valid = labels.iter().all(|label| {
        (1..=MAX_LABEL_LEN).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    labels.reverse();
    let name = labels.join(".");
    if !valid || name.len() + 1 + zone.len() > MAX_NAME_LEN {
        return Err(SkipReason::InvalidServiceKey);
    }
    Ok(Some(name))
}

/// The record a value sets (its name left empty).
fn parse_value(value: &[u8]) -> Result<SkyRecord, SkipReason> {
    if value.len() > MAX_VALUE_LEN {
        return Err(SkipReason::ValueTooLong);
    }
    // An object, as Go's decoder wants (serde would take an array too).
    if value.trim_ascii_start().first() != Some(&b'{') {
        return Err(SkipReason::BadJson);
    }
    let service: Service = serde_json::from_slice(value).map_err(|_| SkipReason::BadJson)?;
    let host = match service.host.as_deref().unwrap_or("") {
        "" => SkyHost::None,
        host => match host.parse::<IpAddr>() {
            Ok(addr) => {
                // Go's `To4` makes an IPv4-mapped address an A record.
                let addr = match addr {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
                    v4 => v4,
                };
                if addr.is_unspecified() {
                    return Err(SkipReason::UnspecifiedAddress);
                }
                SkyHost::Ip(addr)
            }
            Err(_) => SkyHost::Name(
                parse_host_name(host)
                    .ok_or(SkipReason::InvalidHost)?
                    .into_boxed_str(),
            ),
        },
    };
    let port = match service.port.unwrap_or(0) {
        -1 => None,
        port => Some(u16::try_from(port).map_err(|_| SkipReason::BadPort)?),
    };
    let clamp = |v: Option<i64>| v.unwrap_or(0).clamp(0, i64::from(u16::MAX)) as u16;
    let priority = match clamp(service.priority) {
        0 => DEFAULT_PRIORITY,
        p => p,
    };
    Ok(SkyRecord {
        name: "".into(),
        host,
        port,
        priority,
        weight: clamp(service.weight),
        text: service.text.unwrap_or_default().into_boxed_str(),
        ttl: match service.ttl.unwrap_or(0) {
            0 => DEFAULT_TTL,
            ttl => ttl,
        },
        targetstrip: service
            .targetstrip
            .unwrap_or(0)
            .clamp(0, i64::from(u8::MAX)) as u8,
        group: service.group.unwrap_or_default().into_boxed_str(),
        source: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "skydns.test";

    fn sky(key: &str, value: &str) -> SkyRecord {
        match classify(key.as_bytes(), value.as_bytes(), b"/skydns/", ZONE) {
            Classified::Sky(record) => *record,
            other => panic!("{key} → {value}: expected a SkyDNS record, got {other:?}"),
        }
    }

    fn skipped(key: &str, value: &str) -> SkipReason {
        match classify(key.as_bytes(), value.as_bytes(), b"/skydns/", ZONE) {
            Classified::Skipped(reason) => reason,
            other => panic!("{key} → {value}: expected a skip, got {other:?}"),
        }
    }

    /// Values from CoreDNS's `plugin/etcd/lookup_test.go` and friends.
    #[test]
    fn coredns_test_values() {
        let r = sky(
            "/skydns/test/skydns/region1/prod/server1/a",
            r#"{"host":"10.0.0.1","port":8080}"#,
        );
        assert_eq!(&*r.name, "a.server1.prod.region1");
        assert_eq!(r.host, SkyHost::Ip("10.0.0.1".parse().unwrap()));
        assert_eq!(
            (r.port, r.priority, r.weight, r.ttl),
            (Some(8080), 10, 0, 300)
        );
        let r = sky(
            "/skydns/test/skydns/priority",
            r#"{"host":"priority.server1","port":8080,"priority":333}"#,
        );
        assert_eq!(r.host, SkyHost::Name("priority.server1".into()));
        assert_eq!(r.priority, 333);
        let r = sky(
            "/skydns/test/skydns/region1/prod/server1/txt/a",
            r#"{"text":"sometext"}"#,
        );
        assert_eq!(
            (r.host, &*r.text, r.port),
            (SkyHost::None, "sometext", Some(0))
        );
        let r = sky(
            "/skydns/test/skydns/dns/ns/c/ns1",
            r#"{"host":"10.0.0.4","targetstrip":1}"#,
        );
        assert_eq!(r.targetstrip, 1);
        let r = sky(
            "/skydns/test/skydns/dom/a",
            r#"{"host":"127.0.0.1","group":"g1"}"#,
        );
        assert_eq!(&*r.group, "g1");
        let r = sky(
            "/skydns/test/skydns/x",
            r#"{"host":"::ffff:10.0.0.9","port":-1,"ttl":60}"#,
        );
        assert_eq!(r.host, SkyHost::Ip("10.0.0.9".parse().unwrap()));
        assert_eq!((r.port, r.ttl), (None, 60));
        // CoreDNS ignores fields it does not know (`mail` is MX's).
        let r = sky(
            "/skydns/test/skydns/mail/a",
            r#"{"host":"MX.skydns.test.","mail":true}"#,
        );
        assert_eq!(r.host, SkyHost::Name("mx.skydns.test".into()));
        // Upper case in keys reads as lower case.
        assert_eq!(&*sky("/skydns/TEST/skydns/Big", "{}").name, "big");
    }

    #[test]
    fn numbers_are_clamped_into_their_fields() {
        let r = sky(
            "/skydns/test/skydns/n",
            r#"{"host":"10.0.0.1","priority":70000,"weight":-5,"targetstrip":300}"#,
        );
        assert_eq!((r.priority, r.weight, r.targetstrip), (65535, 0, 255));
        assert_eq!(
            sky("/skydns/test/skydns/n", r#"{"priority":-3}"#).priority,
            10
        );
    }

    #[test]
    fn bad_values_and_names_are_skipped_and_other_zones_ignored() {
        let key = "/skydns/test/skydns/x";
        assert_eq!(skipped(key, "not json"), SkipReason::BadJson);
        assert_eq!(skipped(key, r#"{"port":"80"}"#), SkipReason::BadJson);
        assert_eq!(skipped(key, r#"{"ttl":-1}"#), SkipReason::BadJson);
        assert_eq!(skipped(key, r#"{"port":1.5}"#), SkipReason::BadJson);
        assert_eq!(skipped(key, r#"[]"#), SkipReason::BadJson);
        assert_eq!(skipped(key, r#"{"port":65536}"#), SkipReason::BadPort);
        assert_eq!(
            skipped(key, r#"{"host":"0.0.0.0"}"#),
            SkipReason::UnspecifiedAddress
        );
        assert_eq!(skipped(key, r#"{"host":"a b"}"#), SkipReason::InvalidHost);
        let long = format!(r#"{{"text":"{}"}}"#, "x".repeat(MAX_VALUE_LEN));
        assert_eq!(skipped(key, &long), SkipReason::ValueTooLong);
        assert_eq!(
            skipped("/skydns/test/skydns", "{}"),
            SkipReason::InvalidServiceKey
        );
        assert_eq!(
            skipped("/skydns/test/skydns/a//b", "{}"),
            SkipReason::InvalidServiceKey
        );
        assert_eq!(
            skipped("/skydns/test/skydns/a/", "{}"),
            SkipReason::InvalidServiceKey
        );
        assert_eq!(
            skipped("/skydns/test/skydns/*", "{}"),
            SkipReason::InvalidServiceKey
        );
        let deep = format!("/skydns/test/skydns/{}", vec!["a".repeat(63); 4].join("/"));
        assert_eq!(skipped(&deep, "{}"), SkipReason::InvalidServiceKey);
        for other in [
            "/skydns/nl/miek/x",
            "/skydns/test/skydns2/x",
            "/skydns/test",
            "/other/x",
        ] {
            assert_eq!(
                classify(other.as_bytes(), b"{}", b"/skydns/", ZONE),
                Classified::Ignored,
                "{other}"
            );
        }
    }
}
