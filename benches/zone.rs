//! Criterion micro-benchmarks of the zone: lookup, update (upsert + publish)
//! and answer building, at several zone sizes.
//!
//! Sizes follow benchmark 4 of the performance issue: lookups at 10k and
//! 100k instances, updates at 10k, 100k and 1M (the cost of an update must
//! not grow with the zone), answers at 100k. Instances come 5 to a service,
//! named as `bench/propagation.sh` names them (`svc<s>.rpc/<id>`).
//!
//! `cargo bench --bench zone` runs everything (add `-- --quick` for a
//! shorter run). Under `cargo test --all-targets` criterion runs each
//! benchmark once; the zones are then built at 1k instances only, so the
//! test run stays quick in a debug build.

use std::future::Future;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hickory_proto::rr::Name;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler};
use rpcdns::serve::answer;
use rpcdns::serve::handler::{CaptureResponse, DEFAULT_MAX_UDP_PAYLOAD, DnsHandler};
use rpcdns::zone::{Endpoint, Registration, SkyHost, SkyRecord};
use rpcdns::zone::{ZoneParams, ZoneStore, ZoneWriter};

/// Instances per service, as in the whole-system benchmarks.
const PER_SERVICE: u64 = 5;
/// First instance id; ids look like go-zero lease ids.
const ID_BASE: u64 = 7_000_000_000_000_000_000;
/// The zone apex.
const ORIGIN: &str = "svc.local.";

/// True under `cargo bench` (which passes `--bench`); false under
/// `cargo test`, which runs each benchmark once as a smoke test.
fn bench_mode() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// `full` in bench mode, else 1k instances.
fn sizes(full: &[u64]) -> Vec<u64> {
    if bench_mode() {
        full.to_vec()
    } else {
        vec![1_000]
    }
}

fn service_key(s: u64) -> String {
    format!("svc{s}.rpc")
}

fn key_of(s: u64, k: u64) -> Vec<u8> {
    format!("{}/{}", service_key(s), ID_BASE + s * PER_SERVICE + k).into_bytes()
}

fn registration(s: u64, k: u64, port: u16) -> Registration {
    let n = (s * PER_SERVICE + k) as u32;
    Registration {
        service: service_key(s),
        instance_id: (ID_BASE + u64::from(n)).to_string(),
        endpoint: Endpoint::Ip {
            addr: IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | (n + 0x1_0000))),
            port,
        },
        priority: rpcdns::zone::SRV_PRIORITY,
        weight: rpcdns::zone::SRV_WEIGHT,
        scheme: None,
        source: 0,
        metadata: Vec::new(),
    }
}

/// The zone's parameters.
fn params() -> ZoneParams {
    ZoneParams {
        // A constant, valid name.
        origin: Name::from_ascii(ORIGIN).unwrap_or_else(|e| panic!("{ORIGIN}: {e}")),
        ttl: 5,
        negative_ttl: 5,
        grpc: Default::default(),
        reverse: Vec::new(),
    }
}

/// A store holding `instances` instances, published, and its writer.
fn zone(instances: u64) -> (Arc<ZoneStore>, ZoneWriter) {
    let store = Arc::new(ZoneStore::new(params()));
    let mut writer = ZoneWriter::new(store.clone());
    for s in 0..instances / PER_SERVICE {
        for k in 0..PER_SERVICE {
            writer.upsert(&key_of(s, k), registration(s, k, 8000));
        }
    }
    writer.set_revision(1);
    writer.publish();
    (store, writer)
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

// ---------------------------------------------------------------------------
// Lookup
// ---------------------------------------------------------------------------

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    group.throughput(Throughput::Elements(1));
    for instances in sizes(&[10_000, 100_000]) {
        let (store, _writer) = zone(instances);
        let snapshot = store.load();
        let services = instances / PER_SERVICE;
        let s = services / 2;
        let cases = [
            ("service", name(&format!("{}.{ORIGIN}", service_key(s)))),
            (
                "instance",
                name(&format!(
                    "{}.{}.{ORIGIN}",
                    ID_BASE + s * PER_SERVICE + 1,
                    service_key(s)
                )),
            ),
            ("missing", name(&format!("nope{s}.rpc.{ORIGIN}"))),
        ];
        for (what, query) in cases {
            assert!(snapshot.lookup(&query).is_some(), "{query} is in the zone");
            group.bench_with_input(BenchmarkId::new(what, instances), &query, |b, query| {
                b.iter(|| black_box(snapshot.lookup(black_box(query)).is_some()))
            });
        }
    }
    group.finish();
}

// ---------------------------------------------------------------------------
// Update
// ---------------------------------------------------------------------------

fn update(c: &mut Criterion) {
    let mut group = c.benchmark_group("update");
    group.throughput(Throughput::Elements(1));
    for instances in sizes(&[10_000, 100_000, 1_000_000]) {
        let (_store, mut writer) = zone(instances);
        let services = instances / PER_SERVICE;
        let mut round: u64 = 0;
        group.bench_function(BenchmarkId::new("upsert+publish", instances), |b| {
            b.iter(|| {
                // A real change every time (a new port), spread over up to
                // 1024 services so no one service stays hot in the cache.
                round += 1;
                let s = (round * 7919) % services.min(1024);
                let port = 9000 + (round % 1000) as u16;
                writer.upsert(&key_of(s, 0), registration(s, 0, port));
                writer.publish();
            })
        });
    }
    group.finish();
}

/// SkyDNS: an update under a name with `records` records below it (all
/// in one tree, `/skydns/local/svc/sky/s<n>/i<n>`): the names above the
/// key are rebuilt, each from at most `MAX_NODE_RECORDS` records, so the
/// cost must stay flat as the tree grows.
fn skydns_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("skydns-update");
    group.throughput(Throughput::Elements(1));
    for records in sizes(&[10_000, 100_000]) {
        let store = Arc::new(ZoneStore::new(params()));
        let mut writer = ZoneWriter::new(store.clone());
        let record = |i: u64, port: u16| SkyRecord {
            name: format!("i{i}.s{}.sky", i % 100).into(),
            host: SkyHost::Ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32))),
            port: Some(port),
            priority: 10,
            weight: 0,
            text: "".into(),
            ttl: 300,
            targetstrip: 0,
            group: "".into(),
            source: 0,
        };
        for i in 0..records {
            writer.set_sky(format!("k{i}").as_bytes(), record(i, 80));
        }
        writer.publish();
        let mut round: u64 = 0;
        group.bench_function(BenchmarkId::new("set+publish", records), |b| {
            b.iter(|| {
                round += 1;
                let i = (round * 7919) % records;
                writer.set_sky(
                    format!("k{i}").as_bytes(),
                    record(i, 9000 + (round % 1000) as u16),
                );
                writer.publish();
            })
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------
// Answer building
// ---------------------------------------------------------------------------

/// A query for `qname`/`qtype` with an EDNS(0) OPT advertising 1232 octets,
/// as dig sends it.
fn query_packet(qname: &str, qtype: u16) -> Vec<u8> {
    let mut packet = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in qname.trim_end_matches('.').split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&1u16.to_be_bytes());
    // OPT: root owner, type 41, class = payload size, TTL 0, no rdata.
    packet.extend_from_slice(&[0, 0, 41]);
    packet.extend_from_slice(&DEFAULT_MAX_UDP_PAYLOAD.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    packet
}

/// Runs a future that never waits (the capture handler sends at once).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the handler waited on something"),
    }
}

fn answers(c: &mut Criterion) {
    let mut group = c.benchmark_group("answer");
    group.throughput(Throughput::Elements(1));
    let instances = sizes(&[100_000])[0];
    let (store, _writer) = zone(instances);
    let service = format!("{}.{ORIGIN}", service_key(instances / PER_SERVICE / 2));
    let handler = DnsHandler::new(store.clone(), DEFAULT_MAX_UDP_PAYLOAD);
    let client: SocketAddr = ([127, 0, 0, 1], 53000).into();
    for (what, qtype) in [("A", 1u16), ("SRV", 33u16)] {
        let packet = query_packet(&service, qtype);

        // The UDP fast path: parse, then write the response from the
        // snapshot's pre-encoded records.
        let mut out = Vec::with_capacity(1232);
        group.bench_function(BenchmarkId::new("fast", what), |b| {
            b.iter(|| {
                let snapshot = store.guard();
                let Some(question) = answer::parse_query(black_box(&packet)) else {
                    panic!("the fast path parses a plain {what} query");
                };
                let limit = question.udp_limit(DEFAULT_MAX_UDP_PAYLOAD);
                black_box(answer::respond(
                    &snapshot,
                    &question,
                    limit,
                    DEFAULT_MAX_UDP_PAYLOAD,
                    &mut out,
                ));
            })
        });

        // The full path (TCP and unusual queries): hickory parses the
        // request, the handler answers, the response is encoded.
        group.bench_function(BenchmarkId::new("full", what), |b| {
            b.iter(|| {
                let Ok(request) =
                    Request::from_bytes(black_box(packet.clone()), client, Protocol::Udp)
                else {
                    panic!("hickory parses a plain {what} query");
                };
                let capture = CaptureResponse::new(DEFAULT_MAX_UDP_PAYLOAD);
                ready(handler.handle_request::<_, TokioTime>(&request, capture.clone()));
                black_box(capture.take())
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: these are comparisons between sizes, not absolute
    // figures, and the machine has two cores shared with other work.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = lookup, update, skydns_update, answers
}
criterion_main!(benches);
