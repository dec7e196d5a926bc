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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;
use serde_json::json;

use names::{Patterns, port_label, port_of_label};
use service_config::{GRPC_CONFIG_LABEL, ServiceConfig};

pub mod names;
pub mod service_config;

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

/// Resource record types and class, as numbers on the wire (RFC 1035 §3.2.2,
/// RFC 3596, RFC 2782, RFC 6891).
pub mod rrtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;
    /// Class IN.
    pub const IN: u16 = 1;
}

/// Offset of the question name in every DNS message (right after the
/// 12-octet header): what our compression pointers point at.
pub const QNAME_OFFSET: u16 = 12;
/// Offset of the service name inside a `_grpc._tcp.<service>` question:
/// the header, then `\x05_grpc` and `\x04_tcp`.
pub const GRPC_SERVICE_OFFSET: u16 = QNAME_OFFSET + 6 + 5;

/// A compression pointer (RFC 1035 §4.1.4) to `offset`.
pub fn pointer(offset: u16) -> [u8; 2] {
    (0xC000 | offset).to_be_bytes()
}

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

/// One usable registration: what [`crate::source`] makes of an etcd key
/// and value, and what the zone is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Service key, lower-cased and validated (e.g. `sms.rpc`).
    pub service: String,
    /// Instance id as it appears in the key (not lower-cased).
    pub instance_id: String,
    pub endpoint: Endpoint,
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
    fn new(config: ServiceConfig, ttl: u32) -> Arc<ServiceConfigTxt> {
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
// Wire-format record sets
// ---------------------------------------------------------------------------

/// Resource records in wire format, back to back, with where each starts,
/// so that the set can be rotated by whole records.
#[derive(Debug, Default)]
pub struct WireRrs {
    bytes: Box<[u8]>,
    starts: Box<[u32]>,
}

impl WireRrs {
    /// Number of records.
    pub fn count(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Octets of all records together.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The records rotated to start with record `offset % count`, as two
    /// slices to copy one after the other.
    pub fn rotated(&self, offset: usize) -> (&[u8], &[u8]) {
        if self.starts.is_empty() {
            return (&[], &[]);
        }
        let split = self.starts[offset % self.starts.len()] as usize;
        let (head, tail) = self.bytes.split_at(split);
        (tail, head)
    }

    /// The records rotated as by [`WireRrs::rotated`], cut after the last
    /// whole record that fits in `budget` octets: the two slices to copy
    /// one after the other, and the number of records in them.
    pub fn rotated_within(&self, offset: usize, budget: usize) -> (&[u8], &[u8], usize) {
        let count = self.starts.len();
        if count == 0 {
            return (&[], &[], 0);
        }
        // Rotated order: records first..count, then 0..first.
        let first = offset % count;
        let end = self.last_fitting(first, count, budget);
        let tail = &self.bytes[self.start(first)..self.start(end)];
        if end < count {
            return (tail, &[], end - first);
        }
        let head_end = self.last_fitting(0, first, budget - tail.len());
        (
            tail,
            &self.bytes[..self.start(head_end)],
            count - first + head_end,
        )
    }

    /// How many records, from the first, fit in `budget` octets.
    pub fn count_within(&self, budget: usize) -> usize {
        self.last_fitting(0, self.starts.len(), budget)
    }

    /// Where record `i` starts; `count()` gives the end of the last one.
    fn start(&self, i: usize) -> usize {
        self.starts.get(i).map_or(self.bytes.len(), |&s| s as usize)
    }

    /// The largest `end` in `from..=to` such that records `from..end` take
    /// at most `budget` octets.
    fn last_fitting(&self, from: usize, to: usize, budget: usize) -> usize {
        let base = self.start(from);
        let (mut lo, mut hi) = (from, to);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.start(mid) - base <= budget {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// All records in order.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Builds a [`WireRrs`] one record at a time.
#[derive(Debug, Default)]
struct WireBuilder {
    bytes: Vec<u8>,
    starts: Vec<u32>,
}

impl WireBuilder {
    /// Appends one record: `owner` (already in wire form, possibly ending
    /// in a pointer), type IN, `ttl`, and `rdata`.
    fn push(&mut self, owner: &[&[u8]], rtype: u16, ttl: u32, rdata: &[&[u8]]) {
        // Records are far below 4 GiB; a service holds at most a few
        // thousand.
        self.starts.push(self.bytes.len() as u32);
        write_rr(&mut self.bytes, owner, rtype, ttl, rdata);
    }

    fn finish(self) -> WireRrs {
        WireRrs {
            bytes: self.bytes.into(),
            starts: self.starts.into(),
        }
    }
}

/// Writes one resource record to `out`. `owner` and `rdata` are given in
/// parts so callers can combine a label with a pointer without allocating.
pub fn write_rr(out: &mut Vec<u8>, owner: &[&[u8]], rtype: u16, ttl: u32, rdata: &[&[u8]]) {
    for part in owner {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&rrtype::IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    let rdlen: usize = rdata.iter().map(|part| part.len()).sum();
    // RDATA here is an address, an SRV, a SOA, a name, or a TXT of at
    // most MAX_SERVICE_CONFIG_LEN plus a little: far below 65535.
    out.extend_from_slice(&(rdlen as u16).to_be_bytes());
    for part in rdata {
        out.extend_from_slice(part);
    }
}

/// The address record data of `addr`: its type and its octets.
pub fn address_rdata(addr: &IpAddr) -> (u16, AddrOctets) {
    match addr {
        IpAddr::V4(v4) => (rrtype::A, AddrOctets::V4(v4.octets())),
        IpAddr::V6(v6) => (rrtype::AAAA, AddrOctets::V6(v6.octets())),
    }
}

/// An address's octets, without allocating.
#[derive(Debug, Clone, Copy)]
pub enum AddrOctets {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl AsRef<[u8]> for AddrOctets {
    fn as_ref(&self) -> &[u8] {
        match self {
            AddrOctets::V4(octets) => octets,
            AddrOctets::V6(octets) => octets,
        }
    }
}

/// A single label in wire form: its length octet, then the label.
fn label_wire(label: &str) -> Vec<u8> {
    let mut wire = Vec::with_capacity(label.len() + 1);
    // Labels are validated to at most 63 octets before they get here.
    wire.push(label.len() as u8);
    wire.extend_from_slice(label.as_bytes());
    wire
}

/// An absolute host name (`sms-0.sms`, without the trailing dot) in wire
/// form, uncompressed.
pub fn host_wire(host: &str) -> Vec<u8> {
    let mut wire = Vec::with_capacity(host.len() + 2);
    for label in host.split('.').filter(|l| !l.is_empty()) {
        wire.push(label.len().min(63) as u8);
        wire.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    wire.push(0);
    wire
}

// ---------------------------------------------------------------------------
// Published data
// ---------------------------------------------------------------------------

/// One instance of a service.
#[derive(Debug)]
pub struct Instance {
    /// The whole etcd key (`sms.rpc/7587869364815473158`).
    key: Box<[u8]>,
    endpoint: Endpoint,
}

impl Instance {
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The instance id: the key after its first `/`.
    pub fn id(&self) -> String {
        let key = String::from_utf8_lossy(&self.key);
        key.split_once('/')
            .map(|(_, id)| id.to_owned())
            .unwrap_or_default()
    }
}

/// One service, built once per change and shared by every snapshot until
/// the service changes again. Its record sets are in wire format with
/// owner names pointing at the question.
#[derive(Debug)]
pub struct Service {
    /// Service key, lower-cased (`sms.rpc`).
    key: Arc<str>,
    /// Instances in etcd key order.
    instances: Box<[Instance]>,
    /// Instance label → index into `instances`.
    labels: HashMap<Box<str>, u32>,
    /// `A` at the service: one per distinct IPv4 address.
    a: WireRrs,
    /// `AAAA` at the service: one per distinct IPv6 address.
    aaaa: WireRrs,
    /// `SRV` at the service, one per instance; targets point at the
    /// question (the service name).
    srv: WireRrs,
    /// Address records of the SRV targets, owners `<label>` + pointer to
    /// the question.
    glue: WireRrs,
    /// `SRV` at `_grpc._tcp.<service>`: targets point at the service name
    /// inside that question.
    grpc_srv: WireRrs,
    /// Glue for `grpc_srv`.
    grpc_glue: WireRrs,
    /// One port name per distinct port, by port number.
    ports: Box<[PortName]>,
    /// The gRPC service config at `_grpc_config.<service>` (and at its
    /// port names), if one applies.
    grpc_config: Option<Arc<ServiceConfigTxt>>,
    /// Rotates the order of records between responses: one counter for
    /// the address sets and one for the SRV sets, so that queries of one
    /// kind advance through its records without gaps left by the other
    /// (which matters when a set is cut to what fits in a message).
    rotation: [AtomicUsize; 2],
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

    pub fn grpc_srv(&self) -> &WireRrs {
        &self.grpc_srv
    }

    pub fn grpc_glue(&self) -> &WireRrs {
        &self.grpc_glue
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

    /// True when its instances listen on more than one port, so that its
    /// A and AAAA records alone send some clients to the wrong port.
    pub fn has_several_ports(&self) -> bool {
        self.ports.len() > 1
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
    port: u16,
    /// `port-8001`.
    label: Box<str>,
    instances: u32,
    /// A, AAAA and SRV of the instances on this port; `None` when every
    /// instance of the service listens on it, and the service's own sets
    /// are the same bytes (owners point at the question either way).
    own: Option<Box<PortSets>>,
    /// Glue of the SRV targets: owners `<label>` plus a pointer to the
    /// service name inside a `port-<port>.<service>` question.
    glue: WireRrs,
}

#[derive(Debug)]
struct PortSets {
    a: WireRrs,
    aaaa: WireRrs,
    srv: WireRrs,
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
    GrpcService(&'a Service),
    /// `<instance label>.<service>.<zone>`.
    Instance(&'a Service, &'a Instance),
    /// `port-<port>.<service>.<zone>`.
    Port(&'a Service, &'a PortName),
    /// `_grpc_config.<service or port name>.<zone>` of a service that has
    /// a gRPC service config.
    GrpcConfig(&'a ServiceConfigTxt),
    /// A name that exists only because names below it do (RFC 8020 ENT).
    EmptyNonTerminal,
    /// No such name.
    NxDomain,
}

/// One published, immutable view of the zone.
#[derive(Debug, Clone)]
pub struct ZoneSnapshot {
    params: Arc<ZoneParams>,
    /// The apex in wire form, lower-case.
    origin_wire: Arc<[u8]>,
    revision: i64,
    /// Service key → service.
    services: imbl::HashMap<Arc<str>, Arc<Service>>,
    /// Relative name → number of services below it, for the names that
    /// exist only as ancestors of services (`rpc` when `sms.rpc` exists).
    ents: imbl::HashMap<Arc<str>, u32>,
    instances: usize,
    /// Services whose instances listen on more than one port.
    several_ports: usize,
}

impl ZoneSnapshot {
    fn empty(params: Arc<ZoneParams>) -> Self {
        Self {
            origin_wire: params.origin_wire().into(),
            params,
            revision: 0,
            services: imbl::HashMap::new(),
            ents: imbl::HashMap::new(),
            instances: 0,
            several_ports: 0,
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
                    "grpc_config": grpc_config,
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

/// A service whose instances came to listen on several ports, or back on
/// one, for the one warning per such change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortsChange {
    /// Its instances now listen on these ports (more than one).
    Several { service: String, ports: Vec<u16> },
    /// All of them listen on this one port again.
    One { service: String, port: u16 },
}

/// The single writer. Changes are staged and become visible on `publish`.
#[derive(Debug)]
pub struct ZoneWriter {
    store: Arc<ZoneStore>,
    origin_text: String,
    /// Service key → its instances' endpoints, by etcd key.
    services: HashMap<String, BTreeMap<Box<[u8]>, Endpoint>>,
    /// Services touched since the last publish.
    dirty: HashSet<String>,
    /// Services last reported on several ports ([`PortsChange`]); kept
    /// across full re-reads so that a re-read does not warn again.
    several_ports: HashSet<String>,
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
            dirty: HashSet::new(),
            several_ports: HashSet::new(),
            staged,
        }
    }

    /// Adds or replaces the instance registered under `key`.
    pub fn upsert(&mut self, key: &[u8], registration: Registration) -> ServiceChange {
        let Registration {
            service, endpoint, ..
        } = registration;
        let instances = self.services.entry(service.clone()).or_default();
        let was_empty = instances.is_empty();
        let previous = instances.insert(key.into(), endpoint);
        if was_empty {
            self.dirty.insert(service.clone());
            ServiceChange::Appeared(service)
        } else if previous.as_ref() == instances.get(key) {
            // A keep-alive-free re-put of the same value: nothing to rebuild.
            ServiceChange::Unchanged
        } else {
            self.dirty.insert(service.clone());
            ServiceChange::Updated(service)
        }
    }

    /// Removes the instance registered under `key`, if any. The service
    /// is the part of the key before its first `/`, lower-cased, as
    /// registration parsing makes it.
    pub fn remove(&mut self, key: &[u8]) -> ServiceChange {
        let service_part = match key.iter().position(|&b| b == b'/') {
            Some(slash) => &key[..slash],
            None => key,
        };
        let Ok(service) = std::str::from_utf8(service_part) else {
            return ServiceChange::Unchanged;
        };
        let service = service.to_ascii_lowercase();
        let Some(instances) = self.services.get_mut(&service) else {
            return ServiceChange::Unchanged;
        };
        if instances.remove(key).is_none() {
            return ServiceChange::Unchanged;
        }
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
        self.dirty.clear();
        self.staged = ZoneSnapshot::empty(params);
        self.staged.revision = revision;
        for (key, registration) in registrations {
            self.upsert(&key, registration);
        }
        let services = &self.services;
        self.several_ports.retain(|key| services.contains_key(key));
        let instances = self.services.values().map(BTreeMap::len).sum();
        (self.services.len(), instances)
    }

    /// The etcd revision the staged zone reflects (becomes the SOA serial).
    pub fn set_revision(&mut self, revision: i64) {
        self.staged.revision = revision;
    }

    /// Makes the staged zone visible to readers. Returns the services that
    /// came to listen on several ports or went back to one.
    pub fn publish(&mut self) -> Vec<PortsChange> {
        let changes = self.rebuild_dirty();
        self.store.current.store(Arc::new(self.staged.clone()));
        changes
    }

    /// Rebuilds the published form of every dirty service.
    fn rebuild_dirty(&mut self) -> Vec<PortsChange> {
        let mut changes = Vec::new();
        if self.dirty.is_empty() {
            return changes;
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
                    let service = Arc::new(self.build_service(&key, instances));
                    let count = service.instance_count();
                    let ports: Vec<u16> = service.ports().iter().map(PortName::port).collect();
                    let shared: Arc<str> = Arc::from(key.as_str());
                    match self.staged.services.insert(shared.clone(), service) {
                        Some(old) => {
                            self.staged.instances -= old.instance_count();
                            self.staged.several_ports -= usize::from(old.has_several_ports());
                        }
                        None => self.add_ents(&shared),
                    }
                    self.staged.instances += count;
                    self.staged.several_ports += usize::from(ports.len() > 1);
                    if ports.len() > 1 && !self.several_ports.contains(&key) {
                        self.several_ports.insert(key.clone());
                        changes.push(PortsChange::Several {
                            service: key,
                            ports,
                        });
                    } else if ports.len() == 1 && self.several_ports.remove(&key) {
                        changes.push(PortsChange::One {
                            service: key,
                            port: ports[0],
                        });
                    }
                }
                None => {
                    if let Some(old) = self.staged.services.remove(key.as_str()) {
                        self.staged.instances -= old.instance_count();
                        self.staged.several_ports -= usize::from(old.has_several_ports());
                        self.remove_ents(&key);
                    }
                    // A service that went away is logged as such; should it
                    // come back on several ports, that is news again.
                    self.several_ports.remove(&key);
                }
            }
        }
        changes
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
    fn build_service(&self, key: &str, instances: &BTreeMap<Box<[u8]>, Endpoint>) -> Service {
        let ttl = self.staged.params.ttl;
        let at_question = pointer(QNAME_OFFSET);
        let at_grpc_service = pointer(GRPC_SERVICE_OFFSET);
        // SRV targets are written in full: RFC 2782 ("name compression is
        // not to be used for this field") and RFC 3597 §4 forbid pointers
        // in the RDATA of types newer than RFC 1035, and Go's resolver
        // before 1.22 rejects the whole answer when it meets one.
        let service_wire = host_wire(&format!("{key}.{}", self.origin_text));

        // Ports first: a port name keeps its label, and an instance whose
        // id would give the same label takes its hashed one (as when a
        // service name and an instance name coincide, SPEC §3).
        let mut per_port: BTreeMap<u16, u32> = BTreeMap::new();
        for endpoint in instances.values() {
            *per_port.entry(endpoint.port()).or_default() += 1;
        }
        let several = per_port.len() > 1;
        let mut ports: BTreeMap<u16, PortBuilder> = per_port
            .iter()
            .map(|(&port, &count)| (port, PortBuilder::new(port, count, several)))
            .collect();

        let mut labels: HashMap<Box<str>, u32> = HashMap::with_capacity(instances.len());
        let mut published = Vec::with_capacity(instances.len());
        let mut sets = SetsBuilder::default();
        let mut glue = WireBuilder::default();
        let (mut grpc_srv, mut grpc_glue) = (WireBuilder::default(), WireBuilder::default());

        for (etcd_key, endpoint) in instances {
            // The natural label unless another key of this service took it
            // first (ids differing only in letter case), a service of that
            // name exists (SPEC §3: the service wins, the instance takes
            // its hash), or it is one of the service's port names.
            let natural = etcd_key
                .iter()
                .position(|&b| b == b'/')
                .and_then(|slash| std::str::from_utf8(&etcd_key[slash + 1..]).ok())
                .and_then(|id| names::natural_label(id, key, &self.origin_text))
                .filter(|natural| {
                    !labels.contains_key(natural.as_str())
                        && !self.services.contains_key(&format!("{natural}.{key}"))
                        && !port_of_label(natural).is_some_and(|p| ports.contains_key(&p))
                });
            let label = natural.unwrap_or_else(|| names::hashed_label(etcd_key));
            let label_wire = label_wire(&label);
            labels.insert(label.into_boxed_str(), published.len() as u32);

            // SRV RDATA: priority, weight, port, then the target: the
            // instance name, or a host-name value as it is.
            let head = [
                SRV_PRIORITY.to_be_bytes(),
                SRV_WEIGHT.to_be_bytes(),
                endpoint.port().to_be_bytes(),
            ]
            .concat();
            let host_target;
            let srv_rdata: [&[u8]; 3] = match endpoint {
                Endpoint::Ip { .. } => [&head, &label_wire, &service_wire],
                Endpoint::Host { name, .. } => {
                    host_target = host_wire(name);
                    [&head, &host_target, &[]]
                }
            };
            sets.add(endpoint, &srv_rdata, ttl);
            grpc_srv.push(&[&at_question], rrtype::SRV, ttl, &srv_rdata);
            // Every port of the service has a builder: they were made from
            // these endpoints.
            let port = ports.get_mut(&endpoint.port());
            if let Endpoint::Ip { addr, .. } = endpoint {
                let (rtype, octets) = address_rdata(addr);
                glue.push(&[&label_wire, &at_question], rtype, ttl, &[octets.as_ref()]);
                grpc_glue.push(
                    &[&label_wire, &at_grpc_service],
                    rtype,
                    ttl,
                    &[octets.as_ref()],
                );
            }
            if let Some(port) = port {
                if let Some(own) = port.own.as_mut() {
                    own.add(endpoint, &srv_rdata, ttl);
                }
                if let Endpoint::Ip { addr, .. } = endpoint {
                    let (rtype, octets) = address_rdata(addr);
                    port.glue.push(
                        &[&label_wire, &port.at_service],
                        rtype,
                        ttl,
                        &[octets.as_ref()],
                    );
                }
            }
            published.push(Instance {
                key: etcd_key.clone(),
                endpoint: endpoint.clone(),
            });
        }
        let (a, aaaa, srv) = sets.finish();
        Service {
            key: Arc::from(key),
            instances: published.into(),
            labels,
            a,
            aaaa,
            srv,
            glue: glue.finish(),
            grpc_srv: grpc_srv.finish(),
            grpc_glue: grpc_glue.finish(),
            ports: ports.into_values().map(PortBuilder::finish).collect(),
            grpc_config: self.staged.params.grpc.for_service(key),
            rotation: [AtomicUsize::new(0), AtomicUsize::new(0)],
        }
    }
}

/// The A, AAAA and SRV sets of a service, or of one of its ports, while
/// they are built.
#[derive(Default)]
struct SetsBuilder {
    a: WireBuilder,
    aaaa: WireBuilder,
    srv: WireBuilder,
    /// Addresses already in `a` or `aaaa`: one record per distinct address.
    seen: HashSet<IpAddr>,
}

impl SetsBuilder {
    /// Adds one instance: its address, when not already there, and its
    /// SRV record with `srv_rdata`.
    fn add(&mut self, endpoint: &Endpoint, srv_rdata: &[&[u8]], ttl: u32) {
        let at_question = pointer(QNAME_OFFSET);
        if let Endpoint::Ip { addr, .. } = endpoint
            && self.seen.insert(*addr)
        {
            let (rtype, octets) = address_rdata(addr);
            let set = if rtype == rrtype::A {
                &mut self.a
            } else {
                &mut self.aaaa
            };
            set.push(&[&at_question], rtype, ttl, &[octets.as_ref()]);
        }
        self.srv.push(&[&at_question], rrtype::SRV, ttl, srv_rdata);
    }

    fn finish(self) -> (WireRrs, WireRrs, WireRrs) {
        (self.a.finish(), self.aaaa.finish(), self.srv.finish())
    }
}

/// One port name while it is built.
struct PortBuilder {
    port: u16,
    label: String,
    instances: u32,
    /// A pointer to the service name inside a `port-<port>.<service>`
    /// question: past the header and the port label.
    at_service: [u8; 2],
    /// The port's own sets; only when the service has several ports.
    own: Option<SetsBuilder>,
    glue: WireBuilder,
}

impl PortBuilder {
    fn new(port: u16, instances: u32, several: bool) -> PortBuilder {
        let label = port_label(port);
        // `port-65535` is 10 octets: the offset stays far below 2^14.
        let at_service = pointer(QNAME_OFFSET + 1 + label.len() as u16);
        PortBuilder {
            port,
            label,
            instances,
            at_service,
            own: several.then(Default::default),
            glue: WireBuilder::default(),
        }
    }

    fn finish(self) -> PortName {
        PortName {
            port: self.port,
            label: self.label.into_boxed_str(),
            instances: self.instances,
            own: self.own.map(|own| {
                let (a, aaaa, srv) = own.finish();
                Box::new(PortSets { a, aaaa, srv })
            }),
            glue: self.glue.finish(),
        }
    }
}

/// The proper ancestors of a service key below the apex: `a.b.rpc` →
/// `b.rpc`, `rpc`.
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    key.match_indices('.').map(move |(i, _)| &key[i + 1..])
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Zones for unit tests of the modules that read them.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

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
        let store = Arc::new(ZoneStore::new(ZoneParams {
            origin: Name::from_ascii("svc.local.").unwrap(),
            ttl: 5,
            negative_ttl,
            grpc,
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
        Registration {
            service: service.to_owned(),
            instance_id: id.to_owned(),
            endpoint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_within_keeps_whole_records_in_rotated_order() {
        let mut builder = WireBuilder::default();
        for i in 0..7u8 {
            // Records of different sizes: 12 + i octets of RDATA.
            builder.push(
                &[&[0xc0, 12]],
                rrtype::A,
                5,
                &[&vec![i; usize::from(i) + 1]],
            );
        }
        let rrs = builder.finish();
        let records: Vec<&[u8]> = (0..7)
            .map(|i| &rrs.bytes[rrs.start(i)..rrs.start(i + 1)])
            .collect();
        for offset in 0..9 {
            for budget in 0..=rrs.byte_len() + 3 {
                // Brute force: take rotated records while they fit.
                let (mut want, mut n) = (Vec::new(), 0);
                for k in 0..7 {
                    let record = records[(offset + k) % 7];
                    if want.len() + record.len() > budget {
                        break;
                    }
                    want.extend_from_slice(record);
                    n += 1;
                }
                let (a, b, count) = rrs.rotated_within(offset, budget);
                assert_eq!(
                    ([a, b].concat(), count),
                    (want, n),
                    "offset {offset} budget {budget}"
                );
            }
        }
        let empty = WireRrs::default();
        assert_eq!(empty.rotated_within(3, 100).2, 0);
    }

    pub(crate) fn store() -> Arc<ZoneStore> {
        Arc::new(ZoneStore::new(ZoneParams {
            origin: Name::from_ascii("svc.local.").unwrap(),
            ttl: 5,
            negative_ttl: 3,
            grpc: Default::default(),
        }))
    }

    use super::testing::registration as reg;

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
        assert_eq!(service.a().count(), 1, "two ids, one address: one A");
        assert_eq!(service.aaaa().count(), 1);
        assert_eq!(service.srv().count(), 3, "one SRV per instance");
        assert_eq!(service.glue().count(), 3);
        assert_eq!(service.a().bytes().len(), 16, "pointer owner + A rdata");
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
    fn rotation_wraps_by_whole_records() {
        let mut builder = WireBuilder::default();
        for i in 1..=3u8 {
            builder.push(&[&pointer(12)], rrtype::A, 5, &[&[10, 0, 0, i]]);
        }
        let rrs = builder.finish();
        let (first, second) = rrs.rotated(4);
        assert_eq!(first.len() + second.len(), 48);
        assert_eq!(first[12..16], [10, 0, 0, 2], "starts at record 4 % 3 = 1");
        assert_eq!(second[12..16], [10, 0, 0, 1]);
        assert_eq!(WireRrs::default().rotated(7), (&[][..], &[][..]));
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
            (key.as_bytes().to_vec(), reg(service, id, value))
        });
        writer.replace_all(everything.to_vec());
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
    fn origin_wire_is_lower_case_wire_form() {
        let params = ZoneParams {
            origin: name("Svc.Local."),
            ttl: 5,
            negative_ttl: 9,
            grpc: Default::default(),
        };
        assert_eq!(&*params.origin_wire(), b"\x03svc\x05local\x00");
        assert_eq!(params.origin_text(), "svc.local");
        assert_eq!(params.negative_soa_ttl(), 5);
    }
}
