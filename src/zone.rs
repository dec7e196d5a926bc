//! Immutable zone snapshots, their lookups, and the single writer that
//! publishes them; no I/O.
//!
//! Readers call [`ZoneStore::load`] once per query and get an
//! `Arc<ZoneSnapshot>`: a lock-free load from an `ArcSwap`, so a query never
//! waits for the writer. The writer ([`ZoneWriter`]) keeps the mutable
//! per-service state to itself, rebuilds only the services a batch of etcd
//! events touched, and publishes a new snapshot. The service and
//! empty-non-terminal maps are persistent hash maps (`imbl`), so publishing
//! shares every untouched service with the previous snapshot: the cost of an
//! update is the size of the service it touches (plus `O(log n)` for the
//! map), never the size of the zone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record};
use serde_json::json;
use tracing::error;

use crate::registration::{self, Endpoint, Registration};

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/// SOA refresh, as SPEC §4 fixes it (seconds).
pub const SOA_REFRESH: i32 = 60;
/// SOA retry (seconds).
pub const SOA_RETRY: i32 = 10;
/// SOA expire (seconds).
pub const SOA_EXPIRE: i32 = 86_400;
/// SRV priority of every instance.
pub const SRV_PRIORITY: u16 = 0;
/// SRV weight of every instance.
pub const SRV_WEIGHT: u16 = 10;
/// The RFC 2782 service/protocol labels in front of a service name.
pub const GRPC_TCP_PREFIX: &str = "_grpc._tcp";

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
}

impl ZoneParams {
    /// The apex in presentation form without the trailing dot (`svc.local`),
    /// as the registration module measures names.
    pub fn origin_text(&self) -> String {
        let mut text = self.origin.to_ascii();
        if text.ends_with('.') {
            text.pop();
        }
        text
    }

    fn soa(&self, serial: u32, ttl: u32) -> Record {
        // `ns.<zone>` and `hostmaster.<zone>` are a label plus the apex, so
        // they fit whenever the apex does; fall back to the apex itself
        // rather than panic if a 250-octet apex leaves no room.
        let mname = self
            .origin
            .prepend_label("ns")
            .unwrap_or(self.origin.clone());
        let rname = self
            .origin
            .prepend_label("hostmaster")
            .unwrap_or(self.origin.clone());
        Record::from_rdata(
            self.origin.clone(),
            ttl,
            RData::SOA(SOA::new(
                mname,
                rname,
                serial,
                SOA_REFRESH,
                SOA_RETRY,
                SOA_EXPIRE,
                self.negative_ttl,
            )),
        )
    }

    fn ns(&self) -> Record {
        let target = self
            .origin
            .prepend_label("ns")
            .unwrap_or(self.origin.clone());
        Record::from_rdata(self.origin.clone(), self.ttl, RData::NS(NS(target)))
    }
}

// ---------------------------------------------------------------------------
// Published data
// ---------------------------------------------------------------------------

/// One instance as `/debug/zone` shows it.
#[derive(Debug, Clone)]
struct InstanceView {
    key: String,
    id: String,
    label: String,
    endpoint: Endpoint,
}

/// One service, built once per change and shared by every snapshot until
/// the service changes again.
#[derive(Debug)]
pub struct Service {
    /// Service key, lower-cased (`sms.rpc`).
    key: Arc<str>,
    /// `A` records, one per distinct IPv4 address.
    a: Box<[Record]>,
    /// `AAAA` records, one per distinct IPv6 address.
    aaaa: Box<[Record]>,
    /// `SRV` records owned by the service name, one per instance.
    srv: Box<[Record]>,
    /// The same `SRV` records owned by `_grpc._tcp.<service>`.
    grpc_srv: Box<[Record]>,
    /// Address records of the SRV targets (additional section).
    glue: Box<[Record]>,
    /// Instance label → its record (`A`, `AAAA`, or `CNAME` to a host name).
    instances: HashMap<Box<str>, Record>,
    /// Instances for `/debug/zone`, in key order.
    views: Vec<InstanceView>,
    /// Rotates the order of address and SRV records between responses.
    rotation: AtomicUsize,
}

impl Service {
    /// The service key (`sms.rpc`).
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn a(&self) -> &[Record] {
        &self.a
    }

    pub fn aaaa(&self) -> &[Record] {
        &self.aaaa
    }

    pub fn srv(&self) -> &[Record] {
        &self.srv
    }

    pub fn grpc_srv(&self) -> &[Record] {
        &self.grpc_srv
    }

    pub fn glue(&self) -> &[Record] {
        &self.glue
    }

    pub fn instance_count(&self) -> usize {
        self.views.len()
    }

    /// The next rotation offset; each call advances it.
    pub fn next_rotation(&self) -> usize {
        // Relaxed: the counter only spreads load, no other memory depends
        // on its value.
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }
}

/// Iterates `records` starting at `offset` (mod len), wrapping around: the
/// rotated order of SPEC §4, without allocating.
pub fn rotated(records: &[Record], offset: usize) -> impl Iterator<Item = &Record> + Clone + Send {
    let split = if records.is_empty() {
        0
    } else {
        offset % records.len()
    };
    let (head, tail) = records.split_at(split);
    tail.iter().chain(head.iter())
}

/// What a name is in the zone.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// The zone apex (SOA, NS).
    Apex,
    /// `<service>.<zone>`.
    Service(&'a Service),
    /// `_grpc._tcp.<service>.<zone>`.
    GrpcService(&'a Service),
    /// `<instance label>.<service>.<zone>` with its one record.
    Instance(&'a Service, &'a Record),
    /// A name that exists only because names below it do (RFC 8020 ENT).
    EmptyNonTerminal,
    /// No such name.
    NxDomain,
}

/// One published, immutable view of the zone.
#[derive(Debug, Clone)]
pub struct ZoneSnapshot {
    params: Arc<ZoneParams>,
    revision: i64,
    /// SOA with the positive TTL, for SOA queries at the apex.
    soa: Record,
    /// SOA with TTL min(ttl, negative_ttl), for negative answers (RFC 2308 §3).
    negative_soa: Record,
    ns: Record,
    /// Service key → service.
    services: imbl::HashMap<Arc<str>, Arc<Service>>,
    /// Relative name → number of services below it, for the names that
    /// exist only as ancestors of services (`rpc` when `sms.rpc` exists).
    ents: imbl::HashMap<Arc<str>, u32>,
    instances: usize,
}

impl ZoneSnapshot {
    fn empty(params: Arc<ZoneParams>) -> Self {
        let mut snapshot = Self {
            soa: params.soa(0, params.ttl),
            negative_soa: params.soa(0, params.ttl.min(params.negative_ttl)),
            ns: params.ns(),
            params,
            revision: 0,
            services: imbl::HashMap::new(),
            ents: imbl::HashMap::new(),
            instances: 0,
        };
        snapshot.set_revision(0);
        snapshot
    }

    fn set_revision(&mut self, revision: i64) {
        self.revision = revision;
        let serial = serial_of(revision);
        let params = &self.params;
        self.soa = params.soa(serial, params.ttl);
        self.negative_soa = params.soa(serial, params.ttl.min(params.negative_ttl));
    }

    pub fn params(&self) -> &ZoneParams {
        &self.params
    }

    /// The etcd revision this snapshot reflects.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The SOA serial: the revision, modulo 2^32 (RFC 1982 arithmetic).
    pub fn serial(&self) -> u32 {
        serial_of(self.revision)
    }

    pub fn soa(&self) -> &Record {
        &self.soa
    }

    pub fn negative_soa(&self) -> &Record {
        &self.negative_soa
    }

    pub fn ns(&self) -> &Record {
        &self.ns
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    pub fn instance_count(&self) -> usize {
        self.instances
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
        if relative_labels == 0 {
            return Some(Lookup::Apex);
        }
        // Join the relative labels, lower-cased, into a stack buffer: no
        // allocation per query. A label with a byte our names never hold
        // (a dot inside a label, say) cannot name anything here.
        let mut buf = [0u8; 255];
        let mut len = 0;
        for (i, label) in name.iter().take(relative_labels).enumerate() {
            if i > 0 {
                buf[len] = b'.';
                len += 1;
            }
            for &byte in label {
                let byte = byte.to_ascii_lowercase();
                if !(byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_') {
                    return Some(Lookup::NxDomain);
                }
                // A wire name is at most 255 octets, so its labels joined
                // by dots are shorter than that.
                buf[len] = byte;
                len += 1;
            }
        }
        // Only ASCII was copied in.
        let Ok(relative) = std::str::from_utf8(&buf[..len]) else {
            return Some(Lookup::NxDomain);
        };
        Some(self.lookup_relative(relative))
    }

    /// Classifies a lower-case name relative to the apex (`sms.rpc`).
    pub fn lookup_relative(&self, relative: &str) -> Lookup<'_> {
        if relative.is_empty() {
            return Lookup::Apex;
        }
        // SPEC §3: when a service name and an instance name coincide, the
        // name answers as the service.
        if let Some(service) = self.services.get(relative) {
            return Lookup::Service(service);
        }
        if let Some(rest) = relative.strip_prefix(GRPC_TCP_PREFIX)
            && let Some(service_key) = rest.strip_prefix('.')
            && let Some(service) = self.services.get(service_key)
        {
            return Lookup::GrpcService(service);
        }
        if let Some((first, rest)) = relative.split_once('.')
            && let Some(service) = self.services.get(rest)
        {
            if let Some(record) = service.instances.get(first) {
                return Lookup::Instance(service, record);
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

    /// JSON for `/debug/zone`: every service with its instances.
    pub fn debug_json(&self) -> serde_json::Value {
        let mut services: Vec<&Arc<Service>> = self.services.values().collect();
        services.sort_by(|a, b| a.key.cmp(&b.key));
        let origin = self.params.origin.to_ascii();
        let services: Vec<serde_json::Value> = services
            .into_iter()
            .map(|service| {
                let instances: Vec<serde_json::Value> = service
                    .views
                    .iter()
                    .map(|view| {
                        let (address, host, port) = match &view.endpoint {
                            Endpoint::Ip { addr, port } => (Some(addr.to_string()), None, *port),
                            Endpoint::Host { name, port } => (None, Some(name.clone()), *port),
                        };
                        json!({
                            "key": view.key,
                            "id": view.id,
                            "name": format!("{}.{}.{}", view.label, service.key, origin),
                            "address": address,
                            "host": host,
                            "port": port,
                        })
                    })
                    .collect();
                json!({
                    "service": &*service.key,
                    "name": format!("{}.{}", service.key, origin),
                    "instances": instances,
                })
            })
            .collect();
        json!({
            "origin": origin,
            "serial": self.serial(),
            "revision": self.revision,
            "service_count": self.service_count(),
            "instance_count": self.instance_count(),
            "services": services,
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
    params: Arc<ZoneParams>,
    current: ArcSwap<ZoneSnapshot>,
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

// ---------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------

/// What an update did to a service, for the one log line per state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceChange {
    Unchanged,
    Appeared(String),
    Updated(String),
    Disappeared(String),
}

/// One instance as the writer keeps it.
#[derive(Debug, Clone)]
struct InstanceState {
    id: String,
    endpoint: Endpoint,
    /// The lower-cased instance id when it is a usable label.
    natural: Option<String>,
    /// First 16 hex digits of SHA-256 of the key.
    hashed: String,
}

/// The single writer. Changes are staged and become visible on `publish`.
#[derive(Debug)]
pub struct ZoneWriter {
    store: Arc<ZoneStore>,
    origin_text: String,
    /// Service key → its instances, by etcd key.
    services: HashMap<String, BTreeMap<Box<[u8]>, InstanceState>>,
    /// etcd key → service key, to find the service of a deleted key.
    keys: HashMap<Box<[u8]>, String>,
    /// Services touched since the last publish.
    dirty: HashSet<String>,
    /// What readers will see next.
    staged: ZoneSnapshot,
}

impl ZoneWriter {
    /// Creates the writer of `store`. There must be only one per store.
    pub fn new(store: Arc<ZoneStore>) -> Self {
        let staged = (*store.load()).clone();
        Self {
            origin_text: store.params().origin_text(),
            store,
            services: HashMap::new(),
            keys: HashMap::new(),
            dirty: HashSet::new(),
            staged,
        }
    }

    /// Adds or replaces the instance registered under `key`.
    pub fn upsert(&mut self, key: &[u8], registration: Registration) -> ServiceChange {
        let Registration {
            service,
            instance_id,
            endpoint,
        } = registration;
        // A key names one service forever (the service key is part of the
        // key), but be defensive: if it moved, withdraw it from the old one.
        if let Some(old) = self.keys.get(key)
            && *old != service
        {
            self.remove(key);
        }
        let instance = InstanceState {
            natural: registration::natural_label(&instance_id, &service, &self.origin_text),
            hashed: registration::hashed_label(key),
            id: instance_id,
            endpoint,
        };
        let instances = self.services.entry(service.clone()).or_default();
        let was_empty = instances.is_empty();
        let previous = instances.insert(key.into(), instance);
        self.keys.insert(key.into(), service.clone());
        self.dirty.insert(service.clone());
        if was_empty {
            ServiceChange::Appeared(service)
        } else if previous.is_some_and(|p| {
            instances
                .get(key)
                .is_some_and(|n| n.endpoint == p.endpoint && n.id == p.id)
        }) {
            ServiceChange::Unchanged
        } else {
            ServiceChange::Updated(service)
        }
    }

    /// Removes the instance registered under `key`, if any.
    pub fn remove(&mut self, key: &[u8]) -> ServiceChange {
        let Some(service) = self.keys.remove(key) else {
            return ServiceChange::Unchanged;
        };
        let Some(instances) = self.services.get_mut(&service) else {
            return ServiceChange::Unchanged;
        };
        instances.remove(key);
        self.dirty.insert(service.clone());
        if instances.is_empty() {
            self.services.remove(&service);
            ServiceChange::Disappeared(service)
        } else {
            ServiceChange::Updated(service)
        }
    }

    /// Replaces everything (first read, or re-read after compaction); the
    /// caller publishes once afterwards so readers see the swap in one step.
    /// Returns (services, instances).
    pub fn replace_all(&mut self, registrations: Vec<(Vec<u8>, Registration)>) -> (usize, usize) {
        let params = self.staged.params.clone();
        let revision = self.staged.revision;
        self.services.clear();
        self.keys.clear();
        self.dirty.clear();
        self.staged = ZoneSnapshot::empty(params);
        self.staged.set_revision(revision);
        for (key, registration) in registrations {
            self.upsert(&key, registration);
        }
        (self.services.len(), self.keys.len())
    }

    /// The etcd revision the staged zone reflects (becomes the SOA serial).
    pub fn set_revision(&mut self, revision: i64) {
        self.staged.set_revision(revision);
    }

    /// Makes the staged zone visible to readers.
    pub fn publish(&mut self) {
        self.rebuild_dirty();
        self.store.current.store(Arc::new(self.staged.clone()));
    }

    /// Rebuilds the published form of every dirty service.
    fn rebuild_dirty(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        // A service appearing or disappearing changes which label an
        // instance of its parent gets (SPEC §3 collision rule), so the
        // parent is rebuilt too.
        let parents: Vec<String> = dirty
            .iter()
            .filter(|key| {
                self.services.contains_key(*key) != self.staged.services.contains_key(key.as_str())
            })
            .filter_map(|key| key.split_once('.').map(|(_, parent)| parent.to_owned()))
            .filter(|parent| self.services.contains_key(parent))
            .collect();
        dirty.extend(parents);
        for key in dirty {
            match self.services.get(&key) {
                Some(instances) => {
                    let service = self.build_service(&key, instances);
                    let key: Arc<str> = Arc::from(key.as_str());
                    let old = self.staged.services.insert(key.clone(), Arc::new(service));
                    match old {
                        Some(old) => self.staged.instances -= old.instance_count(),
                        None => self.add_ents(&key),
                    }
                    if let Some(new) = self.staged.services.get(&key) {
                        self.staged.instances += new.instance_count();
                    }
                }
                None => {
                    if let Some(old) = self.staged.services.remove(key.as_str()) {
                        self.staged.instances -= old.instance_count();
                        self.remove_ents(&key);
                    }
                }
            }
        }
    }

    /// Counts `key`'s ancestors below the apex as empty non-terminals.
    fn add_ents(&mut self, key: &str) {
        for ancestor in ancestors(key) {
            let count = self.staged.ents.get(ancestor).copied().unwrap_or(0);
            self.staged.ents.insert(Arc::from(ancestor), count + 1);
        }
    }

    fn remove_ents(&mut self, key: &str) {
        for ancestor in ancestors(key) {
            match self.staged.ents.get(ancestor).copied() {
                Some(count) if count > 1 => {
                    self.staged.ents.insert(Arc::from(ancestor), count - 1);
                }
                _ => {
                    self.staged.ents.remove(ancestor);
                }
            }
        }
    }

    /// Builds the published form of one service: cost proportional to its
    /// instances only.
    fn build_service(&self, key: &str, instances: &BTreeMap<Box<[u8]>, InstanceState>) -> Service {
        let params = &self.staged.params;
        let ttl = params.ttl;
        let service_name = match name_under(key, &params.origin) {
            Ok(name) => name,
            Err(error) => {
                // Registration validated the service key and its length, so
                // this is a bug, not bad input; answer nothing for it.
                error!(service = key, %error, "cannot form the service name");
                return empty_service(key);
            }
        };
        let grpc_name = name_under(GRPC_TCP_PREFIX, &service_name).unwrap_or(service_name.clone());

        // Labels: natural unless another key of this service took it first
        // (ids differing only in letter case) or a service of that name
        // exists (SPEC §3: the service wins, the instance takes its hash).
        let mut taken: HashSet<&str> = HashSet::new();
        let mut a = Vec::new();
        let mut aaaa = Vec::new();
        let mut seen_addrs: HashSet<IpAddr> = HashSet::new();
        let mut srv = Vec::with_capacity(instances.len());
        let mut grpc_srv = Vec::with_capacity(instances.len());
        let mut glue = Vec::new();
        let mut records = HashMap::with_capacity(instances.len());
        let mut views = Vec::with_capacity(instances.len());
        for (etcd_key, instance) in instances {
            let label = match &instance.natural {
                Some(natural)
                    if !taken.contains(natural.as_str())
                        && !self.services.contains_key(&format!("{natural}.{key}")) =>
                {
                    natural.as_str()
                }
                _ => instance.hashed.as_str(),
            };
            taken.insert(label);
            let instance_name = match name_under(label, &service_name) {
                Ok(name) => name,
                Err(error) => {
                    error!(service = key, label, %error, "cannot form an instance name");
                    continue;
                }
            };
            let (record, port, target) = match &instance.endpoint {
                Endpoint::Ip { addr, port } => {
                    let rdata = match addr {
                        IpAddr::V4(v4) => RData::A(A(*v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                    };
                    let record = Record::from_rdata(instance_name.clone(), ttl, rdata);
                    if seen_addrs.insert(*addr) {
                        let service_record =
                            Record::from_rdata(service_name.clone(), ttl, record.data.clone());
                        match addr {
                            IpAddr::V4(_) => a.push(service_record),
                            IpAddr::V6(_) => aaaa.push(service_record),
                        }
                    }
                    glue.push(record.clone());
                    (record, *port, instance_name.clone())
                }
                Endpoint::Host { name, port } => {
                    let target = match Name::from_ascii(format!("{name}.")) {
                        Ok(target) => target,
                        Err(error) => {
                            error!(service = key, host = name, %error, "cannot form a host name");
                            continue;
                        }
                    };
                    // The instance name points at the host: clients that
                    // resolve an SRV target again follow it.
                    let record = Record::from_rdata(
                        instance_name.clone(),
                        ttl,
                        RData::CNAME(CNAME(target.clone())),
                    );
                    (record, *port, target)
                }
            };
            let srv_data = RData::SRV(SRV::new(SRV_PRIORITY, SRV_WEIGHT, port, target));
            srv.push(Record::from_rdata(
                service_name.clone(),
                ttl,
                srv_data.clone(),
            ));
            grpc_srv.push(Record::from_rdata(grpc_name.clone(), ttl, srv_data));
            records.insert(Box::from(label), record);
            views.push(InstanceView {
                key: String::from_utf8_lossy(etcd_key).into_owned(),
                id: instance.id.clone(),
                label: label.to_owned(),
                endpoint: instance.endpoint.clone(),
            });
        }
        Service {
            key: Arc::from(key),
            a: a.into(),
            aaaa: aaaa.into(),
            srv: srv.into(),
            grpc_srv: grpc_srv.into(),
            glue: glue.into(),
            instances: records,
            views,
            rotation: AtomicUsize::new(0),
        }
    }
}

fn empty_service(key: &str) -> Service {
    Service {
        key: Arc::from(key),
        a: Box::default(),
        aaaa: Box::default(),
        srv: Box::default(),
        grpc_srv: Box::default(),
        glue: Box::default(),
        instances: HashMap::new(),
        views: Vec::new(),
        rotation: AtomicUsize::new(0),
    }
}

/// `relative` (dotted, relative) followed by `base`.
fn name_under(relative: &str, base: &Name) -> Result<Name, hickory_proto::ProtoError> {
    Name::from_ascii(relative)?.append_domain(base)
}

/// The proper ancestors of a service key below the apex: `a.b.rpc` →
/// `b.rpc`, `rpc`.
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    key.match_indices('.').map(move |(i, _)| &key[i + 1..])
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Arc<ZoneStore> {
        Arc::new(ZoneStore::new(ZoneParams {
            origin: Name::from_ascii("svc.local.").unwrap(),
            ttl: 5,
            negative_ttl: 3,
        }))
    }

    fn reg(service: &str, id: &str, value: &str) -> Registration {
        let endpoint = match value.rsplit_once(':') {
            Some((host, port)) => {
                let port = port.parse().unwrap();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                match host.parse::<IpAddr>() {
                    Ok(addr) => Endpoint::Ip { addr, port },
                    Err(_) => Endpoint::Host {
                        name: host.to_owned(),
                        port,
                    },
                }
            }
            None => panic!("bad test value"),
        };
        Registration {
            service: service.to_owned(),
            instance_id: id.to_owned(),
            endpoint,
        }
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
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
        assert_eq!(service.a().len(), 1, "two ids, one address: one A");
        assert_eq!(service.aaaa().len(), 1);
        assert_eq!(service.srv().len(), 3, "one SRV per instance");
        assert_eq!(service.glue().len(), 3);
        assert!(matches!(
            snap.lookup(&name("_grpc._tcp.sms.rpc.svc.local.")),
            Some(Lookup::GrpcService(_))
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
        let hashed = registration::hashed_label(b"b.rpc/a");
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
        let Some(RData::SRV(srv)) = Some(service.srv()[0].data.clone()) else {
            panic!("not SRV");
        };
        assert_eq!(&srv.target, &name("sms-0.sms."));
        assert_eq!(srv.port, 8001);
    }

    #[test]
    fn replace_all_swaps_everything_in_one_step() {
        let store = store();
        let mut writer = ZoneWriter::new(store.clone());
        writer.upsert(b"old.rpc/1", reg("old.rpc", "1", "10.0.0.1:1"));
        writer.publish();
        let counts = writer.replace_all(vec![
            (b"new.rpc/1".to_vec(), reg("new.rpc", "1", "10.0.0.1:1")),
            (b"new.rpc/2".to_vec(), reg("new.rpc", "2", "10.0.0.2:1")),
        ]);
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
    fn rotation_wraps() {
        let records: Vec<Record> = (1..=3)
            .map(|i| Record::from_rdata(name("a."), 1, RData::A(A::new(10, 0, 0, i))))
            .collect();
        let order: Vec<_> = rotated(&records, 4).map(|r| r.data.clone()).collect();
        assert_eq!(order[0], RData::A(A::new(10, 0, 0, 2)));
        assert_eq!(order.len(), 3);
        assert_eq!(rotated(&[], 7).count(), 0);
    }

    #[test]
    fn soa_has_spec_values() {
        let store = store();
        let snap = store.load();
        let RData::SOA(soa) = &snap.soa().data else {
            panic!("not SOA")
        };
        assert_eq!(&soa.mname, &name("ns.svc.local."));
        assert_eq!(&soa.rname, &name("hostmaster.svc.local."));
        assert_eq!(
            (soa.refresh, soa.retry, soa.expire, soa.minimum),
            (60, 10, 86400, 3)
        );
        assert_eq!(snap.negative_soa().ttl, 3, "min(ttl, negative_ttl)");
        assert_eq!(snap.soa().ttl, 5);
    }
}
