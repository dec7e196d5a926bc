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

/// kratos instances as kratos writes them (lease, JSON, endpoints of
/// several schemes, a weight in the metadata): an SRV name per scheme,
/// the weights in SRV, one instance name per instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kratos_instances_with_an_srv_name_per_scheme() {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "sources:\n  - format: kratos\n");
    let rpcdns = Rpcdns::start(&etcd.endpoint(), &["--config", &config]);
    rpcdns.wait_ready();
    let dns = rpcdns.dns_addr;

    let mut kv = client.clone();
    let lease = kv.lease_grant(15, None).await.unwrap().id();
    for (id, value) in [
        (
            "5b7e1c2a-5a1d-11ef-9d36-0242ac120005",
            r#"{"id":"5b7e1c2a-5a1d-11ef-9d36-0242ac120005","name":"helloworld","version":"v1.0.0","metadata":null,"endpoints":["http://10.0.0.5:8000","grpc://10.0.0.5:9000"]}"#,
        ),
        (
            "v6",
            r#"{"id":"v6","name":"helloworld","version":"v2","metadata":{"weight":"20"},"endpoints":["grpc://[2001:db8::5]:9000"]}"#,
        ),
    ] {
        kv.put(
            format!("/microservices/helloworld/{id}"),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    }
    // An instance with no endpoint kratos could reach: skipped.
    put(
        &client,
        "/microservices/helloworld/none",
        r#"{"id":"none","name":"helloworld","version":"","metadata":null,"endpoints":["grpc:"]}"#,
    )
    .await;

    let srv_at = |name: &str| {
        let reply = try_query_udp(dns, name, RecordType::SRV, Some(1232))?;
        let mut records: Vec<(u16, u16, String)> = srv_of(&reply.answers)
            .iter()
            .map(|s| (s.weight, s.port, s.target.to_ascii()))
            .collect();
        records.sort();
        Ok::<_, String>(records)
    };
    eventually(Duration::from_secs(10), || {
        let records = srv_at("helloworld.svc.local.")?;
        if records.len() == 3 {
            Ok(())
        } else {
            Err(format!("{records:?}"))
        }
    });
    let first = "5b7e1c2a-5a1d-11ef-9d36-0242ac120005.helloworld.svc.local.";
    assert_eq!(
        srv_at("_grpc._tcp.helloworld.svc.local.").unwrap(),
        vec![
            (20, 9000, "v6.helloworld.svc.local.".to_owned()),
            (100, 9000, first.to_owned()),
        ]
    );
    assert_eq!(
        srv_at("_http._tcp.helloworld.svc.local.").unwrap(),
        vec![(100, 8000, first.to_owned())]
    );
    // The instance's one name answers its address; its glue came along.
    let reply = query_udp(
        dns,
        "_http._tcp.helloworld.svc.local.",
        RecordType::SRV,
        Some(1232),
    );
    assert_eq!(
        reply
            .additionals
            .iter()
            .filter(|r| r.record_type() == RecordType::A)
            .count(),
        1
    );
    assert_eq!(
        a_of(&query_udp(dns, first, RecordType::A, None).answers),
        vec!["10.0.0.5".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    // Metadata is TXT at the instance name; none, no data.
    let txt = query_udp(dns, "v6.helloworld.svc.local.", RecordType::TXT, None);
    let texts: Vec<String> = txt
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::TXT(t) => Some(t.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, vec!["weight=20".to_owned()]);
    let none = query_udp(dns, first, RecordType::TXT, None);
    assert!(
        none.answers.is_empty()
            && none.metadata.response_code == hickory_proto::op::ResponseCode::NoError
    );
    // No scheme that the service has not: NXDOMAIN.
    let none = query_udp(
        dns,
        "_https._tcp.helloworld.svc.local.",
        RecordType::SRV,
        None,
    );
    assert_eq!(
        none.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain
    );
    eventually(Duration::from_secs(10), || {
        let skipped = rpcdns.skipped()?;
        if skipped.contains(&(
            "/microservices/helloworld/none".to_owned(),
            "no_endpoint".to_owned(),
        )) {
            Ok(())
        } else {
            Err(format!("skipped: {skipped:?}"))
        }
    });

    // kratos deregisters by deleting the key: that instance goes.
    kv.delete("/microservices/helloworld/v6", None)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), || {
        let records = srv_at("_grpc._tcp.helloworld.svc.local.")?;
        if records.len() == 1 {
            Ok(())
        } else {
            Err(format!("{records:?}"))
        }
    });
}

/// The overlay gives go-zero services what go-zero cannot publish: a
/// weight and priority for the service or one instance, and a gRPC
/// service config; deleting it gives the defaults back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overlay_sets_weights_and_service_configs_of_go_zero_services() {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    let one = register(&client, "sms.rpc", "10.0.0.5:8001", 60).await;
    let _two = register(&client, "sms.rpc", "10.0.0.6:8001", 60).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "overlay:\n  prefix: /rpcdns/overlay/\n");
    let rpcdns = Rpcdns::start(&etcd.endpoint(), &["--config", &config]);
    rpcdns.wait_ready();
    let dns = rpcdns.dns_addr;
    let numbers = || {
        let reply = try_query_udp(dns, "sms.rpc.svc.local.", RecordType::SRV, Some(1232))?;
        let mut got: Vec<(u16, u16)> = srv_of(&reply.answers)
            .iter()
            .map(|s| (s.priority, s.weight))
            .collect();
        got.sort();
        Ok::<_, String>(got)
    };
    let until = |want: Vec<(u16, u16)>| {
        eventually(Duration::from_secs(10), || {
            let got = numbers()?;
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}, want {want:?}"))
            }
        })
    };
    until(vec![(0, 10), (0, 10)]);

    // The service's numbers, then one instance's.
    put(
        &client,
        "/rpcdns/overlay/sms.rpc",
        r#"{"weight": 20, "priority": 1, "service_config": {"loadBalancingConfig": [{"pick_first": {}}]}}"#,
    )
    .await;
    until(vec![(1, 20), (1, 20)]);
    put(
        &client,
        format!("/rpcdns/overlay/sms.rpc/{}", one.id()),
        r#"{"weight": 5}"#,
    )
    .await;
    until(vec![(1, 5), (1, 20)]);
    let txt = query_udp(
        dns,
        "_grpc_config.sms.rpc.svc.local.",
        RecordType::TXT,
        None,
    );
    let text: String = txt
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::TXT(t) => Some(t.to_string()),
            _ => None,
        })
        .collect();
    assert!(text.contains("pick_first"), "{text}");

    // A bad overlay is skipped, with its reason, and no longer applies.
    put(&client, "/rpcdns/overlay/sms.rpc", r#"{"wieght": 20}"#).await;
    until(vec![(0, 5), (0, 10)]);
    let skipped = rpcdns.skipped().unwrap();
    assert!(
        skipped.contains(&("/rpcdns/overlay/sms.rpc".to_owned(), "bad_json".to_owned())),
        "{skipped:?}"
    );
    // Deleting the overlay gives the defaults back.
    delete(&client, format!("/rpcdns/overlay/sms.rpc/{}", one.id())).await;
    until(vec![(0, 10), (0, 10)]);
}
