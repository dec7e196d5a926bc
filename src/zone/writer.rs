//! The zone's single writer: registrations in, a new snapshot published per
//! batch, each change rebuilding only the service it touches; no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::names::{self, port_label, port_of_label};
use super::service_config::ServiceConfigTxt;
use super::skydns::{SkyRecord, SkyTree};
use super::snapshot::{Instance, PortName, PortSets, SchemeSet, Service, ZoneSnapshot, ZoneStore};
use super::wire::{
    QNAME_OFFSET, WireBuilder, WireRrs, address_rdata, host_wire, label_wire, metadata_txt,
    pointer, rrtype,
};
use super::{Endpoint, Overlay, OverlayTarget, Registration};

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
    /// Service key → its instances, by etcd key.
    services: HashMap<Arc<str>, BTreeMap<MemberKey, Member>>,
    /// Etcd key → the service its registration is in, for the keys whose
    /// service is not [`service_in_key`] (every format but go-zero's): how
    /// a deleted key finds its service. Both sides share their allocation
    /// with `services`. go-zero keys, the bulk at scale, need no entry.
    keys: HashMap<Arc<[u8]>, Arc<str>>,
    /// Overlay key → what it applies to, and the settings by target.
    overlay_keys: HashMap<Box<[u8]>, OverlayTarget>,
    overlays: HashMap<OverlayTarget, Overlay>,
    /// Services touched since the last publish.
    dirty: HashSet<String>,
    /// Services last reported on several ports ([`PortsChange`]); kept
    /// across full re-reads so that a re-read does not warn again.
    several_ports: HashSet<String>,
    /// Address → the instance names (wire form) registered at it, when
    /// reverse zones are configured: what each address's PTR records are
    /// rebuilt from.
    ptr_names: HashMap<IpAddr, BTreeSet<Box<[u8]>>>,
    /// The SkyDNS records, by name.
    sky: SkyTree,
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
            overlay_keys: HashMap::new(),
            overlays: HashMap::new(),
            dirty: HashSet::new(),
            several_ports: HashSet::new(),
            ptr_names: HashMap::new(),
            sky: SkyTree::default(),
            staged,
        }
    }

    /// Adds or replaces the instance registered under `key`.
    pub fn upsert(&mut self, key: &[u8], registration: Registration) -> ServiceChange {
        self.set(key, vec![registration])
    }

    /// Sets what is registered under `key`: one instance, or one per
    /// endpoint when a registration has several (kratos), all in one
    /// service (the first's; at most 256); none removes the key.
    pub fn set(&mut self, key: &[u8], registrations: Vec<Registration>) -> ServiceChange {
        let Some(service) = registrations.first().map(|r| r.service.clone()) else {
            return self.remove(key);
        };
        // A key whose registration moved to another service leaves the
        // old one.
        if self.service_of(key).is_some_and(|old| old != service) {
            self.remove(key);
        }
        let members: Vec<Member> = registrations
            .into_iter()
            .filter(|r| r.service == service)
            .take(usize::from(u8::MAX) + 1)
            .map(|r| Member {
                // Not kept when the key says it (go-zero's `<service>/<id>`).
                id: (id_in_key(key) != Some(r.instance_id.as_str()))
                    .then(|| r.instance_id.into_boxed_str()),
                endpoint: r.endpoint,
                priority: r.priority,
                weight: r.weight,
                scheme: r.scheme,
                source: r.source,
                txt: metadata_txt(&r.metadata),
            })
            .collect();
        let service_key: Arc<str> = match self.services.get_key_value(service.as_str()) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(service.as_str()),
        };
        let key: Arc<[u8]> = Arc::from(key);
        if service_in_key(&key).as_deref() == Some(service.as_str()) {
            self.keys.remove(&key);
        } else {
            self.keys.insert(key.clone(), service_key.clone());
        }
        let instances = self.services.entry(service_key).or_default();
        let was_empty = instances.is_empty();
        let old: Vec<MemberKey> = instances
            .range(members_of(&key))
            .map(|(k, _)| k.clone())
            .collect();
        let same = old.len() == members.len()
            && old
                .iter()
                .zip(&members)
                .all(|(k, m)| instances.get(k) == Some(m));
        if !was_empty && same {
            // A keep-alive-free re-put of the same value: nothing to rebuild.
            return ServiceChange::Unchanged;
        }
        self.dirty.insert(service.clone());
        for k in old {
            instances.remove(&k);
        }
        for (index, member) in members.into_iter().enumerate() {
            instances.insert((key.clone(), index as u8), member);
        }
        if was_empty {
            ServiceChange::Appeared(service)
        } else {
            ServiceChange::Updated(service)
        }
    }

    /// Sets the overlay under `key`: the settings of a service or one of
    /// its instances, applied when the service is next published.
    pub fn set_overlay(&mut self, key: &[u8], target: OverlayTarget, overlay: Overlay) {
        self.remove_overlay(key);
        self.dirty.insert(target.service().to_owned());
        self.overlay_keys.insert(key.into(), target.clone());
        self.overlays.insert(target, overlay);
    }

    /// Removes the overlay under `key`, if any.
    pub fn remove_overlay(&mut self, key: &[u8]) {
        if let Some(target) = self.overlay_keys.remove(key) {
            self.dirty.insert(target.service().to_owned());
            // Another key may name the same target (two letter cases):
            // the target keeps its settings only while one does.
            if !self.overlay_keys.values().any(|t| *t == target) {
                self.overlays.remove(&target);
            }
        }
    }

    /// The service `key`'s registration is in, if it is in one.
    fn service_of(&self, key: &[u8]) -> Option<String> {
        let service = match self.keys.get(key) {
            Some(service) => service.to_string(),
            None => service_in_key(key)?,
        };
        let key: Arc<[u8]> = Arc::from(key);
        self.services
            .get(service.as_str())
            .is_some_and(|instances| instances.range(members_of(&key)).next().is_some())
            .then_some(service)
    }

    /// Sets the SkyDNS record of `key`.
    pub fn set_sky(&mut self, key: &[u8], record: SkyRecord) {
        self.sky.set(key, record);
    }

    /// Removes the SkyDNS record of `key`, if it has one.
    pub fn remove_sky(&mut self, key: &[u8]) {
        self.sky.remove(key);
    }

    /// Removes what is registered under `key`, if anything.
    pub fn remove(&mut self, key: &[u8]) -> ServiceChange {
        let Some(service) = self.service_of(key) else {
            return ServiceChange::Unchanged;
        };
        self.keys.remove(key);
        let Some(instances) = self.services.get_mut(service.as_str()) else {
            return ServiceChange::Unchanged;
        };
        let key: Arc<[u8]> = Arc::from(key);
        let old: Vec<MemberKey> = instances
            .range(members_of(&key))
            .map(|(k, _)| k.clone())
            .collect();
        if old.is_empty() {
            return ServiceChange::Unchanged;
        }
        for k in old {
            instances.remove(&k);
        }
        self.dirty.insert(service.clone());
        if instances.is_empty() {
            self.services.remove(service.as_str());
            ServiceChange::Disappeared(service)
        } else {
            ServiceChange::Updated(service)
        }
    }

    /// Replaces everything (first read, or re-read after compaction); the
    /// caller publishes once afterwards so readers see the swap in one step.
    /// Returns (services, instances).
    pub fn replace_all(
        &mut self,
        registrations: Vec<(Vec<u8>, Vec<Registration>)>,
        sky: Vec<(Vec<u8>, SkyRecord)>,
    ) -> (usize, usize) {
        let params = self.staged.params.clone();
        let revision = self.staged.revision;
        self.sky.clear(&self.staged.sky);
        for (key, record) in sky {
            self.sky.set(&key, record);
        }
        let sky_nodes = std::mem::take(&mut self.staged.sky);
        self.services.clear();
        self.keys.clear();
        self.overlay_keys.clear();
        self.overlays.clear();
        self.dirty.clear();
        self.ptr_names.clear();
        self.staged = ZoneSnapshot::empty(params);
        self.staged.revision = revision;
        // Kept to be rebuilt on publish: the names that went are dirty.
        self.staged.sky = sky_nodes;
        for (key, registrations) in registrations {
            self.set(&key, registrations);
        }
        let services = &self.services;
        self.several_ports
            .retain(|key| services.contains_key(key.as_str()));
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
        self.sky.publish(&mut self.staged.sky);
        self.staged.sky_records = self.sky.len();
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
                self.services.contains_key(key.as_str())
                    != self.staged.services.contains_key(key.as_str())
            })
            .filter_map(|key| key.split_once('.').map(|(_, parent)| parent.to_owned()))
            .filter(|parent| self.services.contains_key(parent.as_str()))
            .collect();
        dirty.extend(parents);
        let reverse = !self.staged.params.reverse.is_empty();
        let mut touched: HashSet<IpAddr> = HashSet::new();
        for key in dirty {
            if reverse && let Some(old) = self.staged.services.get(key.as_str()) {
                for (addr, name) in addressed_names(old, &self.origin_text) {
                    if let Some(names) = self.ptr_names.get_mut(&addr) {
                        names.remove(&name);
                    }
                    touched.insert(addr);
                }
            }
            match self.services.get(key.as_str()) {
                Some(instances) => {
                    let service = Arc::new(self.build_service(&key, instances));
                    if reverse {
                        for (addr, name) in addressed_names(&service, &self.origin_text) {
                            self.ptr_names.entry(addr).or_default().insert(name);
                            touched.insert(addr);
                        }
                    }
                    let count = service.instance_count();
                    let ports: Vec<u16> = service.ports().iter().map(PortName::port).collect();
                    let mixed = service.has_several_ports();
                    let shared: Arc<str> = Arc::from(key.as_str());
                    match self.staged.services.insert(shared.clone(), service) {
                        Some(old) => {
                            self.staged.instances -= old.instance_count();
                            self.staged.several_ports -= usize::from(old.has_several_ports());
                        }
                        None => self.add_ents(&shared),
                    }
                    self.staged.instances += count;
                    self.staged.several_ports += usize::from(mixed);
                    if mixed && !self.several_ports.contains(&key) {
                        self.several_ports.insert(key.clone());
                        changes.push(PortsChange::Several {
                            service: key,
                            ports,
                        });
                    } else if !mixed && self.several_ports.remove(&key) {
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
        for addr in touched {
            match self.ptr_names.get(&addr) {
                Some(names) if !names.is_empty() => {
                    let ptr = ptr_records(names, self.staged.params.ttl);
                    self.staged.addresses.insert(addr, Arc::new(ptr));
                }
                _ => {
                    self.ptr_names.remove(&addr);
                    self.staged.addresses.remove(&addr);
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
    fn build_service(&self, key: &str, instances: &BTreeMap<MemberKey, Member>) -> Service {
        let ttl = self.staged.params.ttl;
        let at_question = pointer(QNAME_OFFSET);
        // SRV targets are written in full: RFC 2782 ("name compression is
        // not to be used for this field") and RFC 3597 §4 forbid pointers
        // in the RDATA of types newer than RFC 1035, and Go's resolver
        // before 1.22 rejects the whole answer when it meets one.
        let service_wire = host_wire(&format!("{key}.{}", self.origin_text));

        // Ports first: a port name keeps its label, and an instance whose
        // id would give the same label takes its hashed one (as when a
        // service name and an instance name coincide, SPEC §3).
        // A name given by several sources is the first source's: the
        // others' instances are counted, not served.
        let source = instances.values().map(|m| m.source).min().unwrap_or(0);
        let shadowed = instances.values().filter(|m| m.source != source).count();
        let instances: Vec<(&MemberKey, &Member)> = instances
            .iter()
            .filter(|(_, m)| m.source == source)
            .collect();
        let service_overlay = self.overlays.get(&OverlayTarget::Service(key.to_owned()));
        let mut per_port: BTreeMap<u16, u32> = BTreeMap::new();
        for (_, member) in &instances {
            *per_port.entry(member.endpoint.port()).or_default() += 1;
        }
        let several = per_port.len() > 1;
        let mut ports: BTreeMap<u16, PortBuilder> = per_port
            .iter()
            .map(|(&port, &count)| (port, PortBuilder::new(port, count, several)))
            .collect();

        let mut labels: HashMap<Box<str>, u32> = HashMap::with_capacity(instances.len());
        let mut published: Vec<Instance> = Vec::with_capacity(instances.len());
        let mut sets = SetsBuilder::default();
        let mut glue = WireBuilder::default();
        let mut schemes: BTreeMap<&str, SchemeBuilder> = BTreeMap::new();
        // Each published instance's label in wire form.
        let mut label_wires: Vec<Vec<u8>> = Vec::with_capacity(instances.len());
        // The instance the previous member made, and the ports it has so
        // far: the next endpoint of the same registration on the same
        // host is that instance too (kratos's grpc:// and http://).
        let mut current: Option<(&Arc<[u8]>, u32)> = None;
        let mut current_ports: Vec<u16> = Vec::new();

        for ((etcd_key, index), member) in instances {
            let endpoint = &member.endpoint;
            let same_instance = current
                .filter(|(k, at)| {
                    *k == etcd_key && same_host(&published[*at as usize].endpoint, endpoint)
                })
                .map(|(_, at)| at);
            let at = match same_instance {
                Some(at) => at,
                None => {
                    // The natural label unless another key of this service
                    // took it first (ids differing only in letter case), a
                    // service of that name exists (SPEC §3: the service
                    // wins, the instance takes its hash), or it is one of
                    // the service's port names.
                    let id = member
                        .id
                        .as_deref()
                        .or_else(|| id_in_key(etcd_key))
                        .unwrap_or("");
                    let natural =
                        names::natural_label(id, key, &self.origin_text).filter(|natural| {
                            !labels.contains_key(natural.as_str())
                                && !self
                                    .services
                                    .contains_key(format!("{natural}.{key}").as_str())
                                && !port_of_label(natural).is_some_and(|p| ports.contains_key(&p))
                        });
                    let label = natural.unwrap_or_else(|| match index {
                        0 => names::hashed_label(etcd_key),
                        n => names::hashed_label(&[&etcd_key[..], &[0, *n]].concat()),
                    });
                    let at = published.len() as u32;
                    label_wires.push(label_wire(&label));
                    labels.insert(label.into_boxed_str(), at);
                    published.push(Instance {
                        key: etcd_key.clone(),
                        id: member.id.clone(),
                        endpoint: endpoint.clone(),
                        priority: self.numbers(key, etcd_key, member, service_overlay).0,
                        weight: self.numbers(key, etcd_key, member, service_overlay).1,
                        txt: member.txt.as_ref().map(|rdata| {
                            let mut txt = WireBuilder::default();
                            txt.push(&[&at_question], rrtype::TXT, ttl, &[rdata]);
                            Box::new(txt.finish())
                        }),
                    });
                    current = Some((etcd_key, at));
                    current_ports.clear();
                    at
                }
            };
            let label_wire = &label_wires[at as usize];
            // The same endpoint twice (one host, one port, two schemes)
            // is one record in the service's and the port's sets.
            let new_port = !current_ports.contains(&endpoint.port());
            if new_port {
                current_ports.push(endpoint.port());
            }
            let new_instance = same_instance.is_none();

            // SRV RDATA: priority, weight, port, then the target: the
            // instance name, or a host-name value as it is. The overlay's
            // numbers win: the instance's, then the service's.
            let (priority, weight) = self.numbers(key, etcd_key, member, service_overlay);
            let head = [
                priority.to_be_bytes(),
                weight.to_be_bytes(),
                endpoint.port().to_be_bytes(),
            ]
            .concat();
            let host_target;
            let srv_rdata: [&[u8]; 3] = match endpoint {
                Endpoint::Ip { .. } => [&head, label_wire, &service_wire],
                Endpoint::Host { name, .. } => {
                    host_target = host_wire(name);
                    [&head, &host_target, &[]]
                }
            };
            let scheme = member.scheme.as_deref().unwrap_or(GRPC_SCHEME);
            let scheme_set = schemes
                .entry(scheme)
                .or_insert_with(|| SchemeBuilder::new(scheme));
            scheme_set
                .srv
                .push(&[&at_question], rrtype::SRV, ttl, &srv_rdata);
            scheme_set.ports.insert(endpoint.port());
            if new_port {
                sets.add(endpoint, &srv_rdata, ttl);
            }
            let port = ports.get_mut(&endpoint.port());
            if let Endpoint::Ip { addr, .. } = endpoint {
                let (rtype, octets) = address_rdata(addr);
                if new_instance {
                    glue.push(&[label_wire, &at_question], rtype, ttl, &[octets.as_ref()]);
                }
                if scheme_set.glued.insert(at) {
                    scheme_set.glue.push(
                        &[label_wire, &scheme_set.at_service],
                        rtype,
                        ttl,
                        &[octets.as_ref()],
                    );
                }
            }
            // Every port of the service has a builder: they were made from
            // these endpoints.
            if let Some(port) = port
                && new_port
            {
                if let Some(own) = port.own.as_mut() {
                    own.add(endpoint, &srv_rdata, ttl);
                }
                if let Endpoint::Ip { addr, .. } = endpoint {
                    let (rtype, octets) = address_rdata(addr);
                    port.glue.push(
                        &[label_wire, &port.at_service],
                        rtype,
                        ttl,
                        &[octets.as_ref()],
                    );
                }
            }
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
            mixed_ports: schemes.values().any(|set| set.ports.len() > 1),
            source,
            shadowed: u32::try_from(shadowed).unwrap_or(u32::MAX),
            schemes: schemes.into_values().map(SchemeBuilder::finish).collect(),
            ports: ports.into_values().map(PortBuilder::finish).collect(),
            grpc_config: match service_overlay.and_then(|o| o.service_config.as_ref()) {
                Some(Some(config)) => Some(ServiceConfigTxt::new(config.clone(), ttl)),
                Some(None) => None,
                None => self.staged.params.grpc.for_service(key),
            },
            rotation: [AtomicUsize::new(0), AtomicUsize::new(0)],
        }
    }
}

impl ZoneWriter {
    /// A member's SRV priority and weight: its instance's overlay, then
    /// its service's, then its own.
    fn numbers(
        &self,
        service: &str,
        etcd_key: &[u8],
        member: &Member,
        service_overlay: Option<&Overlay>,
    ) -> (u16, u16) {
        let id = member
            .id
            .as_deref()
            .or_else(|| id_in_key(etcd_key))
            .unwrap_or("");
        let instance_overlay = if self.overlays.is_empty() {
            None
        } else {
            self.overlays.get(&OverlayTarget::Instance {
                service: service.to_owned(),
                instance_id: id.to_owned(),
            })
        };
        let pick = |field: fn(&Overlay) -> Option<u16>, own: u16| {
            instance_overlay
                .and_then(field)
                .or_else(|| service_overlay.and_then(field))
                .unwrap_or(own)
        };
        (
            pick(|o| o.priority, member.priority),
            pick(|o| o.weight, member.weight),
        )
    }
}

/// The service a go-zero key names: the part before its first `/`,
/// lower-cased.
fn service_in_key(key: &[u8]) -> Option<String> {
    let slash = key.iter().position(|&b| b == b'/').unwrap_or(key.len());
    std::str::from_utf8(&key[..slash])
        .ok()
        .map(str::to_ascii_lowercase)
}

/// A member of a service: its etcd key, and its place among the key's
/// endpoints.
type MemberKey = (Arc<[u8]>, u8);

/// The members of `key`, in a service's map.
fn members_of(key: &Arc<[u8]>) -> std::ops::RangeInclusive<MemberKey> {
    (key.clone(), 0)..=(key.clone(), u8::MAX)
}

/// The instance id a go-zero key carries: the part after its first `/`.
pub(super) fn id_in_key(key: &[u8]) -> Option<&str> {
    let slash = key.iter().position(|&b| b == b'/')?;
    std::str::from_utf8(&key[slash + 1..]).ok()
}

/// One instance of a service as the writer keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    /// `None` when it is the key's [`id_in_key`], as for go-zero.
    id: Option<Box<str>>,
    /// The protocol of the endpoint (`http`): its SRV records are at
    /// `_<scheme>._tcp.<service>`; `None` is gRPC, as go-zero's are.
    scheme: Option<Box<str>>,
    /// Its source's place in the configured list.
    source: u8,
    /// Its metadata as TXT RDATA.
    txt: Option<Box<[u8]>>,
    endpoint: Endpoint,
    priority: u16,
    weight: u16,
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

/// The scheme of endpoints whose source names none (go-zero, go-micro).
const GRPC_SCHEME: &str = "grpc";

/// Whether two endpoints are on the same host (any port).
fn same_host(a: &Endpoint, b: &Endpoint) -> bool {
    match (a, b) {
        (Endpoint::Ip { addr: x, .. }, Endpoint::Ip { addr: y, .. }) => x == y,
        (Endpoint::Host { name: x, .. }, Endpoint::Host { name: y, .. }) => x == y,
        _ => false,
    }
}

/// The SRV set of one scheme while it is built.
struct SchemeBuilder {
    scheme: Box<str>,
    /// A pointer to the service name inside a `_<scheme>._tcp.<service>`
    /// question: past the header and the two labels.
    at_service: [u8; 2],
    srv: WireBuilder,
    glue: WireBuilder,
    /// Instances whose address is in `glue` already.
    glued: HashSet<u32>,
    /// The ports of its endpoints.
    ports: BTreeSet<u16>,
}

impl SchemeBuilder {
    fn new(scheme: &str) -> Self {
        // `\x05_grpc\x04_tcp`: one length octet and the underscore, the
        // scheme, then the 5 octets of `_tcp`. Schemes are short words
        // (their sources check them): the offset stays far below 2^14.
        let at_service = pointer(QNAME_OFFSET + 2 + scheme.len() as u16 + 5);
        Self {
            scheme: scheme.into(),
            at_service,
            srv: WireBuilder::default(),
            glue: WireBuilder::default(),
            glued: HashSet::new(),
            ports: BTreeSet::new(),
        }
    }

    fn finish(self) -> SchemeSet {
        SchemeSet {
            scheme: self.scheme,
            srv: self.srv.finish(),
            glue: self.glue.finish(),
        }
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

/// Each IP instance of `service` with its name in wire form
/// (`<label>.<service>.<zone>`), for the reverse zones.
fn addressed_names(service: &Service, origin_text: &str) -> Vec<(IpAddr, Box<[u8]>)> {
    service
        .labels
        .iter()
        .filter_map(|(label, &index)| {
            let instance = service.instances.get(index as usize)?;
            let Endpoint::Ip { addr, .. } = instance.endpoint() else {
                return None;
            };
            let name = host_wire(&format!("{label}.{}.{origin_text}", service.key));
            Some((*addr, name.into_boxed_slice()))
        })
        .collect()
}

/// The PTR records of one address: one per name, in name order, owners
/// pointing at the question, targets written in full.
fn ptr_records(names: &BTreeSet<Box<[u8]>>, ttl: u32) -> WireRrs {
    let mut ptr = WireBuilder::default();
    for name in names {
        ptr.push(&[&pointer(QNAME_OFFSET)], rrtype::PTR, ttl, &[name]);
    }
    ptr.finish()
}

/// The proper ancestors of a service key below the apex: `a.b.rpc` →
/// `b.rpc`, `rpc`.
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    key.match_indices('.').map(move |(i, _)| &key[i + 1..])
}
