//! hickory `RequestHandler`: the full query path, for TCP and for any UDP
//! query the fast path does not fully understand.
//!
//! hickory parses the request (anything unusual: several questions, other
//! opcodes, EDNS versions, malformed OPT records) and encodes the response,
//! echoing the question section byte for byte. The records themselves come
//! from [`crate::serve::answer::respond`], the same code the UDP fast path runs, so
//! both paths answer alike.
//!
//! Names outside the zone reach only this path (the fast path hands them
//! over): they are forwarded through [`crate::serve::forward::Forwarder`] when one
//! is configured and allows the client, else REFUSED. A forwarded answer
//! goes back under the client's ID and question, RA set, AA clear, with our
//! own OPT record, and within the client's UDP limit.

use std::sync::Arc;

use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Record, RecordType};
// `to_bytes` on names comes from BinEncodable.
use hickory_proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tracing::{debug, warn};

use crate::serve::answer::{self, CLASSIC_UDP_PAYLOAD, EdnsQuery, MAX_MESSAGE, Outcome, Question};
use crate::serve::cookie::{self, CookieSecret, QueryCookie};
use crate::serve::forward::{ForwardQuery, Forwarder, Transport};
use crate::zone::ZoneStore;

/// The largest UDP payload we advertise and send unless configured
/// otherwise (DNS Flag Day 2020).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;

/// The DNS request handler over a [`ZoneStore`].
#[derive(Debug, Clone)]
pub struct DnsHandler {
    zone: Arc<ZoneStore>,
    max_udp_payload: u16,
    /// Where names outside the zone go; `None`: REFUSED for everyone.
    forwarder: Option<Forwarder>,
    /// The key of our DNS server cookies.
    cookie_secret: CookieSecret,
}

/// What the full path makes of a request with one well-formed question.
enum Resolution {
    /// Our own answer (inside the zone), complete in wire form.
    Local(Vec<u8>),
    /// A name outside the zone: forward it or refuse it.
    Outside,
}

impl DnsHandler {
    pub fn new(zone: Arc<ZoneStore>, max_udp_payload: u16) -> Self {
        Self {
            zone,
            max_udp_payload: max_udp_payload.max(CLASSIC_UDP_PAYLOAD),
            forwarder: None,
            cookie_secret: CookieSecret::random(),
        }
    }

    /// Makes server cookies with `secret` (shared by replicas behind one
    /// address) instead of a random secret of this process.
    pub fn with_cookie_secret(mut self, secret: CookieSecret) -> Self {
        self.cookie_secret = secret;
        self
    }

    pub fn cookie_secret(&self) -> &CookieSecret {
        &self.cookie_secret
    }

    /// What the DNS cookie of `request` says about its client; `None`
    /// without a (well-formed) cookie.
    pub fn cookie_verdict(&self, request: &Request) -> Option<cookie::Verdict> {
        let query = query_cookie(request.edns.as_ref()?).ok()??;
        let (verdict, _) = self
            .cookie_secret
            .reply(&query, request.src().ip(), cookie::now());
        Some(verdict)
    }

    /// Forwards names outside the zone through `forwarder` (for the clients
    /// it allows) instead of refusing them all.
    pub fn with_forwarding(mut self, forwarder: Forwarder) -> Self {
        self.forwarder = Some(forwarder);
        self
    }

    /// The largest response the client of `request` takes: over UDP, 512
    /// without EDNS, else its buffer size within 512..=ours; over TCP, the
    /// largest message.
    pub fn response_limit(&self, request: &Request) -> u16 {
        match request.protocol() {
            Protocol::Udp => match &request.edns {
                Some(edns) => edns
                    .max_payload()
                    .max(CLASSIC_UDP_PAYLOAD)
                    .min(self.max_udp_payload),
                None => CLASSIC_UDP_PAYLOAD,
            },
            _ => u16::MAX,
        }
    }

    pub fn max_udp_payload(&self) -> u16 {
        self.max_udp_payload
    }

    /// The EDNS record of our responses: version 0, our buffer size, and
    /// the DO bit copied from the query (RFC 3225 §3); no other flags (RFC
    /// 6891 §6.1.4: undefined flags MUST be zero); our COOKIE option when
    /// the query had a well-formed one, no other option.
    fn response_edns(&self, request: &Request) -> Option<Edns> {
        let query_edns = request.edns.as_ref()?;
        let mut edns = Edns::new();
        edns.set_max_payload(self.max_udp_payload);
        edns.set_version(0);
        edns.set_dnssec_ok(query_edns.flags().dnssec_ok);
        if let Ok(Some(query)) = query_cookie(query_edns) {
            let (_, reply) = self
                .cookie_secret
                .reply(&query, request.src().ip(), cookie::now());
            edns.options_mut().insert(EdnsOption::Unknown(
                cookie::OPTION_CODE,
                reply.data().to_vec(),
            ));
        }
        Some(edns)
    }

    /// Answers a request with one well-formed question from the zone, in
    /// wire form; or says the name is outside the zone.
    fn records(&self, request: &Request) -> Result<Resolution, ResponseCode> {
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
        let edns = match &request.edns {
            Some(edns) => Some(EdnsQuery {
                payload: edns.max_payload(),
                dnssec_ok: edns.flags().dnssec_ok,
                cookie: query_cookie(edns)?,
                reply_cookie: None,
            }),
            None => None,
        };
        let mut question = Question {
            id: request.metadata.id,
            rd: request.metadata.recursion_desired,
            cd: request.metadata.checking_disabled,
            raw: request.queries.as_bytes(),
            name: &name,
            qtype: u16::from(query.query_type()),
            qclass: u16::from(query.query_class()),
            edns,
        };
        question.answer_cookie(&self.cookie_secret, request.src().ip());
        let limit = match request.protocol() {
            Protocol::Udp => question.udp_limit(self.max_udp_payload),
            _ => MAX_MESSAGE,
        };
        let mut wire = Vec::with_capacity(512);
        let snapshot = self.zone.guard();
        match answer::respond(&snapshot, &question, limit, self.max_udp_payload, &mut wire) {
            // Outside the zone (class IN, not a transfer: both checked above).
            Outcome::NotHandled => Ok(Resolution::Outside),
            Outcome::Answered { .. } => Ok(Resolution::Local(wire)),
        }
    }

    /// Checks the header, then answers from the zone.
    fn resolve(&self, request: &Request) -> Result<Resolution, ResponseCode> {
        if points_into_header(request.queries.as_bytes(), request.queries.len()) {
            // Not echoable: see `handle_request`.
            Err(ResponseCode::FormErr)
        } else if request.metadata.op_code != OpCode::Query {
            // RFC 1035 §4.1.1: NOTIMP for a kind of query we do not support.
            Err(ResponseCode::NotImp)
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            // RFC 6891 §6.1.3: a version we don't implement gets BADVERS,
            // answered with version 0 (the highest we support).
            Err(ResponseCode::BADVERS)
        } else if request
            .edns
            .as_ref()
            .is_some_and(|e| query_cookie(e).is_err())
        {
            // RFC 7873 §5.2.2.
            Err(ResponseCode::FormErr)
        } else {
            self.records(request)
        }
    }

    /// The full path as our own UDP and TCP loops run it: the response to
    /// `request` in wire form, at most `limit` octets (empty: no answer).
    /// An answer from the zone goes out exactly as [`answer::respond`]
    /// wrote it; everything else (errors, forwarded names) is encoded by
    /// hickory through [`RequestHandler::handle_request`]. Decoding our own
    /// answer and encoding it again would compress it less well, so a
    /// message that [`answer::respond`] filled to the limit would no longer
    /// fit.
    pub async fn answer_bytes(&self, request: &Request) -> Vec<u8> {
        let outcome = match self.resolve(request) {
            Ok(Resolution::Local(wire)) => return wire,
            outcome => outcome,
        };
        let capture = CaptureResponse::new(self.response_limit(request));
        self.send(request, outcome, capture.clone()).await;
        capture.take()
    }

    /// Sends the response to `request` for `outcome` through
    /// `response_handle`: hickory encodes it, echoing the question (unless
    /// it points into the header), with our EDNS, fitted to the limit.
    async fn send<R: ResponseHandler>(
        &self,
        request: &Request,
        outcome: Result<Resolution, ResponseCode>,
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = self.response_edns(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);

        // The question section goes back as the client sent it, byte for
        // byte; a name compressed into the header would point at our
        // header in the response and read as something else (or not at
        // all): such a question is not echoed, and gets FORMERR
        // (`resolve` says so).
        let echoable = !points_into_header(request.queries.as_bytes(), request.queries.len());
        // Reading zero questions from nothing cannot fail.
        let no_queries = Queries::read(&mut BinDecoder::new(&[]), 0).ok();
        let queries = match &no_queries {
            Some(none) if !echoable => none,
            _ => &request.queries,
        };

        let empty: [&[Record]; 3] = [&[], &[], &[]];
        let message = match outcome {
            Ok(Resolution::Local(wire)) => {
                let Ok(message) = Message::from_vec(&wire) else {
                    warn!(id = request.metadata.id, "cannot decode our own answer");
                    return ResponseInfo::from(Header {
                        metadata,
                        counts: Default::default(),
                    });
                };
                metadata.response_code = message.metadata.response_code;
                metadata.authoritative = message.metadata.authoritative;
                metadata.truncation = message.metadata.truncation;
                Some(message)
            }
            // The guard on the snapshot is gone by now: the wait for an
            // upstream holds nothing.
            Ok(Resolution::Outside) => self.forward(request, &mut metadata).await,
            Err(code) => {
                metadata.response_code = code;
                if code == ResponseCode::NotImp {
                    // The flags of an opcode we do not implement mean
                    // nothing we know of: copy none but RD (the response
                    // already has AA, TC, RA and AD clear, and no Z).
                    metadata.checking_disabled = false;
                }
                None
            }
        };
        let [answers, authorities, additionals] = match &message {
            // Our own answers fit the limit as answer::respond encodes
            // them, but hickory encodes them again, larger (it does not
            // compress SRV targets, nor always owners against a long
            // question): fitted here too, like a forwarded one.
            Some(m) => fit_response(
                request,
                edns.as_ref(),
                &mut metadata,
                m,
                usize::from(self.response_limit(request)),
            ),
            None => empty,
        };
        let response = response(
            queries,
            edns.as_ref(),
            metadata,
            [answers, authorities, additionals],
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

    /// A name outside the zone: forwarded when a forwarder allows this
    /// client, else REFUSED (SPEC §7: not an open resolver; with no
    /// upstream, REFUSED for everyone). A forwarded answer keeps the
    /// upstream's RCODE, TC, records and AD (only for a client that asked
    /// for DNSSEC, RFC 6840 §5.8); no upstream answering is SERVFAIL.
    async fn forward(&self, request: &Request, metadata: &mut Metadata) -> Option<Message> {
        let Some(forwarder) = self
            .forwarder
            .as_ref()
            .filter(|f| f.allows(request.src().ip()))
        else {
            metadata.response_code = ResponseCode::Refused;
            return None;
        };
        // We do offer recursion to this client: RA on every answer to it.
        metadata.recursion_available = true;
        let Some(query) = request.queries.queries().first() else {
            metadata.response_code = ResponseCode::FormErr;
            return None;
        };
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let transport = match request.protocol() {
            Protocol::Udp => Transport::Udp {
                // At most 65535 by construction.
                limit: self.response_limit(request),
            },
            _ => Transport::Tcp,
        };
        let forward = ForwardQuery {
            query: query.original().clone(),
            dnssec_ok,
            checking_disabled: request.metadata.checking_disabled,
            transport,
        };
        match forwarder.forward(&forward).await {
            Ok(reply) => {
                metadata.response_code = reply.metadata.response_code;
                metadata.truncation = reply.metadata.truncation;
                metadata.authentic_data =
                    reply.metadata.authentic_data && (dnssec_ok || request.metadata.authentic_data);
                Some(reply)
            }
            Err(error) => {
                debug!(id = request.metadata.id, %error, "forwarding failed; SERVFAIL");
                metadata.response_code = ResponseCode::ServFail;
                None
            }
        }
    }
}

/// The first COOKIE option of a query (RFC 7873 §5.2); FORMERR when it is
/// malformed (§5.2.2).
fn query_cookie(edns: &Edns) -> Result<Option<QueryCookie>, ResponseCode> {
    match edns.option(EdnsCode::Cookie) {
        None => Ok(None),
        Some(EdnsOption::Unknown(_, data)) => QueryCookie::parse(data)
            .map(Some)
            .ok_or(ResponseCode::FormErr),
        Some(_) => Err(ResponseCode::FormErr),
    }
}

/// The full path's parse of a packet the fast path declined, as the UDP
/// and TCP servers (and the fuzz targets) take it: hickory's request; or,
/// when hickory cannot parse it, `None` with a header-only FORMERR in
/// `formerr` (left empty when not even the header can be read); or `None`
/// for a response, which is never answered (no reflection loops).
pub fn full_request(
    packet: &[u8],
    src: std::net::SocketAddr,
    protocol: Protocol,
    formerr: &mut Vec<u8>,
) -> Option<Request> {
    formerr.clear();
    match Request::from_bytes(packet.to_vec(), src, protocol) {
        Ok(request) if request.metadata.message_type == MessageType::Response => None,
        Ok(request) => Some(request),
        Err(error) => {
            debug!(%src, ?protocol, %error, "malformed query");
            // Leaves `formerr` empty when the header cannot be read.
            answer::header_only_error(packet, answer::rcode::FORMERR, formerr);
            None
        }
    }
}

/// A response to `queries` with our `edns` (if any) and these answer,
/// authority and additional records, for hickory to encode.
type Response<'q, 'a> = MessageResponse<
    'q,
    'a,
    std::slice::Iter<'a, Record>,
    std::slice::Iter<'a, Record>,
    std::iter::Empty<&'a Record>,
    std::slice::Iter<'a, Record>,
>;

fn response<'q, 'a>(
    queries: &'q Queries,
    edns: Option<&'q Edns>,
    metadata: Metadata,
    [answers, authorities, additionals]: [&'a [Record]; 3],
) -> Response<'q, 'a> {
    let mut builder = MessageResponseBuilder::new(queries, None);
    if let Some(edns) = edns {
        builder.edns(edns);
    }
    builder.build(
        metadata,
        answers.iter(),
        authorities.iter(),
        std::iter::empty(),
        additionals.iter(),
    )
}

/// Whether the response fits in `limit` octets: encoded as
/// [`CaptureResponse`] will encode it, with nothing cut (hickory's encoder
/// sets TC and drops records when it reaches the limit).
fn fits(
    request: &Request,
    edns: Option<&Edns>,
    metadata: Metadata,
    sections: [&[Record]; 3],
    limit: usize,
) -> bool {
    let response = response(&request.queries, edns, metadata, sections);
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(u16::try_from(limit).unwrap_or(u16::MAX));
    let cut = match response.destructive_emit(&mut encoder) {
        Ok(info) => info.truncation,
        Err(_) => true,
    };
    !cut && bytes.len() <= limit
}

/// Fits an answer (ours or forwarded) into `limit` octets as RFC 2181 §9 asks: the
/// additional section goes first, without TC ("the TC bit should not be
/// set merely because some extra information could have been included");
/// when the answer and authority sections still do not fit, TC is set and
/// no records are sent, never a partial RRset, so the client retries over
/// TCP. A truncated upstream answer is relayed the same way: TC, no records.
fn fit_response<'m>(
    request: &Request,
    edns: Option<&Edns>,
    metadata: &mut Metadata,
    reply: &'m Message,
    limit: usize,
) -> [&'m [Record]; 3] {
    let full = [
        reply.answers.as_slice(),
        reply.authorities.as_slice(),
        reply.additionals.as_slice(),
    ];
    let empty: [&[Record]; 3] = [&[], &[], &[]];
    if metadata.truncation {
        return empty;
    }
    if fits(request, edns, *metadata, full, limit) {
        return full;
    }
    let no_glue = [full[0], full[1], &[]];
    if fits(request, edns, *metadata, no_glue, limit) {
        return no_glue;
    }
    metadata.truncation = true;
    empty
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.send(request, self.resolve(request), response_handle)
            .await
    }
}

/// Whether a name among the `count` questions in `section` (as hickory
/// read them) leads, through any chain of compression pointers, into the
/// 12-octet header: the only part of the query that is not copied
/// unchanged into the response (RFC 1035 §4.1.4 pointers are offsets from
/// the message start, and the question section starts at 12 in both).
/// A pointer may land inside an earlier label's bytes, so the chain is
/// followed, not just the labels at their boundaries. Anything odd (a
/// target outside the section, a chain too long) counts as "into the
/// header": such a question is not echoed.
fn points_into_header(section: &[u8], count: usize) -> bool {
    let header = answer::HEADER_LEN;
    let mut next = 0;
    for _ in 0..count {
        let mut at = next;
        // Where this question's name ends in place (after its first
        // pointer, or its root label).
        let mut end = None;
        // A name is at most 255 octets, so at most 128 labels; hickory
        // only lets pointers go backwards, so chains end.
        for _ in 0..=255 {
            let Some(&len) = section.get(at) else {
                return true;
            };
            if len & 0xC0 == 0xC0 {
                let Some(&low) = section.get(at + 1) else {
                    return true;
                };
                end.get_or_insert(at + 2);
                let target = usize::from(u16::from_be_bytes([len & 0x3F, low]));
                if target < header || target - header >= section.len() {
                    return true;
                }
                at = target - header;
            } else if len == 0 {
                end.get_or_insert(at + 1);
                break;
            } else {
                at += 1 + usize::from(len);
            }
        }
        let Some(end) = end else {
            return true;
        };
        // Type and class.
        next = end + 4;
    }
    false
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

    fn zone() -> Arc<ZoneStore> {
        crate::zone::testing::zone(
            5,
            3,
            &[
                ("sms.rpc/1", "10.0.0.5:8001"),
                ("v6.rpc/1", "[fd00::5]:8001"),
            ],
        )
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

    /// Over TCP the full path also cuts an RRset too large for any message
    /// to what fits, without TC, exactly as the fast path does.
    fn cookie_of(message: &Message) -> Option<Vec<u8>> {
        match message.edns.as_ref()?.option(EdnsCode::Cookie)? {
            EdnsOption::Unknown(_, data) => Some(data.clone()),
            _ => None,
        }
    }

    /// DNS cookies on the full path: the same cookie as the fast path for
    /// an answer, a cookie on errors and refusals too, FORMERR for a
    /// malformed option.
    #[tokio::test]
    async fn cookies_on_the_full_path() {
        let store = zone();
        let handler = DnsHandler::new(store.clone(), 1232);
        let ask = |name: &str, cookie: &[u8]| {
            let mut query = Message::query();
            query.metadata.id = 9;
            query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            let mut e = Edns::new();
            e.set_max_payload(1232);
            e.options_mut()
                .insert(EdnsOption::Unknown(10, cookie.to_vec()));
            query.edns = Some(e);
            query.to_vec().unwrap()
        };
        // A first contact: both paths make a server cookie for the client.
        let packet = ask("sms.rpc.svc.local.", &[1, 2, 3, 4, 5, 6, 7, 8]);
        let full = full_path(&handler, &packet).await;
        let cookie = cookie_of(&full).expect("a cookie from the full path");
        assert_eq!(
            (cookie.len(), &cookie[..8]),
            (24, &[1, 2, 3, 4, 5, 6, 7, 8][..])
        );
        // Returned, it is valid on both paths and goes back unchanged.
        let again = ask("sms.rpc.svc.local.", &cookie);
        let full = full_path(&handler, &again).await;
        let mut question = answer::parse_query(&again).unwrap();
        let verdict = question.answer_cookie(handler.cookie_secret(), "127.0.0.1".parse().unwrap());
        assert_eq!(verdict, Some(cookie::Verdict::Valid));
        let mut out = Vec::new();
        answer::respond(&store.load(), &question, 1232, 1232, &mut out);
        let fast = Message::from_vec(&out).unwrap();
        assert_eq!(full.edns, fast.edns);
        assert_eq!(cookie_of(&fast), Some(cookie.clone()));
        assert_eq!(full.answers, fast.answers);

        // Refused (outside the zone): still a cookie.
        let refused = full_path(&handler, &ask("example.com.", &cookie)).await;
        assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
        assert_eq!(cookie_of(&refused), Some(cookie.clone()));

        // Malformed (RFC 7873 §5.2.2): FORMERR, with our OPT, no cookie.
        for bad in [&[1u8; 7][..], &[1; 12], &[1; 41]] {
            let formerr = full_path(&handler, &ask("sms.rpc.svc.local.", bad)).await;
            assert_eq!(
                formerr.metadata.response_code,
                ResponseCode::FormErr,
                "{bad:?}"
            );
            assert!(formerr.answers.is_empty());
            assert!(formerr.edns.is_some());
            assert_eq!(cookie_of(&formerr), None);
        }
    }

    #[tokio::test]
    async fn the_full_path_cuts_a_huge_rrset_over_tcp_like_the_fast_path() {
        let pairs: Vec<(String, String)> = (0..5000u32)
            .map(|i| {
                (
                    format!("big.rpc/{i}"),
                    format!("10.1.{}.{}:80", i >> 8, i & 255),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let store = crate::zone::testing::zone(5, 3, &refs);
        let handler = DnsHandler::new(store.clone(), 1232);
        for rtype in [RecordType::A, RecordType::SRV] {
            let mut query = Message::query();
            query.metadata.id = 9;
            query.add_query(Query::query(
                Name::from_ascii("big.rpc.svc.local.").unwrap(),
                rtype,
            ));
            let packet = query.to_vec().unwrap();
            let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
            let request = Request::from_bytes(packet.clone(), src, Protocol::Tcp).unwrap();
            let bytes = handler.answer_bytes(&request).await;
            let full = Message::from_vec(&bytes).unwrap();
            assert!(!full.metadata.truncation, "{rtype}: no TC over TCP");
            assert_eq!(full.metadata.response_code, ResponseCode::NoError);
            assert!(
                full.answers.len() > 1000,
                "{rtype}: {} records",
                full.answers.len()
            );

            let question = answer::parse_query(&packet).unwrap();
            let mut out = Vec::new();
            answer::respond(&store.load(), &question, MAX_MESSAGE, 1232, &mut out);
            let fast = Message::from_vec(&out).unwrap();
            // Cut at different records (the rotation moved on): SRV
            // records differ in size, so the counts may differ a little.
            let (f, q) = (full.answers.len(), fast.answers.len());
            assert!(f.abs_diff(q) <= f / 50, "{rtype}: {f} vs {q} records");
        }
    }

    /// A fake upstream on loopback UDP: answers each query with what
    /// `answer` makes of it, under the query's ID and question.
    async fn fake_upstream(answer: fn(&mut Message)) -> SocketAddr {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                let query = Message::from_vec(&buf[..len]).unwrap();
                let mut reply = Message::response(query.metadata.id, OpCode::Query);
                reply.metadata.recursion_desired = true;
                reply.metadata.recursion_available = true;
                reply.add_queries(query.queries.clone());
                answer(&mut reply);
                let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
            }
        });
        addr
    }

    fn a_record(name: &str, last: u8) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            60,
            hickory_proto::rr::RData::A(std::net::Ipv4Addr::new(192, 0, 2, last).into()),
        )
    }

    fn forwarding(upstream: SocketAddr, allow: &str) -> DnsHandler {
        let forwarder = Forwarder::new(vec![upstream], vec![allow.parse().unwrap()]);
        DnsHandler::new(zone(), 1232).with_forwarding(forwarder)
    }

    fn outside_query(edns: Option<u16>) -> Vec<u8> {
        let mut query = Message::query();
        query.metadata.id = 99;
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(
            Name::from_ascii("WWW.Example.Test.").unwrap(),
            RecordType::A,
        ));
        if let Some(payload) = edns {
            let mut e = Edns::new();
            e.set_max_payload(payload);
            query.edns = Some(e);
        }
        query.to_vec().unwrap()
    }

    /// A forwarded answer: the client's ID and question bytes, RA set, AA
    /// clear even when the upstream set it, our own OPT.
    #[tokio::test]
    async fn a_forwarded_answer_is_the_clients_not_the_upstreams() {
        let upstream = fake_upstream(|reply| {
            reply.metadata.authoritative = true;
            reply.add_answer(a_record("www.example.test.", 7));
        })
        .await;
        let handler = forwarding(upstream, "127.0.0.0/8");
        let packet = outside_query(Some(4096));
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let request = Request::from_bytes(packet.clone(), src, Protocol::Udp).unwrap();
        let capture = CaptureResponse::new(4096);
        handler
            .handle_request::<_, TokioTime>(&request, capture.clone())
            .await;
        let bytes = capture.take();
        let question = &packet[12..packet.len() - 11];
        assert_eq!(&bytes[12..12 + question.len()], question);
        let response = Message::from_vec(&bytes).unwrap();
        assert_eq!(response.metadata.id, 99);
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.metadata.recursion_available);
        assert!(!response.metadata.authoritative);
        assert_eq!(response.answers, vec![a_record("www.example.test.", 7)]);
        assert_eq!(response.edns.unwrap().max_payload(), 1232);
    }

    #[tokio::test]
    async fn a_client_not_allowed_is_refused_without_asking_upstream() {
        let upstream = fake_upstream(|reply| {
            reply.add_answer(a_record("www.example.test.", 7));
        })
        .await;
        let handler = forwarding(upstream, "10.0.0.0/8");
        let response = full_path(&handler, &outside_query(None)).await;
        assert_eq!(response.metadata.response_code, ResponseCode::Refused);
        assert!(!response.metadata.recursion_available);
        assert!(response.answers.is_empty());
    }

    /// An upstream answer too big for the client's UDP limit: glue goes
    /// first without TC; then TC and no records, never a partial RRset.
    #[tokio::test]
    async fn a_forwarded_answer_fits_the_clients_limit() {
        let glue_only = fake_upstream(|reply| {
            reply.add_answer(a_record("www.example.test.", 1));
            for last in 0..40 {
                reply.add_additional(a_record("glue.example.test.", last));
            }
        })
        .await;
        let response = full_path(&forwarding(glue_only, "127.0.0.0/8"), &outside_query(None)).await;
        assert!(!response.metadata.truncation);
        assert_eq!(response.answers.len(), 1);
        assert!(response.additionals.is_empty());

        let big = fake_upstream(|reply| {
            for last in 0..40 {
                reply.add_answer(a_record("www.example.test.", last));
            }
        })
        .await;
        let handler = forwarding(big, "127.0.0.0/8");
        let response = full_path(&handler, &outside_query(None)).await;
        assert!(response.metadata.truncation);
        assert!(response.answers.is_empty());
        assert!(response.metadata.recursion_available);
        // With room for it, the whole answer.
        let response = full_path(&handler, &outside_query(Some(1232))).await;
        assert!(!response.metadata.truncation);
        assert_eq!(response.answers.len(), 40);
    }

    /// Found by fuzzing (request_path, differential check): the full path
    /// decodes our wire answer and hickory encodes it again, larger (SRV
    /// targets uncompressed). `mid.rpc SRV` with EDNS 1232 and 25
    /// instances fits as the fast path writes it, but hickory's encoder
    /// cut it at the limit: TC with 21 of the 25 SRV records, a partial
    /// RRset. Now the full path fits its own answers like forwarded ones:
    /// glue first, then TC with no records.
    #[tokio::test]
    async fn the_full_path_never_sends_a_partial_rrset() {
        let entries: Vec<(String, String)> = (0..25)
            .map(|i| {
                (
                    format!("mid.rpc/{}", 7_000_000_000_000_000_000u64 + i),
                    format!("10.6.0.{}:7000", i + 1),
                )
            })
            .collect();
        let entries: Vec<(&str, &str)> = entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let handler = DnsHandler::new(crate::zone::testing::zone(5, 3, &entries), 1232);
        for payload in [512, 1232] {
            let mut query = Message::query();
            query.add_query(Query::query(
                Name::from_ascii("mid.rpc.svc.local.").unwrap(),
                RecordType::SRV,
            ));
            let mut e = Edns::new();
            e.set_max_payload(payload);
            query.edns = Some(e);
            let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
            let request = Request::from_bytes(query.to_vec().unwrap(), src, Protocol::Udp).unwrap();
            let capture = CaptureResponse::new(payload);
            handler
                .handle_request::<_, TokioTime>(&request, capture.clone())
                .await;
            let bytes = capture.take();
            assert!(
                bytes.len() <= usize::from(payload),
                "{payload}: {} octets",
                bytes.len()
            );
            let response = Message::from_vec(&bytes).unwrap();
            let answers = response.answers.len();
            if response.metadata.truncation {
                assert_eq!(answers, 0, "{payload}: TC with a partial RRset");
            } else {
                assert_eq!(answers, 25, "{payload}: no TC, so every SRV record");
            }
        }
    }

    /// Found by fuzzing (request_path): a question whose name is a
    /// pointer into the header (`c0 02`: offset 2, the flags) was echoed
    /// as is; in the response the flags differ (0x81...), so the echoed
    /// name read as an unknown label type and the REFUSED response did not
    /// parse. Such a question now gets FORMERR without an echo.
    #[tokio::test]
    async fn a_question_compressed_into_the_header_gets_formerr() {
        let handler = DnsHandler::new(zone(), 1232);
        let packet = [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x02, 0, 1, 0, 1,
        ];
        let response = full_path(&handler, &packet).await;
        assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(response.metadata.id, 0x1234);
        assert!(response.queries.is_empty(), "{:?}", response.queries);
        // A pointer within the question section is echoed as before.
        assert!(!points_into_header(
            &[1, b'a', 0, 0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1],
            2
        ));
        assert!(points_into_header(&[1, b'a', 0xc0, 11, 0, 1, 0, 1], 1));
    }

    /// Found by fuzzing (request_path, 30 M executions in): the same
    /// header pointer hidden inside an earlier label's bytes. Question 1 is
    /// the label `c0 02`; question 2 points at that label's content, which
    /// reads as a pointer to offset 2. Walking labels at their boundaries
    /// missed it, and the echoed question read differently in the response.
    #[tokio::test]
    async fn a_header_pointer_hidden_in_a_label_gets_formerr_too() {
        let section = [2, 0xc0, 0x02, 0, 0, 1, 0, 1, 0xc0, 13, 0, 1, 0, 1];
        assert!(points_into_header(&section, 2));
        assert!(!points_into_header(&section[..8], 1), "question 1 alone");
        let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 2, 0, 0, 0, 0, 0, 0];
        packet.extend_from_slice(&section);
        let handler = DnsHandler::new(zone(), 1232);
        let response = full_path(&handler, &packet).await;
        assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
        assert!(response.queries.is_empty(), "{:?}", response.queries);
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
