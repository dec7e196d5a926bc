//! The on-disk copy of the zone (`state.dir`, issue 13): a replica that
//! restarts while etcd is unreachable serves the last zone it wrote,
//! marked stale, until the first full read replaces it; corrupt, foreign
//! and oversized files are refused with a log line and never served.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::*;

/// GET /readyz, parsed.
fn readyz(rpcdns: &Rpcdns) -> Result<(u16, serde_json::Value), String> {
    let (code, body) = http_get(rpcdns.http_addr, "/readyz")?;
    let json = serde_json::from_str(&body).map_err(|e| format!("/readyz {body:?}: {e}"))?;
    Ok((code, json))
}

/// Waits until the state file has been written `at_least` times.
fn wait_written(rpcdns: &Rpcdns, at_least: f64) {
    eventually(Duration::from_secs(10), || {
        let written = metric(
            rpcdns.http_addr,
            r#"rpcdns_state_writes_total{result="written"}"#,
        )?;
        if written >= at_least {
            Ok(())
        } else {
            Err(format!("{written} writes"))
        }
    });
}

fn wait_log(rpcdns: &Rpcdns, needle: &str) {
    eventually(Duration::from_secs(10), || {
        if rpcdns.log().contains(needle) {
            Ok(())
        } else {
            Err(format!("no {needle:?} in the log yet"))
        }
    });
}

/// The story of the issue: rpcdns writes its copy (and its last change at
/// shutdown), etcd becomes unreachable, rpcdns restarts and serves the
/// copy (stale in /readyz,
/// the metric and the log); meanwhile etcd changed, and once it answers,
/// its full read replaces the copy entirely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_an_etcd_outage_serves_the_last_zone() {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    let proxy = Proxy::start(etcd.client_addr());
    let _sms = register(&client, "sms.rpc", "10.0.0.5:8001", 300).await;
    let pay = register(&client, "pay.rpc", "10.0.0.6:8002", 300).await;
    put(
        &client,
        "/skydns/local/svc/db/a",
        r#"{"host":"10.0.0.7","port":5432}"#,
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        dir.path(),
        "rpcdns.yaml",
        &format!(
            "sources:\n  - format: gozero\n  - format: skydns\nstate:\n  dir: {}\n",
            dir.path().join("state").display()
        ),
    );
    let mut first = Rpcdns::start(&proxy.endpoint(), &["--config", &config]);
    first.wait_ready();
    wait_written(&first, 1.0);
    assert_eq!(readyz(&first).unwrap().1["stale"], false);
    // A change within the 10 s between writes: written at shutdown.
    let _late = register(&client, "late.rpc", "10.0.0.9:8009", 300).await;
    eventually(PROPAGATION, || {
        check_a(first.dns_addr, "late.rpc.svc.local.", &ipv4s(&["10.0.0.9"]))
    });

    // etcd becomes unreachable, and the replica restarts.
    proxy.cut();
    first.terminate(Duration::from_secs(10));
    let second = Rpcdns::start(&proxy.endpoint(), &["--config", &config]);
    second.wait_ready();
    let (code, ready) = readyz(&second).unwrap();
    assert_eq!(
        (code, &ready["stale"], &ready["etcd_connected"]),
        (200, &true.into(), &false.into())
    );
    assert_eq!(metric(second.http_addr, "rpcdns_zone_stale"), Ok(1.0));
    assert!(
        second
            .log()
            .contains("serving the zone from the state file")
    );
    let dns = second.dns_addr;
    assert_eq!(
        a_set(&query_udp(dns, "pay.rpc.svc.local.", RecordType::A, None)),
        ipv4s(&["10.0.0.6"])
    );
    assert_eq!(
        a_set(&query_udp(dns, "db.svc.local.", RecordType::A, None)),
        ipv4s(&["10.0.0.7"])
    );
    assert_eq!(
        a_set(&query_udp(dns, "late.rpc.svc.local.", RecordType::A, None)),
        ipv4s(&["10.0.0.9"]),
        "the change made after the first write was written at shutdown"
    );

    // While it is cut off, etcd changes; once it answers, etcd wins.
    pay.revoke().await;
    let _new = register(&client, "new.rpc", "10.0.0.8:8003", 300).await;
    proxy.restore();
    eventually(Duration::from_secs(15), || {
        let (_, ready) = readyz(&second)?;
        if ready["stale"] == false && ready["etcd_connected"] == true {
            Ok(())
        } else {
            Err(format!("{ready}"))
        }
    });
    let gone = query_udp(dns, "pay.rpc.svc.local.", RecordType::A, None);
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        a_set(&query_udp(dns, "new.rpc.svc.local.", RecordType::A, None)),
        ipv4s(&["10.0.0.8"])
    );
    assert_eq!(metric(second.http_addr, "rpcdns_zone_stale"), Ok(0.0));
    assert!(second.log().contains("the state file's zone is replaced"));
    // And the copy on disk follows: the new read is written at once.
    wait_written(&second, 1.0);
}

/// Files that are not this configuration's last zone are never served:
/// not an rpcdns file, a flipped bit, another zone's file, one over
/// `state.max_bytes`. Each says why in one log line, and rpcdns waits for
/// etcd as without a file (/readyz 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_foreign_and_oversized_state_files_are_refused() {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    let _sms = register(&client, "sms.rpc", "10.0.0.5:8001", 300).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let file = state.join("zone.state");
    let state_arg = state.display().to_string();

    // A good file, written for the zone other.local.
    let mut writer = Rpcdns::start(
        &etcd.endpoint(),
        &["--state-dir", &state_arg, "--zone", "other.local."],
    );
    writer.wait_ready();
    wait_written(&writer, 1.0);
    writer.terminate(Duration::from_secs(10));
    let foreign = std::fs::read(&file).expect("state file");

    // A replica of svc.local. with etcd out of reach.
    let unreachable = Proxy::start_cut(etcd.client_addr());
    let refused = |bytes: &[u8], extra: &[&str], says: &str| {
        std::fs::write(&file, bytes).expect("write state file");
        let mut args = vec!["--state-dir", state_arg.as_str()];
        args.extend_from_slice(extra);
        let mut rpcdns = Rpcdns::start(&unreachable.endpoint(), &args);
        wait_log(&rpcdns, "state file not served");
        let log = rpcdns.log();
        assert!(log.contains(says), "want {says:?} in:\n{log}");
        assert_eq!(rpcdns.readyz(), Ok(503), "a refused file is not served");
        let reply = try_query_udp(rpcdns.dns_addr, "sms.rpc.svc.local.", RecordType::A, None);
        assert!(
            reply.is_err() || reply.as_ref().is_ok_and(|r| r.answers.is_empty()),
            "{reply:?}"
        );
        rpcdns.terminate(Duration::from_secs(10));
    };
    refused(
        &foreign,
        &[],
        "written for another configuration (zone other.local,",
    );
    let mut flipped = foreign.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    refused(&flipped, &["--zone", "other.local."], "checksum mismatch");
    refused(b"{\"not\": \"ours\"}", &[], "not an rpcdns state file");
    let max = write_config(dir.path(), "small.yaml", "state:\n  max_bytes: 1024\n");
    let large = vec![b'x'; 4096];
    refused(&large, &["--config", &max], "over state.max_bytes (1024)");

    // The same good file, for its own zone: served.
    std::fs::write(&file, &foreign).expect("write state file");
    let served = Rpcdns::start(
        &unreachable.endpoint(),
        &["--state-dir", &state_arg, "--zone", "other.local."],
    );
    served.wait_ready();
    assert_eq!(
        a_set(&query_udp(
            served.dns_addr,
            "sms.rpc.other.local.",
            RecordType::A,
            None
        )),
        ipv4s(&["10.0.0.5"])
    );
}
