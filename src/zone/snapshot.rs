//! Published, immutable views of the zone and their lookups, and the store
//! readers load them from without ever waiting for the writer; no I/O.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;
use serde_json::json;

use super::names::port_of_label;
use super::service_config::{GRPC_CONFIG_LABEL, ServiceConfigTxt};
use super::wire::WireRrs;
use std::net::IpAddr;

use super::reverse::{ReverseName, ReverseZone};
use super::skydns::SkyNode;
use super::{Endpoint, ZoneParams};

/// The protocol label of `_<scheme>._tcp.<service>`, with its dot.
const TCP_LABEL: &str = "_tcp.";

// ---------------------------------------------------------------------------
// Published data
// ---------------------------------------------------------------------------

/// One instance of a service.
#[derive(Debug)]
pub struct Instance {
    /// The whole etcd key (`sms.rpc/7587869364815473158`), shared with the
    /// writer.
    pub(super) key: Arc<[u8]>,
    /// The instance id its source gave; `None` when it is the key after
    /// its first `/` (go-zero).
    pub(super) id: Option<Box<str>>,
    pub(super) endpoint: Endpoint,
    pub(super) priority: u16,
    pub(super) weight: u16,
    /// Its metadata as one TXT record at its name, owner pointing at the
    /// question.
    pub(super) txt: Option<Box<WireRrs>>,
}

impl Instance {
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn id(&self) -> &str {
        self.id
            .as_deref()
            .or_else(|| super::writer::id_in_key(&self.key))
            .unwrap_or("")
    }

    /// SRV priority and weight.
    pub fn priority(&self) -> u16 {
        self.priority
    }

    pub fn weight(&self) -> u16 {
        self.weight
    }

    /// The TXT record of its metadata, if it has any.
    pub fn txt(&self) -> Option<&WireRrs> {
        self.txt.as_deref()
    }
}

/// The SRV records of a service's instances of one scheme, answered at
/// `_<scheme>._tcp.<service>`: targets and glue point at the service name
/// inside that question.
#[derive(Debug)]
pub struct SchemeSet {
    pub(super) scheme: Box<str>,
    pub(super) srv: WireRrs,
    pub(super) glue: WireRrs,
}

impl SchemeSet {
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    pub fn srv(&self) -> &WireRrs {
        &self.srv
    }

    pub fn glue(&self) -> &WireRrs {
        &self.glue
    }
}

/// One service, built once per change and shared by every snapshot until
/// the service changes again. Its record sets are in wire format with
/// owner names pointing at the question.
#[derive(Debug)]
pub struct Service {
    /// Service key, lower-cased (`sms.rpc`).
    pub(super) key: Arc<str>,
    /// Instances in etcd key order.
    pub(super) instances: Box<[Instance]>,
    /// Instance label → index into `instances`.
    pub(super) labels: HashMap<Box<str>, u32>,
    /// `A` at the service: one per distinct IPv4 address.
    pub(super) a: WireRrs,
    /// `AAAA` at the service: one per distinct IPv6 address.
    pub(super) aaaa: WireRrs,
    /// `SRV` at the service, one per instance; targets point at the
    /// question (the service name).
    pub(super) srv: WireRrs,
    /// Address records of the SRV targets, owners `<label>` + pointer to
    /// the question.
    pub(super) glue: WireRrs,
    /// `SRV` at `_<scheme>._tcp.<service>`, one set per scheme its
    /// instances have (`grpc` for those whose source names none), by
    /// scheme.
    pub(super) schemes: Box<[SchemeSet]>,
    /// Whether the instances of one scheme listen on several ports.
    pub(super) mixed_ports: bool,
    /// The place in the configured list of the source it is served from.
    pub(super) source: u8,
    /// Endpoints other sources registered under its name: not served.
    pub(super) shadowed: u32,
    /// One port name per distinct port, by port number.
    pub(super) ports: Box<[PortName]>,
    /// The gRPC service config at `_grpc_config.<service>` (and at its
    /// port names), if one applies.
    pub(super) grpc_config: Option<Arc<ServiceConfigTxt>>,
    /// Rotates the order of records between responses: one counter for
    /// the address sets and one for the SRV sets, so that queries of one
    /// kind advance through its records without gaps left by the other
    /// (which matters when a set is cut to what fits in a message).
    pub(super) rotation: [AtomicUsize; 2],
}

impl Service {
    /// The service key (`sms.rpc`).
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn a(&self) -> &WireRrs {
        &self.a
    }

    pub fn aaaa(&self) -> &WireRrs {
        &self.aaaa
    }

    pub fn srv(&self) -> &WireRrs {
        &self.srv
    }

    pub fn glue(&self) -> &WireRrs {
        &self.glue
    }

    /// Its instances, in etcd key order.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// The SRV set at `_<scheme>._tcp.<service>`, if it has one.
    pub fn scheme(&self, scheme: &str) -> Option<&SchemeSet> {
        self.schemes.iter().find(|set| &*set.scheme == scheme)
    }

    pub fn schemes(&self) -> &[SchemeSet] {
        &self.schemes
    }

    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// The port names, by port number.
    pub fn ports(&self) -> &[PortName] {
        &self.ports
    }

    /// The port name with `label` (`port-8001`), lower-case: a binary
    /// search of the ports, however many there are.
    pub fn port(&self, label: &str) -> Option<&PortName> {
        let port = port_of_label(label)?;
        let index = self.ports.binary_search_by_key(&port, |p| p.port).ok()?;
        self.ports.get(index)
    }

    /// True when its instances of one scheme listen on more than one
    /// port, so that its A and AAAA records alone send some clients to the
    /// wrong port. (kratos's gRPC and HTTP endpoints on two ports are not
    /// that: each scheme has its SRV name.)
    pub fn has_several_ports(&self) -> bool {
        self.mixed_ports
    }

    /// The gRPC service config served for it, if any.
    pub fn grpc_config(&self) -> Option<&ServiceConfigTxt> {
        self.grpc_config.as_deref()
    }

    /// The instance with `label`, lower-case.
    pub fn instance(&self, label: &str) -> Option<&Instance> {
        let index = *self.labels.get(label)?;
        self.instances.get(index as usize)
    }

    /// The next rotation offset of the address sets (`srv` false) or of
    /// the SRV sets; each call advances it.
    pub fn next_rotation(&self, srv: bool) -> usize {
        // Relaxed: the counter only spreads load, no other memory depends
        // on its value.
        self.rotation[usize::from(srv)].fetch_add(1, Ordering::Relaxed)
    }

    /// Labels by instance index, for `/debug/zone`.
    fn labels_by_index(&self) -> Vec<&str> {
        let mut labels = vec![""; self.instances.len()];
        for (label, &index) in &self.labels {
            if let Some(slot) = labels.get_mut(index as usize) {
                *slot = label;
            }
        }
        labels
    }
}

/// `port-<port>.<service>`: the instances of a service that listen on one
/// port, for clients that take the port from elsewhere (a gRPC target
/// carries one) and must only get addresses that listen on it.
#[derive(Debug)]
pub struct PortName {
    pub(super) port: u16,
    /// `port-8001`.
    pub(super) label: Box<str>,
    pub(super) instances: u32,
    /// A, AAAA and SRV of the instances on this port; `None` when every
    /// instance of the service listens on it, and the service's own sets
    /// are the same bytes (owners point at the question either way).
    pub(super) own: Option<Box<PortSets>>,
    /// Glue of the SRV targets: owners `<label>` plus a pointer to the
    /// service name inside a `port-<port>.<service>` question.
    pub(super) glue: WireRrs,
}

#[derive(Debug)]
pub(super) struct PortSets {
    pub(super) a: WireRrs,
    pub(super) aaaa: WireRrs,
    pub(super) srv: WireRrs,
}

impl PortName {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn instance_count(&self) -> usize {
        self.instances as usize
    }

    pub fn a<'s>(&'s self, service: &'s Service) -> &'s WireRrs {
        self.own.as_ref().map_or(&service.a, |own| &own.a)
    }

    pub fn aaaa<'s>(&'s self, service: &'s Service) -> &'s WireRrs {
        self.own.as_ref().map_or(&service.aaaa, |own| &own.aaaa)
    }

    pub fn srv<'s>(&'s self, service: &'s Service) -> &'s WireRrs {
        self.own.as_ref().map_or(&service.srv, |own| &own.srv)
    }

    pub fn glue(&self) -> &WireRrs {
        &self.glue
    }
}

/// What a name is in the zone.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// The zone apex (SOA, NS).
    Apex,
    /// `<service>.<zone>`.
    Service(&'a Service),
    /// `_grpc._tcp.<service>.<zone>`.
    /// `_<scheme>._tcp.<service>`, for a scheme the service has.
    SchemeService(&'a Service, &'a SchemeSet),
    /// `<instance label>.<service>.<zone>`.
    Instance(&'a Service, &'a Instance),
    /// `port-<port>.<service>.<zone>`.
    Port(&'a Service, &'a PortName),
    /// `_grpc_config.<service or port name>.<zone>` of a service that has
    /// a gRPC service config.
    GrpcConfig(&'a ServiceConfigTxt),
    /// An address in a reverse zone where instances are registered: their
    /// PTR records.
    Ptr(&'a WireRrs),
    /// A name of the SkyDNS tree: CoreDNS's answers from the records at
    /// and below it.
    Sky(&'a SkyNode),
    /// A name that exists only because names below it do (RFC 8020 ENT).
    EmptyNonTerminal,
    /// No such name.
    NxDomain,
}

/// One published, immutable view of the zone.
#[derive(Debug, Clone)]
pub struct ZoneSnapshot {
    pub(super) params: Arc<ZoneParams>,
    /// The apex in wire form, lower-case.
    pub(super) origin_wire: Arc<[u8]>,
    pub(super) revision: i64,
    /// Service key → service.
    pub(super) services: imbl::HashMap<Arc<str>, Arc<Service>>,
    /// Relative name → number of services below it, for the names that
    /// exist only as ancestors of services (`rpc` when `sms.rpc` exists).
    pub(super) ents: imbl::HashMap<Arc<str>, u32>,
    pub(super) instances: usize,
    /// Services whose instances listen on more than one port.
    pub(super) several_ports: usize,
    /// Address → its PTR records (one per instance name registered at it),
    /// kept only when reverse zones are configured. Ordered, so that a
    /// reverse name's prefix is a range.
    pub(super) addresses: imbl::OrdMap<IpAddr, Arc<WireRrs>>,
    /// Relative name → its SkyDNS node, for every name at or above a
    /// SkyDNS record.
    pub(super) sky: imbl::HashMap<Arc<str>, Arc<SkyNode>>,
    /// SkyDNS records in the zone.
    pub(super) sky_records: usize,
}

impl ZoneSnapshot {
    pub(super) fn empty(params: Arc<ZoneParams>) -> Self {
        Self {
            origin_wire: params.origin_wire().into(),
            params,
            revision: 0,
            services: imbl::HashMap::new(),
            ents: imbl::HashMap::new(),
            instances: 0,
            several_ports: 0,
            addresses: imbl::OrdMap::new(),
            sky: imbl::HashMap::new(),
            sky_records: 0,
        }
    }

    pub fn params(&self) -> &ZoneParams {
        &self.params
    }

    /// The apex in wire form, lower-case, with the root label.
    pub fn origin_wire(&self) -> &[u8] {
        &self.origin_wire
    }

    /// The etcd revision this snapshot reflects.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The SOA serial: the revision, modulo 2^32 (RFC 1982 arithmetic).
    pub fn serial(&self) -> u32 {
        serial_of(self.revision)
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    pub fn instance_count(&self) -> usize {
        self.instances
    }

    /// How many services have instances on more than one port.
    pub fn several_ports_count(&self) -> usize {
        self.several_ports
    }

    /// Looks a service up by its key (`sms.rpc`), lower-case.
    pub fn service(&self, key: &str) -> Option<&Service> {
        self.services.get(key).map(|s| &**s)
    }

    /// Classifies `name`; `None` when it is outside the zone. `name` may be
    /// in any letter case.
    pub fn lookup(&self, name: &Name) -> Option<Lookup<'_>> {
        let origin = &self.params.origin;
        if !origin.zone_of(name) {
            return None;
        }
        let relative_labels = usize::from(name.num_labels() - origin.num_labels());
        let mut buf = [0u8; 255];
        Some(self.lookup_labels(name.iter().take(relative_labels), &mut buf))
    }

    /// Classifies the name made of `labels` (left to right, relative to the
    /// apex), in any letter case, using `buf` to join them: no allocation.
    pub fn lookup_labels<'l>(
        &self,
        labels: impl Iterator<Item = &'l [u8]>,
        buf: &mut [u8; 255],
    ) -> Lookup<'_> {
        let mut len = 0;
        for (i, label) in labels.enumerate() {
            if i > 0 {
                if len >= buf.len() {
                    return Lookup::NxDomain;
                }
                buf[len] = b'.';
                len += 1;
            }
            for &byte in label {
                let byte = byte.to_ascii_lowercase();
                // A label with a byte our names never hold (a dot inside a
                // label, say) cannot name anything here.
                if !(byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
                    || len >= buf.len()
                {
                    return Lookup::NxDomain;
                }
                buf[len] = byte;
                len += 1;
            }
        }
        // Only ASCII letters, digits, '-', '_' and '.' were copied in.
        match std::str::from_utf8(&buf[..len]) {
            Ok(relative) => self.lookup_relative(relative),
            Err(_) => Lookup::NxDomain,
        }
    }

    /// Classifies a lower-case name relative to the apex (`sms.rpc`).
    ///
    /// A name both a SkyDNS record and another source's registration make
    /// is answered by the one listed first in `sources`; an empty
    /// non-terminal of the registrations is the SkyDNS name's.
    pub fn lookup_relative(&self, relative: &str) -> Lookup<'_> {
        let lookup = self.lookup_registered(relative);
        if self.sky.is_empty() {
            return lookup;
        }
        let Some(node) = self.sky.get(relative) else {
            return lookup;
        };
        match lookup {
            Lookup::NxDomain | Lookup::EmptyNonTerminal => Lookup::Sky(node),
            Lookup::Service(service)
            | Lookup::SchemeService(service, _)
            | Lookup::Instance(service, _)
            | Lookup::Port(service, _)
                if node.source < service.source =>
            {
                Lookup::Sky(node)
            }
            lookup => lookup,
        }
    }

    /// Whether the SkyDNS node at `relative` loses its name to another
    /// source.
    fn sky_shadowed(&self, relative: &str) -> bool {
        !matches!(self.lookup_relative(relative), Lookup::Sky(_))
    }

    /// [`ZoneSnapshot::lookup_relative`] without the SkyDNS tree.
    fn lookup_registered(&self, relative: &str) -> Lookup<'_> {
        if relative.is_empty() {
            return Lookup::Apex;
        }
        // SPEC §3: when a service name and an instance name coincide, the
        // name answers as the service.
        if let Some(service) = self.services.get(relative) {
            return Lookup::Service(service);
        }
        if let Some(rest) = relative.strip_prefix('_')
            && let Some((scheme, rest)) = rest.split_once('.')
            && let Some(service_key) = rest.strip_prefix(TCP_LABEL)
            && let Some(service) = self.services.get(service_key)
            && let Some(set) = service.scheme(scheme)
        {
            return Lookup::SchemeService(service, set);
        }
        if let Some(target) = relative
            .strip_prefix(GRPC_CONFIG_LABEL)
            .and_then(|rest| rest.strip_prefix('.'))
            && let Some(config) = self.grpc_config_of(target)
        {
            return Lookup::GrpcConfig(config);
        }
        if let Some((first, rest)) = relative.split_once('.')
            && let Some(service) = self.services.get(rest)
        {
            if let Some(instance) = service.instance(first) {
                return Lookup::Instance(service, instance);
            }
            if let Some(port) = service.port(first) {
                return Lookup::Port(service, port);
            }
            // `_tcp.<service>` exists because `_grpc._tcp.<service>` does.
            if first == "_tcp" {
                return Lookup::EmptyNonTerminal;
            }
        }
        if self.ents.contains_key(relative) {
            return Lookup::EmptyNonTerminal;
        }
        Lookup::NxDomain
    }

    /// Classifies the name made of `labels` (left to right, in any letter
    /// case) below the apex of the reverse zone `zone`.
    pub fn lookup_reverse<'l>(
        &self,
        zone: &ReverseZone,
        labels: impl DoubleEndedIterator<Item = &'l [u8]>,
    ) -> Lookup<'_> {
        match zone.name(labels) {
            ReverseName::Address(addr) => match self.addresses.get(&addr) {
                Some(ptr) => Lookup::Ptr(ptr),
                None => Lookup::NxDomain,
            },
            ReverseName::Prefix { first, last } => {
                if self.addresses.range(first..=last).next().is_some() {
                    Lookup::EmptyNonTerminal
                } else {
                    Lookup::NxDomain
                }
            }
            ReverseName::Nothing => Lookup::NxDomain,
        }
    }

    /// How many addresses have PTR records.
    pub fn ptr_count(&self) -> usize {
        self.addresses.len()
    }

    /// The gRPC service config a client targeting `target` (a service or
    /// a port name, relative and lower-case) gets, if any.
    fn grpc_config_of(&self, target: &str) -> Option<&ServiceConfigTxt> {
        let service = match self.services.get(target) {
            Some(service) => service,
            None => {
                let (first, rest) = target.split_once('.')?;
                let service = self.services.get(rest)?;
                service.port(first)?;
                service
            }
        };
        service.grpc_config()
    }

    /// JSON for `/debug/zone`: every service with its instances.
    pub fn debug_json(&self) -> serde_json::Value {
        let mut services: Vec<&Arc<Service>> = self.services.values().collect();
        services.sort_by(|a, b| a.key.cmp(&b.key));
        let origin = self.params.origin.to_ascii();
        let services: Vec<serde_json::Value> = services
            .into_iter()
            .map(|service| {
                let labels = service.labels_by_index();
                let instances: Vec<serde_json::Value> = service
                    .instances
                    .iter()
                    .zip(labels)
                    .map(|(instance, label)| {
                        let (address, host, port) = match &instance.endpoint {
                            Endpoint::Ip { addr, port } => (Some(addr.to_string()), None, *port),
                            Endpoint::Host { name, port } => (None, Some(name.clone()), *port),
                        };
                        json!({
                            "key": String::from_utf8_lossy(&instance.key),
                            "id": instance.id(),
                            "name": format!("{}.{}.{}", label, service.key, origin),
                            "address": address,
                            "host": host,
                            "port": port,
                            "priority": instance.priority,
                            "weight": instance.weight,
                        })
                    })
                    .collect();
                let ports: Vec<serde_json::Value> = service
                    .ports
                    .iter()
                    .map(|port| {
                        json!({
                            "port": port.port,
                            "name": format!("{}.{}.{}", port.label, service.key, origin),
                            "instances": port.instances,
                        })
                    })
                    .collect();
                let grpc_config = service.grpc_config().map(|config| {
                    json!({
                        "name": format!("{GRPC_CONFIG_LABEL}.{}.{}", service.key, origin),
                        "service_config": config.config().to_value(),
                    })
                });
                json!({
                    "service": &*service.key,
                    "name": format!("{}.{}", service.key, origin),
                    "instances": instances,
                    "ports": ports,
                    "several_ports": service.has_several_ports(),
                    "schemes": service.schemes.iter().map(|set| &*set.scheme).collect::<Vec<_>>(),
                    "source": service.source,
                    "shadowed": service.shadowed,
                    "grpc_config": grpc_config,
                })
            })
            .collect();
        let mut sky: Vec<&Arc<SkyNode>> = self.sky.values().collect();
        sky.sort_by(|a, b| a.name().cmp(b.name()));
        let sky: Vec<serde_json::Value> = sky
            .into_iter()
            .map(|node| {
                json!({
                    "name": format!("{}.{}", node.name(), origin),
                    "records": node.record_count(),
                    "source": node.source,
                    "shadowed": self.sky_shadowed(node.name()),
                })
            })
            .collect();
        json!({
            "origin": origin,
            "serial": self.serial(),
            "revision": self.revision,
            "service_count": self.service_count(),
            "instance_count": self.instance_count(),
            "several_ports_count": self.several_ports,
            "reverse_zones": self
                .params
                .reverse
                .iter()
                .map(|zone| json!({"net": zone.net().to_string(), "zone": zone.apex_text()}))
                .collect::<Vec<_>>(),
            "ptr_addresses": self.addresses.len(),
            "services": services,
            "skydns_record_count": self.sky_records,
            "skydns": sky,
        })
    }
}

/// RFC 1982 serials are 32 bits; etcd revisions are 64. Revisions beyond
/// 2^32 wrap, which serial-number arithmetic is designed for.
fn serial_of(revision: i64) -> u32 {
    // Truncation to the low 32 bits is the point.
    revision as u32
}

// ---------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------

/// The current snapshot; readers `load()` it and never wait for the writer.
#[derive(Debug)]
pub struct ZoneStore {
    pub(super) params: Arc<ZoneParams>,
    pub(super) current: ArcSwap<ZoneSnapshot>,
}

impl ZoneStore {
    pub fn new(params: ZoneParams) -> Self {
        let params = Arc::new(params);
        Self {
            current: ArcSwap::from_pointee(ZoneSnapshot::empty(params.clone())),
            params,
        }
    }

    /// The current snapshot. Lock-free; the snapshot stays valid for as long
    /// as the caller holds it, whatever the writer does meanwhile.
    pub fn load(&self) -> Arc<ZoneSnapshot> {
        self.current.load_full()
    }

    /// A cheaper, short-lived borrow of the current snapshot for the query
    /// path (hold it for one query, not across awaits).
    pub fn guard(&self) -> arc_swap::Guard<Arc<ZoneSnapshot>> {
        self.current.load()
    }

    pub fn params(&self) -> &ZoneParams {
        &self.params
    }
}
