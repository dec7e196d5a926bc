//! hickory `RequestHandler`: the full query path, for TCP and for any UDP
//! query the fast path does not fully understand.
//!
//! hickory parses the request (anything unusual: several questions, other
//! opcodes, EDNS versions, malformed OPT records) and encodes the response,
//! echoing the question section byte for byte. The records themselves come
//! from [`crate::answer::respond`], the same code the UDP fast path runs, so
//! both paths answer alike.

use std::sync::Arc;

use hickory_proto::op::{Edns, Header, Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
// `to_bytes` on names comes from BinEncodable.
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use tracing::{debug, warn};

use crate::answer::{self, CLASSIC_UDP_PAYLOAD, EdnsQuery, MAX_MESSAGE, Outcome, Question};
use crate::zone::ZoneStore;

/// The largest UDP payload we advertise and send unless configured
/// otherwise (DNS Flag Day 2020).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;

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

    pub fn max_udp_payload(&self) -> u16 {
        self.max_udp_payload
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

    /// Answers a request with one well-formed question: the records, the
    /// flags and the RCODE, decoded from the wire answer.
    fn records(&self, request: &Request) -> Result<Message, ResponseCode> {
        let queries = request.queries.queries();
        let [query] = queries else {
            return Err(ResponseCode::FormErr);
        };
        if query.query_class() != DNSClass::IN {
            return Err(ResponseCode::Refused);
        }
        // Zone transfers are refused (SPEC §4, §7).
        if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
            return Err(ResponseCode::Refused);
        }
        let name = query.name().to_bytes().map_err(|_| ResponseCode::FormErr)?;
        let question = Question {
            id: request.metadata.id,
            rd: request.metadata.recursion_desired,
            cd: request.metadata.checking_disabled,
            raw: request.queries.as_bytes(),
            name: &name,
            qtype: u16::from(query.query_type()),
            qclass: u16::from(query.query_class()),
            edns: request.edns.as_ref().map(|edns| EdnsQuery {
                payload: edns.max_payload(),
                dnssec_ok: edns.flags().dnssec_ok,
            }),
        };
        let limit = match request.protocol() {
            Protocol::Udp => question.udp_limit(self.max_udp_payload),
            _ => MAX_MESSAGE,
        };
        let mut wire = Vec::with_capacity(512);
        let snapshot = self.zone.guard();
        match answer::respond(&snapshot, &question, limit, self.max_udp_payload, &mut wire) {
            // Outside the zone: not an open resolver.
            Outcome::NotHandled => Err(ResponseCode::Refused),
            Outcome::Answered { .. } => Message::from_vec(&wire).map_err(|error| {
                warn!(id = request.metadata.id, %error, "cannot decode our own answer");
                ResponseCode::ServFail
            }),
        }
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

        let outcome = if request.metadata.op_code != OpCode::Query {
            // RFC 1035 §4.1.1: NOTIMP for a kind of query we do not support.
            Err(ResponseCode::NotImp)
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            // RFC 6891 §6.1.3: a version we don't implement gets BADVERS,
            // answered with version 0 (the highest we support).
            Err(ResponseCode::BADVERS)
        } else {
            self.records(request)
        };

        let empty: Vec<Record> = Vec::new();
        let message = match outcome {
            Ok(message) => {
                metadata.response_code = message.metadata.response_code;
                metadata.authoritative = message.metadata.authoritative;
                metadata.truncation = message.metadata.truncation;
                Some(message)
            }
            Err(code) => {
                metadata.response_code = code;
                None
            }
        };
        let (answers, authorities, additionals) = match &message {
            Some(m) => (&m.answers, &m.authorities, &m.additionals),
            None => (&empty, &empty, &empty),
        };
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            answers.iter(),
            authorities.iter(),
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
                ResponseInfo::from(Header {
                    metadata,
                    counts: Default::default(),
                })
            }
        }
    }
}

/// A [`ResponseHandler`] that encodes the response into a buffer instead
/// of sending it: the UDP fast path hands unusual queries to the
/// [`DnsHandler`] through it and sends the bytes itself.
#[derive(Debug, Clone)]
pub struct CaptureResponse {
    /// The client's UDP limit for this response.
    limit: u16,
    bytes: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl CaptureResponse {
    pub fn new(limit: u16) -> Self {
        Self {
            limit,
            bytes: Arc::default(),
        }
    }

    /// The encoded response (empty if none was sent).
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(
            &mut *self
                .bytes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

#[async_trait::async_trait]
impl ResponseHandler for CaptureResponse {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(self.limit);
        let info = response
            .destructive_emit(&mut encoder)
            .map_err(|e| hickory_server::net::NetError::from(e.to_string()))?;
        *self
            .bytes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = bytes;
        Ok(info)
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::Name;
    use hickory_server::net::runtime::TokioTime;

    use super::*;
    use crate::registration::{Endpoint, Registration};
    use crate::zone::{ZoneParams, ZoneWriter};

    fn zone() -> Arc<ZoneStore> {
        let store = Arc::new(ZoneStore::new(ZoneParams {
            origin: Name::from_ascii("svc.local.").unwrap(),
            ttl: 5,
            negative_ttl: 5,
        }));
        let mut writer = ZoneWriter::new(store.clone());
        for (key, addr) in [("sms.rpc/1", "10.0.0.5"), ("v6.rpc/1", "fd00::5")] {
            let (service, id) = key.split_once('/').unwrap();
            writer.upsert(
                key.as_bytes(),
                Registration {
                    service: service.into(),
                    instance_id: id.into(),
                    endpoint: Endpoint::Ip {
                        addr: addr.parse().unwrap(),
                        port: 8001,
                    },
                },
            );
        }
        writer.set_revision(3);
        writer.publish();
        store
    }

    async fn full_path(handler: &DnsHandler, packet: &[u8]) -> Message {
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let request = Request::from_bytes(packet.to_vec(), src, Protocol::Udp).unwrap();
        let capture = CaptureResponse::new(4096);
        handler
            .handle_request::<_, TokioTime>(&request, capture.clone())
            .await;
        Message::from_vec(&capture.take()).unwrap()
    }

    fn fast_path(store: &ZoneStore, packet: &[u8]) -> Message {
        let question = answer::parse_query(packet).unwrap();
        let mut out = Vec::new();
        let outcome = answer::respond(
            &store.load(),
            &question,
            question.udp_limit(1232),
            1232,
            &mut out,
        );
        assert!(matches!(outcome, Outcome::Answered { .. }));
        Message::from_vec(&out).unwrap()
    }

    /// The two paths give the same answer to the same query: same header
    /// flags and RCODE, same records in every section, same EDNS.
    #[tokio::test]
    async fn full_path_and_fast_path_agree() {
        let store = zone();
        let handler = DnsHandler::new(store.clone(), 1232);
        let cases = [
            ("sms.rpc.svc.local.", RecordType::A),
            ("SMS.rpc.svc.local.", RecordType::SRV),
            ("_grpc._tcp.sms.rpc.svc.local.", RecordType::SRV),
            ("1.sms.rpc.svc.local.", RecordType::A),
            ("v6.rpc.svc.local.", RecordType::A),
            ("rpc.svc.local.", RecordType::TXT),
            ("nope.svc.local.", RecordType::A),
            ("svc.local.", RecordType::SOA),
            ("svc.local.", RecordType::NS),
            ("sms.rpc.svc.local.", RecordType::ANY),
        ];
        for (name, rtype) in cases {
            for edns in [None, Some(4096)] {
                let mut query = Message::query();
                query.metadata.id = 7;
                query.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
                if let Some(payload) = edns {
                    let mut e = Edns::new();
                    e.set_max_payload(payload);
                    query.edns = Some(e);
                }
                let packet = query.to_vec().unwrap();
                let full = full_path(&handler, &packet).await;
                let fast = fast_path(&store, &packet);
                let case = format!("{name} {rtype} edns={edns:?}");
                assert_eq!(full.metadata, fast.metadata, "{case}");
                assert_eq!(full.queries, fast.queries, "{case}");
                assert_eq!(full.answers, fast.answers, "{case}");
                assert_eq!(full.authorities, fast.authorities, "{case}");
                assert_eq!(full.additionals, fast.additionals, "{case}");
                assert_eq!(full.edns, fast.edns, "{case}");
            }
        }
    }

    #[tokio::test]
    async fn the_full_path_refuses_what_it_must() {
        let store = zone();
        let handler = DnsHandler::new(store, 1232);
        for (name, rtype, want) in [
            ("example.com.", RecordType::A, ResponseCode::Refused),
            ("svc.local.", RecordType::AXFR, ResponseCode::Refused),
            ("svc.local.", RecordType::IXFR, ResponseCode::Refused),
        ] {
            let mut query = Message::query();
            query.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
            let response = full_path(&handler, &query.to_vec().unwrap()).await;
            assert_eq!(response.metadata.response_code, want, "{name} {rtype}");
            assert!(!response.metadata.authoritative || want != ResponseCode::Refused);
        }
    }
}
