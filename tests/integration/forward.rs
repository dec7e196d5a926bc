//! Forwarding of names outside the zone (SPEC §4 last row, §7): against a
//! real upstream resolver (Debian's dnsmasq, started here on a free port),
//! a silent upstream, access control and the REFUSED cases, over UDP and
//! TCP.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::harness::*;

/// What dnsmasq answers for `example.test` and every name under it.
const UPSTREAM_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
/// rpcdns's budget for one forwarded query (`forward::FORWARD_BUDGET`).
const FORWARD_BUDGET: Duration = Duration::from_millis(4000);
/// rpcdns's wait for one upstream when one or two are configured
/// (`forward::MAX_UPSTREAM_TIMEOUT`).
const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1500);
/// A client that waits longer than rpcdns's whole budget: a missing
/// answer then means a hang, not a slow upstream.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(8);
/// How long dnsmasq may take to answer its first query.
const DNSMASQ_START: Duration = Duration::from_secs(10);

// ----------------------------------------------------------------------------
// Upstreams
// ----------------------------------------------------------------------------

/// A real dnsmasq on a free loopback port (UDP and TCP), answering
/// `example.test` itself and nothing else; killed by PID on drop.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

/// `DNSMASQ_BIN`, else `dnsmasq` on `PATH`, else Debian's `/usr/sbin`
/// (not on a non-root user's `PATH`).
fn dnsmasq_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("DNSMASQ_BIN") {
        return bin.into();
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("dnsmasq"))
        .find(|candidate| candidate.is_file());
    let fallback = PathBuf::from("/usr/sbin/dnsmasq");
    match on_path {
        Some(bin) => bin,
        None if fallback.is_file() => fallback,
        None => panic!(
            "dnsmasq not found (DNSMASQ_BIN, PATH, /usr/sbin): the forwarding tests need \
             a real upstream resolver; install Debian's dnsmasq-base \
             (scripts/install-deps.sh does)"
        ),
    }
}

impl Dnsmasq {
    fn start() -> Dnsmasq {
        let bin = dnsmasq_bin();
        // The port is free when chosen; another process may take it before
        // dnsmasq binds, so try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_ports(1)[0];
            let mut child = Command::new(&bin)
                .args([
                    "--no-daemon",
                    &format!("--port={port}"),
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    "--pid-file",
                    "--address=/example.test/192.0.2.7",
                    "--conf-file=/dev/null",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let deadline = Instant::now() + DNSMASQ_START;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut stderr) = child.stderr.take() {
                        let _ = stderr.read_to_string(&mut err);
                    }
                    last_error = format!("dnsmasq exited with {status}: {err}");
                    break;
                }
                let probe = query_bytes(0x5eed, "example.test.", RecordType::A, true, None);
                if udp_raw(addr, &probe, Duration::from_millis(200)).is_some() {
                    return Dnsmasq { child, addr };
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("dnsmasq on {addr} did not answer within {DNSMASQ_START:?}");
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        panic!("dnsmasq did not start: {last_error}");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An upstream that never answers: a UDP socket and a TCP listener on one
/// loopback port, neither ever read (the kernel completes TCP handshakes
/// into the backlog, so a TCP client waits for a reply that never comes).
struct SilentUpstream {
    _udp: UdpSocket,
    _tcp: TcpListener,
    addr: SocketAddr,
}

impl SilentUpstream {
    fn start() -> SilentUpstream {
        for _ in 0..20 {
            let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a loopback tcp port");
            let addr = tcp.local_addr().expect("local addr of a bound socket");
            if let Ok(udp) = UdpSocket::bind(addr) {
                return SilentUpstream {
                    _udp: udp,
                    _tcp: tcp,
                    addr,
                };
            }
        }
        panic!("no loopback port free for both udp and tcp");
    }
}

// ----------------------------------------------------------------------------
// Clients
// ----------------------------------------------------------------------------

/// A raw query with RD set (a stub resolver's query), the name's letter
/// case kept, and EDNS(0) advertising `edns` octets when given.
fn query_bytes(id: u16, name: &str, qtype: RecordType, rd: bool, edns: Option<u16>) -> Vec<u8> {
    let opt = edns.map(|payload| raw_opt(payload, 0, 0, &[]));
    let mut bytes = raw_query(id, name, u16::from(qtype), opt);
    if rd {
        bytes[2] |= 0x01;
    }
    bytes
}

#[derive(Clone, Copy, Debug)]
enum Via {
    Udp,
    Tcp,
}

/// Sends `query` over `via` and waits up to [`CLIENT_TIMEOUT`] for the
/// reply's bytes.
fn exchange(dns: SocketAddr, via: Via, query: &[u8]) -> Result<Vec<u8>, String> {
    match via {
        Via::Udp => udp_raw(dns, query, CLIENT_TIMEOUT)
            .ok_or_else(|| format!("no UDP reply within {CLIENT_TIMEOUT:?}")),
        Via::Tcp => {
            let mut stream = TcpStream::connect_timeout(&dns, QUERY_TIMEOUT)
                .map_err(|e| format!("connect {dns}: {e}"))?;
            stream
                .set_read_timeout(Some(CLIENT_TIMEOUT))
                .map_err(|e| e.to_string())?;
            let mut framed = (query.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(query);
            stream
                .write_all(&framed)
                .map_err(|e| format!("write: {e}"))?;
            let mut len = [0u8; 2];
            stream
                .read_exact(&mut len)
                .map_err(|e| format!("reading the reply's length: {e}"))?;
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream
                .read_exact(&mut reply)
                .map_err(|e| format!("reading the reply: {e}"))?;
            Ok(reply)
        }
    }
}

/// Queries `name` over `via` and checks the reply answers the same query:
/// same ID, the question echoed byte for byte (letter case included).
#[track_caller]
fn ask(dns: SocketAddr, via: Via, name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let id = 0x4a21;
    let query = query_bytes(id, name, qtype, true, edns);
    let reply =
        exchange(dns, via, &query).unwrap_or_else(|e| panic!("{via:?} query {name} {qtype}: {e}"));
    let message =
        Message::from_vec(&reply).unwrap_or_else(|e| panic!("undecodable reply to {name}: {e}"));
    assert_eq!(message.metadata.id, id, "{via:?} {name}: reply id");
    let question_len = encode_name(name).len() + 4;
    assert_eq!(
        reply.get(12..12 + question_len),
        query.get(12..12 + question_len),
        "{via:?} {name}: the question must be echoed as sent"
    );
    message
}

/// A temp config file with `yaml`; keep the dir alive while rpcdns runs.
fn config_file(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rpcdns.yaml");
    std::fs::write(&path, yaml).expect("write config");
    (dir, path.display().to_string())
}

// ----------------------------------------------------------------------------
// Tests
// ----------------------------------------------------------------------------

/// With rpcdns as the only nameserver, both its own names and every other
/// name resolve: the zone answers authoritatively, the rest is forwarded
/// and comes back with RA set, AA clear, the client's case, our EDNS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_the_zone_are_forwarded_and_the_zone_still_answers() {
    let upstream = Dnsmasq::start();
    let env = TestEnv::start(&["--upstream", &upstream.addr.to_string()]).await;
    let _sms = register(&env.client, "sms.rpc", "10.0.0.5:8001", 30).await;
    eventually(PROPAGATION, || {
        check_a(env.dns(), "sms.rpc.svc.local.", &ipv4s(&["10.0.0.5"]))
    });

    for via in [Via::Udp, Via::Tcp] {
        for edns in [None, Some(4096)] {
            let reply = ask(env.dns(), via, "WwW.ExAmple.TEST.", RecordType::A, edns);
            let case = format!("{via:?} edns={edns:?}: {reply}");
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::NoError,
                "{case}"
            );
            assert_eq!(a_of(&reply.answers), vec![UPSTREAM_ADDR], "{case}");
            assert!(reply.metadata.recursion_available, "RA: {case}");
            assert!(!reply.metadata.authoritative, "AA: {case}");
            assert!(reply.metadata.recursion_desired, "RD echoed: {case}");
            match edns {
                // RFC 6891 §7: our own OPT, with our buffer size.
                Some(_) => {
                    let opt = reply.edns.as_ref().expect("an OPT record");
                    assert_eq!(opt.max_payload(), 1232, "{case}");
                    assert_eq!(opt.version(), 0, "{case}");
                }
                None => assert!(reply.edns.is_none(), "no OPT without EDNS: {case}"),
            }

            let zone = ask(env.dns(), via, "SmS.rpc.svc.local.", RecordType::A, edns);
            let case = format!("{via:?} edns={edns:?}: {zone}");
            assert!(zone.metadata.authoritative, "AA in the zone: {case}");
            assert_eq!(
                a_of(&zone.answers),
                vec![Ipv4Addr::new(10, 0, 0, 5)],
                "{case}"
            );
        }
    }
    // The upstream's own RCODE comes back (dnsmasq has nothing else to
    // ask, so anything beyond example.test is its refusal or failure);
    // a health check of the root still gets an answer, not silence.
    let root = ask(env.dns(), Via::Udp, ".", RecordType::NS, Some(1232));
    assert!(root.metadata.recursion_available, "{root}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_outside_allow_recursion_from_is_refused() {
    let upstream = Dnsmasq::start();
    let (_dir, path) = config_file("dns:\n  allow_recursion_from:\n    - \"10.0.0.0/8\"\n");
    let env = TestEnv::start(&["--config", &path, "--upstream", &upstream.addr.to_string()]).await;
    for via in [Via::Udp, Via::Tcp] {
        let reply = ask(
            env.dns(),
            via,
            "www.example.test.",
            RecordType::A,
            Some(1232),
        );
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{via:?}: {reply}"
        );
        assert!(reply.answers.is_empty(), "{via:?}: {reply}");
        assert!(!reply.metadata.recursion_available, "{via:?}: {reply}");
        // The zone is still served to everyone.
        let zone = ask(env.dns(), via, "svc.local.", RecordType::SOA, None);
        assert_eq!(zone.metadata.response_code, ResponseCode::NoError, "{zone}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_upstream_everything_outside_the_zone_is_refused() {
    let env = TestEnv::start(&[]).await;
    for via in [Via::Udp, Via::Tcp] {
        for (name, qtype) in [
            ("www.example.test.", RecordType::A),
            // A forwarder's health check.
            (".", RecordType::NS),
        ] {
            let reply = ask(env.dns(), via, name, qtype, None);
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::Refused,
                "{via:?} {name}: {reply}"
            );
            assert!(!reply.metadata.authoritative, "{via:?} {name}: {reply}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_gives_servfail_within_the_budget() {
    let silent = SilentUpstream::start();
    let env = TestEnv::start(&["--upstream", &silent.addr.to_string()]).await;
    for via in [Via::Udp, Via::Tcp] {
        let started = Instant::now();
        let reply = ask(
            env.dns(),
            via,
            "www.example.test.",
            RecordType::A,
            Some(1232),
        );
        let took = started.elapsed();
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::ServFail,
            "{via:?}: {reply}"
        );
        assert!(reply.metadata.recursion_available, "{via:?}: {reply}");
        assert!(
            took >= UPSTREAM_TIMEOUT - Duration::from_millis(100),
            "{via:?}: SERVFAIL after {took:?}, before the upstream's timeout"
        );
        assert!(
            took < FORWARD_BUDGET + Duration::from_millis(500),
            "{via:?}: SERVFAIL after {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_first_upstream_is_silent_the_second_answers() {
    let silent = SilentUpstream::start();
    let upstream = Dnsmasq::start();
    let env = TestEnv::start(&[
        "--upstream",
        &silent.addr.to_string(),
        "--upstream",
        &upstream.addr.to_string(),
    ])
    .await;
    for via in [Via::Udp, Via::Tcp] {
        let started = Instant::now();
        let reply = ask(env.dns(), via, "www.example.test.", RecordType::A, None);
        let took = started.elapsed();
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{via:?}: {reply}"
        );
        assert_eq!(
            a_of(&reply.answers),
            vec![UPSTREAM_ADDR],
            "{via:?}: {reply}"
        );
        assert!(reply.metadata.recursion_available, "{via:?}: {reply}");
        assert!(took < FORWARD_BUDGET, "{via:?}: answered after {took:?}");
    }
}
