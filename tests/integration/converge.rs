//! The convergence checker: what DNS must answer, computed from etcd, against
//! what rpcdns answers, compared exactly. Used by the fault tests
//! (faults.rs) and by anything else that needs "DNS equals etcd" (a soak).
//!
//! The expectation comes from a model of the naming rules written here from
//! SPEC §1–§4 and README "Names", "Answers" and "Choices where SPEC is
//! silent", not from rpcdns's own registration code: a bug shared by the two
//! would otherwise pass unnoticed.
//!
//! What the model covers: the default configuration (patterns `*.rpc`, zone
//! `svc.local.`, no etcd prefix, default TTLs not checked) and these values:
//! `a.b.c.d:port`, `[ipv6]:port` (any form `Ipv6Addr` parses, IPv4-mapped
//! stays AAAA), `host.name:port`; and the unusable values it knows are
//! skipped: no or empty port, a port that is not 1..=65535 in digits,
//! `0.0.0.0`, `[::]`, `[::ffff:0.0.0.0]`, an empty host, whitespace or
//! control characters, not UTF-8, over 512 octets, a host name with a
//! character outside `[a-z0-9-_.]` or made only of digits and dots, an
//! unbracketed IPv6 address. Service keys: merged case-insensitively,
//! skipped when not a valid host name under the zone. Instance labels:
//! natural (lower-cased id) unless invalid, too long, already taken by an
//! earlier key of the service in byte order, the name of a service, or the
//! label of one of the service's port names (`port-<port>`); else the
//! hashed label. Every service has a port name per distinct port (unless a
//! service of that name exists) and the default gRPC service config at
//! `_grpc_config.<service>`.
//!
//! What one pass checks, for every service: A and AAAA over UDP (EDNS 1232;
//! TCP when truncated) as exact address sets with no duplicate; SRV at the
//! service and at `_grpc._tcp.` over TCP as the exact multiset of
//! (priority, weight, port, target), and the glue in the additional section
//! as the exact set of (owner, address); at every port name, A and AAAA as
//! exact sets and SRV with glue, of the instances on that port; TXT at
//! `_grpc_config.<service>`, at the service and at its port names as the
//! default config's text; for every
//! instance, A and AAAA (the address, NODATA for the other family, or the
//! CNAME of a host-name value);
//! for every name in `gone` that the model does not have, NXDOMAIN (NODATA
//! for an empty non-terminal). Every answer must be NOERROR/NXDOMAIN as
//! expected with the AA bit.

#![allow(dead_code)] // the soak test uses parts the fault tests do not

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::harness::{POLL_INTERVAL, ZONE, build_query, hashed_label, lower};

/// Zone apex without the trailing dot, as the length rules count it.
const APEX: &str = "svc.local";
const MAX_VALUE_LEN: usize = 512;
const MAX_SERVICE_NAME_LEN: usize = 236;
const MAX_NAME_LEN: usize = 253;
const SRV_PRIORITY: u16 = 0;
const SRV_WEIGHT: u16 = 10;
/// The TXT text at `_grpc_config.<service>` with the default config.
const DEFAULT_GRPC_CONFIG_TXT: &str =
    r#"grpc_config=[{"serviceConfig":{"loadBalancingConfig":[{"round_robin":{}}]}}]"#;
/// Queries in flight at once during a pass.
const WORKERS: usize = 8;
/// Per-attempt reply timeout; UDP is tried three times.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// etcd page size for the read.
const PAGE: i64 = 1000;
/// Differences listed in full in an error; the rest are counted.
const MAX_LISTED: usize = 40;

// ----------------------------------------------------------------------------
// The model
// ----------------------------------------------------------------------------

/// Where one instance listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Ip(IpAddr, u16),
    /// Lower-cased, without trailing dot.
    Host(String, u16),
}

/// One instance as DNS must show it.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The whole etcd key.
    pub key: Vec<u8>,
    pub label: String,
    pub addr: Addr,
}

/// What DNS must answer, from one consistent read of etcd.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// The etcd revision of the read.
    pub revision: i64,
    /// Lower-cased service key → its instances in etcd key byte order.
    pub services: BTreeMap<String, Vec<Instance>>,
    /// Keys of ours that cannot be served.
    pub skipped: usize,
    /// Keys of other programs.
    pub ignored: usize,
    /// The highest mod revision among the keys of ours (served or
    /// skipped): rpcdns's zone cannot reflect less.
    pub max_mod_revision: i64,
}

/// How the model classifies one value.
enum Value {
    Usable(Addr),
    Unusable,
}

fn parse_port(port: &str) -> Option<u16> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
        return None;
    }
    match port.parse::<u32>() {
        Ok(p @ 1..=65535) => Some(p as u16),
        _ => None,
    }
}

fn valid_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_NAME_LEN
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn classify_value(value: &[u8]) -> Value {
    if value.len() > MAX_VALUE_LEN {
        return Value::Unusable;
    }
    let Ok(value) = std::str::from_utf8(value) else {
        return Value::Unusable;
    };
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Value::Unusable;
    }
    if let Some(rest) = value.strip_prefix('[') {
        let Some((host, port)) = rest.split_once("]:") else {
            return Value::Unusable;
        };
        let (Ok(ip), Some(port)) = (host.parse::<Ipv6Addr>(), parse_port(port)) else {
            return Value::Unusable;
        };
        if ip.is_unspecified() || ip.to_ipv4_mapped() == Some(Ipv4Addr::UNSPECIFIED) {
            return Value::Unusable;
        }
        return Value::Usable(Addr::Ip(IpAddr::V6(ip), port));
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Value::Unusable;
    };
    let Some(port) = parse_port(port) else {
        return Value::Unusable;
    };
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return match ip.is_unspecified() {
            true => Value::Unusable,
            false => Value::Usable(Addr::Ip(IpAddr::V4(ip), port)),
        };
    }
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    match valid_host_name(&host) {
        true => Value::Usable(Addr::Host(host, port)),
        false => Value::Unusable,
    }
}

fn valid_service_key(key: &str) -> bool {
    key.len() + 1 + APEX.len() <= MAX_SERVICE_NAME_LEN
        && key.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn natural_label(id: &str, service: &str) -> Option<String> {
    let label = id.to_ascii_lowercase();
    let ok = (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && label.len() + 1 + service.len() + 1 + APEX.len() <= MAX_NAME_LEN;
    ok.then_some(label)
}

impl Expected {
    /// The model applied to every key/value pair of one read at `revision`.
    /// `kvs` are (key, value, mod revision).
    pub fn from_kvs<'a>(
        kvs: impl IntoIterator<Item = (&'a [u8], &'a [u8], i64)>,
        revision: i64,
    ) -> Expected {
        let mut expected = Expected {
            revision,
            ..Expected::default()
        };
        // Service → etcd key → (instance id, address); BTreeMap gives the
        // keys' byte order, which decides who keeps a contested label.
        let mut raw: BTreeMap<String, BTreeMap<Vec<u8>, (String, Addr)>> = BTreeMap::new();
        for (key, value, mod_revision) in kvs {
            let (service, id) = match key.iter().position(|&b| b == b'/') {
                Some(slash) => (&key[..slash], &key[slash + 1..]),
                None => (key, &[][..]),
            };
            let service = match std::str::from_utf8(service) {
                Ok(s) if s.to_ascii_lowercase().ends_with(".rpc") => s.to_ascii_lowercase(),
                _ => {
                    expected.ignored += 1;
                    continue;
                }
            };
            expected.max_mod_revision = expected.max_mod_revision.max(mod_revision);
            let id = match std::str::from_utf8(id) {
                Ok(id) if !id.is_empty() && valid_service_key(&service) => id.to_owned(),
                _ => {
                    expected.skipped += 1;
                    continue;
                }
            };
            match classify_value(value) {
                Value::Usable(addr) => {
                    raw.entry(service)
                        .or_default()
                        .insert(key.to_vec(), (id, addr));
                }
                Value::Unusable => expected.skipped += 1,
            }
        }
        for (service, instances) in &raw {
            let ports: BTreeSet<String> = instances
                .values()
                .map(|(_, addr)| port_label(addr_port(addr)))
                .collect();
            let mut taken = BTreeSet::new();
            let mut list = Vec::with_capacity(instances.len());
            for (key, (id, addr)) in instances {
                let label = natural_label(id, service)
                    .filter(|l| {
                        !taken.contains(l)
                            && !raw.contains_key(&format!("{l}.{service}"))
                            && !ports.contains(l)
                    })
                    .unwrap_or_else(|| hashed_label(key));
                taken.insert(label.clone());
                list.push(Instance {
                    key: key.clone(),
                    label,
                    addr: addr.clone(),
                });
            }
            expected.services.insert(service.clone(), list);
        }
        expected
    }

    pub fn instance_count(&self) -> usize {
        self.services.values().map(Vec::len).sum()
    }

    /// `<service>.svc.local.`
    pub fn service_name(service: &str) -> String {
        format!("{service}.{ZONE}")
    }

    /// The port names of `service` that answer as such (a service of the
    /// same name wins), with their port.
    fn port_names(&self, service: &str) -> BTreeMap<u16, String> {
        self.services[service]
            .iter()
            .map(|i| addr_port(&i.addr))
            .map(|port| (port, format!("{}.{service}", port_label(port))))
            .filter(|(_, name)| !self.services.contains_key(name))
            .map(|(port, name)| (port, format!("{name}.{ZONE}")))
            .collect()
    }

    /// `_grpc_config.<service>.svc.local.`, unless a service has that name.
    fn grpc_config_name(&self, service: &str) -> Option<String> {
        let name = format!("_grpc_config.{service}");
        (!self.services.contains_key(&name)).then(|| format!("{name}.{ZONE}"))
    }

    /// Every name the zone must have: services, their `_grpc._tcp.` names
    /// and instances (lower-case, absolute). Keep it to pass as `gone` once
    /// some of them should have disappeared.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for (service, instances) in &self.services {
            names.push(Self::service_name(service));
            names.push(format!("_grpc._tcp.{}", Self::service_name(service)));
            for i in instances {
                names.push(format!("{}.{}", i.label, Self::service_name(service)));
            }
            names.extend(self.port_names(service).into_values());
            names.extend(self.grpc_config_name(service));
        }
        names
    }

    /// What kind of name `name` (lower-case, absolute) is in the model.
    fn kind_of(&self, name: &str) -> NameKind {
        let Some(relative) = name.strip_suffix(ZONE).and_then(|r| r.strip_suffix('.')) else {
            return if name == ZONE {
                NameKind::Exists
            } else {
                NameKind::Absent
            };
        };
        if self.services.contains_key(relative) {
            return NameKind::Exists;
        }
        if let Some(service) = relative.strip_prefix("_grpc._tcp.")
            && self.services.contains_key(service)
        {
            return NameKind::Exists;
        }
        if let Some(service) = relative.strip_prefix("_grpc_config.")
            && self.services.contains_key(service)
        {
            return NameKind::Exists;
        }
        if let Some((first, rest)) = relative.split_once('.')
            && let Some(instances) = self.services.get(rest)
        {
            if instances.iter().any(|i| i.label == first)
                || instances
                    .iter()
                    .any(|i| port_label(addr_port(&i.addr)) == first)
            {
                return NameKind::Exists;
            }
            if first == "_tcp" {
                return NameKind::EmptyNonTerminal;
            }
        }
        let suffix = format!(".{relative}");
        if self.services.keys().any(|s| s.ends_with(&suffix)) {
            return NameKind::EmptyNonTerminal;
        }
        NameKind::Absent
    }
}

fn addr_port(addr: &Addr) -> u16 {
    match addr {
        Addr::Ip(_, port) | Addr::Host(_, port) => *port,
    }
}

fn port_label(port: u16) -> String {
    format!("port-{port}")
}

enum NameKind {
    Exists,
    EmptyNonTerminal,
    Absent,
}

/// Reads every key of etcd (paged, all pages at one revision) and applies
/// the model.
pub async fn read_expected(client: &Client) -> Result<Expected, String> {
    let mut client = client.clone();
    let mut pairs: Vec<(Vec<u8>, Vec<u8>, i64)> = Vec::new();
    let mut from: Vec<u8> = vec![0];
    let mut revision = 0;
    loop {
        let mut options = GetOptions::new().with_from_key().with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let resp = client
            .get(from.clone(), Some(options))
            .await
            .map_err(|e| format!("reading etcd: {e}"))?;
        if revision == 0 {
            revision = resp
                .header()
                .map(|h| h.revision())
                .ok_or("etcd get without header")?;
        }
        let more = resp.more();
        for kv in resp.kvs() {
            pairs.push((kv.key().to_vec(), kv.value().to_vec(), kv.mod_revision()));
        }
        match (more, pairs.last()) {
            (true, Some((last, _, _))) => {
                from = last.clone();
                from.push(0);
            }
            _ => break,
        }
    }
    Ok(Expected::from_kvs(
        pairs
            .iter()
            .map(|(k, v, r)| (k.as_slice(), v.as_slice(), *r)),
        revision,
    ))
}

// ----------------------------------------------------------------------------
// Probes: one query and what its answer must be
// ----------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Want {
    /// NOERROR with exactly these addresses (sorted), each once; empty is
    /// NODATA.
    Addrs(Vec<IpAddr>),
    /// NOERROR with exactly these SRV records (sorted, lower-case targets)
    /// and this glue.
    Srv {
        records: Vec<(u16, u16, u16, String)>,
        glue: Vec<(String, IpAddr)>,
    },
    /// NOERROR with one CNAME to this absolute name.
    Cname(String),
    /// NOERROR with one TXT record whose strings join to this text.
    Txt(String),
    /// The apex SOA with a serial in min..=max: the zone reflects at least
    /// the last change to a key of ours, and nothing etcd does not have.
    Serial {
        min: i64,
        max: i64,
    },
    NxDomain,
}

#[derive(Debug, Clone)]
struct Probe {
    name: String,
    rtype: RecordType,
    tcp: bool,
    want: Want,
}

fn probes(expected: &Expected, gone: &[String]) -> Vec<Probe> {
    let mut probes = vec![Probe {
        name: ZONE.to_owned(),
        rtype: RecordType::SOA,
        tcp: false,
        want: Want::Serial {
            min: expected.max_mod_revision,
            max: expected.revision,
        },
    }];
    for (service, instances) in &expected.services {
        let name = Expected::service_name(service);
        let mut v4: Vec<IpAddr> = Vec::new();
        let mut v6: Vec<IpAddr> = Vec::new();
        let mut records = Vec::new();
        let mut glue = Vec::new();
        // Port → (addresses, SRV records, glue) of the instances on it.
        let mut ports: BTreeMap<u16, (Vec<IpAddr>, Vec<_>, Vec<_>)> = BTreeMap::new();
        for i in instances {
            let instance_name = format!("{}.{name}", i.label);
            let on_port = ports.entry(addr_port(&i.addr)).or_default();
            match &i.addr {
                Addr::Ip(ip, port) => {
                    match ip {
                        IpAddr::V4(_) => v4.push(*ip),
                        IpAddr::V6(_) => v6.push(*ip),
                    }
                    records.push((SRV_PRIORITY, SRV_WEIGHT, *port, instance_name.clone()));
                    glue.push((instance_name.clone(), *ip));
                    on_port.0.push(*ip);
                    on_port
                        .1
                        .push((SRV_PRIORITY, SRV_WEIGHT, *port, instance_name.clone()));
                    on_port.2.push((instance_name.clone(), *ip));
                    let (same, other) = match ip {
                        IpAddr::V4(_) => (RecordType::A, RecordType::AAAA),
                        IpAddr::V6(_) => (RecordType::AAAA, RecordType::A),
                    };
                    probes.push(Probe {
                        name: instance_name.clone(),
                        rtype: same,
                        tcp: false,
                        want: Want::Addrs(vec![*ip]),
                    });
                    probes.push(Probe {
                        name: instance_name,
                        rtype: other,
                        tcp: false,
                        want: Want::Addrs(Vec::new()),
                    });
                }
                Addr::Host(host, port) => {
                    records.push((SRV_PRIORITY, SRV_WEIGHT, *port, format!("{host}.")));
                    on_port
                        .1
                        .push((SRV_PRIORITY, SRV_WEIGHT, *port, format!("{host}.")));
                    for rtype in [RecordType::A, RecordType::AAAA] {
                        probes.push(Probe {
                            name: instance_name.clone(),
                            rtype,
                            tcp: false,
                            want: Want::Cname(format!("{host}.")),
                        });
                    }
                }
            }
        }
        v4.sort();
        v4.dedup();
        v6.sort();
        v6.dedup();
        records.sort();
        glue.sort();
        probes.push(Probe {
            name: name.clone(),
            rtype: RecordType::A,
            tcp: false,
            want: Want::Addrs(v4),
        });
        probes.push(Probe {
            name: name.clone(),
            rtype: RecordType::AAAA,
            tcp: false,
            want: Want::Addrs(v6),
        });
        for srv_name in [name.clone(), format!("_grpc._tcp.{name}")] {
            probes.push(Probe {
                name: srv_name,
                rtype: RecordType::SRV,
                tcp: true,
                want: Want::Srv {
                    records: records.clone(),
                    glue: glue.clone(),
                },
            });
        }
        let port_names = expected.port_names(service);
        for (port, (addrs, mut records, mut glue)) in ports {
            let Some(port_name) = port_names.get(&port) else {
                continue;
            };
            let (mut v4, mut v6): (Vec<IpAddr>, Vec<IpAddr>) =
                addrs.into_iter().partition(IpAddr::is_ipv4);
            for (set, rtype) in [(&mut v4, RecordType::A), (&mut v6, RecordType::AAAA)] {
                set.sort();
                set.dedup();
                probes.push(Probe {
                    name: port_name.clone(),
                    rtype,
                    tcp: false,
                    want: Want::Addrs(set.clone()),
                });
            }
            records.sort();
            glue.sort();
            probes.push(Probe {
                name: port_name.clone(),
                rtype: RecordType::SRV,
                tcp: true,
                want: Want::Srv { records, glue },
            });
        }
        // At `_grpc_config.<service>`, and at the service and port names
        // themselves (where grpc-js looks).
        let txt_names = expected
            .grpc_config_name(service)
            .into_iter()
            .chain([name.clone()])
            .chain(port_names.into_values());
        for txt_name in txt_names {
            probes.push(Probe {
                name: txt_name,
                rtype: RecordType::TXT,
                tcp: false,
                want: Want::Txt(DEFAULT_GRPC_CONFIG_TXT.to_owned()),
            });
        }
    }
    let mut seen = BTreeSet::new();
    for name in gone {
        let mut name = name.to_ascii_lowercase();
        if !name.ends_with('.') {
            name.push('.');
        }
        if !seen.insert(name.clone()) {
            continue;
        }
        let want = match expected.kind_of(&name) {
            NameKind::Exists => continue, // probed above as what it is
            NameKind::EmptyNonTerminal => Want::Addrs(Vec::new()),
            NameKind::Absent => Want::NxDomain,
        };
        probes.push(Probe {
            name,
            rtype: RecordType::A,
            tcp: false,
            want,
        });
    }
    probes
}

fn record_ip(r: &Record) -> Option<IpAddr> {
    match &r.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

/// Ok when `msg` is what `probe` wants; else what differs.
fn judge(probe: &Probe, msg: &Message, reply_len: usize) -> Result<(), String> {
    let what = format!(
        "{} {}{}",
        probe.name,
        probe.rtype,
        if probe.tcp { " (tcp)" } else { "" }
    );
    let rcode = msg.metadata.response_code;
    let want_rcode = match probe.want {
        Want::NxDomain => ResponseCode::NXDomain,
        _ => ResponseCode::NoError,
    };
    if rcode != want_rcode {
        let answers: Vec<String> = msg.answers.iter().map(|r| r.data.to_string()).collect();
        return Err(format!(
            "{what}: rcode {rcode:?}, want {want_rcode:?} (answers {answers:?})"
        ));
    }
    if !msg.metadata.authoritative {
        return Err(format!("{what}: AA bit clear"));
    }
    match &probe.want {
        Want::NxDomain => match msg.answers.is_empty() {
            true => Ok(()),
            false => Err(format!("{what}: NXDOMAIN with answers {:?}", msg.answers)),
        },
        Want::Addrs(want) => {
            let mut got = Vec::new();
            for r in &msg.answers {
                match record_ip(r) {
                    Some(ip) if r.record_type() == probe.rtype && lower(&r.name) == probe.name => {
                        got.push(ip)
                    }
                    _ => return Err(format!("{what}: unexpected answer record {r}")),
                }
            }
            got.sort();
            match &got == want {
                true => Ok(()),
                false => Err(format!("{what}: answers {got:?}, want {want:?}")),
            }
        }
        Want::Serial { min, max } => match msg.answers.as_slice() {
            // Test revisions stay far below 2^32, where the serial wraps.
            [r] if matches!(&r.data, RData::SOA(soa)
                if (*min..=*max).contains(&i64::from(soa.serial))) =>
            {
                Ok(())
            }
            other => Err(format!(
                "{what}: answers {:?}, want one SOA with serial in {min}..={max}",
                other.iter().map(|r| r.to_string()).collect::<Vec<_>>()
            )),
        },
        Want::Txt(text) => match msg.answers.as_slice() {
            [r] if matches!(&r.data, RData::TXT(txt)
                if txt.txt_data.iter().flat_map(|s| s.iter().copied()).eq(text.bytes())) =>
            {
                Ok(())
            }
            other => Err(format!(
                "{what}: answers {:?}, want one TXT {text:?}",
                other.iter().map(|r| r.to_string()).collect::<Vec<_>>()
            )),
        },
        Want::Cname(target) => match msg.answers.as_slice() {
            [r] if matches!(&r.data, RData::CNAME(c) if lower(&c.0) == *target) => Ok(()),
            other => Err(format!(
                "{what}: answers {:?}, want one CNAME {target}",
                other.iter().map(|r| r.to_string()).collect::<Vec<_>>()
            )),
        },
        Want::Srv { records, glue } => {
            let mut got = Vec::new();
            for r in &msg.answers {
                match &r.data {
                    RData::SRV(s) if lower(&r.name) == probe.name => {
                        got.push((s.priority, s.weight, s.port, lower(&s.target)))
                    }
                    _ => return Err(format!("{what}: unexpected answer record {r}")),
                }
            }
            got.sort();
            if &got != records {
                let got_set: BTreeSet<_> = got.iter().collect();
                let want_set: BTreeSet<_> = records.iter().collect();
                let missing: Vec<_> = want_set.difference(&got_set).collect();
                let extra: Vec<_> = got_set.difference(&want_set).collect();
                return Err(format!(
                    "{what}: {} SRV, want {}; missing {missing:?}, unexpected {extra:?}",
                    got.len(),
                    records.len()
                ));
            }
            let mut got_glue: Vec<(String, IpAddr)> = msg
                .additionals
                .iter()
                .filter_map(|r| record_ip(r).map(|ip| (lower(&r.name), ip)))
                .collect();
            got_glue.sort();
            // Glue that cannot fit a TCP message may be left out whole
            // (RFC 2181 §9); ~40 octets per glue record.
            let glue_fits = reply_len + 40 * glue.len() <= 65535;
            match &got_glue == glue || (got_glue.is_empty() && !glue_fits) {
                true => Ok(()),
                false => Err(format!("{what}: glue {got_glue:?}, want {glue:?}")),
            }
        }
    }
}

// ----------------------------------------------------------------------------
// Querying
// ----------------------------------------------------------------------------

struct Conn {
    dns: SocketAddr,
    udp: UdpSocket,
    tcp: Option<TcpStream>,
}

impl Conn {
    async fn new(dns: SocketAddr) -> Result<Conn, String> {
        // Loopback for a server on loopback; otherwise (rpcdns in another
        // network namespace) whatever address routes there.
        let bind: SocketAddr = match dns {
            SocketAddr::V4(v4) if v4.ip().is_loopback() => (Ipv4Addr::LOCALHOST, 0).into(),
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(v6) if v6.ip().is_loopback() => (Ipv6Addr::LOCALHOST, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let udp = UdpSocket::bind(bind)
            .await
            .map_err(|e| format!("bind UDP: {e}"))?;
        Ok(Conn {
            dns,
            udp,
            tcp: None,
        })
    }

    async fn udp(&mut self, query: &Message) -> Result<(Message, usize), String> {
        let bytes = query.to_vec().map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 65535];
        for _ in 0..3 {
            self.udp
                .send_to(&bytes, self.dns)
                .await
                .map_err(|e| format!("send UDP: {e}"))?;
            let deadline = tokio::time::Instant::now() + ATTEMPT_TIMEOUT;
            loop {
                let recv = tokio::time::timeout_at(deadline, self.udp.recv_from(&mut buf)).await;
                let Ok(Ok((n, from))) = recv else { break };
                if from != self.dns || n < 2 || buf[..2] != bytes[..2] {
                    continue; // a late reply to an earlier attempt
                }
                let msg = Message::from_vec(&buf[..n])
                    .map_err(|e| format!("undecodable UDP reply: {e}"))?;
                return Ok((msg, n));
            }
        }
        Err(format!("no UDP reply in 3 × {ATTEMPT_TIMEOUT:?}"))
    }

    async fn tcp_once(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        if self.tcp.is_none() {
            let stream = TcpStream::connect(self.dns)
                .await
                .map_err(|e| format!("connect TCP: {e}"))?;
            self.tcp = Some(stream);
        }
        let stream = self.tcp.as_mut().ok_or("no TCP stream")?;
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        stream
            .write_all(&framed)
            .await
            .map_err(|e| format!("write TCP: {e}"))?;
        let mut len = [0u8; 2];
        stream
            .read_exact(&mut len)
            .await
            .map_err(|e| format!("read TCP length: {e}"))?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream
            .read_exact(&mut reply)
            .await
            .map_err(|e| format!("read TCP reply: {e}"))?;
        Ok(reply)
    }

    async fn tcp(&mut self, query: &Message) -> Result<(Message, usize), String> {
        let bytes = query.to_vec().map_err(|e| e.to_string())?;
        let mut last = String::new();
        // The server closes idle connections: a failure on a reused one is
        // retried once on a fresh connection.
        for _ in 0..2 {
            match tokio::time::timeout(ATTEMPT_TIMEOUT * 2, self.tcp_once(&bytes)).await {
                Ok(Ok(reply)) => {
                    let msg = Message::from_vec(&reply)
                        .map_err(|e| format!("undecodable TCP reply: {e}"))?;
                    if msg.metadata.id != query.metadata.id {
                        return Err(format!(
                            "TCP reply id {} for {}",
                            msg.metadata.id, query.metadata.id
                        ));
                    }
                    return Ok((msg, reply.len()));
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = "TCP reply timed out".into(),
            }
            self.tcp = None;
        }
        Err(last)
    }

    async fn ask(&mut self, probe: &Probe) -> Result<(Message, usize), String> {
        let query = build_query(&probe.name, probe.rtype, Some(1232));
        if probe.tcp {
            return self.tcp(&query).await;
        }
        let (msg, len) = self.udp(&query).await?;
        if msg.metadata.truncation {
            return self.tcp(&query).await;
        }
        Ok((msg, len))
    }
}

/// Runs every probe against `dns`; the differences, in probe order.
async fn run_probes(dns: SocketAddr, probes: Vec<Probe>) -> Vec<String> {
    let probes = Arc::new(probes);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let (probes, next) = (Arc::clone(&probes), Arc::clone(&next));
        tasks.spawn(async move {
            let mut diffs: Vec<(usize, String)> = Vec::new();
            let mut conn = match Conn::new(dns).await {
                Ok(c) => c,
                Err(e) => return vec![(0, e)],
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(probe) = probes.get(i) else { break };
                let verdict = match conn.ask(probe).await {
                    Ok((msg, len)) => judge(probe, &msg, len),
                    Err(e) => Err(format!("{} {}: {e}", probe.name, probe.rtype)),
                };
                if let Err(e) = verdict {
                    diffs.push((i, e));
                }
            }
            diffs
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.unwrap_or_else(|e| vec![(usize::MAX, format!("probe task: {e}"))]));
    }
    all.sort();
    all.into_iter().map(|(_, d)| d).collect()
}

// ----------------------------------------------------------------------------
// The API
// ----------------------------------------------------------------------------

/// The counts of one successful pass.
#[derive(Debug, Clone)]
pub struct Report {
    /// etcd revision the expectation was read at.
    pub revision: i64,
    pub services: usize,
    pub instances: usize,
    /// Keys of ours the model says are skipped.
    pub skipped: usize,
    /// Keys of other programs.
    pub ignored: usize,
    /// DNS queries made.
    pub queries: usize,
    /// Every name that exists (see `Expected::names`).
    pub names: Vec<String>,
    /// Passes `converge` made (1 for `check`).
    pub passes: usize,
    /// How long the last pass took.
    pub pass_time: Duration,
}

/// One pass against a given expectation: Ok with counts when every answer
/// is exactly as expected, Err with a human-readable diff otherwise.
pub async fn check_expected(
    expected: &Expected,
    dns: SocketAddr,
    gone: &[String],
) -> Result<Report, String> {
    let started = Instant::now();
    let probes = probes(expected, gone);
    let queries = probes.len();
    let diffs = run_probes(dns, probes).await;
    if diffs.is_empty() {
        return Ok(Report {
            revision: expected.revision,
            services: expected.services.len(),
            instances: expected.instance_count(),
            skipped: expected.skipped,
            ignored: expected.ignored,
            queries,
            names: expected.names(),
            passes: 1,
            pass_time: started.elapsed(),
        });
    }
    let mut text = format!(
        "DNS differs from etcd revision {} ({} services, {} instances) in {} of {queries} queries:",
        expected.revision,
        expected.services.len(),
        expected.instance_count(),
        diffs.len()
    );
    for d in diffs.iter().take(MAX_LISTED) {
        text.push_str("\n  ");
        text.push_str(d);
    }
    if diffs.len() > MAX_LISTED {
        text.push_str(&format!("\n  ... and {} more", diffs.len() - MAX_LISTED));
    }
    Err(text)
}

/// One pass: read etcd now, query rpcdns at `dns`, compare. `gone` lists
/// names that must not exist unless etcd has them now (NXDOMAIN).
pub async fn check(client: &Client, dns: SocketAddr, gone: &[String]) -> Result<Report, String> {
    let expected = read_expected(client).await?;
    check_expected(&expected, dns, gone).await
}

/// Polls `check` until it passes; panics with the last diff after `within`.
pub async fn converge(
    client: &Client,
    dns: SocketAddr,
    gone: &[String],
    within: Duration,
) -> Report {
    let start = Instant::now();
    let mut passes = 0;
    loop {
        passes += 1;
        match check(client, dns, gone).await {
            Ok(report) => return Report { passes, ..report },
            Err(diff) if start.elapsed() >= within => {
                panic!(
                    "DNS did not converge on etcd within {within:?} ({passes} passes); last diff:\n{diff}"
                )
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

// ----------------------------------------------------------------------------
// Tests of the model itself (no processes)
// ----------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn model(pairs: &[(&str, &str)]) -> Expected {
        Expected::from_kvs(
            pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes(), 1)),
            1,
        )
    }

    fn labels(e: &Expected, service: &str) -> Vec<(String, Addr)> {
        e.services[service]
            .iter()
            .map(|i| (i.label.clone(), i.addr.clone()))
            .collect()
    }

    #[test]
    fn model_follows_the_naming_rules() {
        let e = model(&[
            ("sms.rpc/1", "10.0.0.1:80"),
            ("SMS.rpc/2", "[fd00::5]:81"),
            ("sms.rpc/ID-A", "10.0.0.2:82"),
            ("sms.rpc/id-a", "10.0.0.3:83"),
            ("sms.rpc/x_y", "Host-1.Example.:84"),
            ("sms.rpc/n", "10.0.0.4:85"),
            ("n.sms.rpc/1", "10.0.1.1:80"),
            ("sms.rpc/bad1", "10.0.0.9"),
            ("sms.rpc/bad2", "0.0.0.0:80"),
            ("sms.rpc/bad3", "[::]:80"),
            ("sms.rpc/bad4", "10.0.0.9:0"),
            ("sms.rpc/bad5", "010.0.0.1:80"),
            ("sms.rpc/bad6", "fd00::5:80"),
            ("sms.rpc/bad7", "10.0.0.9:80 "),
            ("sms.rpc/", "10.0.0.9:80"),
            ("sms.rpc", "10.0.0.9:80"),
            ("bad!.rpc/1", "10.0.0.9:80"),
            ("sms.grpc/1", "10.0.0.9:80"),
            ("config/x", "y"),
        ]);
        assert_eq!(e.skipped, 10, "{e:?}");
        assert_eq!(e.ignored, 2, "{e:?}");
        assert_eq!(e.services.len(), 2);
        let ip = |s: &str, p| Addr::Ip(s.parse().expect("ip"), p);
        assert_eq!(
            labels(&e, "sms.rpc"),
            vec![
                ("2".into(), ip("fd00::5", 81)),
                ("1".into(), ip("10.0.0.1", 80)),
                ("id-a".into(), ip("10.0.0.2", 82)),
                (hashed_label(b"sms.rpc/id-a"), ip("10.0.0.3", 83)),
                (hashed_label(b"sms.rpc/n"), ip("10.0.0.4", 85)),
                (
                    hashed_label(b"sms.rpc/x_y"),
                    Addr::Host("host-1.example".into(), 84)
                ),
            ]
        );
        assert!(matches!(
            e.kind_of("rpc.svc.local."),
            NameKind::EmptyNonTerminal
        ));
        assert!(matches!(
            e.kind_of("_tcp.sms.rpc.svc.local."),
            NameKind::EmptyNonTerminal
        ));
        assert!(matches!(
            e.kind_of("n.sms.rpc.svc.local."),
            NameKind::Exists
        ));
        assert!(matches!(
            e.kind_of("1.sms.rpc.svc.local."),
            NameKind::Exists
        ));
        assert!(matches!(
            e.kind_of("9.sms.rpc.svc.local."),
            NameKind::Absent
        ));
        assert!(matches!(e.kind_of("x.rpc.svc.local."), NameKind::Absent));
        assert!(matches!(
            e.kind_of("port-80.sms.rpc.svc.local."),
            NameKind::Exists
        ));
        assert!(matches!(
            e.kind_of("port-86.sms.rpc.svc.local."),
            NameKind::Absent
        ));
        assert!(matches!(
            e.kind_of("_grpc_config.n.sms.rpc.svc.local."),
            NameKind::Exists
        ));
    }

    #[test]
    fn port_names_take_precedence_over_ids_and_give_way_to_services() {
        let e = model(&[
            ("sms.rpc/port-80", "10.0.0.1:80"),
            ("sms.rpc/port-81", "10.0.0.2:80"),
            ("sms.rpc/2", "10.0.0.3:82"),
            ("port-82.sms.rpc/1", "10.0.1.1:80"),
        ]);
        let got: Vec<String> = labels(&e, "sms.rpc").into_iter().map(|(l, _)| l).collect();
        assert_eq!(
            got,
            [
                "2".into(),
                hashed_label(b"sms.rpc/port-80"),
                "port-81".into()
            ]
        );
        let names: Vec<String> = e.port_names("sms.rpc").into_values().collect();
        assert_eq!(
            names,
            ["port-80.sms.rpc.svc.local."],
            "port-82 is a service"
        );
    }
}
