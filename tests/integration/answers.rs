//! What rpcdns answers (SPEC §3 names and §4 answer table): record sets,
//! SRV and glue, SOA/NS, NODATA/NXDOMAIN, ANY, zone transfers, out-of-zone
//! names, the AA bit, question case echo, TTLs, and name edge cases (case
//! merge, hashed labels, service/instance collisions). Transport limits
//! (sizes, TC, EDNS, malformed input) belong in `transport`.

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::harness::*;

const SMS: &str = "sms.rpc.svc.local.";

/// Checks what every in-zone answer must have: AA, the question echoed.
#[track_caller]
fn assert_authoritative(msg: &Message, name: &str) {
    assert!(
        msg.metadata.authoritative,
        "AA bit missing for {name}: {msg}"
    );
    assert_eq!(msg.queries.len(), 1, "question not echoed: {msg}");
    assert_eq!(lower(msg.queries[0].name()), name.to_ascii_lowercase());
}

/// NOERROR, no answer, the zone's SOA in authority (RFC 2308 NODATA).
#[track_caller]
fn assert_nodata(msg: &Message, name: &str) {
    assert_authoritative(msg, name);
    assert_eq!(
        msg.metadata.response_code,
        ResponseCode::NoError,
        "{name}: {msg}"
    );
    assert!(msg.answers.is_empty(), "{name}: NODATA with answers: {msg}");
    let (_, _, owner) =
        soa_of(&msg.authorities).unwrap_or_else(|| panic!("{name}: no SOA in authority: {msg}"));
    assert_eq!(lower(&owner), ZONE);
}

#[track_caller]
fn assert_nxdomain(msg: &Message, name: &str) {
    assert_authoritative(msg, name);
    assert_eq!(
        msg.metadata.response_code,
        ResponseCode::NXDomain,
        "{name}: {msg}"
    );
    assert!(
        msg.answers.is_empty(),
        "{name}: NXDOMAIN with answers: {msg}"
    );
    let (_, _, owner) =
        soa_of(&msg.authorities).unwrap_or_else(|| panic!("{name}: no SOA in authority: {msg}"));
    assert_eq!(lower(&owner), ZONE);
}

fn wait_a(dns: SocketAddr, name: &str, want: &[&str]) {
    let want = ipv4s(want);
    eventually(PROPAGATION, || check_a(dns, name, &want));
}

/// Waits until `name` has `count` SRV records: every registration made so
/// far has arrived (each put is its own watch event).
fn wait_srv_count(dns: SocketAddr, name: &str, count: usize) {
    eventually(PROPAGATION, || {
        let msg = try_query_tcp(dns, name, RecordType::SRV, None)?;
        if msg.answers.len() == count {
            Ok(())
        } else {
            Err(format!(
                "{name} has {} SRV, want {count}: {msg}",
                msg.answers.len()
            ))
        }
    });
}

fn serial(dns: SocketAddr) -> Result<u32, String> {
    let msg = try_query_udp(dns, ZONE, RecordType::SOA, None)?;
    soa_of(&msg.answers)
        .map(|(soa, _, _)| soa.serial)
        .ok_or_else(|| format!("no SOA answer: {msg}"))
}

/// A temp config file with `yaml`; keep the dir alive while rpcdns runs.
fn config_file(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rpcdns.yaml");
    std::fs::write(&path, yaml).expect("write config");
    (dir, path.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_and_aaaa_list_each_distinct_address_once() {
    let env = TestEnv::start(&[]).await;
    let c = &env.client;
    let _r = [
        register(c, "sms.rpc", "10.0.0.5:8001", 10).await,
        register(c, "sms.rpc", "10.0.0.5:8002", 10).await,
        register(c, "sms.rpc", "10.0.0.6:8001", 10).await,
        register(c, "sms.rpc", "[fd00::5]:8001", 10).await,
        register(c, "sms.rpc", "[fd00:0::5]:8002", 10).await,
        register(c, "sms.rpc", "sms-0.sms:8001", 10).await,
    ];
    wait_srv_count(env.dns(), SMS, 6);
    wait_a(env.dns(), SMS, &["10.0.0.5", "10.0.0.6"]);
    let a = query_udp(env.dns(), SMS, RecordType::A, None);
    assert_authoritative(&a, SMS);
    assert_eq!(a.answers.len(), 2, "one A per distinct address: {a}");
    let aaaa = query_udp(env.dns(), SMS, RecordType::AAAA, None);
    assert_authoritative(&aaaa, SMS);
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
    let want: Vec<Ipv6Addr> = vec!["fd00::5".parse().expect("v6")];
    assert_eq!(
        aaaa_of(&aaaa.answers),
        want,
        "fd00::5 and fd00:0::5 are one AAAA: {aaaa}"
    );
    assert_eq!(aaaa.answers.len(), 1, "{aaaa}");
    for r in a.answers.iter().chain(&aaaa.answers) {
        assert_eq!(r.ttl, 5, "default positive TTL: {r}");
        assert_eq!(lower(&r.name), SMS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_rotate_between_responses() {
    let env = TestEnv::start(&[]).await;
    let c = &env.client;
    let mut regs = Vec::new();
    for i in 1..=4 {
        regs.push(register(c, "sms.rpc", &format!("10.0.0.{i}:80"), 10).await);
    }
    wait_a(
        env.dns(),
        SMS,
        &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"],
    );
    let mut firsts = BTreeSet::new();
    for _ in 0..20 {
        let msg = query_udp(env.dns(), SMS, RecordType::A, None);
        assert_eq!(msg.answers.len(), 4, "{msg}");
        firsts.insert(a_of(&msg.answers)[0]);
    }
    assert!(
        firsts.len() > 1,
        "the first A record never changed across 20 responses: {firsts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_at_service_and_grpc_name_with_glue() {
    let env = TestEnv::start(&[]).await;
    let c = &env.client;
    let r1 = register(c, "sms.rpc", "10.0.0.5:8001", 10).await;
    let r2 = register(c, "sms.rpc", "10.0.0.5:8001", 10).await; // same address, other id
    let r3 = register(c, "sms.rpc", "sms-0.sms:9000", 10).await;
    let r4 = register(c, "sms.rpc", "[fd00::5]:8003", 10).await;
    let want: BTreeSet<(u16, String)> = [
        (8001, r1.instance_name()),
        (8001, r2.instance_name()),
        (9000, "sms-0.sms.".to_string()),
        (8003, r4.instance_name()),
    ]
    .into_iter()
    .collect();
    let _keep = &r3;
    for name in [SMS.to_string(), format!("_grpc._tcp.{SMS}")] {
        eventually(PROPAGATION, || {
            let msg = try_query_tcp(env.dns(), &name, RecordType::SRV, None)?;
            let got: BTreeSet<(u16, String)> = srv_of(&msg.answers)
                .iter()
                .map(|s| (s.port, lower(&s.target)))
                .collect();
            if got == want {
                Ok(())
            } else {
                Err(format!("{name} SRV {got:?}, want {want:?}"))
            }
        });
        let msg = query_tcp(env.dns(), &name, RecordType::SRV, None);
        assert_authoritative(&msg, &name);
        assert_eq!(
            msg.answers.len(),
            4,
            "two ids with one address are two SRV: {msg}"
        );
        for r in &msg.answers {
            assert_eq!(lower(&r.name), name, "SRV owner is the question: {r}");
            let RData::SRV(srv) = &r.data else {
                panic!("non-SRV answer {r}")
            };
            assert_eq!((srv.priority, srv.weight), (0, 10), "{r}");
        }
        // Glue: the in-zone targets' addresses.
        let glue: BTreeSet<(String, String)> = msg
            .additionals
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some((lower(&r.name), a.0.to_string())),
                RData::AAAA(a) => Some((lower(&r.name), a.0.to_string())),
                _ => None,
            })
            .collect();
        for (target, addr) in [
            (r1.instance_name(), "10.0.0.5"),
            (r2.instance_name(), "10.0.0.5"),
            (r4.instance_name(), "fd00::5"),
        ] {
            assert!(
                glue.contains(&(target.clone(), addr.to_string())),
                "additional lacks {target} {addr}: {glue:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_names_answer_their_address() {
    let env = TestEnv::start(&[]).await;
    let v4 = register(&env.client, "sms.rpc", "10.0.0.5:8001", 10).await;
    let v6 = register(&env.client, "sms.rpc", "[fd00::7]:8001", 10).await;
    wait_srv_count(env.dns(), SMS, 2);
    let msg = query_udp(env.dns(), &v4.instance_name(), RecordType::A, None);
    assert_authoritative(&msg, &v4.instance_name());
    assert_eq!(msg.answers.len(), 1, "{msg}");
    let msg = query_udp(env.dns(), &v6.instance_name(), RecordType::AAAA, None);
    assert_authoritative(&msg, &v6.instance_name());
    assert_eq!(
        aaaa_of(&msg.answers),
        vec!["fd00::7".parse::<Ipv6Addr>().expect("v6")],
        "{msg}"
    );
    let msg = query_udp(env.dns(), &v4.instance_name(), RecordType::AAAA, None);
    assert_nodata(&msg, &v4.instance_name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soa_and_ns_at_apex_and_serial_follows_revision() {
    let (_dir, path) = config_file("dns:\n  negative_ttl: 3\n");
    let env = TestEnv::start(&["--config", &path, "--ttl", "7"]).await;
    let msg = query_udp(env.dns(), ZONE, RecordType::SOA, None);
    assert_authoritative(&msg, ZONE);
    let (soa, ttl, owner) = soa_of(&msg.answers).unwrap_or_else(|| panic!("no SOA answer: {msg}"));
    assert_eq!(lower(&owner), ZONE);
    assert_eq!(ttl, 7, "SOA as an answer carries the positive TTL");
    assert_eq!(lower(&soa.mname), format!("ns.{ZONE}"));
    assert_eq!(lower(&soa.rname), format!("hostmaster.{ZONE}"));
    assert_eq!(
        (soa.refresh, soa.retry, soa.expire, soa.minimum),
        (60, 10, 86400, 3)
    );

    let ns = query_udp(env.dns(), ZONE, RecordType::NS, None);
    assert_authoritative(&ns, ZONE);
    let targets: Vec<String> = ns
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::NS(n) => Some(lower(&n.0)),
            _ => None,
        })
        .collect();
    assert_eq!(targets, vec![format!("ns.{ZONE}")], "{ns}");

    let before = serial(env.dns()).expect("serial");
    let put_rev = put(&env.client, "sms.rpc/1", "10.0.0.1:80").await;
    assert!(
        i64::from(before) < put_rev,
        "serial {before} before put at {put_rev}"
    );
    eventually(PROPAGATION, || match serial(env.dns())? {
        s if i64::from(s) == put_rev => Ok(()),
        s => Err(format!("serial {s}, want the put's revision {put_rev}")),
    });
    let del_rev = delete(&env.client, "sms.rpc/1").await;
    eventually(PROPAGATION, || match serial(env.dns())? {
        s if i64::from(s) == del_rev => Ok(()),
        s => Err(format!("serial {s}, want the delete's revision {del_rev}")),
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodata_nxdomain_and_empty_non_terminals() {
    let env = TestEnv::start(&[]).await;
    let _r = register(&env.client, "sms.rpc", "10.0.0.5:8001", 10).await;
    wait_a(env.dns(), SMS, &["10.0.0.5"]);
    for (name, rtype) in [
        (SMS, RecordType::AAAA),
        (SMS, RecordType::CAA),
        (SMS, RecordType::MX),
        // Empty non-terminals: they exist because names below them do.
        ("rpc.svc.local.", RecordType::A),
        ("_tcp.sms.rpc.svc.local.", RecordType::A),
        ("_grpc._tcp.sms.rpc.svc.local.", RecordType::A),
    ] {
        let msg = query_udp(env.dns(), name, rtype, None);
        assert_nodata(&msg, name);
    }
    for name in [
        "nope.svc.local.",
        "nope.rpc.svc.local.",
        "x.nope.rpc.svc.local.",
        "12345.sms.rpc.svc.local.",
        "_http._tcp.sms.rpc.svc.local.",
        "a.b.12345.sms.rpc.svc.local.",
    ] {
        let msg = query_udp(env.dns(), name, RecordType::A, None);
        assert_nxdomain(&msg, name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_answers_exactly_one_rrset() {
    let env = TestEnv::start(&[]).await;
    let _a = register(&env.client, "sms.rpc", "10.0.0.5:8001", 10).await;
    let _b = register(&env.client, "sms.rpc", "[fd00::5]:8001", 10).await;
    wait_srv_count(env.dns(), SMS, 2);
    let msg = query_tcp(env.dns(), SMS, RecordType::ANY, None);
    assert_authoritative(&msg, SMS);
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError, "{msg}");
    let types: BTreeSet<RecordType> = msg.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types.len(), 1, "ANY must give one RRset (RFC 8482): {msg}");
    let t = types.into_iter().next().expect("one type");
    assert!(
        matches!(t, RecordType::A | RecordType::AAAA | RecordType::SRV),
        "ANY answered with {t}, which the name does not have"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_transfers_and_outside_names_are_refused() {
    let env = TestEnv::start(&[]).await;
    for rtype in [RecordType::AXFR, RecordType::IXFR] {
        let msg = query_tcp(env.dns(), ZONE, rtype, None);
        assert_eq!(
            msg.metadata.response_code,
            ResponseCode::Refused,
            "{rtype}: {msg}"
        );
        assert!(msg.answers.is_empty(), "{msg}");
    }
    for (name, rtype) in [
        ("example.com.", RecordType::A),
        (".", RecordType::NS),
        ("local.", RecordType::SOA),
        ("svc.local.example.", RecordType::A),
    ] {
        let msg = query_udp(env.dns(), name, rtype, None);
        assert_eq!(
            msg.metadata.response_code,
            ResponseCode::Refused,
            "{name} {rtype}: {msg}"
        );
        assert!(msg.answers.is_empty(), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_echoes_client_case_byte_for_byte() {
    let env = TestEnv::start(&[]).await;
    let _r = register(&env.client, "sms.rpc", "10.0.0.5:8001", 10).await;
    wait_a(env.dns(), SMS, &["10.0.0.5"]);
    for (name, qtype) in [
        ("SmS.RpC.SvC.LoCaL.", 1u16),
        ("NoPe.RpC.SvC.LoCaL.", 1),
        ("SVC.local.", 6),
    ] {
        let query = raw_query(0x4242, name, qtype, None);
        let question = &query[12..];
        for reply in [
            udp_raw(env.dns(), &query, QUERY_TIMEOUT)
                .unwrap_or_else(|| panic!("no reply for {name}")),
            tcp_raw(env.dns(), &query).expect("TCP reply"),
        ] {
            assert!(reply.len() >= 12 + question.len(), "short reply for {name}");
            assert_eq!(&reply[..2], &[0x42, 0x42], "id");
            assert_eq!(&reply[4..6], &[0, 1], "QDCOUNT");
            assert_eq!(
                &reply[12..12 + question.len()],
                question,
                "question not echoed byte for byte for {name}"
            );
            assert_ne!(reply[2] & 0x04, 0, "AA bit missing for {name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_follow_ttl_and_negative_ttl() {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    let _r = register(&client, "sms.rpc", "10.0.0.5:8001", 10).await;
    // (ttl, negative_ttl) → SOA TTL in negative answers is the smaller one.
    for (ttl, neg) in [(7u32, 3u32), (2, 9)] {
        let (_dir, path) = config_file(&format!("dns:\n  ttl: {ttl}\n  negative_ttl: {neg}\n"));
        let rpcdns = Rpcdns::start(&etcd.endpoint(), &["--config", &path]);
        rpcdns.wait_ready();
        let dns = rpcdns.dns_addr;
        wait_a(dns, SMS, &["10.0.0.5"]);
        let pos = query_tcp(dns, SMS, RecordType::SRV, None);
        assert!(!pos.answers.is_empty(), "{pos}");
        for r in pos.answers.iter().chain(&pos.additionals) {
            assert_eq!(r.ttl, ttl, "positive TTL: {r}");
        }
        for (name, rtype) in [(SMS, RecordType::AAAA), ("nope.svc.local.", RecordType::A)] {
            let msg = query_udp(dns, name, rtype, None);
            let (soa, soa_ttl, _) =
                soa_of(&msg.authorities).unwrap_or_else(|| panic!("no SOA in authority: {msg}"));
            assert_eq!(
                soa_ttl,
                ttl.min(neg),
                "SOA TTL in a negative answer (RFC 2308 §3)"
            );
            assert_eq!(soa.minimum, neg, "SOA minimum is negative_ttl");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_without_instances_is_nxdomain() {
    let env = TestEnv::start(&[]).await;
    let r = register(&env.client, "sms.rpc", "10.0.0.5:8001", 10).await;
    let instance = r.instance_name();
    wait_a(env.dns(), SMS, &["10.0.0.5"]);
    r.revoke().await;
    eventually(PROPAGATION, || check_nxdomain(env.dns(), SMS));
    assert_nxdomain(&query_udp(env.dns(), SMS, RecordType::SRV, None), SMS);
    assert_nxdomain(
        &query_udp(env.dns(), &instance, RecordType::A, None),
        &instance,
    );
    // With no service left under it, rpc.svc.local. is gone too.
    assert_nxdomain(
        &query_udp(env.dns(), "rpc.svc.local.", RecordType::A, None),
        "rpc.svc.local.",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_keys_differing_in_case_merge() {
    let env = TestEnv::start(&[]).await;
    put(&env.client, "SMS.rpc/1", "10.0.0.1:80").await;
    put(&env.client, "sms.rpc/2", "10.0.0.2:80").await;
    wait_a(env.dns(), SMS, &["10.0.0.1", "10.0.0.2"]);
    let msg = query_udp(env.dns(), SMS, RecordType::SRV, None);
    let targets: BTreeSet<String> = srv_of(&msg.answers)
        .iter()
        .map(|s| lower(&s.target))
        .collect();
    let want: BTreeSet<String> = [format!("1.{SMS}"), format!("2.{SMS}")]
        .into_iter()
        .collect();
    assert_eq!(targets, want, "{msg}");
    wait_a(env.dns(), &format!("1.{SMS}"), &["10.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_instance_id_gets_hashed_label() {
    let env = TestEnv::start(&[]).await;
    let key = "sms.rpc/Node_1";
    put(&env.client, key, "10.0.0.9:80").await;
    let label = hashed_label(key.as_bytes());
    let name = format!("{label}.{SMS}");
    wait_a(env.dns(), &name, &["10.0.0.9"]);
    let msg = query_udp(env.dns(), SMS, RecordType::SRV, None);
    let targets: Vec<String> = srv_of(&msg.answers)
        .iter()
        .map(|s| lower(&s.target))
        .collect();
    assert_eq!(targets, vec![name], "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_name_wins_over_instance_name() {
    let env = TestEnv::start(&[]).await;
    put(&env.client, "b.rpc/a", "10.0.0.1:80").await;
    put(&env.client, "a.b.rpc/1", "10.0.0.2:80").await;
    wait_a(env.dns(), "1.a.b.rpc.svc.local.", &["10.0.0.2"]);
    wait_a(env.dns(), "a.b.rpc.svc.local.", &["10.0.0.2"]);
    let hashed = format!("{}.b.rpc.svc.local.", hashed_label(b"b.rpc/a"));
    wait_a(env.dns(), &hashed, &["10.0.0.1"]);
    wait_a(env.dns(), "b.rpc.svc.local.", &["10.0.0.1"]);
    let msg = query_udp(env.dns(), "b.rpc.svc.local.", RecordType::SRV, None);
    let targets: Vec<String> = srv_of(&msg.answers)
        .iter()
        .map(|s| lower(&s.target))
        .collect();
    assert_eq!(
        targets,
        vec![hashed],
        "the instance takes its hashed label: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_flag_moves_the_apex() {
    let env = TestEnv::start(&["--zone", "svc.internal"]).await;
    put(&env.client, "sms.rpc/1", "10.0.0.1:80").await;
    wait_a(env.dns(), "sms.rpc.svc.internal.", &["10.0.0.1"]);
    let soa = query_udp(env.dns(), "svc.internal.", RecordType::SOA, None);
    let (soa, _, _) =
        soa_of(&soa.answers).unwrap_or_else(|| panic!("no SOA at the new apex: {soa}"));
    assert_eq!(lower(&soa.mname), "ns.svc.internal.");
    let old = query_udp(env.dns(), SMS, RecordType::A, None);
    assert_eq!(
        old.metadata.response_code,
        ResponseCode::Refused,
        "the default zone is now outside: {old}"
    );
}

/// The joined character-strings of every TXT record in `msg`'s answer.
fn txt_texts(msg: &Message) -> Vec<String> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The default service config (round_robin) at `_grpc_config.<service>`
/// and at every port name, over UDP and TCP; overrides by glob, `off`
/// included; port names answer only their port's instances; a service on
/// several ports is warned about once, counted, and shown in /debug/zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_config_txt_and_port_names() {
    let (_dir, config) = config_file(
        "grpc:\n  overrides:\n    - pattern: \"plain.*\"\n      service_config: off\n    - pattern: pay.rpc\n      service_config: '{\"loadBalancingPolicy\": \"pick_first\", \"methodConfig\": [{\"name\": [{}], \"timeout\": \"2s\"}]}'\n",
    );
    let env = TestEnv::start(&["--config", &config]).await;
    let c = &env.client;
    let dns = env.dns();
    let _r = [
        register(c, "sms.rpc", "10.0.0.1:8001", 10).await,
        register(c, "sms.rpc", "10.0.0.2:8001", 10).await,
        register(c, "plain.rpc", "10.0.0.3:8001", 10).await,
        register(c, "pay.rpc", "10.0.0.4:9000", 10).await,
    ];
    let other_port = register(c, "sms.rpc", "10.0.0.5:8002", 10).await;
    wait_srv_count(dns, SMS, 3);
    wait_srv_count(dns, "pay.rpc.svc.local.", 1);
    wait_srv_count(dns, "plain.rpc.svc.local.", 1);

    let round_robin =
        r#"grpc_config=[{"serviceConfig":{"loadBalancingConfig":[{"round_robin":{}}]}}]"#;
    // At `_grpc_config.<name>` (gRFC A2), and at the name itself, where
    // grpc-js looks.
    for name in [
        "_grpc_config.sms.rpc.svc.local.",
        "_GRPC_CONFIG.Port-8002.SMS.rpc.svc.local.",
        "sms.rpc.svc.local.",
        "port-8001.sms.rpc.svc.local.",
    ] {
        let udp = query_udp(dns, name, RecordType::TXT, None);
        assert_authoritative(&udp, name);
        assert_eq!(txt_texts(&udp), [round_robin], "{name}: {udp}");
        let tcp = query_tcp(dns, name, RecordType::TXT, Some(1232));
        assert_eq!(tcp.answers, udp.answers, "{name}: same over TCP");
        if name.starts_with('_') {
            assert_nodata(&query_udp(dns, name, RecordType::A, None), name);
        }
    }
    assert_nodata(
        &query_udp(dns, "plain.rpc.svc.local.", RecordType::TXT, None),
        "plain.rpc.svc.local.",
    );
    let pay = query_udp(
        dns,
        "_grpc_config.pay.rpc.svc.local.",
        RecordType::TXT,
        None,
    );
    assert_eq!(
        txt_texts(&pay),
        [
            r#"grpc_config=[{"serviceConfig":{"loadBalancingPolicy":"pick_first","methodConfig":[{"name":[{}],"timeout":"2s"}]}}]"#
        ]
    );
    for name in [
        "_grpc_config.plain.rpc.svc.local.",
        "_grpc_config.port-8001.plain.rpc.svc.local.",
        "_grpc_config.nope.rpc.svc.local.",
        "_grpc_config.port-9999.sms.rpc.svc.local.",
    ] {
        assert_nxdomain(&query_udp(dns, name, RecordType::TXT, None), name);
    }

    // Port names: only that port's instances.
    wait_a(
        dns,
        "port-8001.sms.rpc.svc.local.",
        &["10.0.0.1", "10.0.0.2"],
    );
    wait_a(dns, "port-8002.sms.rpc.svc.local.", &["10.0.0.5"]);
    wait_a(dns, SMS, &["10.0.0.1", "10.0.0.2", "10.0.0.5"]);
    let srv = query_tcp(dns, "port-8002.sms.rpc.svc.local.", RecordType::SRV, None);
    let srvs = srv_of(&srv.answers);
    assert_eq!(srvs.len(), 1, "{srv}");
    assert_eq!(srvs[0].port, 8002);
    assert_eq!(lower(&srvs[0].target), other_port.instance_name());
    assert_eq!(
        a_of(&srv.additionals),
        ipv4s(&["10.0.0.5"]).into_iter().collect::<Vec<_>>()
    );

    // Warned about once, counted, shown.
    let warning = "service instances listen on several ports";
    let http = env.rpcdns.http_addr;
    let gauge = |want: f64| {
        eventually(PROPAGATION, || {
            let got = metric(http, "rpcdns_zone_multi_port_services")?;
            (got == want)
                .then_some(())
                .ok_or(format!("gauge {got}, want {want}"))
        })
    };
    gauge(1.0);
    let zone = env.rpcdns.debug_zone().expect("/debug/zone");
    let sms = zone["zone"]["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == "sms.rpc"))
        .unwrap_or_else(|| panic!("no sms.rpc in {zone}"));
    assert_eq!(sms["several_ports"], true, "{sms}");
    assert_eq!(
        sms["ports"][1]["name"], "port-8002.sms.rpc.svc.local.",
        "{sms}"
    );
    assert_eq!(sms["ports"][0]["instances"], 2, "{sms}");
    assert_eq!(
        sms["grpc_config"]["service_config"]["loadBalancingConfig"][0]["round_robin"],
        serde_json::json!({}),
        "{sms}"
    );
    let more = register(c, "sms.rpc", "10.0.0.6:8003", 10).await;
    wait_a(dns, "port-8003.sms.rpc.svc.local.", &["10.0.0.6"]);
    let warnings = |rpcdns: &Rpcdns| {
        rpcdns
            .lines()
            .iter()
            .filter(|l| l.contains(warning))
            .count()
    };
    assert_eq!(
        warnings(&env.rpcdns),
        1,
        "one warning:\n{}",
        env.rpcdns.log()
    );
    more.revoke().await;
    other_port.revoke().await;
    eventually(PROPAGATION, || {
        check_nxdomain(dns, "port-8003.sms.rpc.svc.local.")
    });
    gauge(0.0);
    assert!(
        env.rpcdns
            .log()
            .contains("service instances listen on one port again"),
        "{}",
        env.rpcdns.log()
    );
    assert_eq!(warnings(&env.rpcdns), 1);
}

/// PTR in the configured reverse zones (issue 11, point 4): every instance
/// registered at an address, for IPv4 and IPv6, following etcd; NXDOMAIN
/// for an address nobody has, NODATA above one, REFUSED outside the
/// configured networks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ptr_for_instance_addresses_in_the_reverse_zones() {
    let (_dir, config) = config_file("dns:\n  reverse_zones: [\"10.0.0.0/8\", \"fd00::/8\"]\n");
    let env = TestEnv::start(&["--config", &config]).await;
    let c = &env.client;
    let dns = env.dns();
    let one = register(c, "sms.rpc", "10.0.0.5:8001", 10).await;
    let two = register(c, "pay.rpc", "10.0.0.5:9000", 10).await;
    let v6 = register(c, "pay.rpc", "[fd00::7]:9000", 10).await;
    wait_srv_count(dns, "pay.rpc.svc.local.", 2);
    wait_srv_count(dns, SMS, 1);

    let ptr_targets = |name: &str| -> Result<Vec<String>, String> {
        let msg = try_query_udp(dns, name, RecordType::PTR, None)?;
        let mut targets: Vec<String> = msg
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(ptr) => Some(lower(&ptr.0)),
                _ => None,
            })
            .collect();
        targets.sort();
        Ok(targets)
    };
    let v4_name = "5.0.0.10.in-addr.arpa.";
    let mut want = vec![one.instance_name(), two.instance_name()];
    want.sort();
    assert_eq!(ptr_targets(v4_name).expect("PTR"), want);
    let v6_name = format!("7.{}d.f.ip6.arpa.", "0.".repeat(29));
    assert_eq!(ptr_targets(&v6_name).expect("PTR"), [v6.instance_name()]);
    let msg = query_tcp(dns, v4_name, RecordType::PTR, None);
    assert!(msg.metadata.authoritative);
    assert_eq!(msg.answers.len(), 2, "over TCP too: {msg}");

    let nx = query_udp(dns, "6.0.0.10.in-addr.arpa.", RecordType::PTR, None);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain, "{nx}");
    let (_, _, owner) = soa_of(&nx.authorities).expect("SOA in authority");
    assert_eq!(lower(&owner), "10.in-addr.arpa.");
    let ent = query_udp(dns, "0.0.10.in-addr.arpa.", RecordType::PTR, None);
    assert_eq!(ent.metadata.response_code, ResponseCode::NoError, "{ent}");
    assert!(ent.answers.is_empty());
    let outside = query_udp(dns, "1.1.168.192.in-addr.arpa.", RecordType::PTR, None);
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);

    // The records follow etcd.
    two.revoke().await;
    eventually(PROPAGATION, || match ptr_targets(v4_name) {
        Ok(targets) if targets == [one.instance_name()] => Ok(()),
        other => Err(format!("{v4_name}: {other:?}")),
    });
    one.revoke().await;
    eventually(PROPAGATION, || {
        let msg = try_query_udp(dns, v4_name, RecordType::PTR, None)?;
        (msg.metadata.response_code == ResponseCode::NXDomain)
            .then_some(())
            .ok_or(format!("{msg}"))
    });
    let zone = env.rpcdns.debug_zone().expect("/debug/zone");
    assert_eq!(
        zone["zone"]["ptr_addresses"], 1,
        "{}",
        zone["zone"]["reverse_zones"]
    );
    assert_eq!(zone["zone"]["reverse_zones"][1]["zone"], "d.f.ip6.arpa.");
}
