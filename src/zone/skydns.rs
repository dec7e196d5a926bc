//! The SkyDNS tree: records written the way CoreDNS's `etcd` plugin reads
//! them, kept by name, and the answers CoreDNS gives from them; no I/O.
//!
//! A SkyDNS key spells a name (`/skydns/local/svc/db/x` is
//! `x.db.svc.local`) and its value is one record source ([`SkyRecord`]).
//! CoreDNS answers a name with every record below it (a query for
//! `db.svc.local` gets `x`, `y`, ...), or with the key of the name itself
//! when nothing is below. The writer keeps every record by name
//! ([`SkyTree`]) and, per batch, rebuilds the node ([`SkyNode`]) of each
//! name a change is at or below, from at most [`MAX_NODE_RECORDS`] records
//! each: the cost of an update is bounded by the depth of its key, never
//! the size of the zone. Queries read the node and write
//! CoreDNS's answer from it ([`ZoneSnapshot::sky_answer`]): addresses,
//! TXT, SRV with its percent weights, and CNAME chains followed inside the
//! zone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use super::snapshot::{Lookup, ZoneSnapshot};
use super::wire::{address_rdata, host_wire, pointer, rrtype, write_rr};

/// CoreDNS's TTL for a record whose value sets none (and has no lease).
pub const DEFAULT_TTL: u32 = 300;
/// CoreDNS's SRV priority for a value with none, or 0.
pub const DEFAULT_PRIORITY: u16 = 10;
/// The weight a value with none, or 0, counts as in the SRV percentages.
pub const DEFAULT_WEIGHT: u16 = 100;
/// CoreDNS stops a CNAME chain after this many links.
const MAX_CHAIN: usize = 8;
/// The most names one answer follows CNAMEs into (or looks glue up at):
/// a tree whose names each alias many others would otherwise cost a query
/// its fan-out to the power of the chain length. Past it, CNAMEs are
/// answered alone, for the resolver to follow, and targets get no glue.
pub const MAX_FOLLOWED: usize = 64;

/// The CNAME chain being followed for one answer, and how many more names
/// the answer may follow.
#[derive(Debug)]
struct Chase {
    path: Vec<Box<str>>,
    budget: usize,
}

impl Chase {
    fn new() -> Self {
        Chase {
            path: Vec::new(),
            budget: MAX_FOLLOWED,
        }
    }
}
/// The most records a name answers with, the first in key order: a DNS
/// message holds about 4,000 addresses at most, and this bounds what an
/// update rebuilds per name above it, whatever the size of the tree.
pub const MAX_NODE_RECORDS: usize = 4096;

/// What a record's `host` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkyHost {
    /// No host: a TXT-only record, or nothing.
    None,
    Ip(IpAddr),
    /// A host name, lower-case, without the trailing dot.
    Name(Box<str>),
}

/// One SkyDNS value (CoreDNS's `msg.Service`), checked and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkyRecord {
    /// The name the key spells, relative to the zone, lower-case
    /// (`x.db` for `/skydns/local/svc/db/x` in `svc.local`).
    pub name: Box<str>,
    pub host: SkyHost,
    /// `None` for CoreDNS's port -1: no SRV record.
    pub port: Option<u16>,
    /// Already defaulted: 0 or absent is [`DEFAULT_PRIORITY`].
    pub priority: u16,
    /// As given: 0 counts as [`DEFAULT_WEIGHT`].
    pub weight: u16,
    pub text: Box<str>,
    pub ttl: u32,
    pub targetstrip: u8,
    pub group: Box<str>,
    /// The place of its source in the configured list.
    pub source: u8,
}

impl SkyRecord {
    /// The labels of its name: CoreDNS's depth of the key, for groups.
    fn depth(&self) -> usize {
        self.name.split('.').count()
    }

    /// CoreDNS's `shouldInclude`, for every type but TXT: whether it has
    /// a host.
    fn has_host(&self) -> bool {
        !matches!(self.host, SkyHost::None)
    }
}

// ---------------------------------------------------------------------------
// Published nodes
// ---------------------------------------------------------------------------

/// A name of the SkyDNS tree: the records CoreDNS answers it with.
#[derive(Debug)]
pub struct SkyNode {
    /// The name, relative to the zone (`db`, `x.db`).
    pub(super) name: Arc<str>,
    /// The records below the name (or its own, if nothing is below), in
    /// key order, after CoreDNS's group filter.
    pub(super) records: Box<[Arc<SkyRecord>]>,
    /// The record of the name's own key, if it has one: what a CNAME
    /// query gets (CoreDNS reads only the exact key for CNAME).
    pub(super) own: Option<Arc<SkyRecord>>,
    /// The place of its source in the configured list.
    pub(super) source: u8,
    /// Whether an answer here depends on other names (a record's host is
    /// a name: a CNAME to follow, an SRV target's glue). When it does
    /// not, each answer is written once, on first use, and kept with the
    /// node: a name with thousands of records below it costs a copy per
    /// query, not a rebuild.
    pub(super) follows_names: bool,
    /// A, AAAA, TXT and SRV, once written (see `follows_names`).
    pub(super) written: [OnceLock<Arc<SkyAnswer>>; 4],
}

impl SkyNode {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many records answer it.
    pub fn record_count(&self) -> usize {
        self.records.len()
    }
}

// ---------------------------------------------------------------------------
// The writer's side
// ---------------------------------------------------------------------------

/// Every SkyDNS record by name, and the names touched since the last
/// publish. Owned by the zone writer.
#[derive(Debug, Default)]
pub struct SkyTree {
    /// (Reversed name path, etcd key) → record. The path is the name's
    /// labels from the zone down, joined by `/` (`db/x`), so that the
    /// records below a name are one range.
    records: BTreeMap<(String, Arc<[u8]>), Arc<SkyRecord>>,
    /// etcd key → its path, for deletes.
    paths: HashMap<Arc<[u8]>, String>,
    dirty: HashSet<String>,
}

/// `x.db` → `db/x`.
fn path_of(name: &str) -> String {
    name.rsplit('.').collect::<Vec<_>>().join("/")
}

/// The name and every ancestor of it below the apex: `x.db` → `x.db`, `db`.
fn self_and_ancestors(name: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(name), |n| n.split_once('.').map(|(_, rest)| rest))
}

impl SkyTree {
    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Sets the record of `key`, replacing what it had.
    pub fn set(&mut self, key: &[u8], record: SkyRecord) {
        self.remove(key);
        let key: Arc<[u8]> = Arc::from(key);
        let path = path_of(&record.name);
        self.mark(&record.name);
        self.paths.insert(key.clone(), path.clone());
        self.records.insert((path, key), Arc::new(record));
    }

    /// Removes the record of `key`, if it has one.
    pub fn remove(&mut self, key: &[u8]) {
        let Some((key, path)) = self.paths.remove_entry(key) else {
            return;
        };
        if let Some(record) = self.records.remove(&(path, key)) {
            self.mark(&record.name);
        }
    }

    /// Forgets everything (a full re-read follows); every published name
    /// goes with the next [`SkyTree::publish`].
    pub fn clear(&mut self, published: &imbl::HashMap<Arc<str>, Arc<SkyNode>>) {
        self.records.clear();
        self.paths.clear();
        self.dirty = published.keys().map(|name| name.to_string()).collect();
    }

    fn mark(&mut self, name: &str) {
        for name in self_and_ancestors(name) {
            if !self.dirty.contains(name) {
                self.dirty.insert(name.to_owned());
            }
        }
    }

    /// Rebuilds the node of every name touched since the last call, in
    /// `nodes`.
    pub fn publish(&mut self, nodes: &mut imbl::HashMap<Arc<str>, Arc<SkyNode>>) {
        for name in std::mem::take(&mut self.dirty) {
            match self.node(&name) {
                Some(node) => {
                    nodes.insert(node.name.clone(), Arc::new(node));
                }
                None => {
                    nodes.remove(name.as_str());
                }
            }
        }
    }

    /// The node of `name` as CoreDNS reads it: the records below it, or
    /// its own key's when none is below; `None` when neither exists.
    fn node(&self, name: &str) -> Option<SkyNode> {
        let path = path_of(name);
        let own: Option<Arc<SkyRecord>> = self
            .records
            .range((path.clone(), Arc::from(&[][..]))..)
            .take_while(|((p, _), _)| *p == path)
            .map(|(_, r)| r.clone())
            .next();
        // The paths below `db` start with `db/`; `/` + 1 is `0`.
        let from = (format!("{path}/"), Arc::<[u8]>::from(&[][..]));
        let to = (format!("{path}0"), Arc::<[u8]>::from(&[][..]));
        let mut below: Vec<Arc<SkyRecord>> = self
            .records
            .range(from..to)
            .take(MAX_NODE_RECORDS)
            .map(|(_, r)| r.clone())
            .collect();
        if below.is_empty() {
            below = self
                .records
                .range((path.clone(), Arc::from(&[][..]))..)
                .take_while(|((p, _), _)| *p == path)
                .take(MAX_NODE_RECORDS)
                .map(|(_, r)| r.clone())
                .collect();
        }
        if below.is_empty() {
            return None;
        }
        let source = below[0].source;
        let records = group(below).into_boxed_slice();
        let follows_names = records.iter().any(|r| matches!(r.host, SkyHost::Name(_)));
        Some(SkyNode {
            source,
            name: Arc::from(name),
            records,
            own,
            follows_names,
            written: Default::default(),
        })
    }
}

/// CoreDNS's `msg.Group`: when the shallowest records of a set carry a
/// group, only the records of that group (and those of none) answer,
/// unless records at that depth disagree about it. Records without a host
/// or text (CoreDNS's `shouldInclude`) never answer.
fn group(records: Vec<Arc<SkyRecord>>) -> Vec<Arc<SkyRecord>> {
    let records: Vec<Arc<SkyRecord>> = records
        .into_iter()
        .filter(|r| r.has_host() || !r.text.is_empty())
        .collect();
    let Some(first) = records.first() else {
        return records;
    };
    let mut chosen: &str = &first.group;
    let mut depth = first.depth();
    for record in &records {
        if record.depth() < depth {
            if record.group.is_empty() {
                break;
            }
            chosen = &record.group;
            depth = record.depth();
        }
    }
    if chosen.is_empty() {
        return records;
    }
    let disagree = records
        .iter()
        .any(|r| r.depth() == depth && !r.group.is_empty() && *r.group != *chosen);
    if disagree {
        return records;
    }
    let chosen = chosen.to_owned();
    records
        .into_iter()
        .filter(|r| r.group.is_empty() || *r.group == *chosen)
        .collect()
}

// ---------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------

/// Records written for one answer: the answer section and the additional
/// one, and their counts.
#[derive(Debug, Default)]
pub struct SkyAnswer {
    pub answer: Vec<u8>,
    pub an: u16,
    pub glue: Vec<u8>,
    pub ar: u16,
}

/// TXT RDATA: the text in strings of at most 255 octets.
fn txt_rdata(text: &str) -> Vec<u8> {
    let mut rdata = Vec::with_capacity(text.len() + text.len() / 255 + 1);
    for chunk in text.as_bytes().chunks(255) {
        rdata.push(chunk.len() as u8);
        rdata.extend_from_slice(chunk);
    }
    rdata
}

/// `name` without its `strip` leftmost labels (all of them kept when it
/// has no more than that), as CoreDNS's `targetstrip` does.
fn strip_labels(name: &str, strip: u8) -> &str {
    let mut rest = name;
    for _ in 0..strip {
        match rest.split_once('.') {
            Some((_, tail)) => rest = tail,
            None => return name,
        }
    }
    rest
}

/// Whether `child` is `parent` or below it.
fn is_at_or_below(child: &str, parent: &str) -> bool {
    child == parent
        || child
            .strip_suffix(parent)
            .is_some_and(|head| head.ends_with('.'))
}

impl ZoneSnapshot {
    /// The SkyDNS node at a relative name, if the SkyDNS source answers
    /// it there (see [`ZoneSnapshot::lookup_relative`] for the rule when
    /// another source has the name too).
    pub fn sky_node(&self, relative: &str) -> Option<&SkyNode> {
        match self.lookup_relative(relative) {
            Lookup::Sky(node) => Some(node),
            _ => None,
        }
    }

    /// How many SkyDNS records the zone holds.
    pub fn sky_record_count(&self) -> usize {
        self.sky_records
    }

    /// The full name of a relative one (`db` → `db.svc.local`).
    fn sky_fqdn(&self, relative: &str) -> String {
        let origin = self.params.origin_text();
        if relative.is_empty() {
            origin
        } else {
            format!("{relative}.{origin}")
        }
    }

    /// The name relative to the zone of a full one inside it.
    fn sky_relative<'n>(&self, fqdn: &'n str) -> Option<&'n str> {
        let origin = self.params.origin_text();
        if fqdn == origin {
            return Some("");
        }
        fqdn.strip_suffix(origin.as_str())?.strip_suffix('.')
    }

    /// CoreDNS's answer for `qtype` at `node` (owner: the question). No
    /// records in `answer` is NODATA.
    pub fn sky_answer(&self, node: &SkyNode, qtype: u16) -> Arc<SkyAnswer> {
        let slot = match qtype {
            rrtype::A => 0,
            rrtype::AAAA => 1,
            rrtype::TXT => 2,
            rrtype::SRV => 3,
            _ => return Arc::new(self.write_sky_answer(node, qtype)),
        };
        if node.follows_names {
            return Arc::new(self.write_sky_answer(node, qtype));
        }
        node.written[slot]
            .get_or_init(|| Arc::new(self.write_sky_answer(node, qtype)))
            .clone()
    }

    fn write_sky_answer(&self, node: &SkyNode, qtype: u16) -> SkyAnswer {
        let mut out = SkyAnswer::default();
        let question = pointer(super::QNAME_OFFSET);
        match qtype {
            rrtype::A | rrtype::AAAA | rrtype::TXT => {
                let mut chain = Chase::new();
                out.an = self.sky_chase(node, qtype, &question, &mut chain, &mut out.answer);
            }
            rrtype::SRV => self.sky_srv(node, &mut out),
            rrtype::CNAME => {
                if let Some(record) = &node.own
                    && let SkyHost::Name(target) = &record.host
                {
                    write_rr(
                        &mut out.answer,
                        &[&question],
                        rrtype::CNAME,
                        record.ttl,
                        &[&host_wire(target)],
                    );
                    out.an = 1;
                }
            }
            // RFC 8482 §4.1: one RRset of those the name has.
            rrtype::ANY => {
                for qtype in [rrtype::A, rrtype::AAAA, rrtype::SRV, rrtype::TXT] {
                    out = self.write_sky_answer(node, qtype);
                    if out.an > 0 {
                        break;
                    }
                }
            }
            _ => {}
        }
        out
    }

    /// CoreDNS's A, AAAA and TXT lookups: the node's own records for
    /// `qtype`, and for each host name a CNAME, followed inside the zone
    /// (and left out when it leads nowhere there). Returns the number of
    /// records written.
    fn sky_chase(
        &self,
        node: &SkyNode,
        qtype: u16,
        owner: &[u8],
        chain: &mut Chase,
        out: &mut Vec<u8>,
    ) -> u16 {
        let fqdn = self.sky_fqdn(&node.name);
        let mut count = 0u16;
        let mut seen: HashSet<&[u8]> = HashSet::new();
        let mut addr_seen: HashSet<IpAddr> = HashSet::new();
        for record in node.records.iter() {
            match &record.host {
                SkyHost::Ip(addr) => {
                    let (rtype, octets) = address_rdata(addr);
                    if rtype == qtype && addr_seen.insert(*addr) {
                        write_rr(out, &[owner], rtype, record.ttl, &[octets.as_ref()]);
                        count += 1;
                    }
                }
                // CoreDNS: a host name with text is a TXT record, not
                // an alias.
                SkyHost::None | SkyHost::Name(_) if !record.text.is_empty() => {
                    if qtype == rrtype::TXT && seen.insert(record.text.as_bytes()) {
                        write_rr(
                            out,
                            &[owner],
                            rrtype::TXT,
                            record.ttl,
                            &[&txt_rdata(&record.text)],
                        );
                        count += 1;
                    }
                }
                SkyHost::None => {}
                SkyHost::Name(target) => {
                    // `x CNAME x` or below it is a loop; so is a target
                    // already in the chain.
                    if is_at_or_below(target, &fqdn)
                        || chain.path.len() >= MAX_CHAIN
                        || chain.path.contains(target)
                    {
                        continue;
                    }
                    let target_wire = host_wire(target);
                    let mut cname = Vec::new();
                    write_rr(
                        &mut cname,
                        &[owner],
                        rrtype::CNAME,
                        record.ttl,
                        &[&target_wire],
                    );
                    match self
                        .sky_relative(target)
                        .map(|rel| self.lookup_relative(rel))
                    {
                        Some(Lookup::Sky(next)) if chain.budget > 0 => {
                            chain.budget -= 1;
                            chain.path.push(target.clone());
                            let mut rest = Vec::new();
                            let n = self.sky_chase(next, qtype, &target_wire, chain, &mut rest);
                            chain.path.pop();
                            if n > 0 {
                                out.extend_from_slice(&cname);
                                out.extend_from_slice(&rest);
                                count += 1 + n;
                            }
                        }
                        // A name in the zone that does not exist: CoreDNS
                        // leaves the CNAME out.
                        Some(Lookup::NxDomain) => {}
                        // Another source's name, or a name outside the
                        // zone: the CNAME alone, for the resolver to
                        // follow.
                        _ => {
                            out.extend_from_slice(&cname);
                            count += 1;
                        }
                    }
                }
            }
        }
        count
    }

    /// CoreDNS's SRV lookup: one record per record with a host and a port,
    /// weights in percent of their priority's total; targets are the host
    /// names, or the record's own name for an address (given as glue).
    fn sky_srv(&self, node: &SkyNode, out: &mut SkyAnswer) {
        let question = pointer(super::QNAME_OFFSET);
        let records: Vec<&SkyRecord> = node
            .records
            .iter()
            .map(|r| &**r)
            .filter(|r| r.has_host())
            .collect();
        let mut totals: HashMap<u16, u64> = HashMap::new();
        for record in &records {
            let weight = if record.weight == 0 {
                DEFAULT_WEIGHT
            } else {
                record.weight
            };
            *totals.entry(record.priority).or_default() += u64::from(weight);
        }
        let mut srv_seen: HashSet<(String, u16)> = HashSet::new();
        let mut glue_seen: HashSet<(String, IpAddr)> = HashSet::new();
        let mut chased: HashSet<String> = HashSet::new();
        // One budget for all the targets' glue.
        let mut glue_chase = Chase::new();
        for record in records {
            let Some(port) = record.port else { continue };
            let total = totals.get(&record.priority).copied().unwrap_or(1).max(1) as f64;
            let share = if record.weight == 0 {
                100.0 / total * 100.0
            } else {
                100.0 / total * f64::from(record.weight)
            };
            // At most 100: a record's weight is part of the total.
            let weight = (share.floor() as u16).max(1);
            let target = match &record.host {
                SkyHost::Ip(_) => self.sky_fqdn(&record.name),
                SkyHost::Name(name) if record.text.is_empty() => name.to_string(),
                _ => continue,
            };
            let target = strip_labels(&target, record.targetstrip).to_owned();
            let target_wire = host_wire(&target);
            let mut rdata = Vec::with_capacity(6 + target_wire.len());
            rdata.extend_from_slice(&record.priority.to_be_bytes());
            rdata.extend_from_slice(&weight.to_be_bytes());
            rdata.extend_from_slice(&port.to_be_bytes());
            rdata.extend_from_slice(&target_wire);
            // CoreDNS writes an address's SRV record once per target and
            // port; a host name's every time.
            let fresh = match &record.host {
                SkyHost::Ip(_) => srv_seen.insert((target.clone(), port)),
                _ => true,
            };
            if fresh {
                write_rr(
                    &mut out.answer,
                    &[&question],
                    rrtype::SRV,
                    record.ttl,
                    &[&rdata],
                );
                out.an += 1;
            }
            match &record.host {
                SkyHost::Ip(addr) => {
                    if glue_seen.insert((target.clone(), *addr)) {
                        let (rtype, octets) = address_rdata(addr);
                        write_rr(
                            &mut out.glue,
                            &[&target_wire],
                            rtype,
                            record.ttl,
                            &[octets.as_ref()],
                        );
                        out.ar += 1;
                    }
                }
                _ => {
                    // Glue for a target in the zone: its addresses, through
                    // its CNAMEs (CoreDNS gives the A records only).
                    if glue_chase.budget > 0
                        && !chased.contains(&target)
                        && let Some(Lookup::Sky(next)) = self
                            .sky_relative(&target)
                            .map(|rel| self.lookup_relative(rel))
                    {
                        glue_chase.budget -= 1;
                        chased.insert(target.clone());
                        for qtype in [rrtype::A, rrtype::AAAA] {
                            out.ar += self.sky_chase(
                                next,
                                qtype,
                                &target_wire,
                                &mut glue_chase,
                                &mut out.glue,
                            );
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, group: &str) -> Arc<SkyRecord> {
        Arc::new(SkyRecord {
            name: name.into(),
            host: SkyHost::Ip("10.0.0.1".parse().unwrap()),
            port: Some(80),
            priority: DEFAULT_PRIORITY,
            weight: 0,
            text: "".into(),
            ttl: DEFAULT_TTL,
            targetstrip: 0,
            group: group.into(),
            source: 0,
        })
    }

    fn names(records: &[Arc<SkyRecord>]) -> Vec<&str> {
        records.iter().map(|r| &*r.name).collect()
    }

    /// CoreDNS's `msg/service_test.go` TestGroup and `group_test.go`.
    #[test]
    fn groups_follow_coredns() {
        // The shallowest record's group wins; deeper ones of another go.
        let set = vec![record("a.dom1", "g1"), record("b.sub.dom1", "g2")];
        assert_eq!(names(&group(set)), ["a.dom1"]);
        // One group everywhere: all of them.
        let set = vec![record("a.dom", "g1"), record("b.sub.dom", "g1")];
        assert_eq!(names(&group(set)).len(), 2);
        // A record of no group is always in.
        let set = vec![record("a.dom2", "g1"), record("b.sub.dom2", "")];
        assert_eq!(names(&group(set)).len(), 2);
        // Disagreement at the chosen depth: all of them.
        let set = vec![
            record("a.dom", "g1"),
            record("b.dom", "g2"),
            record("c.sub.dom", "g3"),
        ];
        assert_eq!(names(&group(set)).len(), 3);
        // A group-less shallower record stops the walk.
        let set = vec![
            record("c.sub.dom", "g1"),
            record("a.dom", ""),
            record("d.sub.dom", "g1"),
            record("e.x.sub.dom", "g2"),
        ];
        assert_eq!(names(&group(set)), ["c.sub.dom", "a.dom", "d.sub.dom"]);
    }

    #[test]
    fn a_name_is_answered_by_what_is_below_it_or_by_itself() {
        let mut tree = SkyTree::default();
        tree.set(b"/skydns/k/a", (*record("a.db", "")).clone());
        tree.set(b"/skydns/k/b", (*record("b.db", "")).clone());
        tree.set(b"/skydns/k/db", (*record("db", "")).clone());
        tree.set(b"/skydns/k/dbx", (*record("dbx", "")).clone());
        let mut nodes = imbl::HashMap::new();
        tree.publish(&mut nodes);
        let db = nodes.get("db").unwrap();
        // Its own record is shadowed by those below (CoreDNS), but is
        // what CNAME reads.
        assert_eq!(names(&db.records), ["a.db", "b.db"]);
        assert_eq!(db.own.as_ref().map(|r| &*r.name), Some("db"));
        assert_eq!(names(&nodes.get("dbx").unwrap().records), ["dbx"]);
        assert_eq!(names(&nodes.get("a.db").unwrap().records), ["a.db"]);
        tree.remove(b"/skydns/k/a");
        tree.remove(b"/skydns/k/b");
        tree.publish(&mut nodes);
        assert_eq!(names(&nodes.get("db").unwrap().records), ["db"]);
        assert!(nodes.get("a.db").is_none());
        tree.clear(&nodes);
        tree.publish(&mut nodes);
        assert!(nodes.is_empty());
    }

    #[test]
    fn a_name_answers_with_at_most_the_first_records_below_it() {
        let mut tree = SkyTree::default();
        for i in 0..MAX_NODE_RECORDS + 10 {
            let name = format!("i{i:05}.big");
            tree.set(name.as_bytes(), (*record(&name, "")).clone());
        }
        let mut nodes = imbl::HashMap::new();
        tree.publish(&mut nodes);
        let big = nodes.get("big").unwrap();
        assert_eq!(big.record_count(), MAX_NODE_RECORDS);
        assert_eq!(&*big.records[0].name, "i00000.big");
        assert_eq!(tree.len(), MAX_NODE_RECORDS + 10);
    }

    /// Every name aliases ten others, eight levels deep: following every
    /// CNAME would be 10^8 names for one query. The answer follows at
    /// most MAX_FOLLOWED of them and answers the rest as bare CNAMEs.
    #[test]
    fn an_answer_follows_a_bounded_number_of_names() {
        use super::super::{ZoneParams, ZoneStore, ZoneWriter};
        let store = Arc::new(ZoneStore::new(ZoneParams {
            origin: hickory_proto::rr::Name::from_ascii("svc.local.").unwrap(),
            ttl: 5,
            negative_ttl: 5,
            grpc: Default::default(),
            reverse: Vec::new(),
        }));
        let mut writer = ZoneWriter::new(store.clone());
        let alias = |name: &str, host: &str| SkyRecord {
            host: SkyHost::Name(host.into()),
            ..(*record(name, "")).clone()
        };
        for level in 0..8 {
            for i in 0..10 {
                let owner = format!("l{level}-{i}");
                for j in 0..10 {
                    let name = format!("c{j}.{owner}");
                    let target = format!("l{}-{j}.svc.local", level + 1);
                    writer.set_sky(name.as_bytes(), alias(&name, &target));
                }
            }
        }
        for i in 0..10 {
            let name = format!("l8-{i}");
            writer.set_sky(name.as_bytes(), (*record(&name, "")).clone());
        }
        writer.publish();
        let snapshot = store.load();
        let node = snapshot.sky_node("l0-0").unwrap();
        let answer = snapshot.sky_answer(node, rrtype::A);
        assert!(answer.an > 0);
        assert!(
            usize::from(answer.an) <= 10 * (MAX_FOLLOWED + 1) + 10,
            "{} records in one answer",
            answer.an
        );
    }

    #[test]
    fn targetstrip_and_txt_strings() {
        assert_eq!(
            strip_labels("a.targetstrip.skydns.test", 1),
            "targetstrip.skydns.test"
        );
        assert_eq!(strip_labels("a.b", 2), "a.b");
        assert_eq!(strip_labels("a.b", 0), "a.b");
        let rdata = txt_rdata(&"0".repeat(400));
        assert_eq!((rdata[0], rdata[256], rdata.len()), (255, 145, 402));
        // No empty string after a multiple of 255 (CoreDNS adds one).
        assert_eq!(txt_rdata(&"0".repeat(255)).len(), 256);
        assert!(is_at_or_below("x.db.svc", "db.svc"));
        assert!(!is_at_or_below("xdb.svc", "db.svc"));
    }
}
