//! The UDP fast path: one socket per core (`SO_REUSEPORT`), batched
//! receive and send (`recvmmsg`/`sendmmsg`), answers written straight from
//! the zone snapshot into per-slot buffers, no allocation per query.
//!
//! A query the fast parser does not fully understand, or a name outside
//! the zone, goes to the full path: the hickory [`DnsHandler`] on the tokio
//! runtime, which sends its response on the same socket when it is done, so
//! a slow query never holds up the batch.
//!
//! ```text
//!  recvmmsg(32) ──▶ parse_query ──▶ answer::respond ──▶ sendmmsg(batch)
//!                      │ None / NotHandled
//!                      └──▶ tokio task: hickory parse ──▶ DnsHandler ──▶ send_to
//! ```
//!
//! Metrics: each answer is counted on the thread's own counter shard (a
//! relaxed add, no lock); the latency histogram gets one observation per
//! batch, weighted by its answers (see [`QueryShard::observe`]).

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_server::net::xfer::Protocol;
use socket2::{Domain, SockAddr, Socket, Type};
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::ops::metrics::{Metrics, QType, QueryShard, Rcode, RrlAction, Transport};
use crate::serve::answer::{self, Outcome};
use crate::serve::cookie::Verdict;
use crate::serve::handler::{self, DnsHandler};
use crate::serve::rrl::{Decision, Kind, Rrl};
use crate::zone::ZoneStore;

/// Datagrams received and answered per system call.
pub const BATCH: usize = 32;
/// Receive buffer per datagram. A query is at most a few hundred octets;
/// anything larger than this is not a query we answer.
pub const MAX_QUERY: usize = 4096;
/// How often a blocked receive wakes to check for shutdown.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Socket buffers, so a burst does not overflow the kernel queue.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Binds `count` UDP sockets to `addr` with `SO_REUSEPORT`, so the kernel
/// spreads queries over them. With port 0, the first socket picks the port
/// and the others share it.
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    let mut sockets: Vec<UdpSocket> = Vec::with_capacity(count.max(1));
    let mut bound = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
        socket.set_reuse_port(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        // Larger buffers are a wish, not a requirement.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.bind(&SockAddr::from(bound))?;
        let socket: UdpSocket = socket.into();
        bound = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// The running fast-path threads.
#[derive(Debug)]
pub struct UdpServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Full-path answers running on the runtime, so shutdown can let them
    /// finish.
    in_flight: TaskTracker,
}

impl UdpServer {
    /// Starts one thread per socket; `rrl`, when given, limits the
    /// responses (shared by every socket of every address).
    pub fn start(
        sockets: Vec<UdpSocket>,
        zone: Arc<ZoneStore>,
        handler: Arc<DnsHandler>,
        metrics: Arc<Metrics>,
        rrl: Option<Arc<Rrl>>,
        runtime: tokio::runtime::Handle,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = TaskTracker::new();
        let mut threads = Vec::with_capacity(sockets.len());
        for (index, socket) in sockets.into_iter().enumerate() {
            socket.set_read_timeout(Some(POLL_INTERVAL))?;
            let worker = Worker {
                socket: Arc::new(socket),
                zone: zone.clone(),
                handler: handler.clone(),
                metrics: metrics.clone(),
                rrl: rrl.clone(),
                runtime: runtime.clone(),
                in_flight: in_flight.clone(),
                stop: stop.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("rpcdns-udp-{index}"))
                    .spawn(move || worker.run())?,
            );
        }
        Ok(Self {
            stop,
            threads,
            in_flight,
        })
    }

    /// Stops receiving; each thread finishes the batch in hand (sends its
    /// answers) and exits. Blocks until they have. Returns the (closed)
    /// tracker of full-path answers still running: await its `wait()` to
    /// let them finish too.
    pub fn stop(self) -> TaskTracker {
        self.stop.store(true, Ordering::Release);
        for thread in self.threads {
            if thread.join().is_err() {
                warn!("a udp thread panicked");
            }
        }
        // No thread is left to spawn more.
        self.in_flight.close();
        self.in_flight
    }
}

struct Worker {
    socket: Arc<UdpSocket>,
    zone: Arc<ZoneStore>,
    handler: Arc<DnsHandler>,
    metrics: Arc<Metrics>,
    rrl: Option<Arc<Rrl>>,
    runtime: tokio::runtime::Handle,
    in_flight: TaskTracker,
    stop: Arc<AtomicBool>,
}

/// What the fast path did with a datagram.
enum Fast {
    /// A response is in the slot.
    Send,
    /// Nothing goes out (the rate limit dropped it).
    Silent,
    /// The full path takes it.
    Declined,
}

/// The per-thread buffers of one batch.
struct Batch {
    packets: Vec<[u8; MAX_QUERY]>,
    answers: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Self {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs
        // for which all-zero bytes are a valid (empty) value.
        let zeroed_addr = unsafe { MaybeUninit::<libc::sockaddr_storage>::zeroed().assume_init() };
        let zeroed_iov = unsafe { MaybeUninit::<libc::iovec>::zeroed().assume_init() };
        let zeroed_hdr = unsafe { MaybeUninit::<libc::mmsghdr>::zeroed().assume_init() };
        Self {
            packets: vec![[0u8; MAX_QUERY]; BATCH],
            answers: (0..BATCH).map(|_| Vec::with_capacity(1232)).collect(),
            addrs: vec![zeroed_addr; BATCH],
            iovecs: vec![zeroed_iov; BATCH],
            headers: vec![zeroed_hdr; BATCH],
        }
    }

    /// Points every header at its packet buffer and address slot for
    /// `recvmmsg`.
    fn prepare_receive(&mut self) {
        for i in 0..BATCH {
            self.iovecs[i] = libc::iovec {
                iov_base: self.packets[i].as_mut_ptr().cast(),
                iov_len: MAX_QUERY,
            };
            let header = &mut self.headers[i];
            header.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = &raw mut self.iovecs[i];
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = std::ptr::null_mut();
            header.msg_hdr.msg_controllen = 0;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
    }
}

impl Worker {
    fn run(self) {
        let fd = self.socket.as_raw_fd();
        let mut batch = Batch::new();
        // Indices of the slots whose answers go out in this batch.
        let mut ready: Vec<usize> = Vec::with_capacity(BATCH);
        while !self.stop.load(Ordering::Acquire) {
            batch.prepare_receive();
            // SAFETY: every header points at live buffers owned by `batch`,
            // sized as declared; the kernel writes at most that much.
            let received = unsafe {
                libc::recvmmsg(
                    fd,
                    batch.headers.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if received < 0 {
                let error = io::Error::last_os_error();
                match error.kind() {
                    io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::Interrupted => {}
                    _ => warn!(%error, "udp receive failed"),
                }
                continue;
            }
            let received = received as usize;
            // The batch is in user space: its answers' clock starts.
            let started = Instant::now();
            // This thread's own counters, looked up once per batch.
            let counters = self.metrics.queries();
            ready.clear();
            {
                // One snapshot per batch: a lock-free load, never waiting
                // for the writer.
                let snapshot = self.zone.guard();
                for i in 0..received {
                    let header = &batch.headers[i];
                    let len = (header.msg_len as usize).min(MAX_QUERY);
                    let Some(src) = sockaddr_to_std(&batch.addrs[i], header.msg_hdr.msg_namelen)
                    else {
                        continue;
                    };
                    if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                        // Larger than any query: not worth an answer.
                        continue;
                    }
                    let packet = &batch.packets[i][..len];
                    match self.fast_path(
                        &snapshot,
                        packet,
                        src,
                        &mut batch.answers[i],
                        counters,
                        started,
                    ) {
                        Fast::Send => ready.push(i),
                        Fast::Silent => {}
                        Fast::Declined => self.full_path(packet, src, counters, started),
                    }
                }
            }
            self.send(&mut batch, &ready);
            counters.observe(Transport::Udp, started.elapsed(), ready.len() as u64);
        }
        debug!("udp thread stopped");
    }

    /// Answers `packet` from `src` into `out` when the fast path can, and
    /// applies the rate limit to the answer.
    fn fast_path(
        &self,
        snapshot: &crate::zone::ZoneSnapshot,
        packet: &[u8],
        src: SocketAddr,
        out: &mut Vec<u8>,
        counters: &QueryShard,
        started: Instant,
    ) -> Fast {
        let Some(mut question) = answer::parse_query(packet) else {
            return Fast::Declined;
        };
        let verdict = question.answer_cookie(self.handler.cookie_secret(), src.ip());
        let max_udp_payload = self.handler.max_udp_payload();
        let limit = question.udp_limit(max_udp_payload);
        let Outcome::Answered { mut rcode, .. } =
            answer::respond(snapshot, &question, limit, max_udp_payload, out)
        else {
            return Fast::Declined;
        };
        // Counted here, once the full path cannot count it too.
        if let Some(verdict) = verdict {
            counters.cookie(verdict.label());
        }
        if let Some(rrl) = self.rrl.as_deref()
            && verdict != Some(Verdict::Valid)
            && !rrl.exempt(src.ip())
        {
            let kind = Kind::of(rcode, question.name, question.qtype);
            match rrl.check(src.ip(), kind, started) {
                Decision::Send => {}
                Decision::Slip => {
                    counters.rrl(RrlAction::Slip);
                    answer::slip(&question, max_udp_payload, out);
                    rcode = answer::rcode::NOERROR;
                }
                Decision::Drop => {
                    counters.rrl(RrlAction::Drop);
                    return Fast::Silent;
                }
            }
        }
        counters.count(
            Transport::Udp,
            QType::from_wire(question.qtype),
            Rcode::from_wire(u16::from(rcode)),
        );
        Fast::Send
    }

    /// Sends the answers of the `ready` slots with as few `sendmmsg` calls
    /// as the kernel allows.
    fn send(&self, batch: &mut Batch, ready: &[usize]) {
        if ready.is_empty() {
            return;
        }
        for (n, &i) in ready.iter().enumerate() {
            batch.iovecs[n] = libc::iovec {
                iov_base: batch.answers[i].as_mut_ptr().cast(),
                iov_len: batch.answers[i].len(),
            };
            // The receive wrote the client's address length into slot i.
            let namelen = batch.headers[i].msg_hdr.msg_namelen;
            let header = &mut batch.headers[n];
            header.msg_hdr.msg_name = (&raw mut batch.addrs[i]).cast();
            header.msg_hdr.msg_namelen = namelen;
            header.msg_hdr.msg_iov = &raw mut batch.iovecs[n];
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
        // `ready` is sorted ascending and n <= i, so rewriting header n
        // never clobbers a later slot's address length before it is read.
        let fd = self.socket.as_raw_fd();
        let mut sent = 0;
        while sent < ready.len() {
            // SAFETY: headers[sent..ready.len()] point at live buffers in
            // `batch` set up above.
            let result = unsafe {
                libc::sendmmsg(
                    fd,
                    batch.headers[sent..].as_mut_ptr(),
                    (ready.len() - sent) as libc::c_uint,
                    0,
                )
            };
            if result < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // One bad destination (e.g. unreachable): skip it, keep the rest.
                debug!(%error, "udp send failed");
                sent += 1;
            } else {
                sent += result as usize;
            }
        }
    }

    /// Hands `packet` to the hickory handler on the runtime; the task
    /// sends the response itself. `started` is when the query's batch
    /// arrived, so its latency counts the wait in the batch too.
    fn full_path(&self, packet: &[u8], src: SocketAddr, counters: &QueryShard, started: Instant) {
        let mut formerr = Vec::new();
        let Some(request) = handler::full_request(packet, src, Protocol::Udp, &mut formerr) else {
            if !formerr.is_empty() && limit(self.rrl.as_deref(), counters, src, None, &mut formerr)
            {
                let _ = self.socket.send_to(&formerr, src);
                counters.record_response(Transport::Udp, &formerr, started.elapsed());
            }
            return;
        };
        let handler = self.handler.clone();
        let socket = self.socket.clone();
        let metrics = self.metrics.clone();
        let rrl = self.rrl.clone();
        let answer = async move {
            let mut bytes = handler.answer_bytes(&request).await;
            if bytes.is_empty() {
                return;
            }
            let counters = metrics.queries();
            let verdict = handler.cookie_verdict(&request);
            if let Some(verdict) = verdict {
                counters.cookie(verdict.label());
            }
            let send = verdict == Some(Verdict::Valid)
                || limit(rrl.as_deref(), counters, src, Some(&request), &mut bytes);
            if !send {
                return;
            }
            if let Err(error) = socket.send_to(&bytes, src) {
                debug!(%src, %error, "udp send failed");
            }
            // Counted on the runtime thread's shard, not the UDP thread's.
            metrics
                .queries()
                .record_response(Transport::Udp, &bytes, started.elapsed());
        };
        self.in_flight.spawn_on(answer, &self.runtime);
    }
}

/// The response rate limit on the full path: whether `response` (to
/// `request`, when hickory could parse it) goes out, cut to a slip when
/// the limit says so.
fn limit(
    rrl: Option<&Rrl>,
    counters: &QueryShard,
    src: SocketAddr,
    request: Option<&hickory_server::server::Request>,
    response: &mut Vec<u8>,
) -> bool {
    let Some(rrl) = rrl.filter(|rrl| !rrl.exempt(src.ip())) else {
        return true;
    };
    let rcode = response.get(3).map_or(0, |flags| flags & 0x0F);
    let question = request.and_then(|r| r.queries.queries().first());
    let name = question
        .and_then(|q| hickory_proto::serialize::binary::BinEncodable::to_bytes(q.name()).ok());
    let kind = match (&name, question) {
        (Some(name), Some(q)) => Kind::of(rcode, name, u16::from(q.query_type())),
        _ => Kind::Error,
    };
    match rrl.check(src.ip(), kind, Instant::now()) {
        Decision::Send => true,
        Decision::Slip => {
            counters.rrl(RrlAction::Slip);
            answer::slip_response(response);
            true
        }
        Decision::Drop => {
            counters.rrl(RrlAction::Drop);
            false
        }
    }
}

/// The client's address from what `recvmmsg` wrote.
fn sockaddr_to_std(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for it.
            let v4 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(v4.sin_port))))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let v6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_share_one_port() {
        let sockets = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ports: Vec<u16> = sockets
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        assert!(ports[0] != 0);
        assert!(ports.iter().all(|&p| p == ports[0]), "{ports:?}");
    }
}
