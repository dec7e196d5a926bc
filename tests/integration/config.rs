//! Configuration as the operator meets it (SPEC §6): `check-config` on the
//! documented example and on bad files (exit 2, key and line named), a
//! missing file, and flags overriding the file in a running server.

use std::path::Path;
use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::harness::*;

const RUN: Duration = Duration::from_secs(10);

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/rpcdns.yaml")
        .display()
        .to_string()
}

/// Writes `yaml` to a temp file; keep the dir alive while it is used.
fn config_file(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rpcdns.yaml");
    std::fs::write(&path, yaml).expect("write config");
    (dir, path.display().to_string())
}

/// True when `text` names line `line` in one of the usual forms.
fn names_line(text: &str, line: u32) -> bool {
    [
        format!("line {line}"),
        format!(":{line}:"),
        format!(":{line} "),
    ]
    .iter()
    .any(|form| text.contains(form.as_str()))
}

#[test]
fn check_config_accepts_the_documented_example() {
    let (code, out, err) = run_rpcdns(&["check-config", &example()], RUN);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    for expected in [
        "svc.local",
        "127.0.0.1:2379",
        "*.rpc",
        "1232",
        "9153",
        r#"service_config: "{\"loadBalancingConfig\":[{\"round_robin\":{}}]}""#,
    ] {
        assert!(
            out.contains(expected),
            "effective config lacks {expected:?}:\n{out}"
        );
    }
}

#[test]
fn check_config_never_prints_the_password() {
    let (_dir, path) = config_file("etcd:\n  username: \"u\"\n  password: \"s3cret-pw\"\n");
    let (code, out, err) = run_rpcdns(&["check-config", &path], RUN);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        !out.contains("s3cret-pw") && !err.contains("s3cret-pw"),
        "password printed:\n{out}\n{err}"
    );
}

#[test]
fn check_config_rejects_bad_files_naming_key_and_line() {
    let cases = [
        // (what, yaml, key named, line named)
        (
            "unknown key",
            "dns:\n  zone: \"svc.local.\"\n  bogus_key: 1\n",
            Some("bogus_key"),
            3,
        ),
        (
            "unknown section",
            "etcd:\n  prefix: \"\"\nbogus_section:\n  a: 1\n",
            Some("bogus_section"),
            3,
        ),
        (
            "ttl not a number",
            "dns:\n  zone: \"svc.local.\"\n  ttl: five\n",
            Some("ttl"),
            3,
        ),
        (
            "ttl out of range",
            "dns:\n  negative_ttl: 5\n  ttl: 0\n",
            Some("ttl"),
            3,
        ),
        (
            "bad YAML",
            "dns:\n  zone: \"svc.local.\"\n  ttl: [5\n",
            None,
            3,
        ),
        (
            "a gRPC service config clients would reject",
            "grpc:\n  overrides:\n    - pattern: pay.rpc\n      service_config: '{\"loadBalancingConfig\": [{\"ring_hash_experimental\": {}}]}'\n",
            Some("grpc.overrides[0].service_config"),
            4,
        ),
    ];
    for (what, yaml, key, line) in cases {
        let (_dir, path) = config_file(yaml);
        let (code, out, err) = run_rpcdns(&["check-config", &path], RUN);
        assert_eq!(
            code,
            Some(2),
            "{what}: exit code; stdout:\n{out}\nstderr:\n{err}"
        );
        if let Some(key) = key {
            assert!(
                err.contains(key),
                "{what}: stderr does not name {key}:\n{err}"
            );
        }
        if what != "bad YAML" {
            assert!(
                names_line(&err, line),
                "{what}: stderr does not name line {line}:\n{err}"
            );
        } else {
            // A parser may place the error at the broken line or the end.
            assert!(
                names_line(&err, 3) || names_line(&err, 4),
                "{what}: no line in:\n{err}"
            );
        }
    }
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.yaml").display().to_string();
    let (code, out, err) = run_rpcdns(&["check-config", &missing], RUN);
    assert_eq!(
        code,
        Some(2),
        "check-config: stdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        err.contains("nope.yaml"),
        "error does not name the file:\n{err}"
    );
    let (code, out, err) = run_rpcdns(
        &[
            "--config",
            &missing,
            "--dns-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
        RUN,
    );
    assert_eq!(code, Some(2), "server: stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("nope.yaml"),
        "error does not name the file:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_override_the_file() {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    put(&client, "sms.rpc/1", "10.0.0.1:80").await;
    put(&client, "sms.api/1", "10.0.0.2:80").await;
    // The file points at a dead etcd, a long TTL and another pattern; the
    // flags win for those, and negative_ttl (no flag) still comes from it.
    let (_dir, path) = config_file(
        "etcd:\n  endpoints: [\"127.0.0.1:1\"]\n  patterns: [\"*.api\"]\ndns:\n  ttl: 30\n  negative_ttl: 4\n",
    );
    let rpcdns = Rpcdns::start(
        &etcd.endpoint(),
        &["--config", &path, "--ttl", "9", "--pattern", "*.rpc"],
    );
    rpcdns.wait_ready();
    eventually(PROPAGATION, || {
        check_a(rpcdns.dns_addr, "sms.rpc.svc.local.", &ipv4s(&["10.0.0.1"]))
    });
    let msg = query_udp(rpcdns.dns_addr, "sms.rpc.svc.local.", RecordType::A, None);
    assert_eq!(msg.answers[0].ttl, 9, "--ttl overrides dns.ttl");
    let neg = query_udp(rpcdns.dns_addr, "sms.api.svc.local.", RecordType::A, None);
    let (soa, _, _) = soa_of(&neg.authorities).unwrap_or_else(|| panic!("no SOA: {neg}"));
    assert_eq!(soa.minimum, 4, "dns.negative_ttl from the file");
    assert_eq!(
        neg.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain,
        "--pattern replaced the file's patterns"
    );
}
