//! Keeping the zone in step with etcd (SPEC §1, §2 and §5): registrations
//! appearing and going (delete, revoke, lease expiry), values that cannot
//! be served, which keys are mirrored, readiness, etcd outages and restarts,
//! compaction during an outage, and the paged first read.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use etcd_client::{CompactionOptions, Txn, TxnOp};
use hickory_proto::rr::RecordType;

use crate::harness::*;

const SMS: &str = "sms.rpc.svc.local.";

fn wait_a(dns: SocketAddr, name: &str, want: &[&str]) {
    let want = ipv4s(want);
    eventually(PROPAGATION, || check_a(dns, name, &want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_appears_and_delete_or_revoke_removes_it() {
    let env = TestEnv::start(&[]).await;
    let r = register(&env.client, "sms.rpc", "10.0.0.5:8001", 10).await;
    wait_a(env.dns(), SMS, &["10.0.0.5"]);
    wait_a(env.dns(), &r.instance_name(), &["10.0.0.5"]);
    put(&env.client, "sms.rpc/plain", "10.0.0.6:8001").await;
    wait_a(env.dns(), SMS, &["10.0.0.5", "10.0.0.6"]);
    delete(&env.client, "sms.rpc/plain").await;
    wait_a(env.dns(), SMS, &["10.0.0.5"]);
    let instance = r.instance_name();
    r.revoke().await;
    eventually(PROPAGATION, || check_nxdomain(env.dns(), SMS));
    eventually(PROPAGATION, || check_nxdomain(env.dns(), &instance));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_removes_the_instance() {
    let env = TestEnv::start(&[]).await;
    let stays = register(&env.client, "sms.rpc", "10.0.0.1:80", 10).await;
    let dies = register(&env.client, "sms.rpc", "10.0.0.2:80", 2).await;
    wait_a(env.dns(), SMS, &["10.0.0.1", "10.0.0.2"]);
    drop(dies); // no more keep-alives: etcd expires the lease (≥ its minimum TTL)
    eventually(Duration::from_secs(15), || {
        check_a(env.dns(), SMS, &ipv4s(&["10.0.0.1"]))
    });
    drop(stays);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_skip_only_their_instance() {
    let env = TestEnv::start(&[]).await;
    let c = &env.client;
    put(c, "sms.rpc/good", "10.0.0.1:80").await;
    let long = format!("{}:80", "a".repeat(510));
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("sms.rpc/noport", b"10.0.0.5".to_vec()),
        ("sms.rpc/unspec4", b"0.0.0.0:80".to_vec()),
        ("sms.rpc/unspec6", b"[::]:80".to_vec()),
        ("sms.rpc/port0", b"10.0.0.6:0".to_vec()),
        ("sms.rpc/port99999", b"10.0.0.7:99999".to_vec()),
        ("sms.rpc/emptyhost", b":80".to_vec()),
        ("sms.rpc/notutf8", vec![0xff, 0xfe, b':', b'8', b'0']),
        ("sms.rpc/toolong", long.into_bytes()),
        ("sms.rpc", b"10.0.0.8:80".to_vec()),
        ("sms.rpc/", b"10.0.0.9:80".to_vec()),
    ];
    for (key, value) in &bad {
        put(c, *key, value.clone()).await;
    }
    // A later good key, so that once it shows every bad one has been seen.
    put(c, "sms.rpc/good2", "10.0.0.2:80").await;
    wait_a(env.dns(), SMS, &["10.0.0.1", "10.0.0.2"]);
    let srv = query_udp(env.dns(), SMS, RecordType::SRV, Some(1232));
    assert_eq!(
        srv_of(&srv.answers).len(),
        2,
        "only the good instances: {srv}"
    );
    eventually(PROPAGATION, || {
        let skipped = env.rpcdns.skipped()?;
        let keys: BTreeMap<String, String> = skipped.into_iter().collect();
        for (key, _) in &bad {
            match keys.get(*key) {
                Some(reason) if !reason.is_empty() => {}
                Some(_) => return Err(format!("{key} skipped without a reason")),
                None => return Err(format!("{key} not in skipped: {keys:?}")),
            }
        }
        if keys.contains_key("sms.rpc/good") {
            return Err("a good key is listed as skipped".into());
        }
        Ok(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_turning_bad_withdraws_the_instance() {
    let env = TestEnv::start(&[]).await;
    put(&env.client, "sms.rpc/1", "10.0.0.1:80").await;
    put(&env.client, "sms.rpc/2", "10.0.0.2:80").await;
    wait_a(env.dns(), SMS, &["10.0.0.1", "10.0.0.2"]);
    put(&env.client, "sms.rpc/1", "10.0.0.1").await; // port lost
    wait_a(env.dns(), SMS, &["10.0.0.2"]);
    eventually(PROPAGATION, || {
        check_nxdomain(env.dns(), &format!("1.{SMS}"))
    });
    eventually(PROPAGATION, || {
        let skipped = env.rpcdns.skipped()?;
        if skipped.iter().any(|(k, _)| k == "sms.rpc/1") {
            Ok(())
        } else {
            Err(format!("{skipped:?}"))
        }
    });
    put(&env.client, "sms.rpc/1", "10.0.0.3:80").await; // fixed again
    wait_a(env.dns(), SMS, &["10.0.0.2", "10.0.0.3"]);
    eventually(PROPAGATION, || {
        let skipped = env.rpcdns.skipped()?;
        if skipped.iter().any(|(k, _)| k == "sms.rpc/1") {
            Err(format!("still skipped: {skipped:?}"))
        } else {
            Ok(())
        }
    });
    // The only instance turning bad takes the whole service away.
    put(&env.client, "sms.rpc/2", "0.0.0.0:80").await;
    put(&env.client, "sms.rpc/1", "[::]:80").await;
    eventually(PROPAGATION, || check_nxdomain(env.dns(), SMS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_other_programs_are_ignored() {
    let env = TestEnv::start(&[]).await;
    let c = &env.client;
    for key in [
        "config/app",
        "sms.grpc/1",
        "rpc/1",
        "sms.rpc.extra/1",
        "sms.rpcx/1",
        "/sms.rpc/1",
    ] {
        put(c, key, "10.0.0.9:80").await;
    }
    put(c, "control.rpc/1", "10.0.0.1:80").await;
    wait_a(env.dns(), "control.rpc.svc.local.", &["10.0.0.1"]);
    for name in [
        "sms.grpc.svc.local.",
        "1.rpc.svc.local.",
        "sms.rpc.extra.svc.local.",
        "sms.rpcx.svc.local.",
        "app.svc.local.",
    ] {
        check_nxdomain(env.dns(), name).unwrap_or_else(|e| panic!("{e}"));
    }
    // rpc.svc.local. exists only as the parent of control.rpc: no records.
    let msg = query_udp(env.dns(), "rpc.svc.local.", RecordType::A, None);
    assert!(
        msg.answers.is_empty(),
        "key rpc/1 must not be served: {msg}"
    );
    let skipped = env.rpcdns.skipped().expect("skipped");
    assert!(
        skipped.is_empty(),
        "keys of other programs are not \"skipped\", just ignored: {skipped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_flag_replaces_the_default() {
    let env = TestEnv::start(&["--pattern", "*.api", "--pattern", "mall.*"]).await;
    put(&env.client, "b.rpc/1", "10.0.0.1:80").await;
    put(&env.client, "USER.API/1", "10.0.0.2:80").await; // patterns ignore case
    put(&env.client, "mall.order/1", "10.0.0.3:80").await;
    wait_a(env.dns(), "user.api.svc.local.", &["10.0.0.2"]);
    wait_a(env.dns(), "mall.order.svc.local.", &["10.0.0.3"]);
    check_nxdomain(env.dns(), "b.rpc.svc.local.")
        .unwrap_or_else(|e| panic!("--pattern must replace *.rpc: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_the_first_full_read() {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    put(&client, "sms.rpc/1", "10.0.0.1:80").await;
    let proxy = Proxy::start_cut(etcd.client_addr());
    let rpcdns = Rpcdns::start(&proxy.endpoint(), &[]);
    assert_eq!(
        http_get(rpcdns.http_addr, "/healthz").expect("healthz").0,
        200
    );
    assert_eq!(
        rpcdns.readyz().expect("readyz"),
        503,
        "ready before any etcd read"
    );
    // Still not ready a while later (rpcdns keeps retrying a dead endpoint).
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    eventually(Duration::from_secs(2), || {
        assert_eq!(rpcdns.readyz()?, 503, "ready without etcd");
        if std::time::Instant::now() >= deadline {
            Ok(())
        } else {
            Err("watching".into())
        }
    });
    proxy.restore();
    rpcdns.wait_ready_within(RECONNECT);
    wait_a(rpcdns.dns_addr, SMS, &["10.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_keeps_answers_and_restart_resumes() {
    let mut env = TestEnv::start(&[]).await;
    put(&env.client, "sms.rpc/1", "10.0.0.1:80").await;
    wait_a(env.dns(), SMS, &["10.0.0.1"]);
    assert_eq!(env.rpcdns.etcd_connected(), Ok(true));

    env.etcd.stop();
    eventually(RECONNECT, || match env.rpcdns.etcd_connected()? {
        false => Ok(()),
        true => Err("etcd_connected still true with etcd stopped".into()),
    });
    check_a(env.dns(), SMS, &ipv4s(&["10.0.0.1"])).expect("answers from the last-known zone");
    assert_eq!(
        env.rpcdns.readyz(),
        Ok(200),
        "/readyz must stay 200 through an outage"
    );

    env.etcd.restart();
    let client = env.etcd.client().await;
    put(&client, "sms.rpc/2", "10.0.0.2:80").await;
    eventually(RECONNECT, || {
        check_a(env.dns(), SMS, &ipv4s(&["10.0.0.1", "10.0.0.2"]))
    });
    eventually(PROPAGATION, || match env.rpcdns.etcd_connected()? {
        true => Ok(()),
        false => Err("etcd_connected false after reconnecting".into()),
    });
}

/// Every service's expected A set, read from etcd itself (all test values
/// here are IPv4 `addr:port`).
async fn expected_zone(client: &etcd_client::Client) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    let resp = client
        .clone()
        .get("", Some(etcd_client::GetOptions::new().with_all_keys()))
        .await
        .expect("read all keys");
    let mut zone: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for kv in resp.kvs() {
        let key = kv.key_str().expect("utf-8 key");
        let value = kv.value_str().expect("utf-8 value");
        let (service, _) = key.split_once('/').expect("key with id");
        let (ip, _) = value.split_once(':').expect("addr:port");
        zone.entry(service.to_ascii_lowercase())
            .or_default()
            .insert(ip.parse().expect("ipv4"));
    }
    zone
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_during_outage_forces_a_full_reread() {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    put(&client, "sms.rpc/1", "10.0.0.1:80").await;
    put(&client, "sms.rpc/2", "10.0.0.2:80").await;
    put(&client, "user.rpc/1", "10.0.1.1:80").await;
    put(&client, "gone.rpc/1", "10.0.2.1:80").await;
    let proxy = Proxy::start(etcd.client_addr());
    let rpcdns = Rpcdns::start(&proxy.endpoint(), &[]);
    rpcdns.wait_ready();
    let dns = rpcdns.dns_addr;
    wait_a(dns, SMS, &["10.0.0.1", "10.0.0.2"]);
    wait_a(dns, "gone.rpc.svc.local.", &["10.0.2.1"]);

    proxy.cut();
    eventually(RECONNECT, || match rpcdns.etcd_connected()? {
        false => Ok(()),
        true => Err("etcd_connected still true with the proxy cut".into()),
    });
    // Changes rpcdns cannot see, then their history compacted away.
    delete(&client, "sms.rpc/1").await;
    put(&client, "sms.rpc/3", "10.0.0.3:80").await;
    put(&client, "user.rpc/1", "10.0.1.9:80").await;
    delete(&client, "gone.rpc/1").await;
    put(&client, "order.rpc/1", "10.0.3.1:80").await;
    let last = put(&client, "order.rpc/2", "10.0.3.2:80").await;
    client
        .clone()
        .compact(last, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    check_a(dns, SMS, &ipv4s(&["10.0.0.1", "10.0.0.2"]))
        .expect("last-known zone during the outage");

    proxy.restore();
    let want = expected_zone(&client).await;
    eventually(RECONNECT, || {
        for (service, addrs) in &want {
            check_a(dns, &format!("{service}.{ZONE}"), addrs)?;
        }
        check_nxdomain(dns, "gone.rpc.svc.local.")?;
        check_nxdomain(dns, &format!("1.{SMS}"))
    });
    let serial = query_udp(dns, ZONE, RecordType::SOA, None);
    let (soa, _, _) = soa_of(&serial.answers).expect("SOA");
    assert!(
        i64::from(soa.serial) >= last,
        "serial {} after re-reading at {last}",
        soa.serial
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_first_read_loads_every_key() {
    const SERVICES: u32 = 25;
    const PER_SERVICE: u32 = 100;
    let etcd = Etcd::start();
    let client = etcd.client().await;
    for s in 0..SERVICES {
        let ops: Vec<TxnOp> = (0..PER_SERVICE)
            .map(|i| {
                TxnOp::put(
                    format!("svc{s}.rpc/{}", 1_000_000 + i),
                    format!("10.{s}.{}.{}:80", i / 250, i % 250 + 1),
                    None,
                )
            })
            .collect();
        client
            .clone()
            .txn(Txn::new().and_then(ops))
            .await
            .expect("txn of puts");
    }
    let rpcdns = Rpcdns::start(&etcd.endpoint(), &[]);
    rpcdns.wait_ready_within(Duration::from_secs(30));
    for s in 0..SERVICES {
        let name = format!("svc{s}.rpc.svc.local.");
        let msg = query_tcp(rpcdns.dns_addr, &name, RecordType::A, None);
        assert_eq!(
            msg.answers.len(),
            PER_SERVICE as usize,
            "{name}: {} A after the first read",
            msg.answers.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_among_several_is_invisible() {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    put(&client, "sms.rpc/1", "10.0.0.1:80").await;
    let dead = format!("127.0.0.1:{}", free_ports(1)[0]);
    let rpcdns = Rpcdns::start(&format!("{dead},{}", etcd.endpoint()), &[]);
    rpcdns.wait_ready_within(RECONNECT);
    wait_a(rpcdns.dns_addr, SMS, &["10.0.0.1"]);
    put(&client, "sms.rpc/2", "10.0.0.2:80").await;
    wait_a(rpcdns.dns_addr, SMS, &["10.0.0.1", "10.0.0.2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_only_filters_what_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rpcdns.yaml");
    std::fs::write(&path, "etcd:\n  prefix: \"mall.\"\n").expect("write config");
    let path = path.display().to_string();
    let env = TestEnv::start(&["--config", &path]).await;
    put(&env.client, "sms.rpc/1", "10.0.0.1:80").await;
    put(&env.client, "mall.user.rpc/1", "10.0.0.2:80").await;
    // The service key is still the whole part before the first '/'.
    wait_a(env.dns(), "mall.user.rpc.svc.local.", &["10.0.0.2"]);
    check_nxdomain(env.dns(), SMS)
        .unwrap_or_else(|e| panic!("a key outside the prefix is served: {e}"));
}
