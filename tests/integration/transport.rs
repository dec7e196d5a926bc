//! DNS over the wire (SPEC §4, the UDP/EDNS/TCP rules): response sizes and
//! truncation, EDNS(0) handling and BADVERS, opcodes and header bits, TCP
//! pipelining, and malformed packets. What the answers contain belongs in
//! `answers`.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::harness::*;

/// Puts `n` instances `svc/<id>` with distinct addresses 10.1.x.y:8000.
/// Ids are 19 digits like go-zero lease ids, so names have realistic size.
async fn put_instances(env: &TestEnv, service: &str, n: u32) -> Vec<String> {
    let mut addrs = Vec::new();
    for i in 0..n {
        let addr = format!("10.1.{}.{}", i / 200, i % 200 + 1);
        put(
            &env.client,
            format!("{service}/{}", 7_587_869_364_815_470_000u64 + u64::from(i)),
            format!("{addr}:8000"),
        )
        .await;
        addrs.push(addr);
    }
    addrs
}

fn wait_count(dns: SocketAddr, name: &str, n: usize) {
    eventually(PROPAGATION, || {
        let msg = try_query_tcp(dns, name, RecordType::A, None)?;
        match msg.answers.len() {
            got if got == n => Ok(()),
            got => Err(format!("{name}: {got} A records, want {n}")),
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_without_edns_fits_512_and_has_no_opt() {
    let env = TestEnv::start(&[]).await;
    put_instances(&env, "small.rpc", 3).await;
    wait_count(env.dns(), "small.rpc.svc.local.", 3);
    for rtype in [RecordType::A, RecordType::SRV, RecordType::SOA] {
        let name = if rtype == RecordType::SOA {
            ZONE
        } else {
            "small.rpc.svc.local."
        };
        let (msg, size) =
            try_exchange_udp(env.dns(), &build_query(name, rtype, None)).expect("reply");
        assert!(size <= 512, "{rtype}: {size} octets without EDNS");
        assert!(
            msg.edns.is_none(),
            "{rtype}: OPT in a reply to a query without EDNS"
        );
        assert!(!msg.metadata.truncation, "{rtype}: small answer truncated");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_rrset_truncates_over_udp_and_is_whole_over_tcp() {
    let env = TestEnv::start(&[]).await;
    let name = "big.rpc.svc.local.";
    put_instances(&env, "big.rpc", 60).await;
    wait_count(env.dns(), name, 60);

    // No EDNS: 60 A records (~960 octets) cannot fit in 512.
    let (msg, size) =
        try_exchange_udp(env.dns(), &build_query(name, RecordType::A, None)).expect("reply");
    assert!(size <= 512, "{size} octets without EDNS");
    assert!(msg.metadata.truncation, "TC not set: {msg}");
    assert!(
        msg.answers.is_empty() || msg.answers.len() == 60,
        "partial RRset: {} A",
        msg.answers.len()
    );
    assert!(msg.edns.is_none(), "OPT without EDNS in the query");

    let tcp = query_tcp(env.dns(), name, RecordType::A, None);
    assert_eq!(tcp.answers.len(), 60, "TCP gets everything");
    assert!(!tcp.metadata.truncation);

    // EDNS 4096: capped at the default max_udp_payload 1232; 60 A fit.
    let (msg, size) =
        try_exchange_udp(env.dns(), &build_query(name, RecordType::A, Some(4096))).expect("reply");
    assert!(size <= 1232, "{size} octets with EDNS 4096 (cap 1232)");
    assert!(msg.edns.is_some(), "EDNS query answered without OPT");
    assert_eq!(msg.answers.len(), 60, "{msg}");
    assert!(!msg.metadata.truncation);

    // 60 SRV (~2,400 octets) do not fit in 1232: TC, with OPT, no partial set.
    let (msg, size) = try_exchange_udp(env.dns(), &build_query(name, RecordType::SRV, Some(4096)))
        .expect("reply");
    assert!(size <= 1232, "{size} octets with EDNS 4096 (cap 1232)");
    assert!(msg.metadata.truncation, "TC not set for 60 SRV");
    assert!(msg.edns.is_some(), "truncated answer lacks OPT");
    assert!(
        msg.answers.is_empty() || msg.answers.len() == 60,
        "partial RRset: {} SRV",
        msg.answers.len()
    );

    // A client buffer below the cap is honoured.
    let (msg, size) =
        try_exchange_udp(env.dns(), &build_query(name, RecordType::A, Some(700))).expect("reply");
    assert!(size <= 700, "{size} octets for a 700-octet buffer");
    assert!(msg.metadata.truncation, "60 A do not fit in 700");
    assert!(
        msg.answers.is_empty(),
        "partial RRset: {} A",
        msg.answers.len()
    );

    let tcp = query_tcp(env.dns(), name, RecordType::SRV, Some(4096));
    assert_eq!(tcp.answers.len(), 60);
    assert_eq!(a_of(&tcp.additionals).len(), 60, "TCP carries all the glue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glue_that_does_not_fit_is_left_out_without_tc() {
    let env = TestEnv::start(&[]).await;
    let name = "g.rpc.svc.local.";
    // 8 SRV with 19-digit targets take 353 octets with every name
    // compressed and 488 with no target compressed (RFC 2782 forbids it)
    // and the first owner name written out; their 8 AAAA glue records take
    // 224 octets or more: the answer fits in 512 however it is encoded, the
    // glue never does.
    for i in 0..8u64 {
        put(
            &env.client,
            format!("g.rpc/{}", 7_587_869_364_815_470_000u64 + i),
            format!("[fd00::{}]:8000", i + 1),
        )
        .await;
    }
    eventually(PROPAGATION, || {
        let msg = try_query_tcp(env.dns(), name, RecordType::AAAA, None)?;
        match msg.answers.len() {
            8 => Ok(()),
            n => Err(format!("{n} AAAA, want 8")),
        }
    });
    let (msg, size) =
        try_exchange_udp(env.dns(), &build_query(name, RecordType::SRV, None)).expect("reply");
    assert!(size <= 512, "{size} octets without EDNS");
    assert!(
        !msg.metadata.truncation,
        "TC set although the answer fits (RFC 2181 §9): {msg}"
    );
    assert_eq!(srv_of(&msg.answers).len(), 8, "{msg}");
    assert!(
        aaaa_of(&msg.additionals).len() < 8,
        "all glue cannot fit in 512 octets"
    );
    let tcp = query_tcp(env.dns(), name, RecordType::SRV, None);
    assert_eq!(
        aaaa_of(&tcp.additionals).len(),
        8,
        "TCP carries all the glue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edns_rules_of_rfc_6891() {
    let env = TestEnv::start(&[]).await;
    put_instances(&env, "e.rpc", 1).await;
    wait_count(env.dns(), "e.rpc.svc.local.", 1);

    // Version 1 → BADVERS (16: 0 in the header, 1 in the OPT's high bits).
    let q = raw_query(1, "e.rpc.svc.local.", 1, Some(raw_opt(1232, 1, 0, &[])));
    let reply = udp_raw(env.dns(), &q, QUERY_TIMEOUT).expect("reply to EDNS version 1");
    let msg = Message::from_vec(&reply).expect("decodable reply");
    // hickory decodes 16 as BADSIG (same number, TSIG context); compare it.
    assert_eq!(
        u16::from(msg.metadata.response_code),
        16,
        "want BADVERS: {msg}"
    );
    assert_eq!(
        raw_rcode(&reply),
        0,
        "BADVERS's low bits in the header are 0"
    );
    let edns = msg.edns.as_ref().expect("BADVERS comes in an OPT");
    assert_eq!(edns.version(), 0, "responder's EDNS version");
    assert!(msg.answers.is_empty());

    // Unknown option and undefined flag bits: ignored and not echoed.
    let q = raw_query(
        2,
        "e.rpc.svc.local.",
        1,
        Some(raw_opt(1232, 0, 0x4000, &[(65001, b"abc")])),
    );
    let reply = udp_raw(env.dns(), &q, QUERY_TIMEOUT).expect("reply");
    let msg = Message::from_vec(&reply).expect("decodable reply");
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError, "{msg}");
    assert_eq!(msg.answers.len(), 1, "{msg}");
    let edns = msg.edns.as_ref().expect("EDNS answered with EDNS");
    let codes: Vec<u16> = edns
        .options()
        .as_ref()
        .iter()
        .map(|(c, _)| u16::from(*c))
        .collect();
    assert!(!codes.contains(&65001), "unknown option echoed: {codes:?}");
    assert_eq!(edns.flags().z, 0, "undefined EDNS flag bits echoed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_opcode_and_z_bit() {
    let env = TestEnv::start(&[]).await;
    put_instances(&env, "h.rpc", 1).await;
    wait_count(env.dns(), "h.rpc.svc.local.", 1);

    // Opcode 3 is unassigned. Its header bits mean nothing we know: the
    // NOTIMP copies none of AA, TC, RA, Z, AD, CD (RD may be copied).
    for (flags2, flags3) in [(0x00, 0x00), (0x07, 0xF0)] {
        let mut q = raw_query(3, "h.rpc.svc.local.", 1, None);
        q[2] = (3 << 3) | flags2;
        q[3] = flags3;
        let reply = udp_raw(env.dns(), &q, QUERY_TIMEOUT).expect("reply to opcode 3");
        assert_ne!(reply[2] & 0x80, 0, "QR not set");
        assert_eq!(raw_rcode(&reply), 4, "unknown opcode wants NOTIMP");
        assert_eq!(reply[2] & 0x06, 0, "AA or TC copied: {:02x}", reply[2]);
        assert_eq!(reply[2] & 0x01, flags2 & 0x01, "RD is copied");
        assert_eq!(
            reply[3] & 0xF0,
            0,
            "RA, Z, AD or CD copied: {:02x}",
            reply[3]
        );
    }

    // Z bit set in the query → cleared in the reply, and answered normally.
    let mut q = raw_query(4, "h.rpc.svc.local.", 1, None);
    q[3] |= 0x40;
    let reply = udp_raw(env.dns(), &q, QUERY_TIMEOUT).expect("reply with Z set");
    assert_eq!(reply[3] & 0x40, 0, "Z bit not cleared");
    assert_eq!(raw_rcode(&reply), 0);
    let msg = Message::from_vec(&reply).expect("decodable");
    assert_eq!(msg.answers.len(), 1, "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_tcp_queries_are_all_answered() {
    let env = TestEnv::start(&[]).await;
    put_instances(&env, "p.rpc", 3).await;
    wait_count(env.dns(), "p.rpc.svc.local.", 3);
    let queries: Vec<Message> = [
        ("p.rpc.svc.local.", RecordType::A),
        ("p.rpc.svc.local.", RecordType::SRV),
        (ZONE, RecordType::SOA),
        ("nope.svc.local.", RecordType::A),
        ("p.rpc.svc.local.", RecordType::AAAA),
        ("example.com.", RecordType::A),
    ]
    .into_iter()
    .map(|(n, t)| build_query(n, t, None))
    .collect();
    let bytes: Vec<Vec<u8>> = queries
        .iter()
        .map(|q| q.to_vec().expect("encode"))
        .collect();
    let replies = tcp_raw_many(env.dns(), &bytes).expect("all replies on one connection");
    let mut want: Vec<u16> = queries.iter().map(|q| q.metadata.id).collect();
    let mut got: Vec<u16> = replies
        .iter()
        .map(|r| Message::from_vec(r).expect("decodable").metadata.id)
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "every pipelined query answered once");
}

/// Deterministic junk (a fixed LCG), so a failure reproduces.
fn junk(len: usize, mut seed: u32) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) as u8
        })
        .collect()
}

fn header(qdcount: u16) -> Vec<u8> {
    let mut h = vec![0x12, 0x34, 0, 0];
    h.extend_from_slice(&qdcount.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_queries_never_stop_the_server() {
    let env = TestEnv::start(&[]).await;
    put_instances(&env, "m.rpc", 1).await;
    wait_count(env.dns(), "m.rpc.svc.local.", 1);

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut p = header(1);
    p.extend_from_slice(b"\x01m\x03rp");
    cases.push(("question cut short", p));
    let mut p = header(1);
    p.extend_from_slice(b"\x3fabc\x00\x00\x01\x00\x01");
    cases.push(("label longer than the packet", p));
    let mut p = header(1);
    p.extend_from_slice(b"\x50abc\x00\x00\x01\x00\x01");
    cases.push(("reserved label type 0b01", p));
    let mut p = header(1);
    p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    cases.push(("pointer loop", p));
    let mut p = header(1);
    for _ in 0..5 {
        p.push(63);
        p.extend_from_slice(&[b'a'; 63]);
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    cases.push(("name over 255 octets", p));
    let mut p = header(1);
    p.extend_from_slice(&junk(200, 7));
    cases.push(("random bytes after a header", p));
    cases.push(("shorter than a header", vec![0x12, 0x34, 0, 0, 0]));
    cases.push(("empty datagram", vec![]));

    let good = build_query("m.rpc.svc.local.", RecordType::A, None);
    for (what, packet) in &cases {
        assert!(
            Message::from_vec(packet).is_err(),
            "test case {what} is not malformed"
        );
        if let Some(reply) = udp_raw(env.dns(), packet, Duration::from_millis(500)) {
            assert!(reply.len() >= 4, "{what}: reply of {} octets", reply.len());
            assert_ne!(reply[2] & 0x80, 0, "{what}: reply without QR");
            assert_eq!(raw_rcode(&reply), 1, "{what}: reply is not FORMERR");
        }
        if !packet.is_empty() {
            // Over TCP: a FORMERR or a closed connection, never a hang.
            if let Ok(reply) = tcp_raw(env.dns(), packet) {
                assert_eq!(
                    raw_rcode(&reply),
                    1,
                    "{what} over TCP: reply is not FORMERR"
                );
            }
        }
        let (msg, _) = try_exchange_udp(env.dns(), &good)
            .unwrap_or_else(|e| panic!("server stopped answering after {what}: {e}"));
        assert_eq!(msg.answers.len(), 1, "after {what}: {msg}");
    }
    let msg = try_exchange_tcp(env.dns(), &good).expect("TCP still answers");
    assert_eq!(msg.answers.len(), 1);
}
