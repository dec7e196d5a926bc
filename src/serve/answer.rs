//! Answers in wire format straight from a zone snapshot: parsing the common
//! query and writing its response, with no allocation.
//!
//! Every in-zone answer rpcdns gives is written here, whichever path the
//! query took: the UDP fast path calls [`parse_query`] and [`respond`]
//! directly; the full path (hickory, for TCP and anything unusual) builds a
//! [`Question`] from hickory's parse and calls [`respond`] too, so both
//! paths give the same answers by construction.
//!
//! The service's record sets are stored with owner names that are
//! compression pointers to the question (RFC 1035 §4.1.4), so a response
//! is the header, the question as the client sent it (its letter case
//! echoed byte for byte), and record bytes copied in rotated order.

use std::net::IpAddr;
use std::sync::Arc;

use crate::serve::cookie::{self, CookieSecret, QueryCookie, ReplyCookie, Verdict};
use crate::zone::{
    AddrOctets, Endpoint, Lookup, QNAME_OFFSET, SOA_EXPIRE, SOA_REFRESH, SOA_RETRY, Service,
    SkyAnswer, WireRrs, ZoneSnapshot, address_rdata, host_wire, pointer, rrtype, write_rr,
};

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/// RFC 1035 §4.2.1: UDP messages without EDNS are limited to 512 octets.
pub const CLASSIC_UDP_PAYLOAD: u16 = 512;
/// The largest DNS message (TCP).
pub const MAX_MESSAGE: usize = u16::MAX as usize;
/// Size of the DNS header.
pub const HEADER_LEN: usize = 12;
/// Size of an OPT record with empty RDATA: root owner, type, class, TTL,
/// RDLENGTH.
pub const OPT_LEN: usize = 11;

/// Response codes (RFC 1035 §4.1.1, RFC 6891 §9).
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
}

// ---------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------

/// What the client said in its OPT record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdnsQuery {
    /// Requestor's UDP payload size.
    pub payload: u16,
    /// The DO bit (RFC 3225), copied into our OPT.
    pub dnssec_ok: bool,
    /// The first COOKIE option (RFC 7873 §5.2: the others are ignored).
    pub cookie: Option<QueryCookie>,
    /// The COOKIE option of the response, once [`Question::answer_cookie`]
    /// has made it.
    pub reply_cookie: Option<ReplyCookie>,
}

impl EdnsQuery {
    /// The size of our OPT record in the response.
    pub fn opt_len(&self) -> usize {
        OPT_LEN + self.reply_cookie.map_or(0, |_| cookie::REPLY_OPTION_LEN)
    }
}

/// One query, as the answer code needs it.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    pub id: u16,
    /// Recursion desired: copied into the response.
    pub rd: bool,
    /// Checking disabled: copied into the response.
    pub cd: bool,
    /// The question section exactly as received (name, type, class), for
    /// the echo that strict clients compare byte for byte.
    pub raw: &'a [u8],
    /// The question name in uncompressed wire form, any letter case.
    pub name: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<EdnsQuery>,
}

impl Question<'_> {
    /// The largest response this client takes over UDP: 512 without EDNS;
    /// with EDNS its buffer size, at least 512 (RFC 6891 §6.2.5) and at
    /// most ours.
    pub fn udp_limit(&self, max_udp_payload: u16) -> usize {
        match self.edns {
            Some(edns) => usize::from(
                edns.payload
                    .max(CLASSIC_UDP_PAYLOAD)
                    .min(max_udp_payload.max(CLASSIC_UDP_PAYLOAD)),
            ),
            None => usize::from(CLASSIC_UDP_PAYLOAD),
        }
    }

    /// Checks the query's DNS cookie, if it has one, from `client` and
    /// makes the response's (see [`crate::serve::cookie`]); `None` when
    /// the query has no cookie.
    pub fn answer_cookie(&mut self, secret: &CookieSecret, client: IpAddr) -> Option<Verdict> {
        let edns = self.edns.as_mut()?;
        let (verdict, reply) = secret.reply(&edns.cookie?, client, cookie::now());
        edns.reply_cookie = Some(reply);
        Some(verdict)
    }
}

/// Parses `packet` when it is a query the fast path fully understands: one
/// question with an uncompressed name, opcode QUERY, no answer or
/// authority records, and at most an EDNS version 0 OPT record with nothing
/// after it. Anything else is `None` and goes to the full path, which
/// decides between an answer, FORMERR, BADVERS or NOTIMP.
pub fn parse_query(packet: &[u8]) -> Option<Question<'_>> {
    if packet.len() < HEADER_LEN + 5 {
        return None;
    }
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    let qr = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xF;
    let tc = flags & 0x0200 != 0;
    let counts = |i: usize| u16::from_be_bytes([packet[4 + 2 * i], packet[5 + 2 * i]]);
    if qr
        || opcode != 0
        || tc
        || counts(0) != 1
        || counts(1) != 0
        || counts(2) != 0
        || counts(3) > 1
    {
        return None;
    }
    let name_len = name_len(&packet[HEADER_LEN..])?;
    let question_end = HEADER_LEN + name_len + 4;
    let question = packet.get(HEADER_LEN..question_end)?;
    let qtype = u16::from_be_bytes([question[name_len], question[name_len + 1]]);
    let qclass = u16::from_be_bytes([question[name_len + 2], question[name_len + 3]]);
    let rest = &packet[question_end..];
    let edns = if counts(3) == 1 {
        // RFC 6891 §6.1.2: owner root, type OPT, class = payload size,
        // TTL = extended RCODE, version, DO and Z flags.
        let opt = rest;
        if opt.len() < OPT_LEN || opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != rrtype::OPT
        {
            return None;
        }
        let version = opt[6];
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        if version != 0 || opt.len() != OPT_LEN + rdlen {
            return None;
        }
        Some(EdnsQuery {
            payload: u16::from_be_bytes([opt[3], opt[4]]),
            dnssec_ok: opt[7] & 0x80 != 0,
            cookie: read_options(&opt[OPT_LEN..])?,
            reply_cookie: None,
        })
    } else {
        if !rest.is_empty() {
            return None;
        }
        None
    };
    Some(Question {
        id: u16::from_be_bytes([packet[0], packet[1]]),
        rd: flags & 0x0100 != 0,
        cd: flags & 0x0010 != 0,
        raw: question,
        name: &question[..name_len],
        qtype,
        qclass,
        edns,
    })
}

/// The length of the uncompressed name at the start of `bytes`, root label
/// included; `None` for a compression pointer, a reserved label type, a
/// name over 255 octets, or a name cut short.
pub fn name_len(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let len = usize::from(*bytes.get(at)?);
        if len == 0 {
            return Some(at + 1);
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
        // RFC 1035 §3.1: names are at most 255 octets, root included.
        if at >= 255 {
            return None;
        }
    }
}

/// EDNS options are (code, length, data) triples that must fill the RDATA
/// exactly. The first COOKIE option is read; `None` when it is malformed
/// (FORMERR, from the full path) or the options do not fill the RDATA.
/// Other options are ignored (RFC 6891 §6.1.2: unknown options MUST be
/// ignored).
fn read_options(mut rdata: &[u8]) -> Option<Option<QueryCookie>> {
    let mut cookie = None;
    while !rdata.is_empty() {
        let code = u16::from_be_bytes([*rdata.first()?, *rdata.get(1)?]);
        let len = usize::from(u16::from_be_bytes([*rdata.get(2)?, *rdata.get(3)?]));
        let data = rdata.get(4..4 + len)?;
        if code == cookie::OPTION_CODE && cookie.is_none() {
            cookie = Some(QueryCookie::parse(data)?);
        }
        rdata = &rdata[4 + len..];
    }
    Some(cookie)
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// What [`respond`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response is in the buffer, with this RCODE.
    Answered { rcode: u8, truncated: bool },
    /// The name is outside the zone, or the query is a zone transfer: the
    /// caller decides (REFUSED, or forwarding).
    NotHandled,
}

/// The answer section chosen for a query.
enum Answer<'a> {
    /// Records from a prebuilt set, rotated, with their glue.
    Set {
        rrs: &'a WireRrs,
        rotation: usize,
        glue: Option<&'a WireRrs>,
    },
    /// The SOA at the apex.
    Soa,
    /// The NS at the apex.
    Ns,
    /// The address of one instance.
    Address(u16, AddrOctets),
    /// The CNAME of a host-name instance.
    Cname(Vec<u8>),
    /// CoreDNS's answer at a SkyDNS name (never empty).
    Sky(Arc<SkyAnswer>),
    /// No records: NODATA.
    NoData,
    /// No such name.
    NxDomain,
}

/// The size of the SOA record we write: pointer owner, fixed fields, mname
/// `\x02ns` + pointer, rname `\x0ahostmaster` + pointer, five numbers.
const SOA_RR_LEN: usize = 2 + 10 + (3 + 2) + (11 + 2) + 20;
/// The size of the NS record: pointer owner, fixed fields, `\x02ns` + pointer.
const NS_RR_LEN: usize = 2 + 10 + 3 + 2;

/// Writes the response to `question` from `snapshot` into `out` (cleared
/// first), fitting `limit` octets: glue is dropped first (RFC 2181 §9, no
/// TC for that); when the answer itself does not fit, TC is set and no
/// records are sent, never a partial RRset — except at the TCP limit of
/// 65535 octets, where an RRset too large for any message is cut to the
/// whole records that fit, in rotated order, without TC.
pub fn respond(
    snapshot: &ZoneSnapshot,
    question: &Question<'_>,
    limit: usize,
    max_udp_payload: u16,
    out: &mut Vec<u8>,
) -> Outcome {
    out.clear();
    if question.qclass != rrtype::IN || matches!(question.qtype, rrtype::AXFR | rrtype::IXFR) {
        return Outcome::NotHandled;
    }
    // Split the name into labels and find where the apex starts.
    let mut starts = [0u8; 128];
    let mut count = 0;
    let name = question.name;
    let mut at = 0;
    while let Some(&len) = name.get(at) {
        if len == 0 || count == starts.len() {
            break;
        }
        starts[count] = at as u8;
        count += 1;
        at += 1 + usize::from(len);
    }
    // Where the name's labels below `apex` start, and the apex's offset
    // in the name, when `apex` (wire form, lower-case) ends the name.
    let below = |apex: &[u8]| -> Option<(usize, usize)> {
        let apex_labels = count_labels(apex);
        let skip = count.checked_sub(apex_labels)?;
        let apex_at = starts[..count].get(skip).map_or(at, |&s| usize::from(s));
        // `name[apex_at..]` must be the apex, in any letter case.
        name.get(apex_at..)
            .filter(|suffix| suffix.eq_ignore_ascii_case(apex))
            .map(|_| (apex_at, skip))
    };
    let labels = |skip: usize| {
        starts[..skip].iter().map(|&start| {
            let start = usize::from(start);
            &name[start + 1..start + 1 + usize::from(name[start])]
        })
    };
    let mut buf = [0u8; 255];
    let (apex_at, lookup) = if let Some((apex_at, skip)) = below(snapshot.origin_wire()) {
        (apex_at, snapshot.lookup_labels(labels(skip), &mut buf))
    } else if let Some((zone, apex_at, skip)) = snapshot
        .params()
        .reverse
        .iter()
        .find_map(|zone| below(zone.apex_wire()).map(|(apex_at, skip)| (zone, apex_at, skip)))
    {
        let lookup = match snapshot.lookup_reverse(zone, labels(skip)) {
            // The apex of a reverse zone has its SOA and NS like ours.
            _ if skip == 0 => Lookup::Apex,
            lookup => lookup,
        };
        (apex_at, lookup)
    } else {
        return Outcome::NotHandled;
    };
    // CoreDNS answers A and AAAA at the apex from `apex.dns.<zone>`.
    let lookup = match lookup {
        Lookup::Apex if matches!(question.qtype, rrtype::A | rrtype::AAAA) => snapshot
            .sky_node("apex.dns")
            .map_or(Lookup::Apex, Lookup::Sky),
        lookup => lookup,
    };
    let answer = choose(snapshot, lookup, question.qtype);

    // Where the apex sits in the echoed question: SOA and NS owners point there.
    let apex_ptr = pointer(QNAME_OFFSET + apex_at as u16);
    let params = snapshot.params();
    let (answer_len, mut answer_count) = match &answer {
        Answer::Set { rrs, .. } => (rrs.byte_len(), rrs.count()),
        Answer::Soa => (SOA_RR_LEN, 1),
        Answer::Ns => (NS_RR_LEN, 1),
        Answer::Address(_, octets) => (12 + octets.as_ref().len(), 1),
        Answer::Cname(target) => (12 + target.len(), 1),
        Answer::Sky(sky) => (sky.answer.len(), usize::from(sky.an)),
        Answer::NoData | Answer::NxDomain => (0, 0),
    };
    let negative = matches!(answer, Answer::NoData | Answer::NxDomain);
    let authority_len = if negative { SOA_RR_LEN } else { 0 };
    // The additional section: its octets and how many records they are.
    let glue: Option<(&[u8], usize)> = match &answer {
        Answer::Set {
            glue: Some(glue), ..
        } => Some((glue.bytes(), glue.count())),
        Answer::Sky(sky) if sky.ar > 0 => Some((&sky.glue, usize::from(sky.ar))),
        _ => None,
    };
    let glue_len = glue.map_or(0, |(bytes, _)| bytes.len());
    let opt_len = question.edns.as_ref().map_or(0, EdnsQuery::opt_len);
    let base = HEADER_LEN + question.raw.len() + opt_len;

    let (mut with_answer, mut with_glue, mut truncated) = (true, true, false);
    // Over TCP (a limit of 65535), an RRset too large for any DNS message
    // is cut to the records that fit, in rotated order, without TC: there
    // is no larger transport to retry on, and a client that gets TC over
    // TCP (Go's resolver) fails the lookup. Successive queries start at
    // different records, so every instance still gets its share.
    let mut partial = false;
    if base + answer_len + authority_len + glue_len > limit {
        with_glue = false;
        if base + answer_len + authority_len > limit {
            if limit >= MAX_MESSAGE && matches!(answer, Answer::Set { .. } | Answer::Sky(_)) {
                partial = true;
            } else {
                with_answer = false;
                truncated = true;
            }
        }
    }

    let rcode = if matches!(answer, Answer::NxDomain) {
        rcode::NXDOMAIN
    } else {
        rcode::NOERROR
    };
    out.reserve(base + answer_len + authority_len + glue_len);
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.extend_from_slice(question.raw);
    let (mut an, mut ns, mut ar) = (0u16, 0u16, 0u16);
    if with_answer {
        match &answer {
            Answer::Set { rrs, rotation, .. } if partial => {
                let budget = limit.saturating_sub(base);
                // Each query starts where a full message from the previous
                // one would end, so successive queries cover the whole set
                // in about count / per queries rather than count.
                let per = rrs.count_within(budget).max(1);
                let start = rotation.wrapping_mul(per);
                let (first, second, count) = rrs.rotated_within(start, budget);
                out.extend_from_slice(first);
                out.extend_from_slice(second);
                answer_count = count;
            }
            Answer::Set { rrs, rotation, .. } => {
                let (first, second) = rrs.rotated(*rotation);
                out.extend_from_slice(first);
                out.extend_from_slice(second);
            }
            Answer::Soa => write_soa(out, &apex_ptr, params.ttl, snapshot),
            Answer::Ns => write_rr(
                out,
                &[&apex_ptr],
                rrtype::NS,
                params.ttl,
                &[b"\x02ns", &apex_ptr],
            ),
            Answer::Address(rtype, octets) => write_rr(
                out,
                &[&pointer(QNAME_OFFSET)],
                *rtype,
                params.ttl,
                &[octets.as_ref()],
            ),
            Answer::Cname(target) => write_rr(
                out,
                &[&pointer(QNAME_OFFSET)],
                rrtype::CNAME,
                params.ttl,
                &[target],
            ),
            Answer::Sky(sky) if partial => {
                let (len, count) = records_within(&sky.answer, limit.saturating_sub(base));
                out.extend_from_slice(&sky.answer[..len]);
                answer_count = count;
            }
            Answer::Sky(sky) => out.extend_from_slice(&sky.answer),
            Answer::NoData | Answer::NxDomain => {}
        }
        // Counts fit: a response is at most 65535 octets.
        an = answer_count as u16;
        if negative {
            write_soa(out, &apex_ptr, params.negative_soa_ttl(), snapshot);
            ns = 1;
        }
        if with_glue && let Some((bytes, count)) = glue {
            out.extend_from_slice(bytes);
            ar = count as u16;
        }
    }
    if let Some(edns) = &question.edns {
        write_opt(out, max_udp_payload, edns);
        ar += 1;
    }
    write_header(
        out,
        question,
        Flags {
            authoritative: true,
            truncated,
            rcode,
        },
        [1, an, ns, ar],
    );
    Outcome::Answered { rcode, truncated }
}

/// The response rate limit's "slip" (see [`crate::serve::rrl`]): an empty
/// response with TC set, the question and our OPT (with the client's
/// cookie, so that its retry is not limited), for the client to ask again
/// over TCP.
pub fn slip(question: &Question<'_>, max_udp_payload: u16, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.extend_from_slice(question.raw);
    let mut ar = 0;
    if let Some(edns) = &question.edns {
        write_opt(out, max_udp_payload, edns);
        ar = 1;
    }
    let flags = Flags {
        authoritative: true,
        truncated: true,
        rcode: rcode::NOERROR,
    };
    write_header(out, question, flags, [1, 0, 0, ar]);
}

/// [`slip`] for a response already written (the full path): cut to its
/// header and question, TC set, the other sections gone.
pub fn slip_response(response: &mut Vec<u8>) {
    if response.len() < HEADER_LEN {
        return;
    }
    let questions = u16::from_be_bytes([response[4], response[5]]);
    let question_len = match name_len(&response[HEADER_LEN..]) {
        Some(name) if questions == 1 && response.len() >= HEADER_LEN + name + 4 => name + 4,
        _ => 0,
    };
    response.truncate(HEADER_LEN + question_len);
    response[2] |= 0x02;
    let counts = [u16::from(question_len > 0), 0, 0, 0];
    for (i, count) in counts.iter().enumerate() {
        response[4 + 2 * i..6 + 2 * i].copy_from_slice(&count.to_be_bytes());
    }
}

/// Picks the records for `qtype` at the name `lookup` found.
fn choose<'a>(snapshot: &'a ZoneSnapshot, lookup: Lookup<'a>, qtype: u16) -> Answer<'a> {
    use rrtype::{ANY, NS, PTR, SOA, SRV, TXT};
    match lookup {
        Lookup::Apex => match qtype {
            // RFC 8482 §4.1: answer ANY with one RRset the name has.
            SOA | ANY => Answer::Soa,
            NS => Answer::Ns,
            _ => Answer::NoData,
        },
        Lookup::Service(service) => addresses_or_srv(
            service,
            [service.a(), service.aaaa(), service.srv(), service.glue()],
            qtype,
        ),
        Lookup::Port(service, port) => addresses_or_srv(
            service,
            [
                port.a(service),
                port.aaaa(service),
                port.srv(service),
                port.glue(),
            ],
            qtype,
        ),
        Lookup::Ptr(rrs) => match qtype {
            PTR | ANY => Answer::Set {
                rrs,
                rotation: 0,
                glue: None,
            },
            _ => Answer::NoData,
        },
        Lookup::GrpcConfig(config) => match qtype {
            TXT | ANY => Answer::Set {
                rrs: config.txt(),
                // One record: nothing to rotate.
                rotation: 0,
                glue: None,
            },
            _ => Answer::NoData,
        },
        Lookup::SchemeService(service, set) => match qtype {
            SRV | ANY if !set.srv().is_empty() => Answer::Set {
                rrs: set.srv(),
                rotation: service.next_rotation(true),
                glue: Some(set.glue()),
            },
            _ => Answer::NoData,
        },
        Lookup::Instance(_, instance) => match instance.endpoint() {
            Endpoint::Ip { .. } if qtype == TXT => match instance.txt() {
                Some(txt) => Answer::Set {
                    rrs: txt,
                    rotation: 0,
                    glue: None,
                },
                None => Answer::NoData,
            },
            Endpoint::Ip { addr, .. } => {
                let (rtype, octets) = address_rdata(addr);
                if qtype == rtype || qtype == ANY {
                    Answer::Address(rtype, octets)
                } else {
                    Answer::NoData
                }
            }
            // RFC 1034 §3.6.2: a name with a CNAME has no other data, and
            // every query for it gets the CNAME (CNAME queries included).
            Endpoint::Host { name, .. } => Answer::Cname(host_wire(name)),
        },
        Lookup::Sky(node) => {
            let sky = snapshot.sky_answer(node, qtype);
            if sky.an == 0 {
                Answer::NoData
            } else {
                Answer::Sky(sky)
            }
        }
        Lookup::EmptyNonTerminal => Answer::NoData,
        Lookup::NxDomain => Answer::NxDomain,
    }
}

/// The answer at a name that has a service's record sets (the service, or
/// one of its port names): `[a, aaaa, srv, glue]`, and the TXT of its gRPC
/// service config, which grpc-js looks up at the target's host name itself
/// rather than at `_grpc_config.<host>`.
fn addresses_or_srv<'a>(service: &'a Service, sets: [&'a WireRrs; 4], qtype: u16) -> Answer<'a> {
    use rrtype::{A, AAAA, ANY, SRV, TXT};
    let [a, aaaa, srv, glue] = sets;
    if qtype == TXT {
        return match service.grpc_config() {
            Some(config) => Answer::Set {
                rrs: config.txt(),
                // One record: nothing to rotate.
                rotation: 0,
                glue: None,
            },
            None => Answer::NoData,
        };
    }
    let (rrs, glue) = match qtype {
        A => (a, None),
        AAAA => (aaaa, None),
        SRV => (srv, Some(glue)),
        // RFC 8482 §4.1: answer ANY with one RRset the name has.
        ANY if !a.is_empty() => (a, None),
        ANY if !aaaa.is_empty() => (aaaa, None),
        ANY => (srv, Some(glue)),
        _ => return Answer::NoData,
    };
    if rrs.is_empty() {
        return Answer::NoData;
    }
    Answer::Set {
        rrs,
        rotation: service.next_rotation(glue.is_some()),
        glue,
    }
}

/// The octets and the number of the whole records at the start of
/// `records` (owners uncompressed, or a compression pointer) that fit in
/// `budget` octets.
fn records_within(records: &[u8], budget: usize) -> (usize, usize) {
    let (mut at, mut count) = (0, 0);
    while at < records.len() {
        let name = match records[at] {
            pointer if pointer & 0xC0 == 0xC0 => 2,
            _ => match name_len(&records[at..]) {
                Some(len) => len,
                None => break,
            },
        };
        let rdlen_at = at + name + 8;
        let Some(rdlen) = records.get(rdlen_at..rdlen_at + 2) else {
            break;
        };
        let end = rdlen_at + 2 + usize::from(u16::from_be_bytes([rdlen[0], rdlen[1]]));
        if end > budget.min(records.len()) {
            break;
        }
        at = end;
        count += 1;
    }
    (at, count)
}

/// Number of labels in a wire name, root excluded.
fn count_labels(wire: &[u8]) -> usize {
    let mut at = 0;
    let mut count = 0;
    while let Some(&len) = wire.get(at) {
        if len == 0 {
            break;
        }
        count += 1;
        at += 1 + usize::from(len);
    }
    count
}

fn write_soa(out: &mut Vec<u8>, apex_ptr: &[u8; 2], ttl: u32, snapshot: &ZoneSnapshot) {
    let params = snapshot.params();
    let mut numbers = [0u8; 20];
    for (slot, value) in numbers.chunks_exact_mut(4).zip([
        snapshot.serial(),
        SOA_REFRESH,
        SOA_RETRY,
        SOA_EXPIRE,
        params.negative_ttl,
    ]) {
        slot.copy_from_slice(&value.to_be_bytes());
    }
    write_rr(
        out,
        &[apex_ptr],
        rrtype::SOA,
        ttl,
        &[b"\x02ns", apex_ptr, b"\x0ahostmaster", apex_ptr, &numbers],
    );
}

/// Our OPT record (RFC 6891 §6.1.2): version 0, our buffer size, the DO bit
/// copied (RFC 3225 §3), every other flag zero; our COOKIE option when
/// the query had one, no other option.
fn write_opt(out: &mut Vec<u8>, max_udp_payload: u16, edns: &EdnsQuery) {
    out.push(0);
    out.extend_from_slice(&rrtype::OPT.to_be_bytes());
    out.extend_from_slice(&max_udp_payload.max(CLASSIC_UDP_PAYLOAD).to_be_bytes());
    out.extend_from_slice(&[0, 0, if edns.dnssec_ok { 0x80 } else { 0 }, 0]);
    match &edns.reply_cookie {
        Some(reply) => {
            let data = reply.data();
            // The option's length, and the option.
            out.extend_from_slice(&((4 + data.len()) as u16).to_be_bytes());
            out.extend_from_slice(&cookie::OPTION_CODE.to_be_bytes());
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(data);
        }
        None => out.extend_from_slice(&[0, 0]),
    }
}

/// Header flags we set.
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    pub authoritative: bool,
    pub truncated: bool,
    pub rcode: u8,
}

/// Writes the 12-octet header at the start of `out`: QR, opcode QUERY, AA
/// and TC as given, RD and CD copied; RA, Z and AD clear.
fn write_header(out: &mut [u8], question: &Question<'_>, flags: Flags, counts: [u16; 4]) {
    out[0..2].copy_from_slice(&question.id.to_be_bytes());
    out[2] = 0x80
        | if flags.authoritative { 0x04 } else { 0 }
        | if flags.truncated { 0x02 } else { 0 }
        | if question.rd { 0x01 } else { 0 };
    out[3] = if question.cd { 0x10 } else { 0 } | (flags.rcode & 0x0F);
    for (i, count) in counts.iter().enumerate() {
        out[4 + 2 * i..6 + 2 * i].copy_from_slice(&count.to_be_bytes());
    }
}

/// A response carrying only a header (and the question when it was
/// parsed): for FORMERR to a packet whose question cannot be read.
pub fn header_only_error(packet: &[u8], rcode: u8, out: &mut Vec<u8>) -> bool {
    out.clear();
    if packet.len() < HEADER_LEN || packet[2] & 0x80 != 0 {
        // Too short to answer, or a response: never answer those (no
        // reflection loops).
        return false;
    }
    out.extend_from_slice(&packet[..2]);
    // QR, the request's opcode, RD copied.
    out.push(0x80 | (packet[2] & 0x78) | (packet[2] & 0x01));
    out.push(rcode & 0x0F);
    out.extend_from_slice(&[0; 8]);
    true
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use hickory_proto::rr::{Name, RData, RecordType};

    use super::*;
    use crate::zone::ZoneStore;

    fn zone() -> Arc<ZoneStore> {
        crate::zone::testing::zone(
            3,
            77,
            &[
                ("sms.rpc/1", "10.0.0.5:8001"),
                ("sms.rpc/2", "[fd00::5]:8001"),
                ("order.rpc/1", "sms-0.sms:9000"),
            ],
        )
    }

    fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 0x1234;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        if let Some(payload) = edns {
            let mut e = Edns::new();
            e.set_max_payload(payload);
            message.edns = Some(e);
        }
        message.to_vec().unwrap()
    }

    fn ask(store: &ZoneStore, packet: &[u8], limit: Option<usize>) -> (Outcome, Message, Vec<u8>) {
        let question = parse_query(packet).expect("fast-path query");
        let limit = limit.unwrap_or_else(|| question.udp_limit(1232));
        let mut out = Vec::new();
        let outcome = respond(&store.load(), &question, limit, 1232, &mut out);
        let message = Message::from_vec(&out).expect("valid response");
        (outcome, message, out)
    }

    #[test]
    fn a_and_srv_with_glue_decode_cleanly() {
        let store = zone();
        let (_, m, _) = ask(
            &store,
            &query("SMS.rpc.svc.local.", RecordType::A, None),
            None,
        );
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert!(m.metadata.authoritative && m.metadata.recursion_desired);
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].ttl, 5);
        assert_eq!(m.answers[0].data, RData::A("10.0.0.5".parse().unwrap()));
        assert!(m.edns.is_none(), "no EDNS in, none out");

        let (_, m, _) = ask(
            &store,
            &query("sms.rpc.svc.local.", RecordType::SRV, Some(4096)),
            None,
        );
        assert_eq!(m.answers.len(), 2);
        assert_eq!(m.additionals.len(), 2, "glue for both targets");
        let names: Vec<String> = m.additionals.iter().map(|r| r.name.to_ascii()).collect();
        assert!(
            names.contains(&"1.sms.rpc.svc.local.".to_string()),
            "{names:?}"
        );
        assert_eq!(m.edns.as_ref().map(Edns::max_payload), Some(1232));

        let (_, m, _) = ask(
            &store,
            &query("_grpc._tcp.sms.rpc.svc.local.", RecordType::SRV, None),
            None,
        );
        let RData::SRV(srv) = &m.answers[0].data else {
            panic!("not SRV")
        };
        assert!(
            srv.target.to_ascii().ends_with(".sms.rpc.svc.local."),
            "{}",
            srv.target
        );
        assert_eq!(
            m.answers[0].name.to_ascii(),
            "_grpc._tcp.sms.rpc.svc.local."
        );
    }

    #[test]
    fn grpc_config_txt_is_one_record_of_255_octet_strings() {
        // The default config, and a large one for big.rpc.
        let store = crate::zone::testing::zone_with(
            crate::zone::testing::grpc_configs_with_large(5),
            3,
            7,
            &[
                ("sms.rpc/1", "10.0.0.5:8001"),
                ("big.rpc/1", "10.0.0.6:8001"),
            ],
        );
        let (_, m, _) = ask(
            &store,
            &query("_GRPC_config.SMS.rpc.svc.local.", RecordType::TXT, None),
            None,
        );
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].ttl, 5);
        let RData::TXT(txt) = &m.answers[0].data else {
            panic!("not TXT: {:?}", m.answers[0])
        };
        let joined: Vec<u8> = txt
            .txt_data
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(
            String::from_utf8(joined).unwrap(),
            r#"grpc_config=[{"serviceConfig":{"loadBalancingConfig":[{"round_robin":{}}]}}]"#
        );
        let (_, any, _) = ask(
            &store,
            &query("_grpc_config.sms.rpc.svc.local.", RecordType::ANY, None),
            None,
        );
        assert_eq!(any.answers, m.answers, "ANY gets the TXT");
        // grpc-js asks at the target's host name itself: the same record.
        for name in ["sms.rpc.svc.local.", "PORT-8001.sms.rpc.svc.local."] {
            let (_, at_name, _) = ask(&store, &query(name, RecordType::TXT, None), None);
            let RData::TXT(same) = &at_name.answers[0].data else {
                panic!("{name}: not TXT: {at_name:?}")
            };
            assert_eq!(same, txt, "{name}");
            assert_eq!(at_name.answers[0].name.to_ascii(), name);
        }
        let (_, nodata, _) = ask(
            &store,
            &query("_grpc_config.sms.rpc.svc.local.", RecordType::A, None),
            None,
        );
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty() && nodata.authorities.len() == 1);

        // A config too large for 512 octets: TC over UDP, whole over TCP.
        let packet = query("_grpc_config.big.rpc.svc.local.", RecordType::TXT, None);
        let (outcome, udp, _) = ask(&store, &packet, None);
        assert!(udp.metadata.truncation && udp.answers.is_empty());
        assert!(matches!(
            outcome,
            Outcome::Answered {
                truncated: true,
                ..
            }
        ));
        let (_, tcp, _) = ask(&store, &packet, Some(MAX_MESSAGE));
        let RData::TXT(txt) = &tcp.answers[0].data else {
            panic!("not TXT")
        };
        assert!(txt.txt_data.len() > 2, "several character-strings");
        assert!(txt.txt_data.iter().all(|s| s.len() <= 255));
        let joined: Vec<u8> = txt
            .txt_data
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        let text = String::from_utf8(joined).unwrap();
        let choices: serde_json::Value =
            serde_json::from_str(text.strip_prefix("grpc_config=").unwrap()).unwrap();
        assert_eq!(
            choices[0]["serviceConfig"]["methodConfig"][0]["name"][44]["service"],
            "pkg.Service44"
        );
    }

    #[test]
    fn port_names_answer_their_instances_with_glue_below_the_service() {
        let store = crate::zone::testing::zone(
            3,
            7,
            &[
                ("sms.rpc/1", "10.0.0.1:8001"),
                ("sms.rpc/2", "10.0.0.2:8002"),
                ("sms.rpc/3", "[fd00::3]:8002"),
            ],
        );
        let (_, a, _) = ask(
            &store,
            &query("Port-8002.sms.rpc.svc.local.", RecordType::A, None),
            None,
        );
        assert_eq!(a_of(&a.answers), vec![std::net::Ipv4Addr::new(10, 0, 0, 2)]);
        assert_eq!(a.answers[0].name.to_ascii(), "Port-8002.sms.rpc.svc.local.");
        let (_, srv, _) = ask(
            &store,
            &query("port-8002.sms.rpc.svc.local.", RecordType::SRV, None),
            None,
        );
        let mut targets: Vec<String> = srv
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::SRV(srv) => format!("{} {}", srv.port, srv.target),
                other => panic!("{other:?}"),
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            ["8002 2.sms.rpc.svc.local.", "8002 3.sms.rpc.svc.local."]
        );
        let mut glue: Vec<String> = srv.additionals.iter().map(|r| r.name.to_ascii()).collect();
        glue.sort();
        assert_eq!(
            glue,
            ["2.sms.rpc.svc.local.", "3.sms.rpc.svc.local."],
            "glue owners are the instance names, not below the port name"
        );
        let (_, none, _) = ask(
            &store,
            &query("port-8001.sms.rpc.svc.local.", RecordType::AAAA, None),
            None,
        );
        assert!(
            none.answers.is_empty() && none.authorities.len() == 1,
            "NODATA"
        );
    }

    #[test]
    fn ptr_in_the_configured_reverse_zones() {
        let store = crate::zone::testing::zone_with_reverse(
            &["10.0.0.0/8", "fd00::/8"],
            &[
                ("sms.rpc/1", "10.0.0.5:8001"),
                ("pay.rpc/7", "10.0.0.5:9000"),
                ("pay.rpc/8", "[fd00::7]:9000"),
                ("web.rpc/1", "web-0.web:80"),
            ],
        );
        let (_, m, _) = ask(
            &store,
            &query("5.0.0.10.IN-ADDR.arpa.", RecordType::PTR, None),
            None,
        );
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers[0].name.to_ascii(), "5.0.0.10.IN-ADDR.arpa.");
        let mut targets: Vec<String> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::PTR(ptr) => ptr.0.to_ascii(),
                other => panic!("{other:?}"),
            })
            .collect();
        targets.sort();
        assert_eq!(targets, ["1.sms.rpc.svc.local.", "7.pay.rpc.svc.local."]);
        let v6 = "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.D.F.ip6.arpa.";
        let (_, m, _) = ask(&store, &query(v6, RecordType::PTR, None), None);
        assert_eq!(m.answers.len(), 1);
        // An address nobody has, and a name that is no address: NXDOMAIN
        // with the reverse zone's SOA.
        for name in [
            "6.0.0.10.in-addr.arpa.",
            "x.0.0.10.in-addr.arpa.",
            "1.5.0.0.10.in-addr.arpa.",
        ] {
            let (outcome, m, _) = ask(&store, &query(name, RecordType::PTR, None), None);
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
            let RData::SOA(soa) = &m.authorities[0].data else {
                panic!("{name}: no SOA")
            };
            assert_eq!(m.authorities[0].name.to_ascii(), "10.in-addr.arpa.");
            assert_eq!(soa.serial, 77);
            assert!(matches!(outcome, Outcome::Answered { .. }));
        }
        // Above an address: NODATA; another type at the address: NODATA.
        for (name, rtype) in [
            ("0.0.10.in-addr.arpa.", RecordType::PTR),
            ("5.0.0.10.in-addr.arpa.", RecordType::A),
        ] {
            let (_, m, _) = ask(&store, &query(name, rtype, None), None);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(m.answers.is_empty() && m.authorities.len() == 1, "{name}");
        }
        let (_, m, _) = ask(
            &store,
            &query("10.in-addr.arpa.", RecordType::SOA, None),
            None,
        );
        assert_eq!(m.answers.len(), 1, "the reverse apex has its SOA");
        // Outside the configured reverse zones: not ours.
        let packet = query("1.1.168.192.in-addr.arpa.", RecordType::PTR, None);
        let question = parse_query(&packet).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            respond(&store.load(), &question, 512, 1232, &mut out),
            Outcome::NotHandled
        );
    }

    #[test]
    fn rotation_changes_the_first_record() {
        let store = zone();
        let packet = query("sms.rpc.svc.local.", RecordType::SRV, None);
        let (_, a, _) = ask(&store, &packet, None);
        let (_, b, _) = ask(&store, &packet, None);
        assert_ne!(a.answers[0], b.answers[0]);
    }

    #[test]
    fn negative_answers_carry_the_soa() {
        let store = zone();
        let (outcome, m, _) = ask(&store, &query("nope.svc.local.", RecordType::A, None), None);
        assert_eq!(
            outcome,
            Outcome::Answered {
                rcode: rcode::NXDOMAIN,
                truncated: false
            }
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1);
        let soa = &m.authorities[0];
        assert_eq!(soa.ttl, 3, "min(ttl, negative_ttl)");
        let RData::SOA(data) = &soa.data else {
            panic!("not SOA")
        };
        assert_eq!(data.serial, 77);
        assert_eq!(data.mname.to_ascii(), "ns.svc.local.");
        assert_eq!(data.rname.to_ascii(), "hostmaster.svc.local.");
        assert_eq!(
            (data.refresh, data.retry, data.expire, data.minimum),
            (60, 10, 86400, 3)
        );

        let (_, m, _) = ask(&store, &query("rpc.svc.local.", RecordType::A, None), None);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "ENT is NODATA"
        );
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1);

        let (_, m, _) = ask(&store, &query("svc.local.", RecordType::SOA, None), None);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].ttl, 5);
        let (_, m, _) = ask(&store, &query("svc.local.", RecordType::NS, None), None);
        assert_eq!(
            m.answers[0].data,
            RData::NS(hickory_proto::rr::rdata::NS(
                Name::from_ascii("ns.svc.local.").unwrap()
            ))
        );
    }

    #[test]
    fn instances_and_host_names() {
        let store = zone();
        let (_, m, _) = ask(
            &store,
            &query("2.sms.rpc.svc.local.", RecordType::AAAA, None),
            None,
        );
        assert_eq!(m.answers[0].data, RData::AAAA("fd00::5".parse().unwrap()));
        let (_, m, _) = ask(
            &store,
            &query("2.sms.rpc.svc.local.", RecordType::A, None),
            None,
        );
        assert!(m.answers.is_empty() && m.authorities.len() == 1);
        let (_, m, _) = ask(
            &store,
            &query("1.order.rpc.svc.local.", RecordType::A, None),
            None,
        );
        assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
        let (_, m, _) = ask(
            &store,
            &query("order.rpc.svc.local.", RecordType::SRV, None),
            None,
        );
        let RData::SRV(srv) = &m.answers[0].data else {
            panic!("not SRV")
        };
        assert_eq!(srv.target.to_ascii(), "sms-0.sms.");
        assert!(m.additionals.is_empty());
    }

    #[test]
    fn outside_the_zone_and_transfers_are_not_handled() {
        let store = zone();
        let packet = query("example.com.", RecordType::A, None);
        let question = parse_query(&packet).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            respond(&store.load(), &question, 512, 1232, &mut out),
            Outcome::NotHandled
        );
        let packet = query("svc.local.", RecordType::AXFR, None);
        let question = parse_query(&packet).unwrap();
        assert_eq!(
            respond(&store.load(), &question, 512, 1232, &mut out),
            Outcome::NotHandled
        );
        // A name that only ends like the zone is outside it.
        let packet = query("xsvc.local.", RecordType::A, None);
        let question = parse_query(&packet).unwrap();
        assert_eq!(
            respond(&store.load(), &question, 512, 1232, &mut out),
            Outcome::NotHandled
        );
    }

    #[test]
    fn truncation_drops_glue_then_sets_tc() {
        let store = zone();
        let packet = query("sms.rpc.svc.local.", RecordType::SRV, None);
        let (_, full, bytes) = ask(&store, &packet, Some(512));
        assert!(!full.metadata.truncation);
        let glue_len: usize = 2 * 16 + 12; // rough: at least the addresses
        let (_, no_glue, _) = ask(&store, &packet, Some(bytes.len() - 1));
        assert!(!no_glue.metadata.truncation, "glue dropped without TC");
        assert_eq!(no_glue.answers.len(), 2);
        assert!(no_glue.additionals.is_empty());
        let (outcome, tc, out) = ask(&store, &packet, Some(bytes.len() - glue_len - 40));
        assert!(tc.metadata.truncation);
        assert!(tc.answers.is_empty(), "no partial RRset");
        assert_eq!(
            outcome,
            Outcome::Answered {
                rcode: rcode::NOERROR,
                truncated: true
            }
        );
        assert!(out.len() <= bytes.len());
    }

    /// RFC 2782 / RFC 3597 §4: no compression pointer inside SRV RDATA
    /// (Go's resolver before 1.22 rejects the whole answer otherwise).
    #[test]
    fn srv_targets_are_not_compressed() {
        let store = zone();
        for name in ["SMS.rpc.svc.local.", "_grpc._tcp.sms.rpc.svc.local."] {
            let packet = query(name, RecordType::SRV, None);
            let (_, m, bytes) = ask(&store, &packet, Some(MAX_MESSAGE));
            // Walk the answer section: each owner is a 2-octet pointer.
            let mut at = packet.len();
            for _ in 0..m.answers.len() {
                assert_eq!(bytes[at] & 0xc0, 0xc0, "owner is a pointer");
                let rdlen = usize::from(u16::from_be_bytes([bytes[at + 10], bytes[at + 11]]));
                let rdata = &bytes[at + 12..at + 12 + rdlen];
                assert_eq!(
                    name_len(&rdata[6..]),
                    Some(rdlen - 6),
                    "{name}: target in full, no pointer: {rdata:02x?}"
                );
                at += 12 + rdlen;
            }
            assert_eq!(m.answers.len(), 2, "{name}");
        }
    }

    #[test]
    fn an_rrset_over_65535_octets_is_cut_over_tcp_and_rotates() {
        // 5,000 instances on distinct addresses: 80,000 octets of A records,
        // more than any DNS message holds.
        let pairs: Vec<(String, String)> = (0..5000u32)
            .map(|i| {
                (
                    format!("big.rpc/{i}"),
                    format!("10.{}.{}.{}:8000", i >> 16, (i >> 8) & 255, i & 255),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let store = crate::zone::testing::zone(3, 1, &refs);
        let mut seen = std::collections::BTreeSet::new();
        for rtype in [RecordType::A, RecordType::SRV] {
            let packet = query("big.rpc.svc.local.", rtype, Some(1232));
            let (outcome, udp, _) = ask(&store, &packet, None);
            assert!(udp.metadata.truncation, "{rtype}: TC over UDP");
            assert!(udp.answers.is_empty(), "{rtype}: no partial RRset over UDP");
            assert!(matches!(
                outcome,
                Outcome::Answered {
                    truncated: true,
                    ..
                }
            ));
            let mut firsts = std::collections::BTreeSet::new();
            for _ in 0..3 {
                let (outcome, tcp, bytes) = ask(&store, &packet, Some(MAX_MESSAGE));
                assert!(bytes.len() <= MAX_MESSAGE);
                assert!(!tcp.metadata.truncation, "{rtype}: no TC over TCP");
                assert!(matches!(
                    outcome,
                    Outcome::Answered {
                        truncated: false,
                        ..
                    }
                ));
                assert!(tcp.additionals.is_empty(), "glue left out: no room");
                assert!(tcp.edns.is_some(), "OPT still present");
                let n = tcp.answers.len();
                // Whole records fill the message: one more would not fit.
                let per_record = (bytes.len() - HEADER_LEN - 30) / n;
                assert!(
                    n > 1000 && bytes.len() + per_record + 2 > MAX_MESSAGE,
                    "{rtype}: {n} records in {} octets",
                    bytes.len()
                );
                firsts.insert(tcp.answers[0].data.clone());
                if rtype == RecordType::A {
                    seen.extend(a_of(&tcp.answers));
                }
            }
            assert_eq!(firsts.len(), 3, "{rtype}: each query starts elsewhere");
        }
        assert!(
            seen.len() > 4000,
            "rotation reaches most addresses: {}",
            seen.len()
        );
    }

    fn a_of(records: &[hickory_proto::rr::Record]) -> Vec<std::net::Ipv4Addr> {
        records
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn edns_is_echoed_with_do_and_nothing_else() {
        let store = zone();
        let mut message = Message::query();
        message.add_query(Query::query(
            Name::from_ascii("sms.rpc.svc.local.").unwrap(),
            RecordType::A,
        ));
        let mut e = Edns::new();
        e.set_max_payload(4096);
        e.set_dnssec_ok(true);
        message.edns = Some(e);
        let packet = message.to_vec().unwrap();
        let (_, m, _) = ask(&store, &packet, None);
        let edns = m.edns.expect("OPT in the response");
        assert!(edns.flags().dnssec_ok);
        assert_eq!(edns.version(), 0);
        assert!(edns.options().as_ref().is_empty());
    }

    fn cookie_query(name: &str, cookie: &[u8]) -> Vec<u8> {
        let mut message = Message::query();
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.options_mut()
            .insert(EdnsOption::Unknown(10, cookie.to_vec()));
        // Another option before or after the cookie changes nothing.
        e.options_mut()
            .insert(EdnsOption::Unknown(65001, vec![1, 2, 3]));
        message.edns = Some(e);
        message.to_vec().unwrap()
    }

    fn response_cookie(message: &Message) -> Option<Vec<u8>> {
        match message.edns.as_ref()?.option(EdnsCode::Cookie)? {
            EdnsOption::Unknown(10, data) => Some(data.clone()),
            other => panic!("cookie option {other:?}"),
        }
    }

    #[test]
    fn a_client_cookie_gets_a_server_cookie_that_then_verifies() {
        let store = zone();
        let secret = CookieSecret::random();
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let answer = |packet: &[u8], limit: usize| {
            let mut question = parse_query(packet).expect("fast-path query");
            let verdict = question.answer_cookie(&secret, client);
            let mut out = Vec::new();
            respond(&store.load(), &question, limit, 1232, &mut out);
            (
                verdict,
                Message::from_vec(&out).expect("valid response"),
                out,
            )
        };
        let packet = cookie_query("sms.rpc.svc.local.", &[9, 8, 7, 6, 5, 4, 3, 2]);
        let (verdict, first, first_wire) = answer(&packet, 1232);
        assert_eq!(verdict, Some(Verdict::ClientOnly));
        assert_eq!(first.answers.len(), 1);
        let cookie = response_cookie(&first).expect("a cookie in the response");
        assert_eq!(cookie.len(), 24);
        assert_eq!(&cookie[..8], &[9, 8, 7, 6, 5, 4, 3, 2]);
        assert_eq!(cookie[8], 1, "RFC 9018 version");
        // Only the cookie goes back, not the other option.
        assert_eq!(first.edns.as_ref().unwrap().options().as_ref().len(), 1);

        // The client returns it: valid, and sent back as it is (fresh).
        let (verdict, second, _) = answer(&cookie_query("sms.rpc.svc.local.", &cookie), 1232);
        assert_eq!(verdict, Some(Verdict::Valid));
        assert_eq!(response_cookie(&second), Some(cookie.clone()));
        // From another address it is not valid, yet answered.
        let returned = cookie_query("sms.rpc.svc.local.", &cookie);
        let mut question = parse_query(&returned).unwrap();
        assert_eq!(
            question.answer_cookie(&secret, "192.0.2.8".parse().unwrap()),
            Some(Verdict::Invalid)
        );

        // The option's 28 octets count against the limit: at one octet
        // less than the answer needs, the answer gives way to TC.
        let (_, cut, cut_wire) = answer(&packet, first_wire.len() - 1);
        assert!(cut.metadata.truncation);
        assert!(cut.answers.is_empty());
        assert!(cut_wire.len() < first_wire.len());
        assert_eq!(
            response_cookie(&cut).map(|c| c[..8].to_vec()),
            Some(cookie[..8].to_vec())
        );

        // No cookie, no option; a malformed one goes to the full path
        // (FORMERR there).
        let plain = query("sms.rpc.svc.local.", RecordType::A, Some(1232));
        let mut plain = parse_query(&plain).unwrap();
        assert_eq!(plain.answer_cookie(&secret, client), None);
        for bad in [&[1u8; 7][..], &[1; 9], &[1; 15], &[1; 41]] {
            assert!(parse_query(&cookie_query("sms.rpc.svc.local.", bad)).is_none());
        }
    }

    #[test]
    fn slips_are_empty_truncated_responses_with_the_question() {
        let store = zone();
        let packet = cookie_query("SMS.rpc.svc.local.", &[5; 8]);
        let mut question = parse_query(&packet).unwrap();
        question.answer_cookie(&CookieSecret::random(), "192.0.2.1".parse().unwrap());
        let mut out = Vec::new();
        slip(&question, 1232, &mut out);
        let slipped = Message::from_vec(&out).unwrap();
        assert!(slipped.metadata.truncation);
        assert_eq!(slipped.metadata.response_code, ResponseCode::NoError);
        assert!(slipped.answers.is_empty() && slipped.authorities.is_empty());
        assert_eq!(
            &out[HEADER_LEN..HEADER_LEN + question.raw.len()],
            question.raw
        );
        assert_eq!(
            response_cookie(&slipped).map(|c| c[..8].to_vec()),
            Some(vec![5; 8])
        );

        // The full path's: a response cut to its header and question.
        let (_, _, mut full) = ask(
            &store,
            &query("sms.rpc.svc.local.", RecordType::SRV, Some(1232)),
            None,
        );
        let question_end = HEADER_LEN + name_len(&full[HEADER_LEN..]).unwrap() + 4;
        slip_response(&mut full);
        assert_eq!(full.len(), question_end);
        let cut = Message::from_vec(&full).unwrap();
        assert!(cut.metadata.truncation && cut.metadata.authoritative);
        assert_eq!(
            (cut.queries.len(), cut.answers.len(), cut.additionals.len()),
            (1, 0, 0)
        );
        assert!(cut.edns.is_none());
        // A header-only response stays a header.
        let mut header = vec![0x12, 0x34, 0x81, 0x01, 0, 0, 0, 0, 0, 0, 0, 0];
        slip_response(&mut header);
        assert_eq!(header.len(), HEADER_LEN);
        assert_eq!(header[2] & 0x02, 0x02);
    }

    #[test]
    fn the_question_is_echoed_byte_for_byte() {
        let store = zone();
        let packet = query("SmS.RpC.SvC.LoCaL.", RecordType::A, None);
        let (_, _, out) = ask(&store, &packet, None);
        let qlen = packet.len() - HEADER_LEN;
        assert_eq!(&out[HEADER_LEN..HEADER_LEN + qlen], &packet[HEADER_LEN..]);
    }

    #[test]
    fn the_parser_sends_the_unusual_to_the_full_path() {
        let good = query("sms.rpc.svc.local.", RecordType::A, Some(1232));
        assert!(parse_query(&good).is_some());
        let mut response = good.clone();
        response[2] |= 0x80;
        assert!(parse_query(&response).is_none(), "a response");
        let mut notify = good.clone();
        notify[2] |= 4 << 3;
        assert!(parse_query(&notify).is_none(), "opcode NOTIFY");
        let mut v1 = good.clone();
        let at = v1.len() - 5; // version octet of the OPT TTL
        v1[at] = 1;
        assert!(parse_query(&v1).is_none(), "EDNS version 1");
        let mut trailing = query("sms.rpc.svc.local.", RecordType::A, None);
        trailing.push(0);
        assert!(parse_query(&trailing).is_none(), "trailing garbage");
        assert!(parse_query(&good[..good.len() - 3]).is_none(), "cut short");
        assert!(parse_query(&[0u8; 5]).is_none());
        let mut pointer_loop = query("a.", RecordType::A, None);
        pointer_loop[HEADER_LEN] = 0xC0;
        pointer_loop[HEADER_LEN + 1] = 0x0C;
        assert!(parse_query(&pointer_loop).is_none(), "compressed question");
    }

    #[test]
    fn header_only_errors_never_answer_responses() {
        let mut out = Vec::new();
        let packet = query("a.", RecordType::A, None);
        assert!(header_only_error(&packet, rcode::FORMERR, &mut out));
        assert_eq!(out.len(), HEADER_LEN);
        assert_eq!(out[3] & 0x0F, rcode::FORMERR);
        let mut response = packet.clone();
        response[2] |= 0x80;
        assert!(!header_only_error(&response, rcode::FORMERR, &mut out));
        assert!(!header_only_error(&packet[..5], rcode::FORMERR, &mut out));
    }
}
