//! Immutable zone snapshots, their lookups, and the single writer that
//! publishes them; no I/O.
//!
//! Readers call [`ZoneStore::load`] (or [`ZoneStore::guard`]) once per query
//! and get a snapshot: a lock-free load from an `ArcSwap`, so a query never
//! waits for the writer. The writer ([`ZoneWriter`]) keeps the mutable
//! per-service state to itself, rebuilds only the services a batch of etcd
//! events touched, and publishes a new snapshot. The service and
//! empty-non-terminal maps are persistent hash maps (`imbl`), so publishing
//! shares every untouched service with the previous snapshot: the cost of an
//! update is the size of the service it touches (plus `O(log n)` for the
//! map), never the size of the zone.
//!
//! Each service carries its answers already in wire format ([`WireRrs`]):
//! owner names are compression pointers to the question (offset 12), so the
//! query path copies bytes and patches nothing but the header.
//!
//! - [`names`]: the naming rules (globs, valid service keys, labels).
//! - [`wire`]: record sets in wire form, and the numbers they are made of.
//! - [`service_config`]: gRPC service configs, validated, as TXT records.
//! - [`reverse`]: the configured reverse zones and the addresses their names stand for.
//! - [`skydns`]: the SkyDNS tree (CoreDNS `etcd` plugin records) and its answers.
//! - [`snapshot`]: the published snapshot, its lookups, the store.
//! - [`writer`]: the single writer.

use std::net::IpAddr;

use hickory_proto::rr::Name;

pub mod names;
pub mod reverse;
pub mod service_config;
pub mod skydns;
pub mod snapshot;
pub mod wire;
pub mod writer;

pub use reverse::{ReverseName, ReverseZone};
pub use service_config::{GrpcConfigs, ServiceConfigTxt};
pub use skydns::{SkyAnswer, SkyHost, SkyNode, SkyRecord};
pub use snapshot::{Instance, Lookup, PortName, Service, ZoneSnapshot, ZoneStore};
pub use wire::{
    AddrOctets, GRPC_SERVICE_OFFSET, QNAME_OFFSET, WireRrs, address_rdata, host_wire, pointer,
    rrtype, write_rr,
};
pub use writer::{PortsChange, ServiceChange, ZoneWriter};

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/// SOA refresh, as SPEC §4 fixes it (seconds).
pub const SOA_REFRESH: u32 = 60;
/// SOA retry (seconds).
pub const SOA_RETRY: u32 = 10;
/// SOA expire (seconds).
pub const SOA_EXPIRE: u32 = 86_400;
/// SRV priority of every instance.
pub const SRV_PRIORITY: u16 = 0;
/// SRV weight of every instance.
pub const SRV_WEIGHT: u16 = 10;
/// The RFC 2782 service/protocol labels in front of a service name.
pub const GRPC_TCP_PREFIX: &str = "_grpc._tcp";

// ---------------------------------------------------------------------------
// What the zone is built from
// ---------------------------------------------------------------------------

/// Where one instance listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An IP address (IPv4, or IPv6 from `[..]:port`), never unspecified.
    Ip { addr: IpAddr, port: u16 },
    /// A host name, lower-cased, without trailing dot, a valid DNS name.
    Host { name: String, port: u16 },
}

impl Endpoint {
    /// The port, whatever the kind of address.
    pub fn port(&self) -> u16 {
        match self {
            Endpoint::Ip { port, .. } | Endpoint::Host { port, .. } => *port,
        }
    }
}

impl Registration {
    /// A registration as go-zero makes one: an endpoint and nothing else
    /// (SPEC's priority and weight, gRPC, no metadata), from source 0.
    pub fn go_zero(service: String, instance_id: String, endpoint: Endpoint) -> Self {
        Registration {
            service,
            instance_id,
            endpoint,
            priority: SRV_PRIORITY,
            weight: SRV_WEIGHT,
            scheme: None,
            source: 0,
            metadata: Vec::new(),
        }
    }
}

/// One usable registration: what [`crate::source`] makes of an etcd key
/// and value, and what the zone is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Service key, lower-cased and validated (e.g. `sms.rpc`).
    pub service: String,
    /// Instance id as the source gives it (not lower-cased): the part of
    /// a go-zero key after its first `/`.
    pub instance_id: String,
    pub endpoint: Endpoint,
    /// SRV priority and weight of the instance: [`SRV_PRIORITY`] and
    /// [`SRV_WEIGHT`] unless its source says otherwise.
    pub priority: u16,
    pub weight: u16,
    /// The endpoint's protocol (`http`, `grpcs`), when its source says:
    /// its SRV records are then at `_<scheme>._tcp.<service>`. `None` is
    /// gRPC (`_grpc._tcp`), as for go-zero.
    pub scheme: Option<Box<str>>,
    /// The place of its source in the configured list: when two sources
    /// give one service name, the first source's instances are served.
    pub source: u8,
    /// The instance's metadata (kratos, go-micro), served as TXT
    /// `key=value` strings at its instance name.
    pub metadata: Vec<(String, String)>,
}

/// What an overlay key sets for a service or for one of its instances
/// (go-zero registrations carry none of it themselves); unset fields
/// leave the registration's own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Overlay {
    pub priority: Option<u16>,
    pub weight: Option<u16>,
    /// A service's gRPC service config: `Some(None)` for no record.
    pub service_config: Option<Option<service_config::ServiceConfig>>,
}

/// What an overlay key applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OverlayTarget {
    /// Every instance of a service (its key, lower-cased).
    Service(String),
    /// One instance: its service and its id as registered.
    Instance {
        service: String,
        instance_id: String,
    },
}

impl OverlayTarget {
    pub fn service(&self) -> &str {
        match self {
            OverlayTarget::Service(service) | OverlayTarget::Instance { service, .. } => service,
        }
    }
}

// ---------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------

/// Zone-wide parameters, fixed at start.
#[derive(Debug, Clone)]
pub struct ZoneParams {
    /// Apex, absolute and lower-cased (`svc.local.`).
    pub origin: Name,
    /// TTL of positive answers, seconds.
    pub ttl: u32,
    /// SOA minimum and negative-answer TTL, seconds.
    pub negative_ttl: u32,
    /// The gRPC service configs served at `_grpc_config.` names.
    pub grpc: GrpcConfigs,
    /// The reverse zones answered (PTR for the instances' addresses).
    pub reverse: Vec<ReverseZone>,
}

impl ZoneParams {
    /// The apex in presentation form without the trailing dot (`svc.local`),
    /// as the registration module measures names.
    pub fn origin_text(&self) -> String {
        let mut text = self.origin.to_ascii().to_ascii_lowercase();
        if text.ends_with('.') {
            text.pop();
        }
        text
    }

    /// The apex in wire format, lower-cased, ending with the root label.
    pub fn origin_wire(&self) -> Box<[u8]> {
        let mut wire = Vec::with_capacity(self.origin.len() + 2);
        for label in self.origin.iter() {
            // Name guarantees labels of at most 63 octets.
            wire.push(label.len() as u8);
            wire.extend(label.iter().map(u8::to_ascii_lowercase));
        }
        wire.push(0);
        wire.into()
    }

    /// TTL of the SOA in negative answers: RFC 2308 §3, min(ttl, minimum).
    pub fn negative_soa_ttl(&self) -> u32 {
        self.ttl.min(self.negative_ttl)
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Zones and configs for the unit tests of the modules that read them and
/// for the fuzz entry points.
#[cfg(any(test, feature = "fuzzing"))]
// The fuzz entry points use only part of it.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::service_config::ServiceConfig;
    use super::*;

    /// The default gRPC service config, none for `v6.rpc`, and for
    /// `big.rpc` one whose TXT record (about 1,300 octets) needs TCP below
    /// a 4096 limit.
    pub(crate) fn grpc_configs_with_large(ttl: u32) -> GrpcConfigs {
        let methods: Vec<String> = (0..45)
            .map(|i| format!(r#"{{"service":"pkg.Service{i}"}}"#))
            .collect();
        let big = format!(
            r#"{{"loadBalancingConfig":[{{"round_robin":{{}}}}],"methodConfig":[{{"name":[{}],"timeout":"1s"}}]}}"#,
            methods.join(",")
        );
        let parse = |json: &str| ServiceConfig::parse(json).ok();
        GrpcConfigs::new(
            parse(crate::zone::service_config::DEFAULT_SERVICE_CONFIG),
            vec![
                ("v6.rpc".to_owned(), None),
                ("big.rpc".to_owned(), parse(&big)),
            ],
            ttl,
        )
        .unwrap_or_default()
    }

    /// A published `svc.local.` zone (TTL 5) at `revision` holding
    /// `entries`: etcd key and go-zero value (`10.0.0.5:8001`,
    /// `[fd00::5]:8001`, `sms-0.sms:9000`).
    pub(crate) fn zone(
        negative_ttl: u32,
        revision: i64,
        entries: &[(&str, &str)],
    ) -> Arc<ZoneStore> {
        zone_with(GrpcConfigs::default(), negative_ttl, revision, entries)
    }

    /// [`zone`] serving `grpc`.
    pub(crate) fn zone_with(
        grpc: GrpcConfigs,
        negative_ttl: u32,
        revision: i64,
        entries: &[(&str, &str)],
    ) -> Arc<ZoneStore> {
        zone_of(grpc, Vec::new(), negative_ttl, revision, entries)
    }

    /// [`zone`] with the reverse zones of `nets` (CIDRs).
    pub(crate) fn zone_with_reverse(nets: &[&str], entries: &[(&str, &str)]) -> Arc<ZoneStore> {
        let reverse = nets
            .iter()
            .map(|net| ReverseZone::new(net.parse().unwrap()))
            .collect();
        zone_of(GrpcConfigs::default(), reverse, 3, 77, entries)
    }

    fn zone_of(
        grpc: GrpcConfigs,
        reverse: Vec<ReverseZone>,
        negative_ttl: u32,
        revision: i64,
        entries: &[(&str, &str)],
    ) -> Arc<ZoneStore> {
        let store = Arc::new(ZoneStore::new(ZoneParams {
            origin: Name::from_ascii("svc.local.").unwrap(),
            ttl: 5,
            negative_ttl,
            grpc,
            reverse,
        }));
        let mut writer = ZoneWriter::new(store.clone());
        for (key, value) in entries {
            let (service, id) = key.split_once('/').unwrap();
            writer.upsert(
                key.as_bytes(),
                registration(&service.to_ascii_lowercase(), id, value),
            );
        }
        writer.set_revision(revision);
        writer.publish();
        store
    }

    /// The default service config for every service, and `overrides`
    /// (glob, JSON or `None` for none).
    pub(crate) fn grpc(overrides: &[(&str, Option<&str>)]) -> GrpcConfigs {
        let parse = |json: &str| ServiceConfig::parse(json).unwrap();
        GrpcConfigs::new(
            Some(parse(crate::zone::service_config::DEFAULT_SERVICE_CONFIG)),
            overrides
                .iter()
                .map(|(glob, json)| (glob.to_string(), json.map(parse)))
                .collect(),
            5,
        )
        .unwrap()
    }

    /// A registration from a go-zero value, without the parser's checks.
    pub(crate) fn registration(service: &str, id: &str, value: &str) -> Registration {
        let (host, port) = value.rsplit_once(':').expect("host:port");
        let port = port.parse().unwrap();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let endpoint = match host.parse::<IpAddr>() {
            Ok(addr) => Endpoint::Ip { addr, port },
            Err(_) => Endpoint::Host {
                name: host.to_owned(),
                port,
            },
        };
        Registration::go_zero(service.to_owned(), id.to_owned(), endpoint)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    pub(crate) fn store() -> Arc<ZoneStore> {
        Arc::new(ZoneStore::new(ZoneParams {
            origin: Name::from_ascii("svc.local.").unwrap(),
            ttl: 5,
            negative_ttl: 3,
            grpc: Default::default(),
            reverse: Vec::new(),
        }))
    }

    use super::testing::registration as reg;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    /// The writer knows each key's service itself: any key shape can be
    /// removed, a key can move to another service, and each instance's
    /// SRV record carries its own priority and weight.
    #[test]
    fn keys_of_any_shape_weights_and_moves() {
        let store = store();
        let mut writer = ZoneWriter::new(store.clone());
        let key = b"/microservices/hello/a1b2";
        let mut weighted = reg("hello", "a1b2", "10.0.0.7:9000");
        (weighted.priority, weighted.weight) = (3, 70);
        writer.upsert(key, weighted);
        writer.upsert(b"sms.rpc/1", reg("sms.rpc", "1", "10.0.0.5:8001"));
        writer.publish();
        let snap = store.load();
        let Some(Lookup::Service(hello)) = snap.lookup(&name("hello.svc.local.")) else {
            panic!("hello not found");
        };
        let srv = hello.srv().bytes();
        // Owner pointer, type, class, TTL, RDLENGTH, then the RDATA.
        assert_eq!(&srv[12..16], &[0, 3, 0, 70], "priority 3, weight 70");
        let Some(Lookup::Instance(_, instance)) = snap.lookup(&name("a1b2.hello.svc.local."))
        else {
            panic!("instance name not found");
        };
        assert_eq!(
            (instance.id(), instance.priority(), instance.weight()),
            ("a1b2", 3, 70)
        );

        // The same key, now in another service: it leaves the first.
        assert_eq!(
            writer.upsert(key, reg("sms.rpc", "a1b2", "10.0.0.7:8001")),
            ServiceChange::Updated("sms.rpc".to_owned())
        );
        writer.publish();
        let snap = store.load();
        assert!(matches!(
            snap.lookup(&name("hello.svc.local.")),
            Some(Lookup::NxDomain)
        ));
        let Some(Lookup::Service(sms)) = snap.lookup(&name("sms.rpc.svc.local.")) else {
            panic!("sms not found");
        };
        assert_eq!(sms.srv().count(), 2);
        // Removed by its key alone.
        assert_eq!(
            writer.remove(key),
            ServiceChange::Updated("sms.rpc".to_owned())
        );
        assert_eq!(writer.remove(key), ServiceChange::Unchanged);
        writer.publish();
        let snap = store.load();
        let Some(Lookup::Service(sms)) = snap.lookup(&name("sms.rpc.svc.local.")) else {
            panic!("sms not found");
        };
        assert_eq!(sms.srv().count(), 1);
    }

    /// One registration with several endpoints (kratos): one instance per
    /// host, an SRV name per scheme, and no record twice.
    #[test]
    fn endpoints_of_one_registration_share_their_instance() {
        let store = store();
        let mut writer = ZoneWriter::new(store.clone());
        let endpoint = |value: &str, scheme: &str| {
            let mut r = reg("hello", "a1", value);
            r.scheme = Some(scheme.into());
            r
        };
        let key = b"/microservices/hello/a1";
        writer.set(
            key,
            vec![
                endpoint("10.0.0.5:9000", "grpc"),
                endpoint("10.0.0.5:8000", "http"),
                // The same host and port again, under another scheme.
                endpoint("10.0.0.5:9000", "grpcs"),
                // Another host: another instance (its label is hashed).
                endpoint("10.0.0.6:8443", "https"),
            ],
        );
        writer.publish();
        let snap = store.load();
        let Some(Lookup::Service(hello)) = snap.lookup(&name("hello.svc.local.")) else {
            panic!("hello not found");
        };
        assert_eq!(hello.instance_count(), 2, "one per host");
        assert!(
            !hello.has_several_ports(),
            "one port per scheme: the SRV names tell them apart"
        );
        assert_eq!(hello.ports().len(), 3, "a port name per port all the same");
        assert_eq!(hello.a().count(), 2);
        assert_eq!(hello.srv().count(), 3, "9000 once, 8000, 8443");
        assert_eq!(hello.glue().count(), 2, "one address per instance");
        let schemes: Vec<(&str, usize, usize)> = hello
            .schemes()
            .iter()
            .map(|s| (s.scheme(), s.srv().count(), s.glue().count()))
            .collect();
        assert_eq!(
            schemes,
            vec![
                ("grpc", 1, 1),
                ("grpcs", 1, 1),
                ("http", 1, 1),
                ("https", 1, 1)
            ]
        );
        for (query, scheme) in [
            ("_grpc._tcp.hello.svc.local.", "grpc"),
            ("_HTTP._tcp.hello.svc.local.", "http"),
        ] {
            let Some(Lookup::SchemeService(_, set)) = snap.lookup(&name(query)) else {
                panic!("{query} not found");
            };
            assert_eq!(set.scheme(), scheme);
        }
        assert!(matches!(
            snap.lookup(&name("_h2._tcp.hello.svc.local.")),
            Some(Lookup::NxDomain)
        ));
        assert!(matches!(
            snap.lookup(&name("a1.hello.svc.local.")),
            Some(Lookup::Instance(_, _))
        ));
        // The same endpoints again: nothing to rebuild; fewer: updated.
        assert_eq!(
            writer.set(key, vec![endpoint("10.0.0.5:9000", "grpc")]),
            ServiceChange::Updated("hello".to_owned())
        );
        assert_eq!(
            writer.set(key, vec![endpoint("10.0.0.5:9000", "grpc")]),
            ServiceChange::Unchanged
        );
        writer.publish();
        let snap = store.load();
        let Some(Lookup::Service(hello)) = snap.lookup(&name("hello.svc.local.")) else {
            panic!("hello not found");
        };
        assert_eq!((hello.instance_count(), hello.schemes().len()), (1, 1));
        assert_eq!(
            writer.remove(key),
            ServiceChange::Disappeared("hello".to_owned())
        );
    }

    /// A name two sources give is the first source's: the other's
    /// instances are counted in /debug/zone, and served once the first
    /// source's are gone.
    #[test]
    fn a_name_two_sources_give_is_the_first_sources() {
        let store = store();
        let mut writer = ZoneWriter::new(store.clone());
        let mut theirs = reg("greeter", "n1", "10.0.0.9:9090");
        theirs.source = 1;
        writer.upsert(b"/micro/registry/greeter/n1", theirs);
        writer.upsert(b"greeter/1", reg("greeter", "1", "10.0.0.1:8001"));
        writer.publish();
        let snap = store.load();
        let Some(Lookup::Service(greeter)) = snap.lookup(&name("greeter.svc.local.")) else {
            panic!("greeter not found");
        };
        assert_eq!((greeter.instance_count(), greeter.srv().count()), (1, 1));
        let json = snap.debug_json();
        let service = &json["services"][0];
        assert_eq!(
            (service["source"].as_u64(), service["shadowed"].as_u64()),
            (Some(0), Some(1))
        );
        // The first source's instance goes: the other's is served.
        writer.remove(b"greeter/1");
        writer.publish();
        let snap = store.load();
        let Some(Lookup::Service(greeter)) = snap.lookup(&name("greeter.svc.local.")) else {
            panic!("greeter not found");
        };
        assert_eq!(greeter.instance("n1").map(|i| i.id()), Some("n1"));
        assert_eq!(snap.debug_json()["services"][0]["source"].as_u64(), Some(1));
    }

    #[test]
    fn service_instance_and_grpc_names_resolve() {
        let store = store();
        let mut writer = ZoneWriter::new(store.clone());
        writer.upsert(b"sms.rpc/1", reg("sms.rpc", "1", "10.0.0.5:8001"));
        writer.upsert(b"sms.rpc/2", reg("sms.rpc", "2", "10.0.0.5:8001"));
        writer.upsert(b"sms.rpc/3", reg("sms.rpc", "3", "[fd00::5]:8001"));
        writer.set_revision(42);
        writer.publish();
        let snap = store.load();
        assert_eq!(snap.serial(), 42);
        let Some(Lookup::Service(service)) = snap.lookup(&name("SMS.rpc.svc.local.")) else {
            panic!("service not found");
        };
        assert_eq!(service.a().count(), 1, "two ids, one address: one A");
        assert_eq!(service.aaaa().count(), 1);
        assert_eq!(service.srv().count(), 3, "one SRV per instance");
        assert_eq!(service.glue().count(), 3);
        assert_eq!(service.a().bytes().len(), 16, "pointer owner + A rdata");
        assert!(matches!(
            snap.lookup(&name("_grpc._tcp.sms.rpc.svc.local.")),
            Some(Lookup::SchemeService(_, _))
        ));
        assert!(matches!(
            snap.lookup(&name("2.sms.rpc.svc.local.")),
            Some(Lookup::Instance(_, _))
        ));
        assert!(matches!(
            snap.lookup(&name("_tcp.sms.rpc.svc.local.")),
            Some(Lookup::EmptyNonTerminal)
        ));
        assert!(matches!(
            snap.lookup(&name("rpc.svc.local.")),
            Some(Lookup::EmptyNonTerminal)
        ));
        assert!(matches!(
            snap.lookup(&name("nope.rpc.svc.local.")),
            Some(Lookup::NxDomain)
        ));
        assert!(matches!(
            snap.lookup(&name("svc.local.")),
            Some(Lookup::Apex)
        ));
        assert!(snap.lookup(&name("example.com.")).is_none());
    }

    #[test]
    fn removing_the_last_instance_removes_service_and_ents() {
        let store = store();
        let mut writer = ZoneWriter::new(store.clone());
        assert_eq!(
            writer.upsert(b"a.b.rpc/1", reg("a.b.rpc", "1", "10.0.0.1:1")),
            ServiceChange::Appeared("a.b.rpc".into())
        );
        writer.upsert(b"c.b.rpc/1", reg("c.b.rpc", "1", "10.0.0.2:1"));
        writer.publish();
        assert!(matches!(
            store.load().lookup_relative("b.rpc"),
            Lookup::EmptyNonTerminal
        ));
        assert_eq!(
            writer.remove(b"a.b.rpc/1"),
            ServiceChange::Disappeared("a.b.rpc".into())
        );
        writer.publish();
        let snap = store.load();
        assert!(matches!(snap.lookup_relative("a.b.rpc"), Lookup::NxDomain));
        assert!(matches!(
            snap.lookup_relative("b.rpc"),
            Lookup::EmptyNonTerminal
        ));
        writer.remove(b"c.b.rpc/1");
        writer.publish();
        let snap = store.load();
        assert!(matches!(snap.lookup_relative("b.rpc"), Lookup::NxDomain));
        assert!(matches!(snap.lookup_relative("rpc"), Lookup::NxDomain));
        assert_eq!(snap.service_count(), 0);
        assert_eq!(snap.instance_count(), 0);
    }

    #[test]
    fn keys_that_differ_in_service_case_merge_and_remove() {
        let store = store();
        let mut writer = ZoneWriter::new(store.clone());
        writer.upsert(b"SMS.rpc/1", reg("sms.rpc", "1", "10.0.0.1:1"));
        writer.upsert(b"sms.rpc/2", reg("sms.rpc", "2", "10.0.0.2:1"));
        writer.publish();
        assert_eq!(store.load().instance_count(), 2);
        assert_eq!(
            writer.remove(b"SMS.rpc/1"),
            ServiceChange::Updated("sms.rpc".into())
        );
        writer.publish();
        assert_eq!(store.load().instance_count(), 1);
    }

    #[test]
    fn readers_keep_their_snapshot_until_publish() {
        let store = store();
        let mut writer = ZoneWriter::new(store.clone());
        writer.upsert(b"x.rpc/1", reg("x.rpc", "1", "10.0.0.1:1"));
        let before = store.load();
        assert_eq!(before.service_count(), 0, "staged changes are invisible");
        writer.publish();
        assert_eq!(before.service_count(), 0, "an old snapshot never changes");
        assert_eq!(store.load().service_count(), 1);
    }

    #[test]
    fn service_name_wins_over_instance_name() {
        let store = store();
        let mut writer = ZoneWriter::new(store.clone());
        writer.upsert(b"b.rpc/a", reg("b.rpc", "a", "10.0.0.1:1"));
        writer.publish();
        assert!(matches!(
            store.load().lookup_relative("a.b.rpc"),
            Lookup::Instance(_, _)
        ));
        writer.upsert(b"a.b.rpc/1", reg("a.b.rpc", "1", "10.0.0.2:1"));
        writer.publish();
        let snap = store.load();
        assert!(matches!(
            snap.lookup_relative("a.b.rpc"),
            Lookup::Service(_)
        ));
        let hashed = names::hashed_label(b"b.rpc/a");
        assert!(matches!(
            snap.lookup_relative(&format!("{hashed}.b.rpc")),
            Lookup::Instance(_, _)
        ));
        // And back when the service goes away.
        writer.remove(b"a.b.rpc/1");
        writer.publish();
        assert!(matches!(
            store.load().lookup_relative("a.b.rpc"),
            Lookup::Instance(_, _)
        ));
    }

    #[test]
    fn host_name_instances_give_srv_targets_and_no_addresses() {
        let store = store();
        let mut writer = ZoneWriter::new(store.clone());
        writer.upsert(b"sms.rpc/1", reg("sms.rpc", "1", "sms-0.sms:8001"));
        writer.publish();
        let snap = store.load();
        let service = snap.service("sms.rpc").unwrap();
        assert!(service.a().is_empty() && service.aaaa().is_empty());
        assert!(service.glue().is_empty());
        let srv = service.srv().bytes();
        // owner pointer, type, class, ttl, rdlength, then the SRV fields.
        assert_eq!(&srv[..4], &[0xC0, 0x0C, 0, 33]);
        assert_eq!(&srv[12..18], &[0, 0, 0, 10, 0x1F, 0x41], "0 10 8001");
        assert_eq!(&srv[18..], b"\x05sms-0\x03sms\x00");
    }

    #[test]
    fn replace_all_swaps_everything_in_one_step() {
        let store = store();
        let mut writer = ZoneWriter::new(store.clone());
        writer.upsert(b"old.rpc/1", reg("old.rpc", "1", "10.0.0.1:1"));
        writer.publish();
        let counts = writer.replace_all(
            vec![
                (
                    b"new.rpc/1".to_vec(),
                    vec![reg("new.rpc", "1", "10.0.0.1:1")],
                ),
                (
                    b"new.rpc/2".to_vec(),
                    vec![reg("new.rpc", "2", "10.0.0.2:1")],
                ),
            ],
            Vec::new(),
        );
        assert_eq!(counts, (1, 2));
        assert!(
            store.load().service("old.rpc").is_some(),
            "not yet published"
        );
        writer.set_revision(9);
        writer.publish();
        let snap = store.load();
        assert!(snap.service("old.rpc").is_none());
        assert_eq!(
            snap.service("new.rpc").map(Service::instance_count),
            Some(2)
        );
        assert_eq!(snap.serial(), 9);
        assert!(matches!(snap.lookup_relative("old.rpc"), Lookup::NxDomain));
        assert!(matches!(
            snap.lookup_relative("rpc"),
            Lookup::EmptyNonTerminal
        ));
    }

    #[test]
    fn every_port_has_a_name_and_instance_ids_give_way_to_it() {
        let store = store();
        let mut writer = ZoneWriter::new(store.clone());
        writer.upsert(b"sms.rpc/1", reg("sms.rpc", "1", "10.0.0.1:8001"));
        writer.upsert(b"sms.rpc/2", reg("sms.rpc", "2", "10.0.0.2:8001"));
        writer.upsert(
            b"sms.rpc/port-8001",
            reg("sms.rpc", "port-8001", "10.0.0.3:8001"),
        );
        assert!(writer.publish().is_empty(), "one port: nothing to report");
        let snap = store.load();
        let Lookup::Port(service, port) = snap.lookup_relative("port-8001.sms.rpc") else {
            panic!("port name not found");
        };
        assert_eq!((port.port(), port.instance_count()), (8001, 3));
        assert!(!service.has_several_ports());
        assert!(
            std::ptr::eq(port.a(service), service.a()),
            "one port: the service's own set"
        );
        assert_eq!(port.glue().count(), 3);
        // The instance whose id is the port name takes its hashed label.
        let hashed = names::hashed_label(b"sms.rpc/port-8001");
        assert!(matches!(
            snap.lookup_relative(&format!("{hashed}.sms.rpc")),
            Lookup::Instance(..)
        ));
        for missing in ["port-8002.sms.rpc", "port-08001.sms.rpc", "port-.sms.rpc"] {
            assert!(
                matches!(snap.lookup_relative(missing), Lookup::NxDomain),
                "{missing}"
            );
        }
        // A service of the same name wins over the port name.
        writer.upsert(
            b"port-8001.sms.rpc/1",
            reg("port-8001.sms.rpc", "1", "10.0.0.9:1"),
        );
        writer.publish();
        assert!(matches!(
            store.load().lookup_relative("port-8001.sms.rpc"),
            Lookup::Service(_)
        ));
    }

    #[test]
    fn several_ports_get_their_own_sets_and_are_reported_once() {
        let store = store();
        let mut writer = ZoneWriter::new(store.clone());
        writer.upsert(b"sms.rpc/1", reg("sms.rpc", "1", "10.0.0.1:8001"));
        writer.upsert(b"sms.rpc/2", reg("sms.rpc", "2", "[fd00::2]:8002"));
        writer.upsert(b"sms.rpc/3", reg("sms.rpc", "3", "sms-3.sms:8002"));
        assert_eq!(
            writer.publish(),
            vec![PortsChange::Several {
                service: "sms.rpc".into(),
                ports: vec![8001, 8002]
            }]
        );
        let snap = store.load();
        assert_eq!(snap.several_ports_count(), 1);
        let service = snap.service("sms.rpc").unwrap();
        assert!(service.has_several_ports());
        let [p8001, p8002] = service.ports() else {
            panic!("two ports")
        };
        assert_eq!(
            (p8001.a(service).count(), p8001.aaaa(service).count()),
            (1, 0)
        );
        assert_eq!(p8001.srv(service).count(), 1);
        assert_eq!(
            (p8002.a(service).count(), p8002.aaaa(service).count()),
            (0, 1)
        );
        assert_eq!(p8002.srv(service).count(), 2, "host-name instance too");
        assert_eq!(p8002.glue().count(), 1, "no glue for a host name");

        // Still several ports, also across a full re-read: no new report.
        writer.upsert(b"sms.rpc/4", reg("sms.rpc", "4", "10.0.0.4:8003"));
        assert!(writer.publish().is_empty());
        let everything = [
            ("sms.rpc/1", "10.0.0.1:8001"),
            ("sms.rpc/2", "[fd00::2]:8002"),
            ("sms.rpc/4", "10.0.0.4:8003"),
        ]
        .map(|(key, value)| {
            let (service, id) = key.split_once('/').unwrap();
            (key.as_bytes().to_vec(), vec![reg(service, id, value)])
        });
        writer.replace_all(everything.to_vec(), Vec::new());
        assert!(writer.publish().is_empty(), "a re-read is not news");
        assert_eq!(store.load().several_ports_count(), 1);

        writer.remove(b"sms.rpc/2");
        writer.remove(b"sms.rpc/4");
        assert_eq!(
            writer.publish(),
            vec![PortsChange::One {
                service: "sms.rpc".into(),
                port: 8001
            }]
        );
        assert_eq!(store.load().several_ports_count(), 0);
        // Gone, then back on several ports: reported again.
        writer.remove(b"sms.rpc/1");
        writer.publish();
        writer.upsert(b"sms.rpc/1", reg("sms.rpc", "1", "10.0.0.1:8001"));
        writer.upsert(b"sms.rpc/2", reg("sms.rpc", "2", "10.0.0.2:8002"));
        assert_eq!(writer.publish().len(), 1);
    }

    #[test]
    fn grpc_config_names_follow_services_ports_and_overrides() {
        let grpc = testing::grpc(&[
            ("legacy.*", None),
            ("pay.rpc", Some(r#"{"loadBalancingPolicy":"pick_first"}"#)),
            ("*.rpc", Some(r#"{"healthCheckConfig":{"serviceName":""}}"#)),
        ]);
        let store = testing::zone_with(
            grpc,
            5,
            1,
            &[
                ("sms.rpc/1", "10.0.0.1:8001"),
                ("legacy.sms.rpc/1", "10.0.0.2:8001"),
                ("pay.rpc/1", "10.0.0.3:8001"),
                ("other.svc/1", "10.0.0.4:8001"),
            ],
        );
        let snap = store.load();
        let json_at = |name: &str| match snap.lookup_relative(name) {
            Lookup::GrpcConfig(config) => Some(config.config().json().to_owned()),
            Lookup::NxDomain => None,
            other => panic!("{name}: {other:?}"),
        };
        let health = Some(r#"{"healthCheckConfig":{"serviceName":""}}"#.to_owned());
        assert_eq!(json_at("_grpc_config.sms.rpc"), health);
        assert_eq!(json_at("_grpc_config.port-8001.sms.rpc"), health);
        assert_eq!(json_at("_grpc_config.legacy.sms.rpc"), None, "off");
        assert_eq!(
            json_at("_grpc_config.pay.rpc").as_deref(),
            Some(r#"{"loadBalancingPolicy":"pick_first"}"#),
            "the first matching override"
        );
        assert_eq!(
            json_at("_grpc_config.other.svc").as_deref(),
            Some(crate::zone::service_config::DEFAULT_SERVICE_CONFIG),
            "no override: the default"
        );
        for missing in [
            "_grpc_config.nope.rpc",
            "_grpc_config.port-9.sms.rpc",
            "_grpc_config.1.sms.rpc",
            "_grpc_config",
        ] {
            assert_eq!(json_at(missing), None, "{missing}");
        }
    }

    #[test]
    fn ptr_records_follow_the_instances() {
        let store = testing::zone_with_reverse(&["10.0.0.0/8"], &[("a.rpc/1", "10.0.0.1:1")]);
        let addr: IpAddr = "10.0.0.1".parse().unwrap();
        let count = |store: &ZoneStore| {
            store
                .load()
                .addresses
                .get(&addr)
                .map_or(0, |ptr| ptr.count())
        };
        assert_eq!(count(&store), 1);
        let mut writer = ZoneWriter::new(store.clone());
        // The writer starts from an empty zone: replay what is there.
        writer.replace_all(
            vec![
                (
                    b"a.rpc/1".to_vec(),
                    vec![testing::registration("a.rpc", "1", "10.0.0.1:1")],
                ),
                (
                    b"b.rpc/2".to_vec(),
                    vec![testing::registration("b.rpc", "2", "10.0.0.1:2")],
                ),
            ],
            Vec::new(),
        );
        writer.publish();
        assert_eq!(count(&store), 2, "two names at one address");
        writer.upsert(
            b"a.rpc/1",
            testing::registration("a.rpc", "1", "10.0.0.9:1"),
        );
        writer.publish();
        assert_eq!(count(&store), 1, "moved away");
        assert_eq!(store.load().ptr_count(), 2);
        writer.remove(b"b.rpc/2");
        writer.publish();
        assert_eq!(count(&store), 0);
        assert_eq!(store.load().ptr_count(), 1);
        // Without reverse zones, no index is kept.
        let plain = testing::zone(3, 1, &[("a.rpc/1", "10.0.0.1:1")]);
        assert_eq!(plain.load().ptr_count(), 0);
    }

    #[test]
    fn origin_wire_is_lower_case_wire_form() {
        let params = ZoneParams {
            origin: name("Svc.Local."),
            ttl: 5,
            negative_ttl: 9,
            grpc: Default::default(),
            reverse: Vec::new(),
        };
        assert_eq!(&*params.origin_wire(), b"\x03svc\x05local\x00");
        assert_eq!(params.origin_text(), "svc.local");
        assert_eq!(params.negative_soa_ttl(), 5);
    }
}
