//! Forwarding of names outside the zone to the configured upstream
//! resolvers, for clients allowed to recurse (SPEC §4 last row, §7).
//!
//! Not an open resolver: with no upstream configured, or for a client
//! outside `dns.allow_recursion_from`, [`Forwarder::allows`] is false and
//! the caller answers REFUSED.
//!
//! ```text
//!  dns.rs (name outside the zone, client allowed)
//!     │ Forwarder::forward(question, transport)
//!     ▼
//!  upstream 1 ──(timeout / error / bad reply)──▶ upstream 2 ──▶ … ──▶ Err: SERVFAIL
//!     │ reply with our random ID and our question
//!     ▼
//!  Message (records, RCODE, TC) ──▶ dns.rs re-headers it for the client
//! ```
//!
//! Each exchange uses a fresh socket: a random source port (Linux picks
//! ephemeral ports at random) and a random query ID from a CSPRNG, and a
//! reply is accepted only when it comes from the upstream's address
//! (connected socket), carries our ID, is a response, and echoes our
//! question (RFC 5452 §9.1). Anything else is ignored and the wait goes on
//! until the attempt's deadline.
//!
//! A UDP client's query goes upstream over UDP advertising the client's own
//! limit, so the upstream's answer fits it; a truncated upstream answer is
//! relayed as truncated (the client retries over TCP). A TCP client's query
//! goes upstream over TCP, so it gets the full answer.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::debug;

use crate::serve::answer::{CLASSIC_UDP_PAYLOAD, MAX_MESSAGE};

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/// Total time one forwarded query may take over all upstreams. Stub
/// resolvers retry after 5 s (glibc's default `timeout:5`), so the client
/// gets our SERVFAIL before it gives up on us.
pub const FORWARD_BUDGET: Duration = Duration::from_millis(4000);
/// The longest wait for one upstream. A resolver on the same network
/// answers a cached name in milliseconds and most uncached ones well
/// within this.
pub const MAX_UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1500);
/// The shortest wait for one upstream, however many are configured; the
/// upstreams beyond the budget are not tried.
pub const MIN_UPSTREAM_TIMEOUT: Duration = Duration::from_millis(400);
/// Forwarded queries in flight at once. Each holds a socket for up to
/// [`FORWARD_BUDGET`]; beyond this (a flood towards a dead upstream) a
/// query gets SERVFAIL at once instead of exhausting file descriptors.
pub const MAX_IN_FLIGHT: usize = 1024;

// ---------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------

/// How the client's query reached us, which decides how it goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Over UDP, with the client's response size limit (512 without EDNS,
    /// else its buffer size capped at ours): advertised upstream.
    Udp { limit: u16 },
    /// Over TCP: forwarded over TCP for the whole answer.
    Tcp,
}

/// The client's query, as it goes upstream.
#[derive(Debug, Clone)]
pub struct ForwardQuery {
    /// The question as the client sent it (letter case kept).
    pub query: Query,
    /// The client's DO bit (RFC 3225): DNSSEC records only when asked.
    pub dnssec_ok: bool,
    /// The client's CD bit (RFC 4035 §3.2.2), passed on.
    pub checking_disabled: bool,
    pub transport: Transport,
}

/// Why no upstream answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    #[error("no upstream resolver answered ({tried} tried)")]
    NoAnswer { tried: usize },
    #[error("too many forwarded queries in flight ({MAX_IN_FLIGHT})")]
    Busy,
    #[error("failed to encode the upstream query: {0}")]
    Encode(String),
}

/// Why one exchange with one upstream failed: the caller moves on to the
/// next upstream in every case.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("unusable reply: {0}")]
    Reply(String),
}

/// The upstream resolvers and who may use them.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Arc<[SocketAddr]>,
    allow: Arc<[IpNet]>,
    /// Bounds the queries in flight ([`MAX_IN_FLIGHT`]).
    in_flight: Arc<Semaphore>,
}

// ---------------------------------------------------------------------------
// Forwarder
// ---------------------------------------------------------------------------

impl Forwarder {
    /// Forwards to `upstreams`, in order, for clients inside
    /// `allow_recursion_from`.
    pub fn new(upstreams: Vec<SocketAddr>, allow_recursion_from: Vec<IpNet>) -> Self {
        Self {
            upstreams: upstreams.into(),
            allow: allow_recursion_from.into(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Whether `client` may have its out-of-zone query forwarded: only
    /// when an upstream is configured and the client is inside
    /// `allow_recursion_from` (SPEC §7: not an open resolver).
    pub fn allows(&self, client: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let client = client.to_canonical();
        !self.upstreams.is_empty() && self.allow.iter().any(|net| net.contains(&client))
    }

    /// The wait for each upstream: the budget shared among them, within
    /// [`MIN_UPSTREAM_TIMEOUT`]..=[`MAX_UPSTREAM_TIMEOUT`].
    pub fn attempt_timeout(&self) -> Duration {
        attempt_timeout(self.upstreams.len())
    }

    /// Sends `query` to each upstream in turn until one gives a usable
    /// answer. An upstream that times out, fails, or answers SERVFAIL,
    /// REFUSED, NOTIMP or FORMERR is passed over for the next one; when
    /// none answers within [`FORWARD_BUDGET`], the error (SERVFAIL for the
    /// client). The reply is returned as the upstream sent it: the caller
    /// gives it the client's header and question.
    pub async fn forward(&self, query: &ForwardQuery) -> Result<Message, ForwardError> {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Err(ForwardError::Busy);
        };
        let per_attempt = self.attempt_timeout();
        let deadline = Instant::now() + FORWARD_BUDGET;
        let mut tried = 0;
        for &upstream in self.upstreams.iter() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let timeout = per_attempt.min(deadline - now);
            tried += 1;
            let id: u16 = rand::random();
            let packet = upstream_query(query, id)?;
            match tokio::time::timeout(timeout, exchange(upstream, query.transport, &packet, id))
                .await
            {
                Ok(Ok(reply)) => match check_reply(&reply, id, &query.query) {
                    Ok(()) if retry_elsewhere(reply.metadata.response_code) => {
                        debug!(%upstream, rcode = %reply.metadata.response_code, "upstream failed the query; trying the next");
                    }
                    Ok(()) => return Ok(reply),
                    Err(reason) => debug!(%upstream, %reason, "unusable upstream reply"),
                },
                Ok(Err(error)) => debug!(%upstream, %error, "upstream exchange failed"),
                Err(_) => debug!(%upstream, ?timeout, "upstream timed out"),
            }
        }
        Err(ForwardError::NoAnswer { tried })
    }
}

/// The per-upstream wait for `count` upstreams.
fn attempt_timeout(count: usize) -> Duration {
    let share = FORWARD_BUDGET / u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    share.clamp(MIN_UPSTREAM_TIMEOUT, MAX_UPSTREAM_TIMEOUT)
}

/// Upstream answers that say "this server could not", not "this is the
/// answer": another upstream may do better. Extended RCODEs (BADVERS,
/// BADCOOKIE, …) are about our query to it, not an answer for the client.
fn retry_elsewhere(code: ResponseCode) -> bool {
    code.high() > 0
        || matches!(
            code,
            ResponseCode::ServFail
                | ResponseCode::Refused
                | ResponseCode::NotImp
                | ResponseCode::FormErr
        )
}

// ---------------------------------------------------------------------------
// Wire
// ---------------------------------------------------------------------------

/// The query we send upstream: our `id`, RD set (we want recursion), the
/// client's question, CD and DO, and EDNS(0) advertising the client's UDP
/// limit so the answer fits it (over TCP, the largest message).
fn upstream_query(query: &ForwardQuery, id: u16) -> Result<Vec<u8>, ForwardError> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.op_code = OpCode::Query;
    message.metadata.recursion_desired = true;
    message.metadata.checking_disabled = query.checking_disabled;
    message.add_query(query.query.clone());
    let payload = match query.transport {
        Transport::Udp { limit } => limit.max(CLASSIC_UDP_PAYLOAD),
        Transport::Tcp => u16::MAX,
    };
    let mut edns = Edns::new();
    edns.set_version(0);
    edns.set_max_payload(payload);
    edns.set_dnssec_ok(query.dnssec_ok);
    message.set_edns(edns);
    message
        .to_vec()
        .map_err(|e| ForwardError::Encode(e.to_string()))
}

/// Accepts `reply` only when it answers our query: a response to a QUERY,
/// our ID, and exactly our question (name compared without regard to case,
/// RFC 4343; type and class exact). RFC 5452 §9.1: the ID, the question
/// and the source address must match before an answer is accepted.
fn check_reply(reply: &Message, id: u16, question: &Query) -> Result<(), String> {
    if reply.metadata.message_type != MessageType::Response {
        return Err("not a response".into());
    }
    if reply.metadata.id != id {
        return Err(format!("id {} for query id {id}", reply.metadata.id));
    }
    if reply.metadata.op_code != OpCode::Query {
        return Err(format!("opcode {:?}", reply.metadata.op_code));
    }
    match reply.queries.as_slice() {
        [echoed]
            if echoed.name() == question.name()
                && echoed.query_type() == question.query_type()
                && echoed.query_class() == question.query_class() =>
        {
            Ok(())
        }
        other => Err(format!("question {other:?} for {question:?}")),
    }
}

/// One exchange with `upstream` over `transport`. The caller bounds it
/// with a timeout.
async fn exchange(
    upstream: SocketAddr,
    transport: Transport,
    packet: &[u8],
    id: u16,
) -> Result<Message, AttemptError> {
    match transport {
        Transport::Udp { .. } => exchange_udp(upstream, packet, id).await,
        Transport::Tcp => exchange_tcp(upstream, packet).await,
    }
}

/// The unspecified address of `upstream`'s family, port 0: the kernel
/// picks a random ephemeral source port (RFC 5452 §9.2).
fn any_address(upstream: SocketAddr) -> SocketAddr {
    match upstream {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    }
}

/// Over UDP on a fresh connected socket: the kernel drops datagrams from
/// any other address. Replies that do not decode or do not carry our ID
/// are skipped, not fatal: a spoofed datagram must not cut the wait short.
async fn exchange_udp(
    upstream: SocketAddr,
    packet: &[u8],
    id: u16,
) -> Result<Message, AttemptError> {
    let socket = UdpSocket::bind(any_address(upstream)).await?;
    socket.connect(upstream).await?;
    socket.send(packet).await?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        // ECONNREFUSED here (ICMP port unreachable) ends the attempt at
        // once: nothing listens there.
        let len = socket.recv(&mut buf).await?;
        match Message::from_vec(&buf[..len]) {
            Ok(reply) if reply.metadata.id == id => return Ok(reply),
            Ok(reply) => {
                debug!(%upstream, id = reply.metadata.id, "ignoring a reply with another id")
            }
            Err(error) => debug!(%upstream, %error, "ignoring an undecodable datagram"),
        }
    }
}

/// Over TCP (RFC 1035 §4.2.2): one query, one two-octet-length-prefixed
/// reply, connection closed.
async fn exchange_tcp(upstream: SocketAddr, packet: &[u8]) -> Result<Message, AttemptError> {
    let len = u16::try_from(packet.len())
        .map_err(|_| AttemptError::Reply("query longer than a DNS message".into()))?;
    let mut stream = TcpStream::connect(upstream).await?;
    let _ = stream.set_nodelay(true);
    let mut framed = Vec::with_capacity(2 + packet.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await?;
    let reply_len = usize::from(stream.read_u16().await?);
    let mut reply = vec![0u8; reply_len];
    stream.read_exact(&mut reply).await?;
    Message::from_vec(&reply).map_err(|e| AttemptError::Reply(e.to_string()))
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use hickory_proto::rr::{Name, RecordType};

    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn question(name: &str) -> Query {
        Query::query(Name::from_ascii(name).unwrap(), RecordType::A)
    }

    /// An A query for `name` from a UDP client without EDNS.
    fn classic_udp_query(name: &str) -> ForwardQuery {
        ForwardQuery {
            query: question(name),
            dnssec_ok: false,
            checking_disabled: false,
            transport: Transport::Udp { limit: 512 },
        }
    }

    #[test]
    fn recursion_needs_an_upstream_and_an_allowed_client() {
        let allow = nets(&["127.0.0.0/8", "10.0.0.0/8", "fc00::/7"]);
        let upstream: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let forwarder = Forwarder::new(vec![upstream], allow.clone());
        for (client, want) in [
            ("127.0.0.1", true),
            ("10.1.2.3", true),
            ("fd00::1", true),
            ("::ffff:10.1.2.3", true),
            ("192.0.2.1", false),
            ("2001:db8::1", false),
            ("::ffff:192.0.2.1", false),
        ] {
            let ip: IpAddr = client.parse().unwrap();
            assert_eq!(forwarder.allows(ip), want, "{client}");
        }
        let no_upstream = Forwarder::new(Vec::new(), allow);
        assert!(!no_upstream.allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn the_budget_is_shared_within_bounds() {
        assert_eq!(attempt_timeout(0), MAX_UPSTREAM_TIMEOUT);
        assert_eq!(attempt_timeout(1), MAX_UPSTREAM_TIMEOUT);
        assert_eq!(attempt_timeout(2), MAX_UPSTREAM_TIMEOUT);
        assert_eq!(attempt_timeout(4), Duration::from_millis(1000));
        assert_eq!(attempt_timeout(100), MIN_UPSTREAM_TIMEOUT);
        for count in 1..=3 {
            assert!(attempt_timeout(count) * count as u32 <= FORWARD_BUDGET);
        }
    }

    #[test]
    fn the_upstream_query_asks_for_recursion_with_the_clients_limit() {
        let query = ForwardQuery {
            query: question("ExAmple.Test."),
            dnssec_ok: true,
            checking_disabled: true,
            transport: Transport::Udp { limit: 1232 },
        };
        let message = Message::from_vec(&upstream_query(&query, 4242).unwrap()).unwrap();
        assert_eq!(message.metadata.id, 4242);
        assert!(message.metadata.recursion_desired);
        assert!(message.metadata.checking_disabled);
        assert_eq!(message.queries, vec![question("ExAmple.Test.")]);
        // The client's letter case goes upstream as sent.
        assert_eq!(message.queries[0].name().to_ascii(), "ExAmple.Test.");
        let edns = message.edns.unwrap();
        assert_eq!(edns.max_payload(), 1232);
        assert!(edns.flags().dnssec_ok);

        let classic = ForwardQuery {
            transport: Transport::Udp { limit: 100 },
            dnssec_ok: false,
            ..query
        };
        let message = Message::from_vec(&upstream_query(&classic, 1).unwrap()).unwrap();
        let edns = message.edns.unwrap();
        assert_eq!(edns.max_payload(), CLASSIC_UDP_PAYLOAD);
        assert!(!edns.flags().dnssec_ok);
    }

    #[test]
    fn only_a_reply_to_our_query_is_accepted() {
        let ours = question("example.test.");
        let reply = |id: u16, q: Query| {
            let mut m = Message::response(id, OpCode::Query);
            m.add_query(q);
            m
        };
        assert!(check_reply(&reply(7, ours.clone()), 7, &ours).is_ok());
        // RFC 4343: names compare without regard to case.
        assert!(check_reply(&reply(7, question("EXAMPLE.test.")), 7, &ours).is_ok());
        assert!(check_reply(&reply(8, ours.clone()), 7, &ours).is_err());
        assert!(check_reply(&reply(7, question("other.test.")), 7, &ours).is_err());
        let mut aaaa = ours.clone();
        aaaa.set_query_type(RecordType::AAAA);
        assert!(check_reply(&reply(7, aaaa), 7, &ours).is_err());
        assert!(check_reply(&Message::response(7, OpCode::Query), 7, &ours).is_err());
        let mut query = reply(7, ours.clone());
        query.metadata.message_type = MessageType::Query;
        assert!(check_reply(&query, 7, &ours).is_err());
    }

    #[test]
    fn failures_are_retried_elsewhere_answers_are_not() {
        assert!(retry_elsewhere(ResponseCode::ServFail));
        assert!(retry_elsewhere(ResponseCode::Refused));
        assert!(!retry_elsewhere(ResponseCode::NoError));
        assert!(!retry_elsewhere(ResponseCode::NXDomain));
        assert!(retry_elsewhere(ResponseCode::BADVERS));
    }

    /// A UDP upstream that never answers costs one attempt's timeout, and
    /// the next upstream answers; datagrams with a wrong ID are ignored.
    #[tokio::test]
    async fn a_silent_upstream_is_passed_over() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let good = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let good_addr = good.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let (len, from) = good.recv_from(&mut buf).await.unwrap();
            let query = Message::from_vec(&buf[..len]).unwrap();
            // A spoof first: wrong ID, same question.
            let mut spoof = Message::response(query.metadata.id.wrapping_add(1), OpCode::Query);
            spoof.add_queries(query.queries.clone());
            good.send_to(&spoof.to_vec().unwrap(), from).await.unwrap();
            let mut reply = Message::response(query.metadata.id, OpCode::Query);
            reply.metadata.response_code = ResponseCode::NXDomain;
            reply.add_queries(query.queries.clone());
            good.send_to(&reply.to_vec().unwrap(), from).await.unwrap();
        });
        let forwarder = Forwarder::new(
            vec![silent.local_addr().unwrap(), good_addr],
            nets(&["127.0.0.0/8"]),
        );
        let started = Instant::now();
        let reply = forwarder
            .forward(&classic_udp_query("example.test."))
            .await
            .unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        assert!(started.elapsed() >= forwarder.attempt_timeout());
        assert!(started.elapsed() < FORWARD_BUDGET);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn beyond_the_in_flight_bound_queries_fail_at_once() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let forwarder = Forwarder::new(vec![silent.local_addr().unwrap()], nets(&["127.0.0.0/8"]));
        let _all = forwarder
            .in_flight
            .try_acquire_many(MAX_IN_FLIGHT as u32)
            .unwrap();
        let result = forwarder.forward(&classic_udp_query("example.test.")).await;
        assert!(matches!(result, Err(ForwardError::Busy)));
    }

    #[tokio::test]
    async fn no_answer_is_an_error_within_the_budget() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let forwarder = Forwarder::new(vec![silent.local_addr().unwrap()], nets(&["127.0.0.0/8"]));
        let started = Instant::now();
        let result = forwarder.forward(&classic_udp_query("example.test.")).await;
        assert!(matches!(result, Err(ForwardError::NoAnswer { tried: 1 })));
        assert!(started.elapsed() < FORWARD_BUDGET);
    }
}
