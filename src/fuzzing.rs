//! Fuzzing entry points: the request path and registration parsing driven
//! in-process, with the invariants every result must hold. Shared by the
//! cargo-fuzz targets (`fuzz/`) and the corpus replay test
//! (`tests/integration/fuzz_corpus.rs`); not part of the API.
//!
//! ```text
//!  bytes ──▶ RequestPath::check ──▶ as udp.rs dispatches (×3 server limits) ─┐
//!                                └─▶ as tcp.rs dispatches ──────────────────┤
//!                                                      invariants on each ◀─┘
//!  bytes ──▶ check_key_value ──▶ gozero::classify ──▶ invariants, zone round trip
//! ```
//!
//! The dispatch below repeats what `udp.rs` (`Worker::run`, `full_path`)
//! and `tcp.rs` (`Connection::answer`) do with a packet once it is read:
//! fast parser and [`answer::respond`] first, else hickory's parse and the
//! [`DnsHandler`], else a header-only FORMERR, never an answer to a
//! response. Only the socket calls are left out.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;

use crate::config::{Format, SourceConfig};
use crate::ops::metrics::SkipReason;
use crate::serve::answer::{self, CLASSIC_UDP_PAYLOAD, HEADER_LEN, MAX_MESSAGE, Outcome};
use crate::serve::handler::{self, DnsHandler};
use crate::serve::udp::MAX_QUERY;
use crate::source::gozero::{self, Classified, ClassifiedKey};
use crate::source::sources::Sources;
use crate::zone::names::{
    self, HASHED_LABEL_LEN, MAX_LABEL_LEN, MAX_NAME_LEN, MAX_SERVICE_NAME_LEN, Patterns,
};
use crate::zone::{
    Endpoint, Overlay, OverlayTarget, Registration, ReverseZone, SRV_PRIORITY, SRV_WEIGHT,
    ZoneParams, ZoneStore, ZoneWriter, host_wire,
};

// ===== The request path =====================================================

/// The apex of the fuzzed zone.
pub const ZONE: &str = "svc.local.";
/// The `dns.max_udp_payload` settings every datagram is answered under:
/// the smallest allowed, the default, and a large one.
pub const MAX_UDP_PAYLOADS: [u16; 3] = [CLASSIC_UDP_PAYLOAD, 1232, 4096];
/// Where the fuzzed queries come from (no forwarder: outside names are
/// REFUSED, never sent anywhere).
const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 53000);

/// Which way a response was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// `answer::parse_query` + `answer::respond`.
    Fast,
    /// hickory's parse + [`DnsHandler`].
    Full,
    /// hickory could not parse it: a header-only FORMERR.
    FormErr,
}

/// The transport a query came over, with the server's UDP setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp { max_udp_payload: u16 },
    Tcp,
}

/// A realistic zone and the handlers of the servers the fuzz targets
/// query; build once, then [`RequestPath::check`] each input.
pub struct RequestPath {
    zone: Arc<ZoneStore>,
    /// One handler per entry of [`MAX_UDP_PAYLOADS`].
    handlers: Vec<Arc<DnsHandler>>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for RequestPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestPath").finish_non_exhaustive()
    }
}

/// The registrations of the fuzzed zone, as go-zero writes them: IPv4,
/// IPv6, host names, letter case merging, a hashed label, an empty
/// non-terminal, a service/instance name collision, names close to the
/// length limits, and services large enough to truncate at every limit.
pub fn zone_registrations() -> Vec<(String, String)> {
    let mut kv: Vec<(String, String)> = [
        ("sms.rpc/7587869364815473158", "10.0.0.5:8001"),
        ("sms.rpc/7587869364815473160", "10.0.0.6:8001"),
        // The same address under a second id (a restart).
        ("sms.rpc/7587869364815473162", "10.0.0.5:8001"),
        // Merged into sms.rpc; not a natural label: hashed.
        ("SMS.rpc/Upper_Case", "[fd00::5]:8001"),
        ("v6.rpc/1", "[fd00::1]:9000"),
        ("v6.rpc/2", "[2001:db8::2]:9000"),
        ("v6.rpc/3", "[::ffff:10.1.2.3]:9000"),
        ("order.rpc/1", "sms-0.sms:9000"),
        (
            "order.rpc/2",
            "order-1.order.default.svc.cluster.local.:9000",
        ),
        ("order.rpc/3", "10.0.1.1:9000"),
        // `user.rpc` is an empty non-terminal.
        ("mall.user.rpc/a", "10.2.0.1:80"),
        // Instance `a` of b.rpc and service a.b.rpc: the service wins.
        ("b.rpc/a", "10.3.0.1:1"),
        ("a.b.rpc/x", "10.3.0.2:65535"),
        ("grpc_svc.rpc/1", "127.0.0.1:50051"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    // A service key of 226 octets: `<key>.svc.local` is 236, the limit.
    let long = format!(
        "{}.{}.{}.{}.rpc",
        "x".repeat(63),
        "y".repeat(63),
        "z".repeat(63),
        "w".repeat(30)
    );
    // The longest natural label that fits (16), and one over (hashed).
    kv.push((format!("{long}/long-id-16-chars"), "10.5.0.1:1".to_owned()));
    kv.push((
        format!("{long}/long-id-17-chars-"),
        "[fd00::51]:2".to_owned(),
    ));
    // 25 instances: at 1232 the SRV answer fits but its glue does not.
    for i in 0..25 {
        kv.push((
            format!("mid.rpc/{}", 7_000_000_000_000_000_000u64 + i),
            format!("10.6.0.{}:7000", i + 1),
        ));
    }
    // 150 IPv4 and 40 IPv6 instances: A truncates at 1232, SRV at 4096.
    for i in 0..150u64 {
        kv.push((
            format!("big.rpc/{}", 7_100_000_000_000_000_000u64 + i),
            format!("10.7.{}.{}:8080", i / 200, i % 200 + 1),
        ));
    }
    for i in 0..40u64 {
        kv.push((
            format!("big.rpc/v6-{i}"),
            format!("[fd00:7::{:x}]:8080", i + 1),
        ));
    }
    // Instances on three ports (port names with their own sets), one
    // whose id is a port name (hashed), and a host name.
    for (id, value) in [
        ("1", "10.8.0.1:8001"),
        ("2", "10.8.0.2:8002"),
        ("3", "[fd00:8::3]:8002"),
        ("port-8001", "10.8.0.4:8001"),
        ("4", "ports-4.example:8003"),
    ] {
        kv.push((format!("ports.rpc/{id}"), value.to_owned()));
    }
    kv
}

/// The SkyDNS records of the fuzzed zone (keys under `/skydns/`): CoreDNS's
/// shapes below `sky`: addresses, a CNAME chain, a loop, text, groups,
/// targetstrip, a name with its own key and keys below it, and a name that
/// `big.rpc` (a go-zero service) has too.
pub fn sky_records() -> Vec<(String, String)> {
    let mut kv: Vec<(String, String)> = [
        ("sky/prod/a", r#"{"host":"10.9.0.1","port":8080}"#),
        (
            "sky/prod/b",
            r#"{"host":"10.9.0.2","port":8080,"weight":300}"#,
        ),
        (
            "sky/prod/c",
            r#"{"host":"fd00:9::3","port":8081,"priority":20}"#,
        ),
        ("sky/prod", r#"{"host":"elsewhere.example"}"#),
        (
            "sky/dev/a",
            r#"{"host":"a.prod.sky.svc.local","port":9000}"#,
        ),
        ("sky/dev/b", r#"{"host":"sms.rpc.svc.local","port":9000}"#),
        ("sky/dev/c", r#"{"host":"gone.sky.svc.local"}"#),
        ("sky/loop/a", r#"{"host":"b.loop.sky.svc.local"}"#),
        ("sky/loop/b", r#"{"host":"a.loop.sky.svc.local"}"#),
        ("sky/txt/a", r#"{"text":"sometext"}"#),
        ("sky/grp/a", r#"{"host":"10.9.1.1","group":"g1"}"#),
        ("sky/grp/sub/b", r#"{"host":"10.9.1.2","group":"g2"}"#),
        (
            "sky/strip/a",
            r#"{"host":"10.9.2.1","port":1,"targetstrip":1}"#,
        ),
        ("sky/noport", r#"{"host":"10.9.3.1","port":-1}"#),
        ("rpc/big", r#"{"host":"10.9.4.1"}"#),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    // A text over one string, and many addresses: truncation at 512.
    kv.push((
        "sky/long".to_owned(),
        format!(r#"{{"text":"{}"}}"#, "t".repeat(600)),
    ));
    for i in 0..40 {
        kv.push((
            format!("sky/many/m{i}"),
            format!(r#"{{"host":"10.9.5.{}","port":80}}"#, i + 1),
        ));
    }
    kv.into_iter()
        .map(|(path, value)| {
            let labels: Vec<&str> = path.split('/').collect();
            (format!("/skydns/local/svc/{}", labels.join("/")), value)
        })
        .collect()
}

impl RequestPath {
    /// Builds the zone of [`zone_registrations`] through the real parser
    /// and writer, and one handler per UDP setting.
    pub fn new() -> Self {
        let origin = Name::from_ascii(ZONE).unwrap_or_else(|_| Name::root());
        let zone = Arc::new(ZoneStore::new(ZoneParams {
            origin,
            ttl: 5,
            negative_ttl: 3,
            grpc: crate::zone::testing::grpc_configs_with_large(5),
            // PTR for the zone's IPv4 and IPv6 instances.
            reverse: ["10.0.0.0/8", "fd00::/8"]
                .iter()
                .filter_map(|net| net.parse().ok())
                .map(ReverseZone::new)
                .collect(),
        }));
        let mut writer = ZoneWriter::new(zone.clone());
        let patterns = default_patterns();
        let origin_text = zone.params().origin_text();
        for (key, value) in zone_registrations() {
            if let Classified::Registration(registration) =
                gozero::classify(key.as_bytes(), value.as_bytes(), &patterns, &origin_text)
            {
                writer.upsert(key.as_bytes(), registration);
            }
        }
        for (key, value) in sky_records() {
            if let Classified::Sky(record) = crate::source::skydns::classify(
                key.as_bytes(),
                value.as_bytes(),
                b"/skydns/",
                &origin_text,
            ) {
                writer.set_sky(key.as_bytes(), *record);
            }
        }
        writer.set_revision(4242);
        writer.publish();
        let handlers = MAX_UDP_PAYLOADS
            .iter()
            .map(|&max| Arc::new(DnsHandler::new(zone.clone(), max)))
            .collect();
        // The full path's handler is async but never waits on I/O without
        // a forwarder: one current-thread runtime serves every input.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("cannot build a tokio runtime: {error}"));
        Self {
            zone,
            handlers,
            runtime,
        }
    }

    /// The zone the queries are answered from.
    pub fn zone(&self) -> &ZoneStore {
        &self.zone
    }

    /// The handlers, one per entry of [`MAX_UDP_PAYLOADS`].
    pub fn handlers(&self) -> &[Arc<DnsHandler>] {
        &self.handlers
    }

    /// Answers `packet` as one UDP datagram under each server setting and
    /// as one TCP message, and checks every response. `Err` says which
    /// invariant broke, on which transport.
    pub fn check(&self, packet: &[u8]) -> Result<(), String> {
        for handler in &self.handlers {
            let transport = Transport::Udp {
                max_udp_payload: handler.max_udp_payload(),
            };
            let reply = self.udp(handler, packet);
            check_response(packet, transport, reply.as_ref())
                .map_err(|e| format!("{transport:?}: {e}"))?;
            if let Some((Path::Fast, response)) = &reply {
                self.check_paths_agree(handler, packet, response)
                    .map_err(|e| format!("{transport:?}: {e}"))?;
            }
        }
        if packet.len() <= MAX_MESSAGE {
            let reply = self.tcp(&self.handlers[1], packet);
            check_response(packet, Transport::Tcp, reply.as_ref())
                .map_err(|e| format!("Tcp: {e}"))?;
        }
        Ok(())
    }

    /// What the UDP server sends back for `packet`, as `udp.rs` decides.
    pub fn udp(&self, handler: &DnsHandler, packet: &[u8]) -> Option<(Path, Vec<u8>)> {
        if packet.len() > MAX_QUERY {
            // recvmmsg reports MSG_TRUNC: dropped unanswered.
            return None;
        }
        let max_udp_payload = handler.max_udp_payload();
        let mut out = Vec::new();
        if let Some(mut question) = answer::parse_query(packet) {
            question.answer_cookie(handler.cookie_secret(), CLIENT.ip());
            let limit = question.udp_limit(max_udp_payload);
            let snapshot = self.zone.guard();
            let outcome = answer::respond(&snapshot, &question, limit, max_udp_payload, &mut out);
            if let Outcome::Answered { .. } = outcome {
                return Some((Path::Fast, out));
            }
        }
        let Some(request) = handler::full_request(packet, CLIENT, Protocol::Udp, &mut out) else {
            return (!out.is_empty()).then_some((Path::FormErr, out));
        };
        let bytes = self.full_path(handler, &request);
        (!bytes.is_empty()).then_some((Path::Full, bytes))
    }

    /// What the TCP server sends back for `packet`, as `tcp.rs` decides.
    pub fn tcp(&self, handler: &DnsHandler, packet: &[u8]) -> Option<(Path, Vec<u8>)> {
        let mut out = Vec::new();
        if let Some(mut question) = answer::parse_query(packet) {
            question.answer_cookie(handler.cookie_secret(), CLIENT.ip());
            let snapshot = self.zone.guard();
            let outcome = answer::respond(
                &snapshot,
                &question,
                MAX_MESSAGE,
                handler.max_udp_payload(),
                &mut out,
            );
            if let Outcome::Answered { .. } = outcome {
                return Some((Path::Fast, out));
            }
        }
        let Some(request) = handler::full_request(packet, CLIENT, Protocol::Tcp, &mut out) else {
            return (!out.is_empty()).then_some((Path::FormErr, out));
        };
        let bytes = self.full_path(handler, &request);
        (!bytes.is_empty()).then_some((Path::Full, bytes))
    }

    /// The full path as `udp.rs` and `tcp.rs` run it.
    fn full_path(&self, handler: &DnsHandler, request: &Request) -> Vec<u8> {
        self.runtime.block_on(handler.answer_bytes(request))
    }

    /// A query the fast path answered gets the same answer from the full
    /// path (as `dns.rs` promises): header, RCODE, the same records in
    /// every section (order aside: rotation), the same EDNS.
    fn check_paths_agree(
        &self,
        handler: &DnsHandler,
        packet: &[u8],
        fast: &[u8],
    ) -> Result<(), String> {
        let Ok(request) = Request::from_bytes(packet.to_vec(), CLIENT, Protocol::Udp) else {
            // hickory is stricter than the fast parser here; the server
            // never asks it.
            return Ok(());
        };
        let full = self.full_path(handler, &request);
        let (fast, full) = match (Message::from_vec(fast), Message::from_vec(&full)) {
            (Ok(fast), Ok(full)) => (fast, full),
            (fast, full) => {
                return Err(format!(
                    "fast and full path: a response does not parse: fast {:?}, full {:?}",
                    fast.err(),
                    full.err()
                ));
            }
        };
        let sorted = |records: &[hickory_proto::rr::Record]| {
            let mut texts: Vec<String> = records.iter().map(|r| format!("{r:?}")).collect();
            texts.sort();
            texts
        };
        // Both paths write our answers with answer::respond under the same
        // limit: the same message, but for the rotation of the records.
        let records_agree = sorted(&fast.answers) == sorted(&full.answers)
            && sorted(&fast.authorities) == sorted(&full.authorities)
            && sorted(&fast.additionals) == sorted(&full.additionals);
        // The server cookies may differ in their timestamp (a second may
        // pass between the two): compared apart, by their client cookie.
        let cookie = |edns: &Option<hickory_proto::op::Edns>| {
            edns.as_ref()
                .and_then(|e| e.option(EdnsCode::Cookie).cloned())
                .map(|option| match option {
                    EdnsOption::Unknown(_, data) => data.get(..8).map(<[u8]>::to_vec),
                    _ => None,
                })
        };
        let without_cookie = |edns: &Option<hickory_proto::op::Edns>| {
            edns.clone().map(|mut e| {
                e.options_mut().remove(EdnsCode::Cookie);
                e
            })
        };
        let same = fast.metadata == full.metadata
            && fast.queries == full.queries
            && records_agree
            && without_cookie(&fast.edns) == without_cookie(&full.edns)
            && cookie(&fast.edns) == cookie(&full.edns);
        if same {
            Ok(())
        } else {
            Err(format!(
                "fast and full path disagree:\nfast: {fast:?}\nfull: {full:?}"
            ))
        }
    }
}

impl Default for RequestPath {
    fn default() -> Self {
        Self::new()
    }
}

/// The service-key patterns of a default configuration.
fn default_patterns() -> Patterns {
    Patterns::new(&["*.rpc"]).unwrap_or_else(|error| panic!("default patterns: {error}"))
}

/// The invariants of one response (or of no response) to `packet`.
pub fn check_response(
    packet: &[u8],
    transport: Transport,
    reply: Option<&(Path, Vec<u8>)>,
) -> Result<(), String> {
    let is_response = packet.len() > 2 && packet[2] & 0x80 != 0;
    let Some((path, response)) = reply else {
        // Silence is allowed for what cannot be answered: a response
        // (never answer one: no reflection loops), a packet too short for
        // a header, a datagram too large to be a query, or a response the
        // handler could not encode within the limit.
        return Ok(());
    };
    let (path, response) = (*path, response.as_slice());
    if is_response {
        return Err(format!("{path:?}: answered a packet with QR set"));
    }
    if response.len() < HEADER_LEN {
        return Err(format!("{path:?}: response of {} octets", response.len()));
    }
    let fast = answer::parse_query(packet);
    // The hickory parse, with the protocol that gives the right limit.
    let protocol = match transport {
        Transport::Udp { .. } => Protocol::Udp,
        Transport::Tcp => Protocol::Tcp,
    };
    let request = Request::from_bytes(packet.to_vec(), CLIENT, protocol).ok();

    // Size within the transport's limit.
    let limit = match transport {
        Transport::Tcp => MAX_MESSAGE,
        Transport::Udp { max_udp_payload } => match (&fast, &request) {
            (Some(question), _) => question.udp_limit(max_udp_payload),
            (None, Some(request)) => usize::from(match &request.edns {
                Some(edns) => edns
                    .max_payload()
                    .max(CLASSIC_UDP_PAYLOAD)
                    .min(max_udp_payload),
                None => CLASSIC_UDP_PAYLOAD,
            }),
            (None, None) => usize::from(CLASSIC_UDP_PAYLOAD),
        },
    };
    if response.len() > limit {
        return Err(format!(
            "{path:?}: response of {} octets over the limit of {limit}",
            response.len()
        ));
    }

    // Header: ID, QR, opcode, RD, Z.
    if response[..2] != packet[..2] {
        return Err(format!(
            "{path:?}: ID {:02x?} for query ID {:02x?}",
            &response[..2],
            &packet[..2]
        ));
    }
    if response[2] & 0x80 == 0 {
        return Err(format!("{path:?}: QR clear in the response"));
    }
    if response[2] & 0x78 != packet[2] & 0x78 {
        return Err(format!(
            "{path:?}: opcode {} for query opcode {}",
            (response[2] >> 3) & 0xF,
            (packet[2] >> 3) & 0xF
        ));
    }
    if response[2] & 0x01 != packet[2] & 0x01 {
        return Err(format!("{path:?}: RD not copied"));
    }
    if response[3] & 0x40 != 0 {
        return Err(format!("{path:?}: Z bit set in the response"));
    }
    if response[3] & 0x80 != 0 {
        return Err(format!("{path:?}: RA set without a forwarder"));
    }

    // It parses as a DNS message.
    let message = Message::from_vec(response)
        .map_err(|error| format!("{path:?}: response does not parse: {error}; {response:02x?}"))?;
    let meta = &message.metadata;
    let code = meta.response_code;

    // The question section echoed byte for byte.
    let question_bytes: Option<&[u8]> = match (&fast, &request) {
        (Some(question), _) => Some(question.raw),
        (None, Some(request)) => Some(request.queries.as_bytes()),
        (None, None) => None,
    };
    let qdcount = u16::from_be_bytes([response[4], response[5]]);
    if let Some(question_bytes) = question_bytes
        && qdcount > 0
        && response.get(HEADER_LEN..HEADER_LEN + question_bytes.len()) != Some(question_bytes)
    {
        return Err(format!(
            "{path:?}: question section not echoed byte for byte"
        ));
    }
    if let Some(request) = &request
        && qdcount > 0
    {
        // And it still reads as the same questions in the response.
        let asked: Vec<_> = request
            .queries
            .queries()
            .iter()
            .map(|q| q.original().clone())
            .collect();
        if message.queries != asked {
            return Err(format!(
                "{path:?}: the echoed question reads {:?} in the response, {:?} in the query",
                message.queries, asked
            ));
        }
    }

    // Truncation: never over TCP (nothing in this zone comes near 64 KiB);
    // over UDP, a truncated answer carries no partial RRset.
    if meta.truncation {
        if transport == Transport::Tcp {
            return Err(format!("{path:?}: TC over TCP"));
        }
        if !message.answers.is_empty() {
            return Err(format!(
                "{path:?}: TC with {} answers",
                message.answers.len()
            ));
        }
    }

    // Authority: our own answers (NOERROR, NXDOMAIN: no forwarder here)
    // are authoritative; nothing else is.
    let ours = matches!(code, ResponseCode::NoError | ResponseCode::NXDomain);
    if ours != meta.authoritative {
        return Err(format!(
            "{path:?}: AA {} with RCODE {code}",
            meta.authoritative
        ));
    }
    // Negative answers carry the SOA (unless cut by truncation).
    let negative = code == ResponseCode::NXDomain
        || (code == ResponseCode::NoError && message.answers.is_empty());
    if negative && !meta.truncation {
        let soas = message
            .authorities
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        if soas != 1 || message.authorities.len() != 1 {
            return Err(format!(
                "{path:?}: negative answer ({code}) with authority {:?}",
                message.authorities
            ));
        }
    }
    // Every answer is at the question's name, or at the target of a
    // CNAME before it (a SkyDNS chain): never elsewhere.
    if let Some(question) = message.queries.first() {
        let mut owners = vec![question.name().clone()];
        for record in &message.answers {
            if !owners.contains(&record.name) {
                return Err(format!(
                    "{path:?}: answer owner {} for question {}",
                    record.name,
                    question.name()
                ));
            }
            if let hickory_proto::rr::RData::CNAME(target) = &record.data {
                owners.push(target.0.clone());
            }
        }
    }

    // EDNS: an OPT in the query gets ours back (version 0, our size, and
    // no option but our COOKIE, for a query with a well-formed one, its
    // client cookie echoed); none gets none. A header-only FORMERR has
    // neither.
    let query_edns = match (&fast, &request) {
        (Some(question), _) => question.edns.is_some(),
        (None, Some(request)) => request.edns.is_some(),
        (None, None) => false,
    };
    match (&message.edns, path) {
        (Some(_), Path::FormErr) => return Err("header-only FORMERR with an OPT".to_owned()),
        (None, Path::FormErr) => {}
        (None, _) if query_edns => {
            return Err(format!("{path:?}: EDNS query, no OPT in the response"));
        }
        (Some(_), _) if !query_edns => {
            return Err(format!(
                "{path:?}: OPT in the response to a query without one"
            ));
        }
        (Some(edns), _) => {
            let expect = match transport {
                Transport::Udp { max_udp_payload } => max_udp_payload,
                Transport::Tcp => MAX_UDP_PAYLOADS[1],
            };
            // The first COOKIE option of the query, when well-formed.
            let query_cookie = match (&fast, &request) {
                (Some(question), _) => question
                    .edns
                    .and_then(|e| e.cookie)
                    .map(|_| first_cookie(packet)),
                (None, Some(request)) => request
                    .edns
                    .as_ref()
                    .and_then(|e| e.option(EdnsCode::Cookie))
                    .and_then(|option| match option {
                        EdnsOption::Unknown(_, data) => Some(data.clone()),
                        _ => None,
                    }),
                (None, None) => None,
            }
            .filter(|data| data.len() == 8 || (16..=40).contains(&data.len()));
            let options = edns.options();
            let cookie_ok = match (&query_cookie, options.get(EdnsCode::Cookie)) {
                (None, None) => options.as_ref().is_empty(),
                (Some(query), Some(EdnsOption::Unknown(_, reply))) => {
                    options.as_ref().len() == 1
                        && reply.len() == 24
                        && query.get(..8) == reply.get(..8)
                }
                // A FORMERR for a malformed cookie carries none.
                (None, Some(_)) | (Some(_), _) => false,
            };
            if edns.version() != 0 || edns.max_payload() != expect || !cookie_ok {
                return Err(format!("{path:?}: our OPT is {edns:?}"));
            }
        }
        (None, _) => {}
    }
    Ok(())
}

/// The data of the first COOKIE option in the OPT record that ends a query
/// the fast parser took (empty when there is none).
fn first_cookie(packet: &[u8]) -> Vec<u8> {
    let Some(name) = answer::name_len(packet.get(HEADER_LEN..).unwrap_or_default()) else {
        return Vec::new();
    };
    let mut rdata = packet
        .get(HEADER_LEN + name + 4 + answer::OPT_LEN..)
        .unwrap_or_default();
    while rdata.len() >= 4 {
        let code = u16::from_be_bytes([rdata[0], rdata[1]]);
        let len = usize::from(u16::from_be_bytes([rdata[2], rdata[3]]));
        let Some(data) = rdata.get(4..4 + len) else {
            break;
        };
        if code == 10 {
            return data.to_vec();
        }
        rdata = &rdata[4 + len..];
    }
    Vec::new()
}

// ===== Registration parsing =================================================

/// The configurations a key/value input is classified under, picked by
/// its first octet: (patterns, zone without the trailing dot).
pub const KEY_VALUE_CONFIGS: [(&[&str], &str); 4] = [
    (&["*.rpc"], "svc.local"),
    (&["*"], "svc.local"),
    (&["mall.*.rpc", "SMS.RPC", "*-svc"], "svc.local"),
    (
        &["*"],
        "a-rather-long-zone-name-to-squeeze-the-limits.cluster.example.internal",
    ),
];

/// The other formats' sources a key/value input is classified under, by
/// the first octet after the go-zero configurations: (format, prefix,
/// suffix).
pub const OTHER_SOURCES: [(Format, &str, &str); 5] = [
    (Format::Kratos, "/microservices/", ""),
    (Format::GoMicro, "/micro/registry/", "micro"),
    (Format::Kratos, "", "kratos"),
    // A go-zero source with the overlay under /o/.
    (Format::GoZero, "", ""),
    (Format::SkyDns, "/skydns/", ""),
];

/// The overlay prefix of the last [`OTHER_SOURCES`] entry.
const FUZZ_OVERLAY: &str = "/o/";

/// Splits a fuzz input: first octet picks a [`KEY_VALUE_CONFIGS`] entry
/// (or, past them, an [`OTHER_SOURCES`] one), the rest is key, NUL,
/// value (no NUL: all key, empty value).
pub fn split_key_value(data: &[u8]) -> (usize, &[u8], &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return (0, &[], &[]);
    };
    let config = usize::from(selector) % (KEY_VALUE_CONFIGS.len() + OTHER_SOURCES.len());
    match rest.iter().position(|&b| b == 0) {
        Some(nul) => (config, &rest[..nul], &rest[nul + 1..]),
        None => (config, rest, &[]),
    }
}

/// Joins a key and value into a fuzz input for config `config` (the
/// inverse of [`split_key_value`]), for seeds.
pub fn join_key_value(config: u8, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(2 + key.len() + value.len());
    data.push(config);
    data.extend_from_slice(key);
    data.push(0);
    data.extend_from_slice(value);
    data
}

/// Classifies one fuzz input's key and value and checks the result.
pub fn check_key_value(data: &[u8]) -> Result<(), String> {
    let (config, key, value) = split_key_value(data);
    let Some(&(globs, zone)) = KEY_VALUE_CONFIGS.get(config) else {
        return check_other_format(config - KEY_VALUE_CONFIGS.len(), key, value);
    };
    let patterns = Patterns::new(globs).map_err(|e| format!("patterns: {e}"))?;
    let classified = gozero::classify(key, value, &patterns, zone);
    let key_only = gozero::classify_key(key, &patterns, zone);
    let (service_part, instance_part) = match key.iter().position(|&b| b == b'/') {
        Some(slash) => (&key[..slash], &key[slash + 1..]),
        None => (key, &[][..]),
    };
    // The key alone says the same as the key with its value.
    match (&classified, &key_only) {
        (Classified::Ignored, ClassifiedKey::Ignored) => {
            if let Ok(service) = std::str::from_utf8(service_part)
                && patterns.matches(service)
            {
                return Err(format!("ignored, yet {service:?} matches {globs:?}"));
            }
        }
        (Classified::Skipped(a), ClassifiedKey::Skipped(b)) if a == b => {}
        (Classified::Skipped(_), ClassifiedKey::Instance { .. }) => {}
        (
            Classified::Registration(registration),
            ClassifiedKey::Instance {
                service,
                instance_id,
            },
        ) if *service == registration.service && *instance_id == registration.instance_id => {
            check_registration(
                registration,
                key,
                service_part,
                instance_part,
                &patterns,
                zone,
            )?;
        }
        (classified, key_only) => {
            return Err(format!(
                "classify says {classified:?}, classify_key {key_only:?}"
            ));
        }
    }
    if let Classified::Skipped(SkipReason::NoInstanceId) = classified
        && !instance_part.is_empty()
    {
        return Err("no_instance_id for a key with an instance id".to_owned());
    }
    Ok(())
}

/// Checks an endpoint (a port, a host that reaches someone, a name that
/// makes a valid SRV target) and returns it as go-zero writes it.
fn endpoint_value(endpoint: &Endpoint) -> Result<String, String> {
    if endpoint.port() == 0 {
        return Err("port 0".to_owned());
    }
    let value = match endpoint {
        Endpoint::Ip { addr, port } => {
            let unspecified = addr.is_unspecified()
                || matches!(addr, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_unspecified()));
            if unspecified {
                return Err(format!("unspecified address {addr}"));
            }
            match addr {
                IpAddr::V4(v4) => format!("{v4}:{port}"),
                IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            }
        }
        Endpoint::Host { name, port } => {
            if name.is_empty() || name.len() > MAX_NAME_LEN || name.ends_with('.') {
                return Err(format!("host name {name:?}"));
            }
            if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return Err(format!("numeric host name {name:?}"));
            }
            check_labels(name).map_err(|e| format!("host {name:?}: {e}"))?;
            // Its wire form (the SRV target) is that name.
            let wire = host_wire(name);
            let mut decoder = hickory_proto::serialize::binary::BinDecoder::new(&wire);
            let decoded =
                <Name as hickory_proto::serialize::binary::BinDecodable>::read(&mut decoder)
                    .map_err(|e| format!("host {name:?}: wire form does not parse: {e}"))?;
            let labels: Vec<&[u8]> = decoded.iter().collect();
            let expected: Vec<&[u8]> = name.split('.').map(str::as_bytes).collect();
            if labels != expected || wire.len() > 255 {
                return Err(format!("host {name:?}: wire form reads {decoded}"));
            }
            format!("{name}:{port}")
        }
    };
    Ok(value)
}

/// The invariants of a kratos or go-micro key/value: what it gives makes
/// names in the zone, endpoints that reach someone, the format's SRV
/// numbers and schemes, and a service the writer then serves at every
/// name it promises.
fn check_other_format(index: usize, key: &[u8], value: &[u8]) -> Result<(), String> {
    const ZONE: &str = "svc.local";
    let (format, prefix, suffix) = OTHER_SOURCES[index % OTHER_SOURCES.len()];
    let config = SourceConfig {
        format,
        prefix: prefix.to_owned(),
        patterns: vec!["*.rpc".to_owned()],
        suffix: suffix.to_owned(),
    };
    let mut sources = Sources::new(&[config], ZONE)?;
    if format == Format::GoZero {
        sources = sources.with_overlay(FUZZ_OVERLAY);
    }
    let registrations = match sources.classify(key, value) {
        Classified::Ignored => {
            if format == Format::Kratos && key.starts_with(prefix.as_bytes()) {
                // A kratos key under the prefix is `<name>/<id>`: ignored
                // only without a `/`.
                if key[prefix.len()..].contains(&b'/') {
                    return Err("a kratos key with a '/' ignored".to_owned());
                }
            }
            return Ok(());
        }
        Classified::Skipped(_) => return Ok(()),
        Classified::Registration(registration) => vec![registration],
        Classified::Registrations(registrations) => registrations,
        Classified::Overlay(overlay) => return check_overlay(key, &overlay),
        Classified::Sky(record) => return check_sky(key, *record),
    };
    if format == Format::GoZero {
        // go-zero's own invariants are checked by its configurations.
        return Ok(());
    }
    let Some(first) = registrations.first() else {
        return Err("an empty list of registrations".to_owned());
    };
    if !key.starts_with(prefix.as_bytes()) {
        return Err(format!("a registration from a key outside {prefix:?}"));
    }
    for r in &registrations {
        if r.service != first.service || r.instance_id != first.instance_id {
            return Err(format!("one key, two instances: {first:?} and {r:?}"));
        }
        if !crate::zone::names::is_valid_service_key(&r.service, ZONE) {
            return Err(format!("service {:?} makes no name in the zone", r.service));
        }
        if !suffix.is_empty() && !r.service.ends_with(&format!(".{suffix}")) {
            return Err(format!("service {:?} without its suffix", r.service));
        }
        if r.instance_id.is_empty() {
            return Err("an empty instance id".to_owned());
        }
        let value = endpoint_value(&r.endpoint)?;
        match gozero::parse_endpoint(value.as_bytes()) {
            Ok(again) if again == r.endpoint => {}
            other => return Err(format!("{value:?} reads back as {other:?}")),
        }
        match format {
            Format::Kratos => {
                let scheme = r.scheme.as_deref().unwrap_or("");
                if !crate::source::kratos::SCHEMES.contains(&scheme) || r.weight == 0 {
                    return Err(format!("kratos: scheme {scheme:?}, weight {}", r.weight));
                }
            }
            _ => {
                if (r.priority, r.weight, &r.scheme) != (SRV_PRIORITY, SRV_WEIGHT, &None) {
                    return Err(format!("go-micro numbers: {r:?}"));
                }
            }
        }
    }
    // The writer serves the service, and each scheme at its SRV name.
    let store = plain_store(ZONE)?;
    let mut writer = ZoneWriter::new(store.clone());
    writer.set(key, registrations.clone());
    writer.publish();
    let snapshot = store.load();
    for r in &registrations {
        let scheme = r.scheme.as_deref().unwrap_or("grpc");
        for name in [r.service.clone(), format!("_{scheme}._tcp.{}", r.service)] {
            match snapshot.lookup_relative(&name) {
                crate::zone::Lookup::Service(_) | crate::zone::Lookup::SchemeService(..) => {}
                other => return Err(format!("{name:?} looks up as {other:?}")),
            }
        }
    }
    Ok(())
}

/// A SkyDNS record has the name its key spells, in the zone; the writer
/// serves it there, and every answer at it decodes, with the question
/// echoed, whatever the type.
fn check_sky(key: &[u8], record: crate::zone::SkyRecord) -> Result<(), String> {
    const ZONE: &str = "svc.local";
    // The zone's labels in any letter case.
    let rest = key
        .strip_prefix(b"/skydns/")
        .map(|rest| String::from_utf8_lossy(rest).to_ascii_lowercase())
        .and_then(|rest| rest.strip_prefix("local/svc/").map(str::to_owned))
        .ok_or("a SkyDNS record from a key outside the zone")?;
    let spelled: Vec<&str> = rest.split('/').rev().collect();
    if spelled.join(".") != *record.name {
        return Err(format!("key {rest:?} gave the name {:?}", record.name));
    }
    check_labels(&record.name)?;
    if record.name.len() + 1 + ZONE.len() > MAX_NAME_LEN {
        return Err(format!("name {:?} too long", record.name));
    }
    if let crate::zone::SkyHost::Name(host) = &record.host {
        endpoint_value(&Endpoint::Host {
            name: host.to_string(),
            port: 1,
        })?;
    }
    let name = format!("{}.{ZONE}.", record.name);
    let store = plain_store(ZONE)?;
    let mut writer = ZoneWriter::new(store.clone());
    writer.set_sky(key, record.clone());
    writer.publish();
    let snapshot = store.load();
    if !matches!(
        snapshot.lookup_relative(&record.name),
        crate::zone::Lookup::Sky(_)
    ) {
        return Err(format!("{name} is not a SkyDNS name"));
    }
    for rtype in [
        RecordType::A,
        RecordType::AAAA,
        RecordType::TXT,
        RecordType::SRV,
        RecordType::CNAME,
        RecordType::ANY,
        RecordType::MX,
    ] {
        let mut query = Message::query();
        // Raw labels: a leading `-` is fine on the wire (hickory's text
        // parser refuses it).
        let qname = Name::from_labels(name.trim_end_matches('.').split('.').map(str::as_bytes))
            .map_err(|e| format!("{name}: {e}"))?;
        query.add_query(hickory_proto::op::Query::query(qname.clone(), rtype));
        let packet = query.to_vec().map_err(|e| e.to_string())?;
        let question = answer::parse_query(&packet).ok_or("our own query does not parse")?;
        let mut out = Vec::new();
        answer::respond(&snapshot, &question, MAX_MESSAGE, 1232, &mut out);
        let response = Message::from_vec(&out).map_err(|e| format!("{name} {rtype}: {e}"))?;
        if response.queries.first().map(|q| q.name()) != Some(&qname)
            || response.metadata.response_code != ResponseCode::NoError
        {
            return Err(format!("{name} {rtype}: {response:?}"));
        }
    }
    Ok(())
}

/// An overlay comes from a key under the overlay prefix, names a service
/// (and maybe an instance) that the key spells, and gives a service config
/// only to a service; the writer applies it to that service's numbers.
fn check_overlay(key: &[u8], overlay: &(OverlayTarget, Overlay)) -> Result<(), String> {
    let (target, settings) = overlay;
    let Some(rest) = key.strip_prefix(FUZZ_OVERLAY.as_bytes()) else {
        return Err("an overlay from a key outside its prefix".to_owned());
    };
    let rest = String::from_utf8_lossy(rest).to_ascii_lowercase();
    let spelled = match target {
        OverlayTarget::Service(service) => service.clone(),
        OverlayTarget::Instance {
            service,
            instance_id,
        } => {
            if settings.service_config.is_some() {
                return Err("a service config for one instance".to_owned());
            }
            format!("{service}/{}", instance_id.to_ascii_lowercase())
        }
    };
    if spelled != rest || target.service().is_empty() {
        return Err(format!("overlay target {target:?} from key {rest:?}"));
    }
    // Applied: a service with one instance takes the overlay's numbers.
    let store = plain_store("svc.local")?;
    let mut writer = ZoneWriter::new(store.clone());
    let id = match target {
        OverlayTarget::Instance { instance_id, .. } => instance_id.clone(),
        OverlayTarget::Service(_) => "i".to_owned(),
    };
    let service = target.service().to_owned();
    if !crate::zone::names::is_valid_service_key(&service, "svc.local") {
        return Ok(());
    }
    let registration = Registration {
        service: service.clone(),
        instance_id: id,
        endpoint: Endpoint::Ip {
            addr: IpAddr::from([10, 0, 0, 1]),
            port: 1,
        },
        priority: SRV_PRIORITY,
        weight: SRV_WEIGHT,
        scheme: None,
        source: 0,
        metadata: Vec::new(),
    };
    writer.set_overlay(key, target.clone(), settings.clone());
    writer.upsert(b"\xff/fuzz", registration);
    writer.publish();
    let snapshot = store.load();
    let crate::zone::Lookup::Service(published) = snapshot.lookup_relative(&service) else {
        return Err(format!("{service:?} not served with an overlay"));
    };
    let Some(instance) = published.instances().first() else {
        return Err("no instance".to_owned());
    };
    let want = (
        settings.priority.unwrap_or(SRV_PRIORITY),
        settings.weight.unwrap_or(SRV_WEIGHT),
    );
    if (instance.priority(), instance.weight()) != want {
        return Err(format!(
            "numbers {:?}, overlay {settings:?}",
            (instance.priority(), instance.weight())
        ));
    }
    Ok(())
}

/// An empty store for `zone` (without its trailing dot), with no gRPC
/// configs and no reverse zones.
fn plain_store(zone: &str) -> Result<Arc<ZoneStore>, String> {
    Ok(Arc::new(ZoneStore::new(ZoneParams {
        origin: Name::from_ascii(format!("{zone}.")).map_err(|e| format!("zone {zone}: {e}"))?,
        ttl: 5,
        negative_ttl: 5,
        grpc: Default::default(),
        reverse: Vec::new(),
    })))
}

fn check_registration(
    registration: &Registration,
    key: &[u8],
    service_part: &[u8],
    instance_part: &[u8],
    patterns: &Patterns,
    zone: &str,
) -> Result<(), String> {
    let Registration {
        service,
        instance_id,
        endpoint,
        priority,
        weight,
        scheme,
        source: _,
        metadata,
    } = registration;
    // go-zero carries no priority, weight, scheme or metadata: the SPEC's.
    if (*priority, *weight, scheme) != (SRV_PRIORITY, SRV_WEIGHT, &None) || !metadata.is_empty() {
        return Err(format!(
            "priority {priority}, weight {weight}, scheme {scheme:?}"
        ));
    }
    // Service and id are the key's two parts.
    if service.as_bytes() != service_part.to_ascii_lowercase().as_slice() {
        return Err(format!("service {service:?} from key {key:?}"));
    }
    if instance_id.is_empty() || instance_id.as_bytes() != instance_part {
        return Err(format!("instance id {instance_id:?} from key {key:?}"));
    }
    if !patterns.matches(service) {
        return Err(format!("service {service:?} matches no pattern"));
    }
    if service.len() + 1 + zone.len() > MAX_SERVICE_NAME_LEN {
        return Err(format!(
            "service name {service}.{zone} over {MAX_SERVICE_NAME_LEN}"
        ));
    }
    check_labels(service).map_err(|e| format!("service {service:?}: {e}"))?;

    let value = endpoint_value(endpoint)?;
    // What go-zero would write for this endpoint parses back to it.
    match gozero::classify(key, value.as_bytes(), patterns, zone) {
        Classified::Registration(again) if again == *registration => {}
        other => {
            return Err(format!(
                "{value:?} (the endpoint written back) gives {other:?}"
            ));
        }
    }

    // The instance label: natural exactly when the rule says so, else hashed.
    let natural = names::natural_label(instance_id, service, zone);
    let lower = instance_id.to_ascii_lowercase();
    let natural_ok = (1..=MAX_LABEL_LEN).contains(&lower.len())
        && lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && lower.len() + 1 + service.len() + 1 + zone.len() <= MAX_NAME_LEN;
    match &natural {
        Some(label) if natural_ok && *label == lower => {}
        None if !natural_ok => {}
        other => return Err(format!("natural label {other:?} for id {instance_id:?}")),
    }
    let hashed = names::hashed_label(key);
    if hashed.len() != HASHED_LABEL_LEN
        || !hashed
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        || hashed != names::hashed_label(key)
    {
        return Err(format!("hashed label {hashed:?}"));
    }
    let label = natural.unwrap_or(hashed);

    // Every name made from it is a valid DNS name: labels of 1..=63
    // octets, at most 255 octets in wire form, read back as the same
    // labels. (On the wire, not through `Name::from_ascii`: a label such
    // as `-` is valid DNS, though not a host name; SPEC §3 allows it.)
    for name in [
        format!("{service}.{zone}"),
        format!("_grpc._tcp.{service}.{zone}"),
        format!("{label}.{service}.{zone}"),
    ] {
        let mut wire = Vec::with_capacity(name.len() + 2);
        for part in name.split('.') {
            if !(1..=MAX_LABEL_LEN).contains(&part.len()) {
                return Err(format!(
                    "name {name}: label {part:?} of {} octets",
                    part.len()
                ));
            }
            wire.push(part.len() as u8);
            wire.extend_from_slice(part.as_bytes());
        }
        wire.push(0);
        if wire.len() > 255 || name.len() > MAX_NAME_LEN {
            return Err(format!("name {name}: {} octets on the wire", wire.len()));
        }
        let mut decoder = hickory_proto::serialize::binary::BinDecoder::new(&wire);
        let decoded = <Name as hickory_proto::serialize::binary::BinDecodable>::read(&mut decoder)
            .map_err(|e| format!("name {name}: wire form does not parse: {e}"))?;
        let labels: Vec<&[u8]> = decoded.iter().collect();
        let expected: Vec<&[u8]> = name.split('.').map(str::as_bytes).collect();
        if labels != expected {
            return Err(format!("name {name}: wire form reads {decoded}"));
        }
    }

    // Into a zone of its own: the service and the instance answer there.
    let store = plain_store(zone)?;
    let mut writer = ZoneWriter::new(store.clone());
    writer.upsert(key, registration.clone());
    writer.publish();
    let snapshot = store.load();
    match snapshot.lookup_relative(service) {
        crate::zone::Lookup::Service(found) if found.instance_count() == 1 => {}
        other => return Err(format!("{service} in its zone: {other:?}")),
    }
    let relative = format!("{label}.{service}");
    match snapshot.lookup_relative(&relative) {
        crate::zone::Lookup::Instance(_, instance) if instance.endpoint() == endpoint => {}
        other => return Err(format!("{relative} in its zone: {other:?}")),
    }
    Ok(())
}

/// Checks a dotted, lower-cased name's labels: 1..=63 octets of letters,
/// digits, `-` and `_`.
fn check_labels(name: &str) -> Result<(), String> {
    for label in name.split('.') {
        if !(1..=MAX_LABEL_LEN).contains(&label.len()) {
            return Err(format!("label {label:?} of {} octets", label.len()));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "label {label:?} has a character outside [a-z0-9-_]"
            ));
        }
    }
    Ok(())
}
