//! SkyDNS records, as CoreDNS's `etcd` plugin reads them (issue 12): the
//! plugin's own test fixtures written to a real etcd, and the answers its
//! tests expect, over real sockets; where rpcdns answers otherwise
//! (README "SkyDNS and CoreDNS-etcd"), the test says so.

use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};

use crate::harness::*;

/// CoreDNS `plugin/etcd/lookup_test.go`, `group_test.go` and
/// `other_test.go` (`services`, `servicesGroup`, `servicesOther`), keys
/// and values as the tests write them; `dns/apex` from the zone-apex
/// cases, moved into this zone.
const COREDNS_SERVICES: &[(&str, &str)] = &[
    (
        "region1/dev/server1/a",
        r#"{"host":"dev.server1","port":8080}"#,
    ),
    (
        "region1/prod/server1/a",
        r#"{"host":"10.0.0.1","port":8080}"#,
    ),
    (
        "region1/prod/server1/b",
        r#"{"host":"10.0.0.2","port":8080}"#,
    ),
    ("region1/prod/server6/b", r#"{"host":"::1","port":8080}"#),
    ("region1/prod/server1/txt/a", r#"{"text":"sometext"}"#),
    ("region1/prod/server1/txt/b", r#"{"text":"moretext"}"#),
    (
        "region1/prod/cname",
        r#"{"host":"unresolvable.skydns.test"}"#,
    ),
    (
        "priority",
        r#"{"host":"priority.server1","port":8080,"priority":333}"#,
    ),
    ("region1/sub/a", r#"{"host":"sub.server1"}"#),
    ("region1/sub/b", r#"{"host":"sub.server2","port":80}"#),
    ("region1/sub/c", r#"{"host":"10.0.0.1","port":8080}"#),
    (
        "targetstrip/a",
        r#"{"host":"10.0.0.1","port":8080,"targetstrip":1}"#,
    ),
    ("cname/b", r#"{"host":"a.cname.skydns.test"}"#),
    ("cname/a", r#"{"host":"b.cname.skydns.test"}"#),
    ("dns/ns/a", r#"{"host":"10.0.0.2"}"#),
    ("dns/ns/b", r#"{"host":"10.0.0.3"}"#),
    ("dns/ns/c/ns1", r#"{"host":"10.0.0.4","targetstrip":1}"#),
    ("dns/ns/c/ns2", r#"{"host":"10.0.0.5","targetstrip":1}"#),
    ("dns/apex/a1", r#"{"host":"10.0.0.4"}"#),
    ("dns/apex/a2", r#"{"host":"10.0.0.5"}"#),
    ("dns/apex/a3", r#"{"host":"2003::8:1"}"#),
    ("dom/a", r#"{"host":"127.0.0.1","group":"g1"}"#),
    ("dom/sub/b", r#"{"host":"127.0.0.2","group":"g1"}"#),
    ("dom2/a", r#"{"host":"127.0.0.1","group":"g1"}"#),
    ("dom2/sub/b", r#"{"host":"127.0.0.2"}"#),
    ("dom1/a", r#"{"host":"127.0.0.1","group":"g1"}"#),
    ("dom1/sub/b", r#"{"host":"127.0.0.2","group":"g2"}"#),
    ("dom3/a", r#"{"text":"foo","group":"g1"}"#),
    ("dom3/sub/b", r#"{"text":"bar","group":"g1"}"#),
    ("mx2/a", r#"{"host":"a.ipaddr.skydns.test","mail":true}"#),
    ("ipaddr/a", r#"{"host":"172.16.1.1"}"#),
    ("txt/a1", r#"{"text":"abc"}"#),
    ("txt/a2", r#"{"text":"abc abc"}"#),
    ("http/multiport/http", r#"{"host":"10.11.11.10","port":80}"#),
    (
        "http/multiport/https",
        r#"{"host":"10.11.11.10","port":443}"#,
    ),
];

/// CoreDNS `plugin/etcd/cname_test.go` (`servicesCname`).
const COREDNS_CNAMES: &[(&str, &str)] = &[
    (
        "region1/dev/server1/a",
        r#"{"host":"cname1.region2.skydns.test"}"#,
    ),
    ("region2/cname1", r#"{"host":"cname2.region2.skydns.test"}"#),
    ("region2/cname2", r#"{"host":"cname3.region2.skydns.test"}"#),
    ("region2/cname3", r#"{"host":"cname4.region2.skydns.test"}"#),
    ("region2/cname4", r#"{"host":"cname5.region2.skydns.test"}"#),
    ("region2/cname5", r#"{"host":"cname6.region2.skydns.test"}"#),
    (
        "region2/cname6",
        r#"{"host":"endpoint.region2.skydns.test"}"#,
    ),
    ("region2/endpoint", r#"{"host":"10.240.0.1"}"#),
    ("region2", r#"{"host":"mainendpoint.region2.skydns.test"}"#),
    ("region3/cname3", r#"{"host":"cname2.region3.skydns.test"}"#),
    ("region3/cname2", r#"{"host":"cname1.region3.skydns.test"}"#),
    (
        "region3/cname1",
        r#"{"host":"endpoint.region3.skydns.test"}"#,
    ),
    ("region3/endpoint", r#"{"text":"SOME-RECORD-TEXT"}"#),
];

const CONFIG: &str = "dns:\n  zone: skydns.test.\nsources:\n  - format: skydns\n";

fn key(path: &str) -> String {
    format!("/skydns/test/skydns/{path}")
}

/// A record as the CoreDNS tests compare it: owner, TTL, type, data.
fn show(record: &Record) -> String {
    let data = match &record.data {
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>()
            .join(""),
        other => other.to_string(),
    };
    format!(
        "{} {} {} {}",
        lower(&record.name),
        record.ttl,
        record.record_type(),
        data
    )
}

fn sorted(records: &[Record]) -> Vec<String> {
    let mut shown: Vec<String> = records.iter().map(show).collect();
    shown.sort();
    shown
}

fn ask(dns: std::net::SocketAddr, name: &str, rtype: RecordType) -> Message {
    // Over TCP: a whole answer whatever its size.
    query_tcp(dns, name, rtype, None)
}

/// An answer as CoreDNS's tests expect it: rcode, answers and additional
/// records (sorted), and the SOA of a negative answer.
fn expect(
    dns: std::net::SocketAddr,
    name: &str,
    rtype: RecordType,
    answers: &[&str],
    extra: &[&str],
) {
    let reply = ask(dns, name, rtype);
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NoError,
        "{name} {rtype}"
    );
    assert!(reply.metadata.authoritative, "{name} {rtype}: AA");
    let mut want: Vec<String> = answers.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(sorted(&reply.answers), want, "{name} {rtype}: answers");
    let mut want: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        sorted(&reply.additionals),
        want,
        "{name} {rtype}: additional"
    );
    if answers.is_empty() {
        assert!(
            soa_of(&reply.authorities).is_some(),
            "{name} {rtype}: NODATA without SOA"
        );
    }
}

fn expect_nxdomain(dns: std::net::SocketAddr, name: &str, rtype: RecordType) {
    let reply = ask(dns, name, rtype);
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NXDomain,
        "{name} {rtype}"
    );
    assert!(reply.answers.is_empty());
    let (_, _, owner) = soa_of(&reply.authorities).expect("NXDOMAIN carries the SOA");
    assert_eq!(lower(&owner), "skydns.test.");
}

/// CoreDNS's `etcd` plugin tests, case by case, from a real etcd: the
/// answers the plugin's tests expect (numbered as in its files), then its
/// CNAME fixtures written over the first set (the watch replaces and
/// deletes), a bad value that CoreDNS would fail every query above with,
/// and an etcd outage, which CoreDNS answers with SERVFAIL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coredns_etcd_plugin_cases() {
    let mut etcd = Etcd::start();
    let client = etcd.client().await;
    for (path, value) in COREDNS_SERVICES {
        put(&client, key(path), *value).await;
    }
    let rpcdns = start_with_config(&etcd.endpoint(), CONFIG);
    let dns = rpcdns.dns_addr;
    use RecordType::*;

    // lookup_test.go
    let srv = "a.server1.dev.region1.skydns.test.";
    expect(
        dns,
        srv,
        SRV,
        &[&format!("{srv} 300 SRV 10 100 8080 dev.server1.")],
        &[],
    );
    // [1] the letter case of the question comes back.
    let mixed = "a.SERVer1.dEv.region1.skydns.tEst.";
    let reply = ask(dns, mixed, SRV);
    assert_eq!(reply.answers[0].name.to_ascii(), mixed);
    expect_nxdomain(dns, "doesnotexist.skydns.test.", A);
    let a = "a.server1.prod.region1.skydns.test.";
    expect(dns, a, A, &[&format!("{a} 300 A 10.0.0.1")], &[]);
    expect(
        dns,
        a,
        SRV,
        &[&format!("{a} 300 SRV 10 100 8080 {a}")],
        &[&format!("{a} 300 A 10.0.0.1")],
    );
    let b6 = "b.server6.prod.region1.skydns.test.";
    expect(dns, b6, AAAA, &[&format!("{b6} 300 AAAA ::1")], &[]);
    let s1 = "server1.prod.region1.skydns.test.";
    expect(
        dns,
        s1,
        A,
        &[
            &format!("{s1} 300 A 10.0.0.1"),
            &format!("{s1} 300 A 10.0.0.2"),
        ],
        &[],
    );
    let p = "priority.skydns.test.";
    expect(
        dns,
        p,
        SRV,
        &[&format!("{p} 300 SRV 333 100 8080 priority.server1.")],
        &[],
    );
    let sub = "sub.region1.skydns.test.";
    expect(
        dns,
        sub,
        SRV,
        &[
            &format!("{sub} 300 SRV 10 33 0 sub.server1."),
            &format!("{sub} 300 SRV 10 33 80 sub.server2."),
            &format!("{sub} 300 SRV 10 33 8080 c.sub.region1.skydns.test."),
        ],
        &["c.sub.region1.skydns.test. 300 A 10.0.0.1"],
    );
    let ts = "targetstrip.skydns.test.";
    expect(
        dns,
        ts,
        SRV,
        &[&format!("{ts} 300 SRV 10 100 8080 {ts}")],
        &[&format!("{ts} 300 A 10.0.0.1")],
    );
    // [10] a CNAME to a name the zone does not have is left out.
    expect(dns, "cname.prod.region1.skydns.test.", A, &[], &[]);
    let txt = "txt.server1.prod.region1.skydns.test.";
    expect(
        dns,
        txt,
        TXT,
        &[
            &format!("{txt} 300 TXT moretext"),
            &format!("{txt} 300 TXT sometext"),
        ],
        &[],
    );
    // [12]-[14] query wildcards (`*`, `any`): not served (README).
    expect_nxdomain(dns, "*.region1.skydns.test.", SRV);
    expect_nxdomain(dns, "prod.any.skydns.test.", SRV);
    // [15] a CNAME loop answers nothing.
    expect(dns, "a.cname.skydns.test.", A, &[], &[]);
    // [16] CoreDNS asks its upstream for `dev.server1` (none in its
    // test: NODATA); rpcdns gives the CNAME for the resolver to follow.
    expect(
        dns,
        srv,
        TXT,
        &[&format!("{srv} 300 CNAME dev.server1.")],
        &[],
    );
    expect(dns, "a.server1.prod.region1.skydns.test.", HINFO, &[], &[]);
    expect_nxdomain(dns, "a.server1.nonexistent.region1.skydns.test.", HINFO);
    // [19]-[21] SOA and NS are rpcdns's own (README).
    assert!(soa_of(&ask(dns, "skydns.test.", SOA).answers).is_some());
    assert_eq!(ask(dns, "skydns.test.", NS).answers.len(), 1);
    expect_nxdomain(dns, "a.skydns.test.", NS);
    let ns = "ns.dns.skydns.test.";
    expect(
        dns,
        ns,
        A,
        &[
            &format!("{ns} 300 A 10.0.0.2"),
            &format!("{ns} 300 A 10.0.0.3"),
            &format!("{ns} 300 A 10.0.0.4"),
            &format!("{ns} 300 A 10.0.0.5"),
        ],
        &[],
    );
    // [24]-[28] the apex's addresses are `apex.dns`'s.
    expect(
        dns,
        "skydns.test.",
        A,
        &["skydns.test. 300 A 10.0.0.4", "skydns.test. 300 A 10.0.0.5"],
        &[],
    );
    expect(
        dns,
        "skydns.test.",
        AAAA,
        &["skydns.test. 300 AAAA 2003::8:1"],
        &[],
    );

    // group_test.go
    expect(
        dns,
        "dom.skydns.test.",
        A,
        &[
            "dom.skydns.test. 300 A 127.0.0.1",
            "dom.skydns.test. 300 A 127.0.0.2",
        ],
        &[],
    );
    expect(
        dns,
        "dom2.skydns.test.",
        A,
        &[
            "dom2.skydns.test. 300 A 127.0.0.1",
            "dom2.skydns.test. 300 A 127.0.0.2",
        ],
        &[],
    );
    expect(
        dns,
        "dom1.skydns.test.",
        A,
        &["dom1.skydns.test. 300 A 127.0.0.1"],
        &[],
    );
    expect(
        dns,
        "dom3.skydns.test.",
        TXT,
        &[
            "dom3.skydns.test. 300 TXT bar",
            "dom3.skydns.test. 300 TXT foo",
        ],
        &[],
    );

    // other_test.go: TXT, duplicates; MX is not served (README).
    expect(
        dns,
        "a1.txt.skydns.test.",
        TXT,
        &["a1.txt.skydns.test. 300 TXT abc"],
        &[],
    );
    expect(
        dns,
        "a2.txt.skydns.test.",
        TXT,
        &["a2.txt.skydns.test. 300 TXT abc abc"],
        &[],
    );
    let multi = "multiport.http.skydns.test.";
    expect(dns, multi, A, &[&format!("{multi} 300 A 10.11.11.10")], &[]);
    expect(dns, "mx2.skydns.test.", MX, &[], &[]);
    // A text of 400 octets: one record of two strings, over UDP too.
    put(
        &client,
        key("large400"),
        format!(r#"{{"text":"{}"}}"#, "0".repeat(400)),
    )
    .await;
    eventually(Duration::from_secs(10), || {
        let reply = try_query_udp(dns, "large400.skydns.test.", TXT, Some(1232))?;
        match reply.answers.first().map(|r| &r.data) {
            Some(RData::TXT(txt)) if txt.txt_data.len() == 2 && txt.txt_data[0].len() == 255 => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    });

    // cname_test.go, written over the first set: one key changes, the
    // others come.
    for (path, value) in COREDNS_CNAMES {
        put(&client, key(path), *value).await;
    }
    let chain: Vec<String> = (1..=5)
        .map(|i| {
            format!(
                "cname{i}.region2.skydns.test. 300 CNAME cname{}.region2.skydns.test.",
                i + 1
            )
        })
        .chain([
            "cname6.region2.skydns.test. 300 CNAME endpoint.region2.skydns.test.".to_owned(),
            "endpoint.region2.skydns.test. 300 A 10.240.0.1".to_owned(),
        ])
        .collect();
    eventually(Duration::from_secs(10), || {
        let reply = try_query_tcp(dns, srv, SRV, None)?;
        // In order: each link, then the address.
        let extra: Vec<String> = reply.additionals.iter().map(show).collect();
        if extra == chain {
            Ok(())
        } else {
            Err(format!("{extra:?}"))
        }
    });
    let reply = ask(dns, srv, SRV);
    assert_eq!(
        reply.answers.iter().map(show).collect::<Vec<_>>(),
        [format!(
            "{srv} 300 SRV 10 100 0 cname1.region2.skydns.test."
        )]
    );
    // The exact key only, though names are below it.
    expect(
        dns,
        "region2.skydns.test.",
        CNAME,
        &["region2.skydns.test. 300 CNAME mainendpoint.region2.skydns.test."],
        &[],
    );
    expect(dns, "endpoint.region3.skydns.test.", CNAME, &[], &[]);
    let reply = ask(dns, "cname3.region3.skydns.test.", TXT);
    assert_eq!(
        reply.answers.iter().map(show).collect::<Vec<_>>(),
        [
            "cname3.region3.skydns.test. 300 CNAME cname2.region3.skydns.test.",
            "cname2.region3.skydns.test. 300 CNAME cname1.region3.skydns.test.",
            "cname1.region3.skydns.test. 300 CNAME endpoint.region3.skydns.test.",
            "endpoint.region3.skydns.test. 300 TXT SOME-RECORD-TEXT",
        ]
    );

    // A bad value is skipped: the names above it still answer (CoreDNS:
    // SERVFAIL for every query that reads it).
    put(
        &client,
        key("region1/prod/server1/c"),
        r#"{"host":"10.0.0.3","port":"80"}"#,
    )
    .await;
    wait_skipped(&rpcdns, &key("region1/prod/server1/c"), "bad_json");
    expect(
        dns,
        s1,
        A,
        &[
            &format!("{s1} 300 A 10.0.0.1"),
            &format!("{s1} 300 A 10.0.0.2"),
        ],
        &[],
    );
    // A key deleted: its name goes, and so do its answers above.
    delete(&client, key("region1/prod/server6/b")).await;
    eventually(Duration::from_secs(10), || check_nxdomain(dns, b6));

    // etcd stops: the same answers, from memory (CoreDNS: SERVFAIL).
    etcd.stop();
    eventually(Duration::from_secs(10), || {
        match rpcdns.etcd_connected()? {
            false => Ok(()),
            true => Err("still connected".to_owned()),
        }
    });
    expect(
        dns,
        s1,
        A,
        &[
            &format!("{s1} 300 A 10.0.0.1"),
            &format!("{s1} 300 A 10.0.0.2"),
        ],
        &[],
    );
    expect(
        dns,
        "dom1.skydns.test.",
        A,
        &["dom1.skydns.test. 300 A 127.0.0.1"],
        &[],
    );
}

/// A SkyDNS tree beside go-zero services in one zone: a SkyDNS name that
/// aliases a go-zero service, a name both give (the source listed first
/// answers; `/debug/zone` shows the other as shadowed), TTLs and weights
/// from the values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skydns_beside_go_zero() {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    let _sms = register(&client, "sms.rpc", "10.0.0.5:8001", 60).await;
    let _pay = register(&client, "pay.rpc", "10.0.0.6:8002", 60).await;
    put(
        &client,
        "/skydns/local/svc/db/primary",
        r#"{"host":"10.1.0.1","port":5432,"weight":30,"ttl":60}"#,
    )
    .await;
    put(
        &client,
        "/skydns/local/svc/db/replica",
        r#"{"host":"10.1.0.2","port":5432,"weight":10,"ttl":60}"#,
    )
    .await;
    put(
        &client,
        "/skydns/local/svc/sms",
        r#"{"host":"sms.rpc.svc.local"}"#,
    )
    .await;
    // pay.rpc: go-zero's (listed first) and SkyDNS's.
    put(
        &client,
        "/skydns/local/svc/rpc/pay",
        r#"{"host":"10.9.9.9"}"#,
    )
    .await;
    let rpcdns = start_with_config(
        &etcd.endpoint(),
        "sources:\n  - format: gozero\n  - format: skydns\n",
    );
    let dns = rpcdns.dns_addr;
    let reply = query_udp(dns, "db.svc.local.", RecordType::SRV, None);
    let mut srv: Vec<String> = reply.answers.iter().map(show).collect();
    srv.sort();
    assert_eq!(
        srv,
        [
            "db.svc.local. 60 SRV 10 25 5432 replica.db.svc.local.",
            "db.svc.local. 60 SRV 10 75 5432 primary.db.svc.local.",
        ]
    );
    assert_eq!(reply.additionals.len(), 2, "glue for both");
    // The SRV targets answer A, as clients that resolve targets ask.
    let reply = query_udp(dns, "replica.db.svc.local.", RecordType::A, None);
    assert_eq!(
        a_of(&reply.answers),
        ["10.1.0.2".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    // An alias to a go-zero service: the CNAME, for the resolver to follow.
    let reply = query_udp(dns, "sms.svc.local.", RecordType::A, None);
    assert_eq!(
        reply.answers.iter().map(show).collect::<Vec<_>>(),
        ["sms.svc.local. 300 CNAME sms.rpc.svc.local."]
    );
    // The name both give: go-zero's, listed first; `rpc` (go-zero's empty
    // non-terminal) is SkyDNS's.
    assert_eq!(
        a_set(&query_udp(dns, "pay.rpc.svc.local.", RecordType::A, None)),
        ipv4s(&["10.0.0.6"])
    );
    assert_eq!(
        a_set(&query_udp(dns, "rpc.svc.local.", RecordType::A, None)),
        ipv4s(&["10.9.9.9"])
    );
    let zone = rpcdns.debug_zone().unwrap();
    let zone = &zone["zone"];
    let sky = zone["skydns"].as_array().unwrap();
    let entry = |name: &str| {
        sky.iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {sky:?}"))
            .clone()
    };
    assert_eq!(entry("pay.rpc.svc.local.")["shadowed"], true);
    assert_eq!(entry("db.svc.local.")["shadowed"], false);
    assert_eq!(entry("db.svc.local.")["records"], 2);
    assert_eq!(zone["skydns_record_count"], 4);
    assert_eq!(
        metric(rpcdns.http_addr, "rpcdns_zone_skydns_records"),
        Ok(4.0)
    );
}

/// A name with more records below it than a message holds: over UDP the
/// answer is truncated (TC, for the client to ask over TCP); over TCP it
/// is cut to the whole records that fit, without TC (a client that gets
/// TC over TCP fails the lookup).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_too_large_for_a_message() {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    let mut kv = client.clone();
    for batch in 0..16u32 {
        let ops: Vec<etcd_client::TxnOp> = (0..100u32)
            .map(|i| {
                let n = batch * 100 + i;
                etcd_client::TxnOp::put(
                    format!("/skydns/local/svc/big/instance-{n:04}"),
                    format!(
                        r#"{{"host":"10.2.{}.{}","port":8080}}"#,
                        n / 250,
                        n % 250 + 1
                    ),
                    None,
                )
            })
            .collect();
        kv.txn(etcd_client::Txn::new().and_then(ops))
            .await
            .expect("txn");
    }
    let rpcdns = start_with_config(&etcd.endpoint(), "sources:\n  - format: skydns\n");
    let dns = rpcdns.dns_addr;
    eventually(
        Duration::from_secs(10),
        || match rpcdns.debug_zone()?["zone"]["skydns_record_count"].as_u64() {
            Some(1600) => Ok(()),
            other => Err(format!("{other:?} records")),
        },
    );
    let udp = query_udp(dns, "big.svc.local.", RecordType::SRV, None);
    assert!(udp.metadata.truncation, "TC over UDP");
    assert!(udp.answers.is_empty(), "no partial RRset over UDP");
    let tcp = query_tcp(dns, "big.svc.local.", RecordType::SRV, None);
    assert_eq!(tcp.metadata.response_code, ResponseCode::NoError);
    assert!(!tcp.metadata.truncation, "no TC over TCP");
    let srv = srv_of(&tcp.answers);
    assert!(
        (1000..1600).contains(&srv.len()),
        "{} SRV records over TCP",
        srv.len()
    );
    // 1,600 equal weights: each 100 / 1600 % rounds down to 0, at least 1.
    assert!(srv.iter().all(|s| s.weight == 1 && s.priority == 10));
    // The addresses fit in one TCP message whole.
    let a = query_tcp(dns, "big.svc.local.", RecordType::A, None);
    assert_eq!(a_of(&a.answers).len(), 1600);
}
