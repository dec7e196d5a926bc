//! Hardening for a public listener: response rate limiting (RRL) and DNS
//! cookies, through the real binary over real sockets.
//!
//! Loopback addresses stand in for the internet: rpcdns sees the source
//! address a query carries, and any 127/8 address can be bound, so a
//! socket bound to 127.0.5.7 sends exactly what a flood spoofing that
//! address would.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::harness::*;

const SMS: &str = "sms.rpc.svc.local.";
/// The limit the RRL test runs with: low, so the flood crosses it at once.
const RATE: usize = 10;

fn udp_from(ip: &str) -> UdpSocket {
    let socket = UdpSocket::bind((ip.parse::<IpAddr>().unwrap(), 0)).expect("bind loopback alias");
    socket.set_nonblocking(true).unwrap();
    socket
}

/// One query over TCP from `ip`.
fn tcp_from(ip: &str, dns: SocketAddr, query: &Message) -> Message {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let local: SocketAddr = (ip.parse::<IpAddr>().unwrap(), 0).into();
    socket.bind(&SockAddr::from(local)).unwrap();
    socket
        .connect_timeout(&SockAddr::from(dns), Duration::from_secs(5))
        .expect("tcp connect");
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let bytes = query.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).unwrap();
    Message::from_vec(&reply).unwrap()
}

/// Reads every datagram waiting on `socket` until `quiet` passes with none.
fn drain(socket: &UdpSocket, quiet: Duration) -> Vec<Message> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        match socket.recv(&mut buf) {
            Ok(n) => {
                out.push(Message::from_vec(&buf[..n]).expect("a DNS response"));
                last = Instant::now();
            }
            Err(_) => std::thread::yield_now(),
        }
    }
    out
}

fn with_cookie(mut query: Message, cookie: &[u8]) -> Message {
    let edns = query.edns.get_or_insert_with(Default::default);
    edns.set_max_payload(1232);
    edns.options_mut()
        .insert(EdnsOption::Unknown(10, cookie.to_vec()));
    query
}

fn cookie_of(message: &Message) -> Option<Vec<u8>> {
    match message.edns.as_ref()?.option(EdnsCode::Cookie)? {
        EdnsOption::Unknown(_, data) => Some(data.clone()),
        _ => None,
    }
}

/// `sms.rpc` answers with its one address.
fn answered_once(dns: SocketAddr) -> Result<(), String> {
    let reply = try_query_udp(dns, SMS, RecordType::A, None)?;
    if reply.answers.len() == 1 {
        Ok(())
    } else {
        Err(format!("{} answers", reply.answers.len()))
    }
}

fn udp_metric(dns: &Rpcdns, series: &str) -> f64 {
    metric(dns.http_addr, series).unwrap_or_else(|e| panic!("{series}: {e}"))
}

/// A flood from one /24 (its source addresses spoofed) gets at most the
/// rate in answers, every other limited response as an empty TC, the rest
/// nothing; meanwhile a client in another network is answered in full, a
/// client in the flooded network gets its answer over TCP and then, with
/// the DNS cookie TCP gave it, over UDP too; and loopback is exempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrl_limits_a_spoofed_flood_and_answers_everyone_else() {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    let _sms = register(&client, "sms.rpc", "10.0.0.5:8001", 60).await;
    let rpcdns = start_with_config(
        &etcd.endpoint(),
        &format!(
            "dns:\n  rrl:\n    responses_per_second: {RATE}\n    slip: 2\n    exempt: [\"127.0.0.1/32\"]\n"
        ),
    );
    let dns = rpcdns.dns_addr;
    eventually(Duration::from_secs(10), || answered_once(dns));

    // The flood: 400 queries for one name, from 20 addresses of 127.0.5.0/24.
    let sources: Vec<UdpSocket> = (10..30)
        .map(|i| udp_from(&format!("127.0.5.{i}")))
        .collect();
    let query = build_query(SMS, RecordType::A, None).to_vec().unwrap();
    let started = Instant::now();
    const FLOOD: usize = 400;
    for n in 0..FLOOD {
        let socket = &sources[n % sources.len()];
        let mut packet = query.clone();
        packet[..2].copy_from_slice(&(n as u16).to_be_bytes());
        socket.send_to(&packet, dns).expect("send");
    }
    // Meanwhile, another network is answered in full.
    let other = udp_from("127.0.9.1");
    for n in 0..5u16 {
        let mut packet = query.clone();
        packet[..2].copy_from_slice(&(1000 + n).to_be_bytes());
        other.send_to(&packet, dns).unwrap();
    }
    let flood_secs = started.elapsed().as_secs_f64();

    // Every flood query has been dealt with: answered, slipped or dropped.
    let handled = || {
        udp_metric(
            &rpcdns,
            r#"rpcdns_dns_queries_total{qtype="a",rcode="noerror",transport="udp"}"#,
        ) + udp_metric(&rpcdns, r#"rpcdns_rrl_limited_total{action="drop"}"#)
    };
    eventually(Duration::from_secs(10), || {
        let seen = handled();
        if seen >= (FLOOD + 5 + 1) as f64 {
            Ok(())
        } else {
            Err(format!("{seen} queries handled"))
        }
    });
    let replies: Vec<Message> = sources
        .iter()
        .flat_map(|s| drain(s, Duration::from_millis(300)))
        .collect();
    let answered = replies.iter().filter(|m| m.answers.len() == 1).count();
    let slipped: Vec<&Message> = replies.iter().filter(|m| m.metadata.truncation).collect();
    // The rate, plus a second's burst, over the time the flood took.
    let allowed = (RATE as f64 * (flood_secs + 1.0)).ceil() as usize + 1;
    println!(
        "rrl: {FLOOD} queries in {flood_secs:.3} s: {answered} answered, {} slipped, {} silent (at most {allowed} answers allowed)",
        slipped.len(),
        FLOOD - replies.len()
    );
    assert!(
        answered >= RATE,
        "the first second's worth is answered: {answered}"
    );
    assert!(answered <= allowed, "{answered} answers, at most {allowed}");
    // Every other limited response slips: about half of the rest.
    let limited = FLOOD - answered;
    assert!(
        slipped.len().abs_diff(limited / 2) <= 2,
        "{} slipped of {limited} limited",
        slipped.len()
    );
    for m in &slipped {
        assert!(m.answers.is_empty() && m.additionals.is_empty(), "{m:?}");
        assert_eq!(m.queries.len(), 1, "the question is echoed");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    }
    assert_eq!(
        udp_metric(&rpcdns, r#"rpcdns_rrl_limited_total{action="slip"}"#) as usize,
        slipped.len()
    );
    let dropped = udp_metric(&rpcdns, r#"rpcdns_rrl_limited_total{action="drop"}"#) as usize;
    assert_eq!(answered + slipped.len() + dropped, FLOOD);

    // The other network: all five answered.
    let theirs = drain(&other, Duration::from_millis(300));
    assert_eq!(theirs.len(), 5, "{theirs:?}");
    assert!(
        theirs
            .iter()
            .all(|m| m.answers.len() == 1 && !m.metadata.truncation)
    );

    // A real client in the flooded network: UDP is limited, but TCP is
    // not, and the cookie TCP hands it lets its UDP queries through.
    let victim = "127.0.5.77";
    let over_tcp = tcp_from(
        victim,
        dns,
        &with_cookie(build_query(SMS, RecordType::A, Some(1232)), &[7; 8]),
    );
    assert_eq!(over_tcp.answers.len(), 1);
    let cookie = cookie_of(&over_tcp).expect("a server cookie over TCP");
    let socket = udp_from(victim);
    for n in 0..(3 * RATE) as u16 {
        let mut q = with_cookie(build_query(SMS, RecordType::A, Some(1232)), &cookie);
        q.metadata.id = 5000 + n;
        socket.send_to(&q.to_vec().unwrap(), dns).unwrap();
    }
    let with_cookies = drain(&socket, Duration::from_millis(500));
    assert_eq!(with_cookies.len(), 3 * RATE);
    assert!(
        with_cookies
            .iter()
            .all(|m| m.answers.len() == 1 && !m.metadata.truncation),
        "a valid cookie is never limited"
    );
    assert!(
        udp_metric(&rpcdns, r#"rpcdns_dns_cookies_total{result="valid"}"#) >= (3 * RATE) as f64
    );

    // The exempt address (the harness's own queries) is never limited.
    for _ in 0..3 * RATE {
        let reply = query_udp(dns, SMS, RecordType::A, None);
        assert_eq!(reply.answers.len(), 1);
    }
}

/// DNS cookies: a server cookie for a client cookie, valid when returned,
/// valid at another replica with the same `dns.cookie_secret`, and a
/// wrong or foreign server cookie still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_with_a_shared_secret_are_valid_at_every_replica() {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    let _sms = register(&client, "sms.rpc", "10.0.0.5:8001", 60).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "rpcdns.yaml",
        "dns:\n  cookie_secret: \"e5e973e5a6b2a43f48e7dc849e37bfcf\"\n",
    );
    let one = Rpcdns::start(&etcd.endpoint(), &["--config", &config]);
    let two = Rpcdns::start(&etcd.endpoint(), &["--config", &config]);
    let alone = Rpcdns::start(&etcd.endpoint(), &[]);
    for r in [&one, &two, &alone] {
        r.wait_ready();
        eventually(Duration::from_secs(10), || answered_once(r.dns_addr));
    }
    let ask = |r: &Rpcdns, cookie: &[u8]| {
        let query = with_cookie(build_query(SMS, RecordType::A, Some(1232)), cookie);
        let (reply, _) = try_exchange_udp(r.dns_addr, &query).unwrap();
        assert_eq!(reply.answers.len(), 1, "a cookie never blocks an answer");
        cookie_of(&reply).expect("a cookie in the response")
    };
    let valid = |r: &Rpcdns| udp_metric(r, r#"rpcdns_dns_cookies_total{result="valid"}"#) as usize;
    let issued = ask(&one, &[3; 8]);
    assert_eq!((issued.len(), &issued[..8]), (24, &[3u8; 8][..]));
    assert_eq!(
        udp_metric(&one, r#"rpcdns_dns_cookies_total{result="client_only"}"#),
        1.0
    );
    // Returned to the replica that made it, or to its twin: valid, and
    // fresh, so sent back unchanged.
    assert_eq!(ask(&one, &issued), issued);
    assert_eq!(valid(&one), 1);
    assert_eq!(ask(&two, &issued), issued);
    assert_eq!(valid(&two), 1);
    // Over TCP alike.
    let query = with_cookie(build_query(SMS, RecordType::A, Some(1232)), &issued);
    let over_tcp = try_exchange_tcp(two.dns_addr, &query).unwrap();
    assert_eq!(cookie_of(&over_tcp), Some(issued.clone()));
    assert_eq!(valid(&two), 2);
    // A replica with its own random secret: not its cookie; a new one.
    let other = ask(&alone, &issued);
    assert_eq!(&other[..8], &issued[..8]);
    assert_ne!(other, issued);
    assert_eq!(valid(&alone), 0);
    assert_eq!(
        udp_metric(&alone, r#"rpcdns_dns_cookies_total{result="invalid"}"#),
        1.0
    );
    // dig, a client with cookies on by default, is happy with ours.
    if let Some(dig) = crate::programs::tool("dig") {
        let out = run(
            std::process::Command::new(dig).args([
                "@127.0.0.1",
                "-p",
                &one.dns_addr.port().to_string(),
                SMS,
                "A",
                "+cookie",
            ]),
            Duration::from_secs(10),
        );
        assert!(out.all().contains("(good)"), "{}", out.all());
    }
}
