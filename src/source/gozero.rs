//! Turns one go-zero etcd key/value pair into a [`Registration`]; pure, no I/O.
//!
//! go-zero registers each running instance as `<service key>/<instance id>`
//! → `<host>:<port>` (SPEC §1). This module decides, for one pair, whether it
//! is someone else's key ([`Classified::Ignored`]), one of ours that cannot be
//! served ([`Classified::Skipped`] with a [`SkipReason`], the `reason` label
//! of `rpcdns_skipped_keys_total`), or a usable [`Registration`]. Which
//! service keys are ours and which are valid names are the zone's rules
//! ([`crate::zone::names`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ops::metrics::SkipReason;
use crate::zone::names::{MAX_LABEL_LEN, MAX_NAME_LEN, Patterns, is_valid_service_key};
use crate::zone::{Endpoint, Overlay, OverlayTarget, Registration, SkyRecord};

// ===== Limits ===============================================================

/// Longest value accepted, in octets (SPEC §5). A `host:port` with a maximal
/// host name is 253 + 1 + 5 octets; anything far beyond is not a go-zero
/// address and must not cost us memory.
pub const MAX_VALUE_LEN: usize = 512;

// ===== Types ================================================================

/// What a key/value pair is to rpcdns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// The service key matches no pattern: another program's key.
    Ignored,
    /// One of ours, but it cannot be served.
    Skipped(SkipReason),
    Registration(Registration),
    /// One registration per endpoint of one instance (kratos), in one
    /// service, never empty.
    Registrations(Vec<Registration>),
    /// An overlay key: settings for a service or an instance.
    Overlay(Box<(OverlayTarget, Overlay)>),
    /// A SkyDNS record.
    Sky(Box<SkyRecord>),
}

/// What a key alone is to rpcdns: enough to withdraw an instance on a
/// delete, whose event carries no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassifiedKey {
    /// The service key matches no pattern: another program's key.
    Ignored,
    /// One of ours, but the key itself cannot be served.
    Skipped(SkipReason),
    /// A servable key: lower-cased service key and the instance id as is.
    Instance {
        service: String,
        instance_id: String,
    },
}

// ===== Classification =======================================================

/// Classifies one etcd key/value pair. `zone` is the apex in presentation
/// form, lower-case, without the trailing dot (e.g. `svc.local`).
pub fn classify(key: &[u8], value: &[u8], patterns: &Patterns, zone: &str) -> Classified {
    let (service, instance_id) = match classify_key(key, patterns, zone) {
        ClassifiedKey::Ignored => return Classified::Ignored,
        ClassifiedKey::Skipped(reason) => return Classified::Skipped(reason),
        ClassifiedKey::Instance {
            service,
            instance_id,
        } => (service, instance_id),
    };
    match parse_endpoint(value) {
        Ok(endpoint) => {
            Classified::Registration(Registration::go_zero(service, instance_id, endpoint))
        }
        Err(reason) => Classified::Skipped(reason),
    }
}

/// Classifies a key without its value: the part of [`classify`] a delete
/// event needs. A key that is [`ClassifiedKey::Instance`] here is a
/// [`Classified::Registration`] or a value-related skip in [`classify`].
pub fn classify_key(key: &[u8], patterns: &Patterns, zone: &str) -> ClassifiedKey {
    // SPEC §2: "A key is split at its first `/`".
    let (service_bytes, instance_bytes) = match key.iter().position(|&b| b == b'/') {
        Some(slash) => (&key[..slash], &key[slash + 1..]),
        None => (key, &[][..]),
    };
    // Other programs share the cluster: a service key that is not even UTF-8
    // cannot match a pattern and is not ours.
    let Ok(service_key) = std::str::from_utf8(service_bytes) else {
        return ClassifiedKey::Ignored;
    };
    if !patterns.matches(service_key) {
        return ClassifiedKey::Ignored;
    }
    if instance_bytes.is_empty() {
        return ClassifiedKey::Skipped(SkipReason::NoInstanceId);
    }
    if !is_valid_service_key(service_key, zone) {
        return ClassifiedKey::Skipped(SkipReason::InvalidServiceKey);
    }
    let Ok(instance_id) = std::str::from_utf8(instance_bytes) else {
        return ClassifiedKey::Skipped(SkipReason::NotUtf8);
    };
    ClassifiedKey::Instance {
        service: service_key.to_ascii_lowercase(),
        instance_id: instance_id.to_owned(),
    }
}

/// Parses a go-zero value: `a.b.c.d:port`, `[v6]:port` or `host:port`.
/// Strict on purpose: whatever go-zero writes parses, and anything else is
/// skipped rather than guessed at (SPEC §5).
pub(crate) fn parse_endpoint(value: &[u8]) -> Result<Endpoint, SkipReason> {
    if value.len() > MAX_VALUE_LEN {
        return Err(SkipReason::ValueTooLong);
    }
    let value = std::str::from_utf8(value).map_err(|_| SkipReason::NotUtf8)?;
    // No trimming: go-zero never writes whitespace, so a value that has some
    // was written by hand or by something else, and is rejected as a whole.
    if value
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(SkipReason::InvalidHost);
    }

    let (host, port, bracketed) = split_host_port(value)?;
    let port = parse_port(port)?;
    if host.is_empty() {
        return Err(SkipReason::EmptyHost);
    }

    if bracketed {
        // Only IPv6 goes inside brackets; a zone id (`%eth0`) names an
        // interface of the registering host, meaningless to our clients, and
        // Rust's parser rejects it.
        let addr: Ipv6Addr = host.parse().map_err(|_| SkipReason::InvalidHost)?;
        let unspecified =
            addr.is_unspecified() || addr.to_ipv4_mapped().is_some_and(|v4| v4.is_unspecified());
        if unspecified {
            return Err(SkipReason::UnspecifiedAddress);
        }
        // An IPv4-mapped address stays IPv6: it is what the service wrote.
        return Ok(Endpoint::Ip {
            addr: IpAddr::V6(addr),
            port,
        });
    }

    // Rust's IPv4 parser is strict (exactly four decimal octets, no leading
    // zeros), so `010.0.0.1` is not silently read as octal or as 10.0.0.1.
    if let Ok(addr) = host.parse::<Ipv4Addr>() {
        if addr.is_unspecified() {
            return Err(SkipReason::UnspecifiedAddress);
        }
        return Ok(Endpoint::Ip {
            addr: IpAddr::V4(addr),
            port,
        });
    }
    // An unbracketed IPv6 address (`fd00::5:8001`) is ambiguous about where
    // the port starts; the host-name check below rejects its colons.
    let name = parse_host_name(host).ok_or(SkipReason::InvalidHost)?;
    Ok(Endpoint::Host { name, port })
}

/// Splits `host:port` or `[host]:port`. Returns the host (without brackets),
/// the port text (`None` when there is no `:`), and whether it was bracketed.
fn split_host_port(value: &str) -> Result<(&str, Option<&str>, bool), SkipReason> {
    if let Some(rest) = value.strip_prefix('[') {
        let Some(close) = rest.find(']') else {
            return Err(SkipReason::InvalidHost);
        };
        let host = &rest[..close];
        let after = &rest[close + 1..];
        if after.is_empty() {
            return Ok((host, None, true));
        }
        let Some(port) = after.strip_prefix(':') else {
            return Err(SkipReason::InvalidHost);
        };
        return Ok((host, Some(port), true));
    }
    match value.rfind(':') {
        Some(colon) => Ok((&value[..colon], Some(&value[colon + 1..]), false)),
        None => Ok((value, None, false)),
    }
}

/// A port is 1..=65535 in decimal digits only (no sign, no service name).
fn parse_port(port: Option<&str>) -> Result<u16, SkipReason> {
    let port = match port {
        None | Some("") => return Err(SkipReason::NoPort),
        Some(port) => port,
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SkipReason::BadPort);
    }
    // Digits only, so the only possible parse error is overflow: out of range.
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(SkipReason::BadPort),
        Ok(port) => Ok(port),
    }
}

/// Validates and normalises a host name: lower-cased, one trailing dot
/// stripped, labels of 1..=63 of `[a-z0-9-_]`, at most 253 octets.
pub(crate) fn parse_host_name(host: &str) -> Option<String> {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return None;
    }
    let labels_ok = name.split('.').all(|label| {
        (1..=MAX_LABEL_LEN).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    });
    // Digits and dots that are not an IPv4 address (`010.0.0.1`, `1.2.3`)
    // are a mistyped address, not a host name worth resolving.
    let looks_numeric = name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    (labels_ok && !looks_numeric).then_some(name)
}

// ===== Tests ================================================================

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::names::{MAX_SERVICE_NAME_LEN, service_of_len};

    const ZONE: &str = "svc.local";

    fn rpc() -> Patterns {
        Patterns::new(&["*.rpc"]).unwrap()
    }

    fn reg(key: &str, value: &str) -> Registration {
        match classify(key.as_bytes(), value.as_bytes(), &rpc(), ZONE) {
            Classified::Registration(r) => r,
            other => panic!("{key} → {value}: expected a registration, got {other:?}"),
        }
    }

    fn skip(key: &[u8], value: &[u8]) -> SkipReason {
        match classify(key, value, &rpc(), ZONE) {
            Classified::Skipped(reason) => reason,
            other => panic!("{key:?} → {value:?}: expected a skip, got {other:?}"),
        }
    }

    fn value_skip(value: &str) -> SkipReason {
        skip(b"sms.rpc/1", value.as_bytes())
    }

    fn endpoint(value: &str) -> Endpoint {
        reg("sms.rpc/1", value).endpoint
    }

    fn ip(addr: &str, port: u16) -> Endpoint {
        Endpoint::Ip {
            addr: addr.parse().unwrap(),
            port,
        }
    }

    fn host(name: &str, port: u16) -> Endpoint {
        Endpoint::Host {
            name: name.to_owned(),
            port,
        }
    }

    // ----- go-zero registrations --------------------------------------------

    #[test]
    fn go_zero_registration() {
        let r = reg("sms.rpc/7587869364815473158", "10.0.0.5:8001");
        assert_eq!(
            r,
            Registration {
                service: "sms.rpc".to_owned(),
                instance_id: "7587869364815473158".to_owned(),
                endpoint: ip("10.0.0.5", 8001),
                priority: 0,
                weight: 10,
                scheme: None,
                source: 0,
                metadata: Vec::new(),
            }
        );
        assert_eq!(r.endpoint.port(), 8001);
    }

    #[test]
    fn multi_label_service_key() {
        let r = reg("mall.user.rpc/42", "10.0.0.6:9000");
        assert_eq!(r.service, "mall.user.rpc");
        assert_eq!(r.instance_id, "42");
    }

    #[test]
    fn service_key_is_lower_cased_instance_id_is_not() {
        let r = reg("SMS.rpc/Pod-A", "10.0.0.5:8001");
        assert_eq!(r.service, "sms.rpc");
        assert_eq!(r.instance_id, "Pod-A");
    }

    #[test]
    fn instance_id_keeps_further_slashes() {
        let r = reg("sms.rpc/a/b/c", "10.0.0.5:8001");
        assert_eq!(r.service, "sms.rpc");
        assert_eq!(r.instance_id, "a/b/c");
    }

    #[test]
    fn keys_not_matching_are_ignored() {
        let p = rpc();
        for key in [
            &b"config/app"[..],
            b"rpc/1",
            b"sms.rpcx/1",
            b"sms.api/1",
            b"",
            b"/1",
            b"\xff.rpc/1",
        ] {
            assert_eq!(
                classify(key, b"10.0.0.5:8001", &p, ZONE),
                Classified::Ignored
            );
            assert_eq!(classify_key(key, &p, ZONE), ClassifiedKey::Ignored);
        }
    }

    #[test]
    fn classify_key_for_deletes() {
        assert_eq!(
            classify_key(b"SMS.rpc/Pod-A", &rpc(), ZONE),
            ClassifiedKey::Instance {
                service: "sms.rpc".to_owned(),
                instance_id: "Pod-A".to_owned(),
            }
        );
        assert_eq!(
            classify_key(b"sms.rpc/", &rpc(), ZONE),
            ClassifiedKey::Skipped(SkipReason::NoInstanceId)
        );
    }

    // ----- key skips ----------------------------------------------------------

    #[test]
    fn no_instance_id() {
        assert_eq!(skip(b"sms.rpc", b"10.0.0.5:8001"), SkipReason::NoInstanceId);
        assert_eq!(
            skip(b"sms.rpc/", b"10.0.0.5:8001"),
            SkipReason::NoInstanceId
        );
        // Checked before the service key's own validity.
        assert_eq!(skip(b"a..rpc/", b"10.0.0.5:8001"), SkipReason::NoInstanceId);
    }

    #[test]
    fn invalid_service_keys() {
        let star = Patterns::new(&["*"]).unwrap();
        for key in [
            "/1",
            ".rpc/1",
            "a..rpc/1",
            "sms.rpc./1",
            "sms rpc/1",
            "sms+x.rpc/1",
            "smé.rpc/1",
            "sms.rpc:1/1",
        ] {
            assert_eq!(
                classify(key.as_bytes(), b"10.0.0.5:8001", &star, ZONE),
                Classified::Skipped(SkipReason::InvalidServiceKey),
                "{key}"
            );
        }
        // Letters, digits, `-` and `_` are fine.
        let r = match classify(b"My_Svc-2.rpc/1", b"10.0.0.5:8001", &star, ZONE) {
            Classified::Registration(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(r.service, "my_svc-2.rpc");
    }

    #[test]
    fn service_key_label_length_limit() {
        let ok = format!("{}.rpc/1", "a".repeat(63));
        let long = format!("{}.rpc/1", "a".repeat(64));
        assert_eq!(reg(&ok, "10.0.0.5:8001").service.len(), 67);
        assert_eq!(
            skip(long.as_bytes(), b"10.0.0.5:8001"),
            SkipReason::InvalidServiceKey
        );
    }

    #[test]
    fn service_name_236_octet_limit() {
        // "<service>.svc.local" may be exactly 236 octets, not one more.
        let max = service_of_len(MAX_SERVICE_NAME_LEN - 1 - ZONE.len());
        assert_eq!(max.len() + 1 + ZONE.len(), 236);
        assert_eq!(reg(&format!("{max}/1"), "10.0.0.5:8001").service, max);
        let over = format!("b{max}/1");
        assert_eq!(
            skip(over.as_bytes(), b"10.0.0.5:8001"),
            SkipReason::InvalidServiceKey
        );
    }

    #[test]
    fn instance_id_not_utf8() {
        assert_eq!(
            skip(b"sms.rpc/\xff\xfe", b"10.0.0.5:8001"),
            SkipReason::NotUtf8
        );
    }

    // ----- values -------------------------------------------------------------

    #[test]
    fn ipv4_values() {
        assert_eq!(endpoint("10.0.0.5:8001"), ip("10.0.0.5", 8001));
        assert_eq!(endpoint("127.0.0.1:1"), ip("127.0.0.1", 1));
        assert_eq!(endpoint("192.168.1.1:65535"), ip("192.168.1.1", 65535));
        assert_eq!(endpoint("10.0.0.5:08001"), ip("10.0.0.5", 8001));
    }

    #[test]
    fn ipv6_values() {
        assert_eq!(endpoint("[fd00::5]:8001"), ip("fd00::5", 8001));
        assert_eq!(endpoint("[::1]:8001"), ip("::1", 8001));
        assert_eq!(endpoint("[FD00::A]:8001"), ip("fd00::a", 8001));
    }

    #[test]
    fn ipv6_canonical_equality() {
        assert_eq!(endpoint("[fd00::5]:8001"), endpoint("[fd00:0::5]:8001"));
        assert_eq!(
            endpoint("[fd00:0:0:0:0:0:0:5]:8001"),
            endpoint("[fd00::5]:8001")
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_stays_ipv6() {
        let e = endpoint("[::ffff:10.0.0.5]:8001");
        assert!(
            matches!(
                e,
                Endpoint::Ip {
                    addr: IpAddr::V6(_),
                    port: 8001
                }
            ),
            "{e:?}"
        );
        assert_ne!(e, ip("10.0.0.5", 8001));
    }

    #[test]
    fn host_name_values() {
        assert_eq!(endpoint("sms-0.sms:8001"), host("sms-0.sms", 8001));
        assert_eq!(endpoint("SMS-0.Sms.:8001"), host("sms-0.sms", 8001));
        assert_eq!(endpoint("localhost:8001"), host("localhost", 8001));
        assert_eq!(endpoint("_svc.a1:8001"), host("_svc.a1", 8001));
        // Digits with a letter are a name, not a mistyped address.
        assert_eq!(endpoint("10.0.0.5a:8001"), host("10.0.0.5a", 8001));
    }

    #[test]
    fn host_name_length_limits() {
        let label63 = "a".repeat(63);
        assert_eq!(endpoint(&format!("{label63}:1")), host(&label63, 1));
        assert_eq!(
            value_skip(&format!("{label63}a:1")),
            SkipReason::InvalidHost
        );

        // 63*3 + 61 + 3 dots = 253 octets: the longest name.
        let max = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
        assert_eq!(max.len(), 253);
        assert_eq!(endpoint(&format!("{max}:1")), host(&max, 1));
        assert_eq!(endpoint(&format!("{max}.:1")), host(&max, 1));
        let over = format!("{label63}.{label63}.{label63}.{}", "b".repeat(62));
        assert_eq!(value_skip(&format!("{over}:1")), SkipReason::InvalidHost);
    }

    #[test]
    fn value_too_long() {
        let at_limit = format!("{}:1", "a".repeat(MAX_VALUE_LEN - 2));
        // At the limit it is judged on its content (a 510-octet label).
        assert_eq!(value_skip(&at_limit), SkipReason::InvalidHost);
        let over = format!("{}:1", "a".repeat(MAX_VALUE_LEN - 1));
        assert_eq!(value_skip(&over), SkipReason::ValueTooLong);
        // Length is checked before UTF-8.
        assert_eq!(skip(b"sms.rpc/1", &[0xff; 513]), SkipReason::ValueTooLong);
    }

    #[test]
    fn value_not_utf8() {
        assert_eq!(skip(b"sms.rpc/1", b"10.0.0.5:80\xff"), SkipReason::NotUtf8);
    }

    #[test]
    fn no_port() {
        for v in [
            "10.0.0.5",
            "10.0.0.5:",
            "[fd00::5]",
            "[fd00::5]:",
            "sms-0.sms",
            "",
            ":",
        ] {
            assert_eq!(value_skip(v), SkipReason::NoPort, "{v:?}");
        }
    }

    #[test]
    fn bad_port() {
        for v in [
            "10.0.0.5:0",
            "10.0.0.5:65536",
            "10.0.0.5:99999999999999999999",
            "10.0.0.5:+80",
            "10.0.0.5:-1",
            "10.0.0.5:http",
            "10.0.0.5:80a",
            "[fd00::5]:0",
            "sms-0.sms:0x50",
        ] {
            assert_eq!(value_skip(v), SkipReason::BadPort, "{v:?}");
        }
    }

    #[test]
    fn empty_host() {
        assert_eq!(value_skip(":8001"), SkipReason::EmptyHost);
        assert_eq!(value_skip("[]:8001"), SkipReason::EmptyHost);
    }

    #[test]
    fn unspecified_address() {
        for v in [
            "0.0.0.0:8001",
            "[::]:8001",
            "[0:0::0]:8001",
            "[::ffff:0.0.0.0]:8001",
        ] {
            assert_eq!(value_skip(v), SkipReason::UnspecifiedAddress, "{v:?}");
        }
    }

    #[test]
    fn invalid_hosts() {
        for v in [
            // IPv6 needs brackets.
            "fd00::5:8001",
            "::1:8001",
            // Zone ids name an interface of the registering host.
            "[fe80::1%eth0]:8001",
            // Only IPv6 goes in brackets.
            "[10.0.0.5]:8001",
            "[sms-0.sms]:8001",
            "[fd00::5:8001",
            "[fd00::5]8001",
            "[fd00::5]x:8001",
            // Mistyped IPv4 addresses.
            "010.0.0.1:8001",
            "1.2.3:8001",
            "1.2.3.4.5:8001",
            "256.0.0.1:8001",
            "1.2.3.:8001",
            // Bad host names.
            "a..b:8001",
            ".a:8001",
            "a..:8001",
            ".:8001",
            "sms 0:8001",
            "smé:8001",
            "sms*:8001",
            "sms/0:8001",
            // Whitespace is not trimmed.
            " 10.0.0.5:8001",
            "10.0.0.5:8001 ",
            "10.0.0.5:8001\n",
            "\t10.0.0.5:8001",
        ] {
            assert_eq!(value_skip(v), SkipReason::InvalidHost, "{v:?}");
        }
    }

    #[test]
    fn key_checks_come_before_value_checks() {
        assert_eq!(skip(b"sms.rpc", b"garbage"), SkipReason::NoInstanceId);
        assert_eq!(skip(b"a..rpc/1", b"garbage"), SkipReason::InvalidServiceKey);
        assert_eq!(skip(b"sms.rpc/\xff", b"garbage"), SkipReason::NotUtf8);
    }

    // ----- skip reasons -------------------------------------------------------

    #[test]
    fn skip_reason_labels() {
        let labels: Vec<&str> = SkipReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "no_instance_id",
                "invalid_service_key",
                "not_utf8",
                "value_too_long",
                "no_port",
                "bad_port",
                "empty_host",
                "unspecified_address",
                "invalid_host",
                "bad_json",
                "no_node",
                "no_endpoint",
            ]
        );
        for reason in SkipReason::ALL {
            let sentence = reason.to_string();
            assert!(sentence.len() > 10, "{reason:?}: {sentence}");
            assert_ne!(sentence, reason.as_str());
        }
    }
}
