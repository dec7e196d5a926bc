//! hickory `RequestHandler` answering from the current zone snapshot.
//!
//! One query, one snapshot: the handler loads the current
//! [`ZoneSnapshot`](crate::zone::ZoneSnapshot) once, classifies the name, picks
//! the prebuilt records, and fits the response to the client's limit (RFC
//! 1035 §4.2.1, RFC 6891 §6.2.5, RFC 2181 §9). hickory parses the request,
//! echoes the question section byte for byte, and encodes the response.

use std::sync::Arc;

use hickory_proto::op::{Edns, Metadata, OpCode, ResponseCode, emit_message_parts};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::{debug, warn};

use crate::zone::{Lookup, ZoneSnapshot, ZoneStore, rotated};

/// The largest UDP payload we advertise and send unless configured
/// otherwise (DNS Flag Day 2020).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;
/// RFC 1035 §4.2.1: UDP messages without EDNS are limited to 512 octets.
pub const CLASSIC_UDP_PAYLOAD: u16 = 512;

/// The DNS request handler over a [`ZoneStore`].
#[derive(Debug, Clone)]
pub struct DnsHandler {
    zone: Arc<ZoneStore>,
    max_udp_payload: u16,
}

impl DnsHandler {
    pub fn new(zone: Arc<ZoneStore>, max_udp_payload: u16) -> Self {
        Self {
            zone,
            max_udp_payload: max_udp_payload.max(CLASSIC_UDP_PAYLOAD),
        }
    }

    /// The EDNS record of our responses: version 0, our buffer size, and
    /// the DO bit copied from the query (RFC 3225 §3); no options and no
    /// other flags (RFC 6891 §6.1.4: undefined flags MUST be zero).
    fn response_edns(&self, request: &Request) -> Option<Edns> {
        let query_edns = request.edns.as_ref()?;
        let mut edns = Edns::new();
        edns.set_max_payload(self.max_udp_payload);
        edns.set_version(0);
        edns.set_dnssec_ok(query_edns.flags().dnssec_ok);
        Some(edns)
    }

    /// The largest response the client can take over this transport.
    fn payload_limit(&self, request: &Request) -> usize {
        match request.protocol() {
            Protocol::Udp => match &request.edns {
                // RFC 6891 §6.2.5: values below 512 MUST be treated as 512.
                Some(edns) => usize::from(
                    edns.max_payload()
                        .max(CLASSIC_UDP_PAYLOAD)
                        .min(self.max_udp_payload),
                ),
                None => usize::from(CLASSIC_UDP_PAYLOAD),
            },
            _ => usize::from(u16::MAX),
        }
    }
}

/// The records of one answer, borrowed from the snapshot.
#[derive(Default)]
struct Answer<'a> {
    rcode: ResponseCode,
    authoritative: bool,
    answers: Vec<&'a Record>,
    authority: Option<&'a Record>,
    additionals: &'a [Record],
}

impl<'a> Answer<'a> {
    fn error(rcode: ResponseCode) -> Self {
        Self {
            rcode,
            ..Self::default()
        }
    }

    fn positive(records: impl Iterator<Item = &'a Record>) -> Self {
        Self {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers: records.collect(),
            ..Self::default()
        }
    }

    /// NOERROR with no records and the SOA in authority (RFC 2308 §2.2).
    fn nodata(snapshot: &'a ZoneSnapshot) -> Self {
        Self {
            rcode: ResponseCode::NoError,
            authoritative: true,
            authority: Some(snapshot.negative_soa()),
            ..Self::default()
        }
    }

    /// NXDOMAIN with the SOA in authority (RFC 2308 §2.1).
    fn nxdomain(snapshot: &'a ZoneSnapshot) -> Self {
        Self {
            rcode: ResponseCode::NXDomain,
            authoritative: true,
            authority: Some(snapshot.negative_soa()),
            ..Self::default()
        }
    }
}

/// Picks the answer to `qtype` at the name `lookup` found.
fn answer<'a>(snapshot: &'a ZoneSnapshot, lookup: Lookup<'a>, qtype: RecordType) -> Answer<'a> {
    use RecordType::{A, AAAA, ANY, CNAME, NS, SOA, SRV};
    let or_nodata = |answer: Answer<'a>| {
        if answer.answers.is_empty() {
            Answer::nodata(snapshot)
        } else {
            answer
        }
    };
    match lookup {
        Lookup::Apex => match qtype {
            // RFC 8482 §4.1: answer ANY with one RRset the name has.
            SOA | ANY => Answer::positive(std::iter::once(snapshot.soa())),
            NS => Answer::positive(std::iter::once(snapshot.ns())),
            _ => Answer::nodata(snapshot),
        },
        Lookup::Service(service) => {
            let rotation = service.next_rotation();
            let rrset = match qtype {
                A => service.a(),
                AAAA => service.aaaa(),
                SRV => service.srv(),
                ANY => [service.a(), service.aaaa(), service.srv()]
                    .into_iter()
                    .find(|set| !set.is_empty())
                    .unwrap_or_default(),
                _ => &[],
            };
            let mut answer = Answer::positive(rotated(rrset, rotation));
            if rrset.first().is_some_and(|r| r.record_type() == SRV) {
                answer.additionals = service.glue();
            }
            or_nodata(answer)
        }
        Lookup::GrpcService(service) => match qtype {
            SRV | ANY => {
                let mut answer =
                    Answer::positive(rotated(service.grpc_srv(), service.next_rotation()));
                answer.additionals = service.glue();
                or_nodata(answer)
            }
            _ => Answer::nodata(snapshot),
        },
        Lookup::Instance(_, record) => {
            let rtype = record.record_type();
            // RFC 1034 §3.6.2: a name with a CNAME has no other data, and
            // every query for it gets the CNAME.
            if rtype == CNAME || qtype == rtype || qtype == ANY {
                Answer::positive(std::iter::once(record))
            } else {
                Answer::nodata(snapshot)
            }
        }
        Lookup::EmptyNonTerminal => Answer::nodata(snapshot),
        Lookup::NxDomain => Answer::nxdomain(snapshot),
    }
}

/// The size of the response as hickory will encode it (with name
/// compression), so we can decide about glue and TC before sending.
fn encoded_len(
    request: &Request,
    metadata: &Metadata,
    answers: &[&Record],
    authority: Option<&Record>,
    additionals: &[Record],
    edns: Option<&Edns>,
) -> usize {
    let mut buf = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut buf);
    // Emit the question exactly as hickory does (the client's bytes), and
    // let answer names compress against it.
    let question = request.queries.as_bytes();
    let result = encoder.emit_vec(&[0u8; 12]).and_then(|()| {
        let start = encoder.offset();
        encoder.emit_vec(question)?;
        encoder.store_label_pointer(start, start + question.len());
        Ok(())
    });
    if result.is_err() {
        return usize::MAX;
    }
    let mut no_queries = std::iter::empty::<&Record>();
    match emit_message_parts(
        metadata,
        &mut no_queries,
        &mut answers.iter().copied(),
        &mut authority.into_iter(),
        &mut additionals.iter(),
        edns,
        None,
        &mut encoder,
    ) {
        // emit_message_parts placed a second header after ours; don't count it.
        Ok(_) => buf.len().saturating_sub(12),
        Err(_) => usize::MAX,
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = self.response_edns(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);

        let snapshot = self.zone.load();
        let answer = if request.metadata.op_code != OpCode::Query {
            // RFC 1035 §4.1.1: NOTIMP for a kind of query we do not support.
            Answer::error(ResponseCode::NotImp)
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            // RFC 6891 §6.1.3: a version we don't implement gets BADVERS,
            // answered with version 0 (the highest we support).
            Answer::error(ResponseCode::BADVERS)
        } else if request.queries.queries().len() != 1 {
            Answer::error(ResponseCode::FormErr)
        } else {
            let query = &request.queries.queries()[0];
            let qtype = query.query_type();
            let name = query.name();
            match snapshot.lookup(name) {
                _ if query.query_class() != DNSClass::IN => Answer::error(ResponseCode::Refused),
                // Zone transfers are refused (SPEC §4, §7).
                _ if matches!(qtype, RecordType::AXFR | RecordType::IXFR) => {
                    Answer::error(ResponseCode::Refused)
                }
                // Outside the zone: not an open resolver.
                None => Answer::error(ResponseCode::Refused),
                Some(lookup) => answer(&snapshot, lookup, qtype),
            }
        };

        metadata.response_code = answer.rcode;
        metadata.authoritative = answer.authoritative;

        // Fit the client's limit: drop glue first (RFC 2181 §9: no TC for
        // that), and if the answer itself does not fit, send TC with no
        // records rather than a partial RRset.
        let limit = self.payload_limit(request);
        let mut additionals = answer.additionals;
        let mut answers = answer.answers.as_slice();
        let mut authority = answer.authority;
        if request.protocol() == Protocol::Udp
            && encoded_len(
                request,
                &metadata,
                answers,
                authority,
                additionals,
                edns.as_ref(),
            ) > limit
        {
            additionals = &[];
            if encoded_len(
                request,
                &metadata,
                answers,
                authority,
                additionals,
                edns.as_ref(),
            ) > limit
            {
                answers = &[];
                authority = None;
                metadata.truncation = true;
            }
        }

        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            answers.iter().copied(),
            authority,
            std::iter::empty(),
            additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                warn!(id = request.metadata.id, %error, "failed to send a DNS response");
                metadata.response_code = ResponseCode::ServFail;
                debug!(
                    id = request.metadata.id,
                    "reporting SERVFAIL for the failed send"
                );
                ResponseInfo::from(hickory_proto::op::Header {
                    metadata,
                    counts: Default::default(),
                })
            }
        }
    }
}
