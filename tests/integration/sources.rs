//! Registrations of other frameworks beside go-zero's (issue 12): each
//! source's keys and values as the framework writes them to a real etcd,
//! answered over real sockets, with go-zero's on the same etcd.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use etcd_client::PutOptions;
use hickory_proto::rr::RecordType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::*;

/// go-micro v4.10.2 and later, as `registry/etcd` writes one node (the
/// node's metadata first).
fn go_micro_node(name: &str, id: &str, address: &str) -> String {
    format!(
        r#"{{"name":"{name}","version":"latest","metadata":null,"endpoints":[],"nodes":[{{"metadata":{{"broker":"http","protocol":"grpc","registry":"etcd","server":"grpc","transport":"grpc"}},"id":"{id}","address":"{address}"}}]}}"#
    )
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
    let rpcdns = start_with_config(
        &etcd.endpoint(),
        "sources:\n  - format: gozero\n  - format: gomicro\n    suffix: micro\n",
    );
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
    wait_skipped(&rpcdns, "/micro/registry/pay/p1", "bad_json");

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
    let rpcdns = start_with_config(&etcd.endpoint(), "sources:\n  - format: kratos\n");
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
    let texts = txt_of(&txt.answers);
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
    wait_skipped(&rpcdns, "/microservices/helloworld/none", "no_endpoint");

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
    let rpcdns = start_with_config(&etcd.endpoint(), "overlay:\n  prefix: /rpcdns/overlay/\n");
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
    let text: String = txt_of(&txt.answers).concat();
    assert!(text.contains("pick_first"), "{text}");

    // A bad overlay is skipped, with its reason, and no longer applies.
    put(&client, "/rpcdns/overlay/sms.rpc", r#"{"wieght": 20}"#).await;
    until(vec![(0, 5), (0, 10)]);
    wait_skipped(&rpcdns, "/rpcdns/overlay/sms.rpc", "bad_json");
    // Deleting the overlay gives the defaults back.
    delete(&client, format!("/rpcdns/overlay/sms.rpc/{}", one.id())).await;
    until(vec![(0, 10), (0, 10)]);
}

/// What every service should answer after churn across all sources:
/// per SRV name (`_<scheme>._tcp.<service>`), the (priority, weight,
/// port, address) of each record.
type Model = BTreeMap<String, BTreeSet<(u16, u16, u16, std::net::IpAddr)>>;

/// One random operation of the churn: (key, value), or (key, None) for a
/// delete. Each format has three services and four instances each; each
/// instance has its own address, so a record's address says which it is.
fn churn_op(rng: &mut StdRng) -> (String, Option<String>) {
    let service = rng.random_range(0..3);
    let instance = rng.random_range(0..4u8);
    let delete = rng.random_range(0..4) == 0;
    let weight = rng.random_range(1..50u16);
    match rng.random_range(0..5) {
        0 => (
            format!("gz{service}.rpc/{instance}"),
            (!delete).then(|| {
                format!(
                    "10.1.{service}.{instance}:{}",
                    8000 + u16::from(instance % 2)
                )
            }),
        ),
        1 => (
            format!("/micro/registry/mc{service}/n{instance}"),
            (!delete).then(|| {
                go_micro_node(
                    &format!("mc{service}"),
                    &format!("n{instance}"),
                    &format!("10.2.{service}.{instance}:9090"),
                )
            }),
        ),
        2 => {
            let endpoints = match rng.random_range(0..3) {
                0 => format!(r#"["grpc://10.3.{service}.{instance}:9000"]"#),
                1 => format!(
                    r#"["http://10.3.{service}.{instance}:8000","grpc://10.3.{service}.{instance}:9000"]"#
                ),
                _ => format!(r#"["https://10.3.{service}.{instance}:8443"]"#),
            };
            (
                format!("/microservices/kr{service}/i{instance}"),
                (!delete).then(|| {
                    format!(
                        r#"{{"id":"i{instance}","name":"kr{service}","version":"","metadata":{{"weight":"{weight}"}},"endpoints":{endpoints}}}"#
                    )
                }),
            )
        }
        // SkyDNS: an instance below the service's name.
        3 => (
            format!("/skydns/local/svc/sk{service}/i{instance}"),
            (!delete).then(|| {
                format!(
                    r#"{{"host":"10.4.{service}.{instance}","port":{},"weight":{weight}}}"#,
                    7000 + u16::from(instance % 2)
                )
            }),
        ),
        // The overlay: a weight for a go-zero service.
        _ => (
            format!("/o/gz{service}.rpc"),
            (!delete).then(|| format!(r#"{{"weight": {weight}}}"#)),
        ),
    }
}

/// The model of what etcd holds, computed from the generated shapes.
fn churn_model(kvs: &BTreeMap<String, String>) -> Model {
    let mut model = Model::new();
    let overlay = |service: &str| -> Option<u16> {
        let value = kvs.get(&format!("/o/{service}"))?;
        let json: serde_json::Value = serde_json::from_str(value).ok()?;
        json["weight"].as_u64().map(|w| w as u16)
    };
    for (key, value) in kvs {
        if let Some((service, _)) = key.split_once('/').filter(|(s, _)| s.starts_with("gz")) {
            let (host, port) = value.rsplit_once(':').unwrap();
            let weight = overlay(service).unwrap_or(10);
            model
                .entry(format!("_grpc._tcp.{service}"))
                .or_default()
                .insert((0, weight, port.parse().unwrap(), host.parse().unwrap()));
        } else if let Some(rest) = key.strip_prefix("/micro/registry/") {
            let service = rest.split('/').next().unwrap();
            let json: serde_json::Value = serde_json::from_str(value).unwrap();
            let address = json["nodes"][0]["address"].as_str().unwrap();
            let (host, port) = address.rsplit_once(':').unwrap();
            model
                .entry(format!("_grpc._tcp.{service}.micro"))
                .or_default()
                .insert((0, 10, port.parse().unwrap(), host.parse().unwrap()));
        } else if let Some(rest) = key.strip_prefix("/microservices/") {
            let service = rest.split('/').next().unwrap();
            let json: serde_json::Value = serde_json::from_str(value).unwrap();
            let weight: u16 = json["metadata"]["weight"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            for endpoint in json["endpoints"].as_array().unwrap() {
                let (scheme, rest) = endpoint.as_str().unwrap().split_once("://").unwrap();
                let (host, port) = rest.rsplit_once(':').unwrap();
                model
                    .entry(format!("_{scheme}._tcp.{service}"))
                    .or_default()
                    .insert((0, weight, port.parse().unwrap(), host.parse().unwrap()));
            }
        }
    }
    // SkyDNS: SRV at the service's name, CoreDNS's percent weights.
    let mut sky: BTreeMap<String, Vec<(u16, u16, std::net::IpAddr)>> = BTreeMap::new();
    for (key, value) in kvs {
        if let Some(rest) = key.strip_prefix("/skydns/local/svc/") {
            let service = rest.split('/').next().unwrap();
            let json: serde_json::Value = serde_json::from_str(value).unwrap();
            sky.entry(service.to_owned()).or_default().push((
                json["weight"].as_u64().unwrap() as u16,
                json["port"].as_u64().unwrap() as u16,
                json["host"].as_str().unwrap().parse().unwrap(),
            ));
        }
    }
    for (service, records) in sky {
        let total: u64 = records.iter().map(|(w, _, _)| u64::from(*w)).sum();
        let set = model.entry(service).or_default();
        for (weight, port, host) in records {
            let percent = (100.0 / total as f64 * f64::from(weight)).floor().max(1.0) as u16;
            set.insert((10, percent, port, host));
        }
    }
    model
}

/// What DNS answers at every name the model has, or might have had.
fn churn_answers(dns: std::net::SocketAddr, names: &BTreeSet<String>) -> Result<Model, String> {
    let mut seen = Model::new();
    for name in names {
        let reply = try_query_udp(
            dns,
            &format!("{name}.svc.local."),
            RecordType::SRV,
            Some(4096),
        )?;
        let glue: BTreeMap<String, std::net::Ipv4Addr> = reply
            .additionals
            .iter()
            .filter_map(|r| match &r.data {
                hickory_proto::rr::RData::A(a) => Some((r.name.to_ascii(), a.0)),
                _ => None,
            })
            .collect();
        let records: BTreeSet<(u16, u16, u16, std::net::IpAddr)> = srv_of(&reply.answers)
            .iter()
            .map(|s| {
                let address = glue
                    .get(&s.target.to_ascii())
                    .map(|&a| std::net::IpAddr::V4(a));
                address
                    .map(|a| (s.priority, s.weight, s.port, a))
                    .ok_or_else(|| format!("{name}: no glue for {}", s.target))
            })
            .collect::<Result<_, _>>()?;
        // Clients that resolve SRV targets again (Go, Node, Java) get the
        // glue's address.
        for (target, address) in &glue {
            let reply = try_query_udp(dns, target, RecordType::A, None)?;
            if a_of(&reply.answers) != [*address] {
                return Err(format!("{target}: A {:?}, glue {address}", reply.answers));
            }
        }
        if records.is_empty() {
            // A name that went is gone, not empty.
            if reply.metadata.response_code != hickory_proto::op::ResponseCode::NXDomain {
                return Err(format!(
                    "{name}: no records, yet {:?}",
                    reply.metadata.response_code
                ));
            }
        } else {
            seen.insert(name.clone(), records);
        }
    }
    // The service name's A set is every address of its SRV names
    // (`_<scheme>._tcp.<service>`, or the SkyDNS name itself).
    let mut services: BTreeMap<String, BTreeSet<std::net::IpAddr>> = BTreeMap::new();
    for (name, records) in &seen {
        let service = match name.strip_prefix('_').and_then(|n| n.split_once("._tcp.")) {
            Some((_, service)) => service.to_owned(),
            None => name.clone(),
        };
        services
            .entry(service)
            .or_default()
            .extend(records.iter().map(|r| r.3));
    }
    for (service, want) in services {
        let reply = try_query_udp(
            dns,
            &format!("{service}.svc.local."),
            RecordType::A,
            Some(4096),
        )?;
        let got: BTreeSet<std::net::IpAddr> = a_of(&reply.answers)
            .into_iter()
            .map(std::net::IpAddr::V4)
            .collect();
        if got != want {
            return Err(format!("{service}: A {got:?}, SRV addresses {want:?}"));
        }
    }
    Ok(seen)
}

/// Random churn across go-zero, go-micro, kratos, SkyDNS and the overlay at once
/// (200 writes and deletes on one etcd, as fast as etcd takes them): DNS
/// ends equal to what etcd holds, SRV name by SRV name, record by record,
/// weights and overlay included; every SRV target answers A with its glue's
/// address, every service name A with its SRV records' addresses, and
/// every name that went is NXDOMAIN. Then etcd is cut off: 200 more changes
/// and a compaction of their history happen unseen, DNS keeps answering
/// the last-known zone, and once etcd is back it equals etcd again (a
/// full re-read). `RPCDNS_CHURN_SEED` replays a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_across_all_sources_converges() {
    let seed: u64 = std::env::var("RPCDNS_CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("churn seed {seed} (RPCDNS_CHURN_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let etcd = Etcd::start();
    let client = etcd.client().await;
    let proxy = Proxy::start(etcd.client_addr());
    let rpcdns = start_with_config(
        &proxy.endpoint(),
        "sources:\n  - format: gozero\n  - format: gomicro\n    suffix: micro\n  - format: kratos\n  - format: skydns\noverlay:\n  prefix: /o/\n",
    );
    let dns = rpcdns.dns_addr;

    let mut kvs: BTreeMap<String, String> = BTreeMap::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut last = 0;
    for round in 0..2 {
        if round == 1 {
            proxy.cut();
            eventually(Duration::from_secs(20), || {
                match rpcdns.etcd_connected()? {
                    false => Ok(()),
                    true => Err("still connected with the proxy cut".into()),
                }
            });
        }
        let before = churn_model(&kvs);
        for _ in 0..200 {
            let (key, value) = churn_op(&mut rng);
            last = match value {
                Some(value) => {
                    let revision = put(&client, key.clone(), value.clone()).await;
                    kvs.insert(key, value);
                    revision
                }
                None => {
                    let revision = delete(&client, key.clone()).await;
                    kvs.remove(&key);
                    revision
                }
            };
            names.extend(churn_model(&kvs).into_keys());
        }
        if round == 1 {
            // The changes' history is gone: only a full re-read finds them.
            client
                .clone()
                .compact(
                    last,
                    Some(etcd_client::CompactionOptions::new().with_physical()),
                )
                .await
                .expect("compact");
            // Meanwhile DNS answers the zone as it was.
            let seen = churn_answers(dns, &names).expect("answers during the outage");
            assert_eq!(
                seen, before,
                "seed {seed}: the last-known zone during the outage"
            );
            proxy.restore();
        }
        let model = churn_model(&kvs);
        eventually(Duration::from_secs(30), || {
            let seen = churn_answers(dns, &names)?;
            if seen == model {
                Ok(())
            } else {
                Err(format!("seed {seed}: DNS {seen:?}\nmodel {model:?}"))
            }
        });
        if round == 1 {
            let resyncs = metric(
                rpcdns.http_addr,
                r#"rpcdns_etcd_resyncs_total{reason="compacted"}"#,
            );
            assert_eq!(resyncs, Ok(1.0), "one full re-read after the compaction");
        }
        println!(
            "churn round {round}: seed {seed}, {} keys, {} SRV names, {} records: DNS equals etcd",
            kvs.len(),
            model.len(),
            model.values().map(BTreeSet::len).sum::<usize>()
        );
    }
}
