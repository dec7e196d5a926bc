//! `/metrics` against real traffic (SPEC §6, issue 5 point 3): queries over
//! UDP and TCP and etcd events move exactly the counters they should, and
//! every metric the Grafana dashboard in `deploy/grafana/` uses is served.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use rpcdns::ops::metrics;

use crate::harness::*;

/// The dashboard, relative to the crate root.
const DASHBOARD: &str = "deploy/grafana/rpcdns-dashboard.json";

/// One scrape: every sample line as `series` (name and labels exactly as
/// rendered) → value, and every `# TYPE` as name → kind.
struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("/metrics has no series {series}"))
    }

    /// Sum of every sample of `name` whose labels include all of `labels`
    /// (each `key="value"`).
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                series.split('{').next() == Some(name) && labels.iter().all(|l| series.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

fn scrape(http: SocketAddr) -> Result<Scrape, String> {
    let (code, body) = http_get(http, "/metrics")?;
    if code != 200 {
        return Err(format!("/metrics answered {code}: {body}"));
    }
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| format!("bad TYPE line {line:?}"))?;
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("bad sample line {line:?}"))?;
        let value: f64 = value
            .parse()
            .map_err(|e| format!("bad value in {line:?}: {e}"))?;
        samples.insert(series.to_owned(), value);
    }
    Ok(Scrape { samples, types })
}

fn queries(qtype: &str, rcode: &str, transport: &str) -> String {
    format!(
        "{}{{qtype=\"{qtype}\",rcode=\"{rcode}\",transport=\"{transport}\"}}",
        metrics::DNS_QUERIES_TOTAL
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_and_etcd_events_move_the_counters() {
    let env = TestEnv::start(&[]).await;
    let http = env.rpcdns.http_addr;
    let before = scrape(http).expect("first scrape");
    // Every series is there before it moves.
    for name in metrics::ALL_NAMES {
        assert!(before.types.contains_key(name), "no # TYPE for {name}");
    }
    assert_eq!(before.get(&queries("srv", "badvers", "tcp")), 0.0);
    assert_eq!(
        before.get("rpcdns_etcd_resyncs_total{reason=\"initial\"}"),
        1.0
    );

    // etcd: three puts (one with a value that has no port), one delete.
    put(&env.client, "sms.rpc/1", "10.0.0.1:80").await;
    put(&env.client, "sms.rpc/2", "10.0.0.2:80").await;
    put(&env.client, "bad.rpc/1", "10.0.0.9").await;
    let last = delete(&env.client, "sms.rpc/2").await;
    // Wait through /debug/zone, not DNS, so no query is counted yet.
    eventually(PROPAGATION, || {
        let zone = env.rpcdns.debug_zone()?;
        match zone["revision"].as_i64() {
            Some(r) if r >= last => Ok(()),
            other => Err(format!("revision {other:?}, want {last}")),
        }
    });

    // DNS: answers on both transports, an NXDOMAIN, and a REFUSED (a name
    // outside the zone with no upstream configured; the full path).
    let dns = env.dns();
    for _ in 0..3 {
        let reply = query_udp(dns, "sms.rpc.svc.local.", RecordType::A, None);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    }
    query_udp(dns, "sms.rpc.svc.local.", RecordType::SRV, Some(1232));
    for _ in 0..2 {
        query_tcp(dns, "sms.rpc.svc.local.", RecordType::A, None);
    }
    let nx = query_udp(dns, "nope.rpc.svc.local.", RecordType::A, None);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    let refused = query_udp(dns, "example.com.", RecordType::A, None);
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    let refused = query_tcp(dns, "example.com.", RecordType::AAAA, None);
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);

    // The full path counts after it has sent, so the last replies may be
    // seen before their counts: poll until every delta is exact.
    let want: Vec<(String, f64)> = vec![
        (queries("a", "noerror", "udp"), 3.0),
        (queries("srv", "noerror", "udp"), 1.0),
        (queries("a", "noerror", "tcp"), 2.0),
        (queries("a", "nxdomain", "udp"), 1.0),
        (queries("a", "refused", "udp"), 1.0),
        (queries("aaaa", "refused", "tcp"), 1.0),
        ("rpcdns_etcd_events_total{type=\"put\"}".to_owned(), 3.0),
        ("rpcdns_etcd_events_total{type=\"delete\"}".to_owned(), 1.0),
        (
            "rpcdns_skipped_keys_total{reason=\"no_port\"}".to_owned(),
            1.0,
        ),
        (
            "rpcdns_etcd_resyncs_total{reason=\"initial\"}".to_owned(),
            0.0,
        ),
        (
            "rpcdns_dns_request_duration_seconds_count{transport=\"udp\"}".to_owned(),
            6.0,
        ),
        (
            "rpcdns_dns_request_duration_seconds_count{transport=\"tcp\"}".to_owned(),
            3.0,
        ),
        (
            "rpcdns_dns_request_duration_seconds_bucket{transport=\"udp\",le=\"+Inf\"}".to_owned(),
            6.0,
        ),
    ];
    eventually(PROPAGATION, || {
        let after = scrape(http)?;
        let mut wrong = Vec::new();
        for (series, delta) in &want {
            let moved = after.get(series) - before.get(series);
            if moved != *delta {
                wrong.push(format!("{series} moved {moved}, want {delta}"));
            }
        }
        // Nothing else moved: the query counter as a whole grew by exactly
        // the nine responses above.
        let total = after.sum(metrics::DNS_QUERIES_TOTAL, &[])
            - before.sum(metrics::DNS_QUERIES_TOTAL, &[]);
        if total != 9.0 {
            wrong.push(format!(
                "{} moved {total} in all, want 9",
                metrics::DNS_QUERIES_TOTAL
            ));
        }
        for (series, value) in [
            ("rpcdns_zone_services", 1.0),
            ("rpcdns_zone_instances", 1.0),
            ("rpcdns_etcd_connected", 1.0),
            ("rpcdns_etcd_revision", last as f64),
        ] {
            if after.get(series) != value {
                wrong.push(format!("{series} is {}, want {value}", after.get(series)));
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("; "))
        }
    });
    let after = scrape(http).expect("last scrape");
    let sum = after.get("rpcdns_dns_request_duration_seconds_sum{transport=\"tcp\"}");
    assert!(sum > 0.0 && sum < 10.0, "tcp duration sum {sum}");
}

/// Metric names in a PromQL expression: every `rpcdns_…` identifier.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("rpcdns_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every PromQL string in the dashboard: panel targets' `expr` and the
/// template variables' queries.
fn dashboard_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains("rpcdns_") => {
                        out.push(s.clone())
                    }
                    _ => dashboard_queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_queries(item, out);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_is_served() {
    let path = format!("{}/{DASHBOARD}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
    let mut exprs = Vec::new();
    dashboard_queries(&dashboard, &mut exprs);
    assert!(
        exprs.len() >= 10,
        "only {} expressions in {path}",
        exprs.len()
    );

    let env = TestEnv::start(&[]).await;
    let live = scrape(env.rpcdns.http_addr).expect("scrape");
    let mut used = BTreeSet::new();
    let mut unknown = Vec::new();
    for expr in &exprs {
        let names = metric_names(expr);
        if names.is_empty() {
            unknown.push(format!("no rpcdns metric in {expr:?}"));
        }
        for name in names {
            // A histogram's series are `<name>_bucket`, `_sum`, `_count`.
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    let base = name.strip_suffix(suffix)?;
                    (live.types.get(base).map(String::as_str) == Some("histogram"))
                        .then(|| base.to_owned())
                })
                .unwrap_or_else(|| name.clone());
            if live.types.contains_key(&base) {
                used.insert(base);
            } else {
                unknown.push(format!(
                    "{name} (in {expr:?}) is not in a live /metrics scrape"
                ));
            }
        }
    }
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));
    // The list: queries by type and rcode, latency, zone size, etcd
    // connection, resyncs, skipped keys.
    for name in [
        metrics::DNS_QUERIES_TOTAL,
        metrics::DNS_REQUEST_DURATION_SECONDS,
        metrics::ZONE_SERVICES,
        metrics::ZONE_INSTANCES,
        metrics::ETCD_CONNECTED,
        metrics::ETCD_RESYNCS_TOTAL,
        metrics::SKIPPED_KEYS_TOTAL,
    ] {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }
    let joined = exprs.join("\n");
    for needle in ["by (qtype)", "by (rcode)", "histogram_quantile("] {
        assert!(joined.contains(needle), "no dashboard query uses {needle}");
    }
}
