//! Registrations of other frameworks beside go-zero's (issue 12): each
//! source's keys and values as the framework writes them to a real etcd,
//! answered over real sockets, with go-zero's on the same etcd.

use std::time::Duration;

use etcd_client::PutOptions;
use hickory_proto::rr::RecordType;

use crate::harness::*;

/// go-micro v4.10.2 and later, as `registry/etcd` writes one node (the
/// node's metadata first).
fn go_micro_node(name: &str, id: &str, address: &str) -> String {
    format!(
        r#"{{"name":"{name}","version":"latest","metadata":null,"endpoints":[],"nodes":[{{"metadata":{{"broker":"http","protocol":"grpc","registry":"etcd","server":"grpc","transport":"grpc"}},"id":"{id}","address":"{address}"}}]}}"#
    )
}

fn config(dir: &std::path::Path, yaml: &str) -> String {
    let path = dir.join("rpcdns.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path.display().to_string()
}

/// go-micro nodes, under a lease as go-micro puts them, served below the
/// source's suffix beside a go-zero service; a node that goes, a bad
/// value that is skipped with its reason, and the broker's entries left
/// out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_micro_nodes_beside_go_zero_services() {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    let _sms = register(&client, "sms.rpc", "10.0.0.5:8001", 60).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "sources:\n  - format: gozero\n  - format: gomicro\n    suffix: micro\n",
    );
    let rpcdns = Rpcdns::start(&etcd.endpoint(), &["--config", &config]);
    rpcdns.wait_ready();
    let dns = rpcdns.dns_addr;

    // Two nodes of greeter, one IPv4 and one IPv6, under a 90 s lease.
    let mut kv = client.clone();
    let lease = kv.lease_grant(90, None).await.unwrap().id();
    for (id, address) in [
        ("greeter-0f1e2d3c", "10.0.0.7:9090"),
        ("greeter-9f8e7d6c", "[2001:db8::5]:9090"),
    ] {
        kv.put(
            format!("/micro/registry/greeter/{id}"),
            go_micro_node("greeter", id, address),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    }
    // The http broker's subscription, and a value that is not go-micro's.
    put(
        &client,
        "/micro/registry/micro.http.broker/go.micro.topic-5c1d",
        go_micro_node("micro.http.broker", "go.micro.topic-5c1d", "10.0.0.9:37211"),
    )
    .await;
    put(&client, "/micro/registry/pay/p1", "10.0.0.8:80").await;

    let greeter = "greeter.micro.svc.local.";
    eventually(Duration::from_secs(10), || {
        let reply = try_query_udp(dns, greeter, RecordType::SRV, Some(1232))?;
        if srv_of(&reply.answers).len() == 2 {
            Ok(())
        } else {
            Err(format!("{} SRV records", reply.answers.len()))
        }
    });
    let reply = query_udp(dns, greeter, RecordType::A, None);
    assert_eq!(
        a_of(&reply.answers),
        vec!["10.0.0.7".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    let reply = query_udp(
        dns,
        &format!("_grpc._tcp.{greeter}"),
        RecordType::SRV,
        Some(1232),
    );
    let mut srv: Vec<(u16, u16, u16, String)> = srv_of(&reply.answers)
        .iter()
        .map(|s| (s.priority, s.weight, s.port, s.target.to_ascii()))
        .collect();
    srv.sort();
    assert_eq!(
        srv,
        vec![
            (
                0,
                10,
                9090,
                "greeter-0f1e2d3c.greeter.micro.svc.local.".to_owned()
            ),
            (
                0,
                10,
                9090,
                "greeter-9f8e7d6c.greeter.micro.svc.local.".to_owned()
            ),
        ]
    );
    // The instance names answer, as clients that resolve SRV targets ask.
    let reply = query_udp(
        dns,
        "greeter-9f8e7d6c.greeter.micro.svc.local.",
        RecordType::AAAA,
        None,
    );
    assert_eq!(reply.answers.len(), 1);
    // go-zero's service is still there, and the broker is not a service.
    assert_eq!(
        query_udp(dns, "sms.rpc.svc.local.", RecordType::A, None)
            .answers
            .len(),
        1
    );
    let broker = query_udp(
        dns,
        "micro.http.broker.micro.svc.local.",
        RecordType::A,
        None,
    );
    assert_eq!(
        broker.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain
    );
    // The bad value is skipped, with its reason.
    eventually(Duration::from_secs(10), || {
        let skipped = rpcdns.skipped()?;
        if skipped.contains(&("/micro/registry/pay/p1".to_owned(), "bad_json".to_owned())) {
            Ok(())
        } else {
            Err(format!("skipped: {skipped:?}"))
        }
    });

    // The lease ends (the service stopped): the nodes go.
    kv.lease_revoke(lease).await.unwrap();
    eventually(Duration::from_secs(10), || {
        let reply = try_query_udp(dns, greeter, RecordType::A, None)?;
        if reply.metadata.response_code == hickory_proto::op::ResponseCode::NXDomain {
            Ok(())
        } else {
            Err(format!("{:?}", reply.answers))
        }
    });
}
