//! The overlay: settings rpcdns applies to registrations that cannot
//! carry them (go-zero's `host:port` values have no weight, priority or
//! service config). An operator writes them under a key prefix of their
//! own:
//!
//! ```text
//! <prefix><service>                 {"weight": 20, "priority": 1,
//!                                    "service_config": {"loadBalancingConfig": [{"round_robin": {}}]}}
//! <prefix><service>/<instance id>   {"weight": 5}
//! ```
//!
//! `service` is the service key as served (`sms.rpc`, any letter case);
//! `service_config` is a gRPC service config object, or `"off"` for no
//! TXT record; an instance takes only `weight` and `priority`. A value
//! that is not such a JSON object is skipped (`bad_json`), and so the
//! registrations keep their own settings. Pure: no I/O.

use serde::Deserialize;

use crate::ops::metrics::SkipReason;
use crate::source::gozero::Classified;
use crate::zone::service_config::ServiceConfig;
use crate::zone::{Overlay, OverlayTarget};

/// Longer values are not an overlay.
pub const MAX_VALUE_LEN: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Value {
    #[serde(default)]
    weight: Option<u16>,
    #[serde(default)]
    priority: Option<u16>,
    #[serde(default)]
    service_config: Option<serde_json::Value>,
}

/// Classifies one key/value under the overlay prefix `prefix`.
pub fn classify(key: &[u8], value: &[u8], prefix: &[u8]) -> Classified {
    let Some(rest) = key.strip_prefix(prefix) else {
        return Classified::Ignored;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return Classified::Skipped(SkipReason::NotUtf8);
    };
    if value.len() > MAX_VALUE_LEN {
        return Classified::Skipped(SkipReason::ValueTooLong);
    }
    let target = match rest.split_once('/') {
        None if !rest.is_empty() => OverlayTarget::Service(rest.to_ascii_lowercase()),
        Some((service, id)) if !service.is_empty() && !id.is_empty() => OverlayTarget::Instance {
            service: service.to_ascii_lowercase(),
            instance_id: id.to_owned(),
        },
        _ => return Classified::Skipped(SkipReason::InvalidServiceKey),
    };
    let Ok(parsed) = serde_json::from_slice::<Value>(value) else {
        return Classified::Skipped(SkipReason::BadJson);
    };
    let service_config = match (&target, parsed.service_config) {
        (_, None) => None,
        (OverlayTarget::Instance { .. }, Some(_)) => {
            return Classified::Skipped(SkipReason::BadJson);
        }
        (OverlayTarget::Service(_), Some(serde_json::Value::String(off))) if off == "off" => {
            Some(None)
        }
        (OverlayTarget::Service(_), Some(config @ serde_json::Value::Object(_))) => {
            match ServiceConfig::parse(&config.to_string()) {
                Ok(config) => Some(Some(config)),
                Err(_) => return Classified::Skipped(SkipReason::BadJson),
            }
        }
        (OverlayTarget::Service(_), Some(_)) => return Classified::Skipped(SkipReason::BadJson),
    };
    let overlay = Overlay {
        priority: parsed.priority,
        weight: parsed.weight,
        service_config,
    };
    Classified::Overlay(Box::new((target, overlay)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &[u8] = b"/rpcdns/overlay/";

    fn classify(key: &str, value: &str) -> Classified {
        super::classify(key.as_bytes(), value.as_bytes(), PREFIX)
    }

    fn overlay(key: &str, value: &str) -> (OverlayTarget, Overlay) {
        match classify(key, value) {
            Classified::Overlay(o) => *o,
            other => panic!("{key} {value}: {other:?}"),
        }
    }

    #[test]
    fn services_and_instances() {
        let (target, o) = overlay(
            "/rpcdns/overlay/SMS.rpc",
            r#"{"weight": 20, "priority": 1, "service_config": {"loadBalancingConfig": [{"pick_first": {}}]}}"#,
        );
        assert_eq!(target, OverlayTarget::Service("sms.rpc".to_owned()));
        assert_eq!((o.weight, o.priority), (Some(20), Some(1)));
        assert!(matches!(o.service_config, Some(Some(_))));
        let (_, o) = overlay("/rpcdns/overlay/sms.rpc", r#"{"service_config": "off"}"#);
        assert_eq!(o.service_config, Some(None));
        assert_eq!(o.weight, None);
        let (target, o) = overlay(
            "/rpcdns/overlay/sms.rpc/7587869364815473158",
            r#"{"weight": 0}"#,
        );
        assert_eq!(
            target,
            OverlayTarget::Instance {
                service: "sms.rpc".to_owned(),
                instance_id: "7587869364815473158".to_owned()
            }
        );
        assert_eq!(o.weight, Some(0));
    }

    #[test]
    fn bad_overlays_are_skipped() {
        for (key, value, reason) in [
            ("/rpcdns/overlay/sms.rpc", "20", SkipReason::BadJson),
            (
                "/rpcdns/overlay/sms.rpc",
                r#"{"wieght": 20}"#,
                SkipReason::BadJson,
            ),
            (
                "/rpcdns/overlay/sms.rpc",
                r#"{"weight": 70000}"#,
                SkipReason::BadJson,
            ),
            (
                "/rpcdns/overlay/sms.rpc",
                r#"{"weight": -1}"#,
                SkipReason::BadJson,
            ),
            (
                "/rpcdns/overlay/sms.rpc",
                r#"{"service_config": {"loadBalancingPolicy": "x"}}"#,
                SkipReason::BadJson,
            ),
            (
                "/rpcdns/overlay/sms.rpc",
                r#"{"service_config": "on"}"#,
                SkipReason::BadJson,
            ),
            (
                "/rpcdns/overlay/sms.rpc/1",
                r#"{"service_config": "off"}"#,
                SkipReason::BadJson,
            ),
            ("/rpcdns/overlay/", r#"{}"#, SkipReason::InvalidServiceKey),
            (
                "/rpcdns/overlay/sms.rpc/",
                r#"{}"#,
                SkipReason::InvalidServiceKey,
            ),
        ] {
            assert_eq!(
                classify(key, value),
                Classified::Skipped(reason),
                "{key} {value}"
            );
        }
        assert_eq!(classify("/other/sms.rpc", "{}"), Classified::Ignored);
    }
}
