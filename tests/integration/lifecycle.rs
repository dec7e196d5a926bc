//! The process as an operator runs it (SPEC §6, issue 5 points 4 and 5):
//! the HTTP endpoints (/healthz, /metrics with the documented metric
//! names, /debug/zone's shape); the logs (JSON lines, one per state change,
//! none per query); and shutdown on SIGTERM and SIGINT (readiness withdrawn
//! at once, an in-flight query still answered, exit 0, ports freed).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::harness::*;

/// Shutdown takes at most the grace period (5 s); this leaves slack.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_answer() {
    let env = TestEnv::start(&[]).await;
    let rev = put(&env.client, "sms.rpc/1", "10.0.0.1:80").await;
    eventually(PROPAGATION, || {
        check_a(env.dns(), "sms.rpc.svc.local.", &ipv4s(&["10.0.0.1"]))
    });
    let http = env.rpcdns.http_addr;
    assert_eq!(http_get(http, "/healthz").expect("healthz").0, 200);
    assert_eq!(http_get(http, "/readyz").expect("readyz").0, 200);

    eventually(PROPAGATION, || {
        let zone = env.rpcdns.debug_zone()?;
        for key in ["zone", "skipped", "etcd_connected", "revision"] {
            if zone.get(key).is_none() {
                return Err(format!("/debug/zone lacks {key:?}: {zone}"));
            }
        }
        match zone["revision"].as_i64() {
            Some(r) if r >= rev => {}
            other => return Err(format!("/debug/zone revision {other:?}, want >= {rev}")),
        }
        let text = zone["zone"].to_string();
        if !text.contains("sms.rpc") || !text.contains("10.0.0.1") {
            return Err(format!(
                "/debug/zone does not show sms.rpc and its instance: {text}"
            ));
        }
        Ok(())
    });

    let (code, metrics) = http_get(http, "/metrics").expect("metrics");
    assert_eq!(code, 200, "{metrics}");
    let missing: Vec<String> = [
        "rpcdns_zone_services 1",
        "rpcdns_zone_instances 1",
        "rpcdns_etcd_connected 1",
        "rpcdns_etcd_revision ",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(
        rpcdns::ops::metrics::ALL_NAMES
            .iter()
            .map(|name| format!("# TYPE {name} ")),
    )
    .filter(|m| !metrics.contains(m.as_str()))
    .collect();
    assert!(missing.is_empty(), "/metrics lacks {missing:?}:\n{metrics}");

    // The process metrics operators alert on, with live values.
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("/metrics has no {name}:\n{metrics}"))
    };
    assert!(value("process_resident_memory_bytes") > 1_000_000.0);
    assert!(
        value("process_open_fds") >= 5.0,
        "sockets and the etcd connection"
    );
    assert!(value("process_max_fds") >= value("process_open_fds"));
    assert!(value("process_start_time_seconds") > 1.7e9);
    value("process_cpu_seconds_total");
}

/// rpcdns against `etcd` on port-0 listeners, logging in `format`.
fn start_rpcdns(etcd: &str, format: &str) -> Rpcdns {
    let args: Vec<String> = [
        "--etcd",
        etcd,
        "--dns-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--log-format",
        format,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    Rpcdns::spawn(&args)
}

// ----------------------------------------------------------------------------
// Shutdown
// ----------------------------------------------------------------------------

/// SPEC §6: "SIGTERM / SIGINT: stop accepting, finish in-flight answers,
/// exit 0", and /readyz turns 503 as soon as shutdown begins (while the
/// admin endpoint, which stops last, still answers).
async fn stops_cleanly_on(signal: &str) {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    put(&client, "sms.rpc/1", "10.0.0.1:80").await;
    let mut rpcdns = start_rpcdns(&etcd.endpoint(), "text");
    rpcdns.wait_ready();
    eventually(PROPAGATION, || {
        check_a(rpcdns.dns_addr, "sms.rpc.svc.local.", &ipv4s(&["10.0.0.1"]))
    });

    // A query in flight over TCP: its length and first octets sent, the
    // rest held back until shutdown has begun.
    let query = build_query("sms.rpc.svc.local.", RecordType::A, None);
    let bytes = query.to_vec().expect("encode query");
    let mut stream = TcpStream::connect(rpcdns.dns_addr).expect("connect dns over tcp");
    stream
        .set_read_timeout(Some(EXIT_WITHIN))
        .expect("set read timeout");
    let len = u16::try_from(bytes.len()).expect("short query");
    stream.write_all(&len.to_be_bytes()).expect("write length");
    stream.write_all(&bytes[..5]).expect("write first octets");
    // A round trip through the same runtime, so the connection has taken
    // the first octets in before the signal arrives.
    assert_eq!(
        http_get(rpcdns.http_addr, "/healthz").expect("healthz").0,
        200
    );

    rpcdns.signal(signal);
    eventually(PROPAGATION, || {
        match http_get(rpcdns.http_addr, "/readyz")? {
            (503, body) if body.contains("shutting down") => Ok(()),
            (code, body) => Err(format!("/readyz answered {code}: {body}")),
        }
    });
    assert_eq!(
        http_get(rpcdns.http_addr, "/healthz").expect("healthz").0,
        200,
        "healthz while draining"
    );

    // The in-flight query is still answered.
    stream.write_all(&bytes[5..]).expect("write the rest");
    let mut reply_len = [0u8; 2];
    stream
        .read_exact(&mut reply_len)
        .expect("the in-flight query is answered during shutdown");
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(reply_len))];
    stream.read_exact(&mut reply).expect("read the answer");
    let reply = Message::from_vec(&reply).expect("decode the answer");
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        a_of(&reply.answers),
        vec![std::net::Ipv4Addr::new(10, 0, 0, 1)]
    );

    let status = rpcdns
        .wait_exit(EXIT_WITHIN)
        .unwrap_or_else(|| panic!("rpcdns still running {EXIT_WITHIN:?} after SIG{signal}"));
    assert_eq!(status.code(), Some(0), "exit status after SIG{signal}");
    let log = rpcdns.log();
    for needle in [
        format!("received SIG{signal}"),
        "shutting down".to_owned(),
        "stopped".to_owned(),
    ] {
        assert!(log.contains(&needle), "the log lacks {needle:?}:\n{log}");
    }
    assert!(!log.contains("longer than the grace period"), "{log}");
    UdpSocket::bind(rpcdns.dns_addr).expect("DNS UDP port free after exit");
    TcpListener::bind(rpcdns.dns_addr).expect("DNS TCP port free after exit");
    TcpListener::bind(rpcdns.http_addr).expect("HTTP port free after exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_withdraws_readiness_finishes_in_flight_and_exits_0() {
    stops_cleanly_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_withdraws_readiness_finishes_in_flight_and_exits_0() {
    stops_cleanly_on("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_frees_the_ports() {
    let mut env = TestEnv::start(&[]).await;
    let (dns, http) = (env.rpcdns.dns_addr, env.rpcdns.http_addr);
    let status = env.rpcdns.terminate(Duration::from_secs(10));
    let status = status.unwrap_or_else(|| panic!("rpcdns still running 10 s after SIGTERM"));
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(
        env.rpcdns.log().to_ascii_lowercase().contains("sigterm"),
        "the log does not say SIGTERM arrived"
    );
    UdpSocket::bind(dns).expect("DNS UDP port free after exit");
    TcpListener::bind(dns).expect("DNS TCP port free after exit");
    TcpListener::bind(http).expect("HTTP port free after exit");
}

// ----------------------------------------------------------------------------
// Logs
// ----------------------------------------------------------------------------

/// One JSON log line, the parts the checks need.
#[derive(Debug)]
struct LogLine {
    level: String,
    message: String,
    fields: serde_json::Value,
}

fn parse_json_lines(lines: &[String]) -> Vec<LogLine> {
    lines
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            for key in ["timestamp", "level", "target", "fields"] {
                assert!(value.get(key).is_some(), "log line lacks {key:?}: {line}");
            }
            LogLine {
                level: value["level"].as_str().unwrap_or_default().to_owned(),
                message: value["fields"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                fields: value["fields"].clone(),
            }
        })
        .collect()
}

/// Waits for a `level` log line whose message starts with `message` and
/// whose fields include `field` (name, value) when given.
#[track_caller]
fn wait_for_line(rpcdns: &Rpcdns, level: &str, message: &str, field: Option<(&str, &str)>) {
    eventually(RECONNECT, || {
        let lines = parse_json_lines(&rpcdns.lines());
        let found = lines.iter().any(|line| {
            line.level == level
                && line.message.starts_with(message)
                && field.is_none_or(|(k, v)| line.fields[k].as_str() == Some(v))
        });
        if found {
            Ok(())
        } else {
            Err(format!("no {level} line {message:?} with {field:?}"))
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_line_per_state_change_and_none_per_query() {
    let mut etcd = Etcd::start();
    let client = etcd.client().await;
    let rpcdns = start_rpcdns(&etcd.endpoint(), "json");
    rpcdns.wait_ready();
    wait_for_line(&rpcdns, "INFO", "connected to etcd", None);
    wait_for_line(
        &rpcdns,
        "INFO",
        "zone loaded from etcd",
        Some(("reason", "initial")),
    );

    put(&client, "sms.rpc/1", "10.0.0.1:80").await;
    wait_for_line(
        &rpcdns,
        "INFO",
        "service appeared",
        Some(("service", "sms.rpc")),
    );
    put(&client, "bad.rpc/1", "10.0.0.9").await;
    wait_for_line(
        &rpcdns,
        "WARN",
        "skipping etcd key",
        Some(("reason", "no_port")),
    );
    wait_for_line(
        &rpcdns,
        "WARN",
        "skipping etcd key",
        Some(("key", "bad.rpc/1")),
    );
    delete(&client, "sms.rpc/1").await;
    wait_for_line(
        &rpcdns,
        "INFO",
        "service disappeared",
        Some(("service", "sms.rpc")),
    );

    // Disconnected, then connected again.
    etcd.stop();
    wait_for_line(&rpcdns, "WARN", "etcd unreachable", None);
    etcd.restart();
    eventually(RECONNECT, || {
        let lines = parse_json_lines(&rpcdns.lines());
        match lines
            .iter()
            .filter(|l| l.message.starts_with("connected to etcd"))
            .count()
        {
            2.. => Ok(()),
            n => Err(format!("{n} \"connected to etcd\" lines, want 2")),
        }
    });
    let client = etcd.client().await;

    // Queries of every kind add no line at info: fast path, NXDOMAIN,
    // REFUSED (full path), TCP, and a malformed one.
    let before = rpcdns.lines().len();
    for _ in 0..20 {
        let reply = query_udp(rpcdns.dns_addr, "nope.rpc.svc.local.", RecordType::A, None);
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        query_udp(rpcdns.dns_addr, "svc.local.", RecordType::SOA, Some(1232));
        query_udp(rpcdns.dns_addr, "example.com.", RecordType::A, None);
    }
    for _ in 0..5 {
        query_tcp(
            rpcdns.dns_addr,
            "nope.rpc.svc.local.",
            RecordType::SRV,
            None,
        );
        query_tcp(rpcdns.dns_addr, "example.com.", RecordType::A, None);
    }
    let malformed = [0u8, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63];
    udp_raw(rpcdns.dns_addr, &malformed, QUERY_TIMEOUT);
    // A state change after the queries marks where their lines would be.
    put(&client, "marker.rpc/1", "10.0.0.2:80").await;
    wait_for_line(
        &rpcdns,
        "INFO",
        "service appeared",
        Some(("service", "marker.rpc")),
    );
    let lines = rpcdns.lines();
    let added = parse_json_lines(&lines[before..]);
    assert!(
        added.len() == 1 && added[0].message == "service appeared",
        "queries logged at info: {added:#?}"
    );
}
