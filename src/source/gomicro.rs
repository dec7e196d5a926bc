//! go-micro's etcd registry (`registry/etcd`): what one key/value means.
//!
//! go-micro writes one key per node, `<prefix><service>/<node id>` (the
//! prefix is `/micro/registry/`; a `/` inside the service name or the node
//! id becomes `-`), under a lease. The value is its `registry.Service` in
//! JSON, carrying that one node:
//!
//! ```json
//! {"name":"greeter","version":"latest","metadata":null,"endpoints":[],
//!  "nodes":[{"id":"greeter-5f3c…","address":"10.0.0.5:8080",
//!            "metadata":{"protocol":"grpc","server":"grpc","transport":"grpc"}}]}
//! ```
//!
//! (go-micro v4.10.2 and later write a node's `metadata` first; the order
//! of keys does not matter here.)
//!
//! The service is the JSON's `name` (lower-cased; it must make DNS labels
//! under the zone), the instance is the key's node: its `id` and its
//! `address` (`host:port`, as go-zero writes it). The key must be the one
//! go-micro makes for that name and node. go-micro carries no weight or
//! priority: SRV gets the defaults. The http broker's subscriptions
//! (`micro.http.broker`) are not services and are ignored. Read from the
//! sources of go-micro v2 to v6 (`registry/etcd/etcd.go`: `nodePath`,
//! `encode`, `registerNode`). Pure: no I/O.

use serde::Deserialize;

use crate::ops::metrics::SkipReason;
use crate::source::gozero::{Classified, parse_endpoint};
use crate::zone::{Registration, SRV_PRIORITY, SRV_WEIGHT};

/// Longer values are not a go-micro registration of one node; reading them
/// must not cost us memory.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// The part of `registry.Service` rpcdns reads.
#[derive(Deserialize)]
struct Service {
    name: String,
    #[serde(default)]
    nodes: Option<Vec<Node>>,
}

#[derive(Deserialize)]
struct Node {
    #[serde(default)]
    id: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    metadata: Option<std::collections::HashMap<String, String>>,
}

/// The name go-micro's broker registers its subscriptions under.
const BROKER: &str = "micro.http.broker";

/// Classifies one key/value under a go-micro source whose prefix is
/// `prefix`.
pub fn classify(key: &[u8], value: &[u8], prefix: &[u8]) -> Classified {
    // `<service>/<node id>` after the prefix; anything else under it is
    // not a node key (go-micro writes nothing else there).
    let Some(rest) = key.strip_prefix(prefix) else {
        return Classified::Ignored;
    };
    let Some(slash) = rest.iter().position(|&b| b == b'/') else {
        return Classified::Ignored;
    };
    let node_id = &rest[slash + 1..];
    if node_id.is_empty() {
        return Classified::Skipped(SkipReason::NoInstanceId);
    }
    if value.len() > MAX_VALUE_LEN {
        return Classified::Skipped(SkipReason::ValueTooLong);
    }
    let Ok(service) = serde_json::from_slice::<Service>(value) else {
        return Classified::Skipped(SkipReason::BadJson);
    };
    if service.name == BROKER {
        return Classified::Ignored;
    }
    // The key is `nodePath(name, id)`: the JSON is this key's.
    if rest[..slash] != *service.name.replace('/', "-").as_bytes() {
        return Classified::Skipped(SkipReason::BadJson);
    }
    let nodes = service.nodes.unwrap_or_default();
    let node = nodes
        .iter()
        .find(|n| n.id.replace('/', "-").as_bytes() == node_id);
    let Some(node) = node.filter(|n| !n.address.is_empty()) else {
        return Classified::Skipped(SkipReason::NoNode);
    };
    let endpoint = match parse_endpoint(node.address.as_bytes()) {
        Ok(endpoint) => endpoint,
        Err(reason) => return Classified::Skipped(reason),
    };
    Classified::Registration(Registration {
        service: service.name.to_ascii_lowercase(),
        instance_id: node.id.clone(),
        endpoint,
        priority: SRV_PRIORITY,
        weight: SRV_WEIGHT,
        scheme: None,
        source: 0,
        metadata: node
            .metadata
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::Endpoint;

    const PREFIX: &[u8] = b"/micro/registry/";

    fn classify(key: &str, value: &str) -> Classified {
        super::classify(key.as_bytes(), value.as_bytes(), PREFIX)
    }

    /// A value as go-micro v4's etcd registry writes it: `encode` of the
    /// service with the one node this key is for.
    const GREETER: &str = r#"{"name":"greeter","version":"latest","metadata":null,"endpoints":[{"name":"Greeter.Hello","request":{"name":"Request","type":"Request","values":null},"response":{"name":"Response","type":"Response","values":null},"metadata":{"stream":"false"}}],"nodes":[{"id":"greeter-7b9a4d6c-6a1f-4f0a-9d2e-0c1b2a3d4e5f","address":"10.0.0.5:8080","metadata":{"broker":"http","protocol":"grpc","registry":"etcd","server":"grpc","transport":"grpc"}}]}"#;

    #[test]
    fn a_node_as_go_micro_writes_it() {
        let Classified::Registration(r) = classify(
            "/micro/registry/greeter/greeter-7b9a4d6c-6a1f-4f0a-9d2e-0c1b2a3d4e5f",
            GREETER,
        ) else {
            panic!("not a registration");
        };
        assert_eq!(r.service, "greeter");
        assert_eq!(
            r.instance_id,
            "greeter-7b9a4d6c-6a1f-4f0a-9d2e-0c1b2a3d4e5f"
        );
        assert_eq!(
            r.endpoint,
            Endpoint::Ip {
                addr: "10.0.0.5".parse().unwrap(),
                port: 8080
            }
        );
        assert_eq!((r.priority, r.weight), (0, 10));
    }

    #[test]
    fn the_shapes_go_micro_writes() {
        // v4.10.2 and later: the node's metadata first; IPv6; a name with
        // dots and capitals.
        let value = r#"{"name":"Go.Micro.Srv.Pay","version":"1.0.0","metadata":null,"endpoints":[],"nodes":[{"metadata":{"broker":"http","protocol":"grpc","registry":"etcd","server":"grpc","transport":"grpc"},"id":"Go.Micro.Srv.Pay-9f8e7d6c","address":"[2001:db8::5]:9090"}]}"#;
        let Classified::Registration(r) = classify(
            "/micro/registry/Go.Micro.Srv.Pay/Go.Micro.Srv.Pay-9f8e7d6c",
            value,
        ) else {
            panic!("not a registration");
        };
        assert_eq!(r.service, "go.micro.srv.pay");
        assert_eq!(r.instance_id, "Go.Micro.Srv.Pay-9f8e7d6c");
        assert!(matches!(r.endpoint, Endpoint::Ip { port: 9090, .. }));
        // A host name (an advertise address); a `/` in the name or id
        // becomes `-` in the key.
        let value =
            r#"{"name":"shop/pay","nodes":[{"id":"a/b","address":"pay-0.pay.default:9090"}]}"#;
        let Classified::Registration(r) = classify("/micro/registry/shop-pay/a-b", value) else {
            panic!("not a registration");
        };
        assert_eq!(
            (r.service.as_str(), r.instance_id.as_str()),
            ("shop/pay", "a/b")
        );
        assert!(matches!(r.endpoint, Endpoint::Host { port: 9090, .. }));
        // The broker's subscriptions are not services.
        let broker = r#"{"name":"micro.http.broker","version":"ff.http.broadcast","metadata":null,"endpoints":null,"nodes":[{"metadata":{"broker":"http","secure":"false","topic":"go.micro.topic"},"id":"go.micro.topic-5c1d","address":"10.0.0.5:37211"}]}"#;
        assert_eq!(
            classify(
                "/micro/registry/micro.http.broker/go.micro.topic-5c1d",
                broker
            ),
            Classified::Ignored
        );
    }

    #[test]
    fn bad_values_skip_with_a_reason_and_other_keys_are_ignored() {
        let key = "/micro/registry/pay/n1";
        for (value, reason) in [
            ("10.0.0.1:80", SkipReason::BadJson),
            (r#"{"nodes":[]}"#, SkipReason::BadJson),
            (r#"{"name":"pay","nodes":[]}"#, SkipReason::NoNode),
            (r#"{"name":"pay","nodes":null}"#, SkipReason::NoNode),
            (
                r#"{"name":"pay","nodes":[{"id":"n1","address":""}]}"#,
                SkipReason::NoNode,
            ),
            (
                r#"{"name":"pay","nodes":[{"id":"x","address":"10.0.0.1:1"}]}"#,
                SkipReason::NoNode,
            ),
            (
                r#"{"name":"shop","nodes":[{"id":"n1","address":"10.0.0.1:1"}]}"#,
                SkipReason::BadJson,
            ),
            (
                r#"{"name":"pay","nodes":[{"id":"n1","address":"[[2001:db8::5]]:8080"}]}"#,
                SkipReason::InvalidHost,
            ),
            ("null", SkipReason::BadJson),
            (
                r#"{"name":"pay","nodes":[{"id":"n1","address":"10.0.0.1"}]}"#,
                SkipReason::NoPort,
            ),
            (
                r#"{"name":"pay","nodes":[{"id":"n1","address":"0.0.0.0:80"}]}"#,
                SkipReason::UnspecifiedAddress,
            ),
        ] {
            assert_eq!(classify(key, value), Classified::Skipped(reason), "{value}");
        }
        assert_eq!(
            classify("/micro/registry/pay/", GREETER),
            Classified::Skipped(SkipReason::NoInstanceId)
        );
        let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(MAX_VALUE_LEN));
        assert_eq!(
            classify(key, &huge),
            Classified::Skipped(SkipReason::ValueTooLong)
        );
        // Not under the prefix, or not a node key.
        assert_eq!(
            classify("/micro/config/pay/n1", GREETER),
            Classified::Ignored
        );
        assert_eq!(
            classify("/micro/registry/pay", GREETER),
            Classified::Ignored
        );
    }
}
