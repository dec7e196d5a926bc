//! Tests of the configuration: defaults, every file in config/, every key's
//! rules and messages.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;

use super::raw::*;
use super::validate::*;
use super::*;
use crate::zone::service_config::{DEFAULT_SERVICE_CONFIG, ServiceConfig};

const FILE: &str = "test.yaml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_str(text, FILE)
}

fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(config) => panic!("expected an error for:\n{text}\ngot {config:?}"),
        Err(e) => e,
    }
}

fn cli(args: &[&str]) -> Cli {
    let mut argv = vec!["rpcdns"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => panic!("bad test command line {args:?}: {e}"),
    }
}

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn config_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(config_dir())
        .expect("config/ exists")
        .map(|entry| entry.expect("readable config/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "config/ holds no YAML file");
    files
}

// --- defaults ----------------------------------------------------------

#[test]
fn defaults_are_valid() {
    let config = Config::default();
    assert_eq!(config.etcd.endpoints, vec![DEFAULT_ETCD]);
    assert_eq!(config.etcd.prefix, "");
    assert_eq!(config.etcd.patterns, vec![DEFAULT_PATTERN]);
    assert_eq!(config.etcd.username, None);
    assert_eq!(config.etcd.password, None);
    assert_eq!(config.etcd.tls, None);
    assert_eq!(config.etcd.dial_timeout, Duration::from_secs(5));
    assert_eq!(config.dns.zone, "svc.local.");
    assert_eq!(config.dns.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
    assert_eq!(config.dns.ttl, 5);
    assert_eq!(config.dns.negative_ttl, 5);
    assert_eq!(config.dns.max_udp_payload, 1232);
    assert!(config.dns.upstream.is_empty());
    assert_eq!(config.dns.allow_recursion_from.len(), 6);
    assert!(
        config
            .dns
            .allow_recursion_from
            .iter()
            .any(|n| n.contains(&"192.168.1.1".parse::<IpAddr>().unwrap()))
    );
    assert!(
        !config
            .dns
            .allow_recursion_from
            .iter()
            .any(|n| n.contains(&"8.8.8.8".parse::<IpAddr>().unwrap()))
    );
    assert_eq!(config.http.listen, "127.0.0.1:9153".parse().unwrap());
    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(
        config.grpc.service_config.as_ref().map(ServiceConfig::json),
        Some(DEFAULT_SERVICE_CONFIG)
    );
    assert!(config.grpc.overrides.is_empty());
    // Every default passes the same validation as user input.
    assert_eq!(parse("").unwrap(), config);
    assert_eq!(parse("# only a comment\n").unwrap(), config);
    assert_eq!(parse("etcd:\ndns:\n").unwrap(), config);
}

// --- the files in config/ ----------------------------------------------

#[test]
fn every_file_in_config_dir_parses() {
    for path in config_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = Config::from_yaml_str(&text, &path.display().to_string()) {
            panic!("{} does not parse: {e}", path.display());
        }
    }
}

#[test]
fn example_config_shows_the_defaults() {
    let text = std::fs::read_to_string(config_dir().join("rpcdns.yaml")).unwrap();
    assert_eq!(parse(&text).unwrap(), Config::default());
}

/// Keys shown commented out in the example.
const OPTIONAL_KEYS: &[&str] = &[
    "username:",
    "password:",
    "tls:",
    "ca_file:",
    "cert_file:",
    "key_file:",
];

#[test]
fn example_config_optional_keys_parse_when_uncommented() {
    let text = std::fs::read_to_string(config_dir().join("rpcdns.yaml")).unwrap();
    let mut uncommented = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let indent = line.len() - line.trim_start().len();
            let rest = &line[indent..];
            match rest.strip_prefix("# ") {
                Some(body)
                    if OPTIONAL_KEYS
                        .iter()
                        .any(|k| body.trim_start().starts_with(k)) =>
                {
                    uncommented += 1;
                    format!("{}{body}", &line[..indent])
                }
                _ => line.to_owned(),
            }
        })
        .collect();
    assert_eq!(
        uncommented,
        OPTIONAL_KEYS.len(),
        "every optional key is shown"
    );
    let config = parse(&lines.join("\n")).unwrap();
    assert!(config.etcd.username.is_some());
    assert!(config.etcd.password.is_some());
    let tls = config.etcd.tls.expect("tls set");
    assert!(tls.ca_file.is_some() && tls.cert_file.is_some() && tls.key_file.is_some());
}

#[test]
fn every_key_of_every_section_appears_in_the_example() {
    let text = std::fs::read_to_string(config_dir().join("rpcdns.yaml")).unwrap();
    for key in ROOT_KEYS
        .iter()
        .chain(ETCD_KEYS)
        .chain(TLS_KEYS)
        .chain(DNS_KEYS)
        .chain(RRL_KEYS)
        .chain(HTTP_KEYS)
        .chain(LOG_KEYS)
        .chain(GRPC_KEYS)
        .chain(GRPC_OVERRIDE_KEYS)
        .chain(SOURCE_KEYS)
        .chain(OVERLAY_KEYS)
    {
        assert!(text.contains(&format!("{key}:")), "{key} is not documented");
    }
}

// --- unknown keys ------------------------------------------------------

/// Inserts `bogus_key: 1` as the first key of `section` (nested one level
/// deeper than the section header) and returns the text and its line.
fn with_unknown_key(text: &str, section: &str) -> (String, u64) {
    let mut out = Vec::new();
    let mut line_no = 0;
    let header = format!("{section}:");
    let depth = section.matches('.').count();
    let header_last = header.rsplit('.').next().unwrap().to_owned();
    for line in text.lines() {
        out.push(line.to_owned());
        let indent = line.len() - line.trim_start().len();
        let matches = if depth == 0 {
            indent == 0 && line.trim_end() == header
        } else {
            indent == 2 && line.trim_end() == format!("  {header_last}")
        };
        if matches && line_no == 0 {
            out.push(format!("{}bogus_key: 1", " ".repeat(indent + 2)));
            line_no = out.len() as u64;
        }
    }
    assert!(line_no > 0, "section {section} not found");
    (out.join("\n"), line_no)
}

#[test]
fn unknown_key_in_each_section_is_rejected_with_key_and_line() {
    let base = "etcd:\n  prefix: \"\"\n  tls:\n    ca_file: ca.pem\ndns:\n  ttl: 5\n  rrl:\n    slip: 1\nhttp:\n  listen: 127.0.0.1:9153\nlog:\n  level: info\n";
    for section in ["etcd", "etcd.tls", "dns", "dns.rrl", "http", "log"] {
        let (text, line) = with_unknown_key(base, section);
        let e = err(&text);
        let key = format!("{section}.bogus_key");
        assert_eq!(e.key(), Some(key.as_str()), "{e}");
        assert_eq!(e.line(), Some(line), "{e}");
        let shown = e.to_string();
        assert!(shown.starts_with(&format!("{FILE}:{line}:")), "{shown}");
        assert!(shown.contains("unknown key (expected one of: "), "{shown}");
    }
    let e = err("dns:\n  ttl: 5\nbogus_key: 1\n");
    assert_eq!(e.key(), Some("bogus_key"));
    assert_eq!(e.line(), Some(3));
    assert!(e.to_string().contains("etcd, dns, http, log"), "{e}");
}

#[test]
fn unknown_key_in_every_config_file_is_rejected() {
    for path in config_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        for section in ["etcd", "dns", "http", "log"] {
            let (text, line) = with_unknown_key(&text, section);
            let e = Config::from_yaml_str(&text, "x.yaml").unwrap_err();
            assert_eq!(
                e.key(),
                Some(format!("{section}.bogus_key").as_str()),
                "{e}"
            );
            assert_eq!(e.line(), Some(line), "{}: {e}", path.display());
        }
    }
}

#[test]
fn misspelled_key_message_reads_well() {
    let e = err("# comment\ndns:\n  zone: svc.local.\n  tll: 5\n");
    assert_eq!(
        e.to_string(),
        "test.yaml:4:3: dns.tll: unknown key (expected one of: zone, listen, ttl, \
             negative_ttl, max_udp_payload, upstream, allow_recursion_from, reverse_zones, \
             cookie_secret, rrl)"
    );
}

// --- type and value errors ---------------------------------------------

/// Asserts that `yaml` is rejected at `key` on `line`, mentioning `needle`.
fn rejects(yaml: &str, key: &str, line: u64, needle: &str) {
    let e = err(yaml);
    assert_eq!(e.key(), Some(key), "{yaml}\n→ {e}");
    assert_eq!(e.line(), Some(line), "{yaml}\n→ {e}");
    assert!(
        e.to_string().contains(needle),
        "{yaml}\n→ {e}\nmissing {needle:?}"
    );
}

#[test]
fn ttl_errors_name_key_line_and_range() {
    let e = err("dns:\n  zone: svc.local.\n  ttl: abc\n");
    assert_eq!(
        e.to_string(),
        "test.yaml:3:8: dns.ttl: expected an integer number of seconds in 1..=86400, found \"abc\""
    );
    rejects("dns:\n  ttl: 0\n", "dns.ttl", 2, "found 0");
    rejects("dns:\n  ttl: 86401\n", "dns.ttl", 2, "1..=86400");
    rejects("dns:\n  ttl: -1\n", "dns.ttl", 2, "found -1");
    rejects("dns:\n  ttl: 1.5\n", "dns.ttl", 2, "found 1.5");
    rejects("dns:\n  ttl: [1]\n", "dns.ttl", 2, "found a list");
    rejects(
        "dns:\n  negative_ttl: 0\n",
        "dns.negative_ttl",
        2,
        "1..=86400",
    );
    assert_eq!(parse("dns:\n  ttl: 86400\n").unwrap().dns.ttl, 86400);
    assert_eq!(parse("dns:\n  ttl: \"30\"\n").unwrap().dns.ttl, 30);
}

#[test]
fn max_udp_payload_range() {
    rejects(
        "dns:\n  max_udp_payload: 511\n",
        "dns.max_udp_payload",
        2,
        "512..=4096",
    );
    rejects(
        "dns:\n  max_udp_payload: 4097\n",
        "dns.max_udp_payload",
        2,
        "512..=4096",
    );
    assert_eq!(
        parse("dns:\n  max_udp_payload: 512\n")
            .unwrap()
            .dns
            .max_udp_payload,
        512
    );
    assert_eq!(
        parse("dns:\n  max_udp_payload: 4096\n")
            .unwrap()
            .dns
            .max_udp_payload,
        4096
    );
}

#[test]
fn zone_is_validated_lowercased_and_made_absolute() {
    assert_eq!(
        parse("dns:\n  zone: Svc.Internal\n").unwrap().dns.zone,
        "svc.internal."
    );
    assert_eq!(
        parse("dns:\n  zone: a_b.c-d.\n").unwrap().dns.zone,
        "a_b.c-d."
    );
    rejects(
        "dns:\n  zone: \"svc..local\"\n",
        "dns.zone",
        2,
        "empty labels",
    );
    rejects("dns:\n  zone: \".\"\n", "dns.zone", 2, "not the root");
    rejects(
        "dns:\n  zone: \"svc local\"\n",
        "dns.zone",
        2,
        "letters, digits",
    );
    let long_label = "a".repeat(64);
    rejects(
        &format!("dns:\n  zone: {long_label}.local\n"),
        "dns.zone",
        2,
        "63",
    );
    let long_name = vec!["abcdefgh"; 29].join(".");
    assert!(long_name.len() > 253);
    rejects(
        &format!("dns:\n  zone: {long_name}\n"),
        "dns.zone",
        2,
        "253",
    );
    rejects(
        "dns:\n  zone: 5\n",
        "dns.zone",
        2,
        "expected a DNS name, found 5",
    );
}

#[test]
fn endpoints_are_host_port_without_scheme() {
    let config = parse(
        "etcd:\n  endpoints:\n    - etcd-0.etcd:2379\n    - \"[::1]:2379\"\n    - 10.0.0.1:2379\n",
    )
    .unwrap();
    assert_eq!(
        config.etcd.endpoints,
        vec!["etcd-0.etcd:2379", "[::1]:2379", "10.0.0.1:2379"]
    );
    rejects(
        "etcd:\n  endpoints:\n    - 10.0.0.1:2379\n    - etcd-1\n",
        "etcd.endpoints[1]",
        4,
        "the port is missing",
    );
    rejects(
        "etcd:\n  endpoints: [\"http://e:2379\"]\n",
        "etcd.endpoints[0]",
        2,
        "no scheme",
    );
    rejects(
        "etcd:\n  endpoints: [\"::1:2379\"]\n",
        "etcd.endpoints[0]",
        2,
        "brackets",
    );
    rejects(
        "etcd:\n  endpoints: [\"e:0\"]\n",
        "etcd.endpoints[0]",
        2,
        "1..=65535",
    );
    rejects(
        "etcd:\n  endpoints: [\":2379\"]\n",
        "etcd.endpoints[0]",
        2,
        "bad host",
    );
    rejects(
        "etcd:\n  endpoints: []\n",
        "etcd.endpoints",
        2,
        "at least one endpoint",
    );
    rejects(
        "etcd:\n  endpoints: 127.0.0.1:2379\n",
        "etcd.endpoints",
        2,
        "expected a YAML list",
    );
}

#[test]
fn patterns_must_be_non_empty_and_slash_free() {
    rejects(
        "etcd:\n  patterns:\n    - \"\"\n",
        "etcd.patterns[0]",
        3,
        "non-empty",
    );
    rejects(
        "etcd:\n  patterns: []\n",
        "etcd.patterns",
        2,
        "at least one pattern",
    );
    rejects(
        "etcd:\n  patterns: [\"a/*\"]\n",
        "etcd.patterns[0]",
        2,
        "cannot contain `/`",
    );
    let config = parse("etcd:\n  patterns: [\"*.rpc\", \"*.api\"]\n").unwrap();
    assert_eq!(config.etcd.patterns, vec!["*.rpc", "*.api"]);
}

#[test]
fn listen_addresses_are_validated() {
    rejects(
        "dns:\n  listen:\n    - localhost:53\n",
        "dns.listen[0]",
        3,
        "ADDR:PORT",
    );
    rejects(
        "dns:\n  listen:\n    - 127.0.0.1\n",
        "dns.listen[0]",
        3,
        "ADDR:PORT",
    );
    rejects(
        "dns:\n  listen: []\n",
        "dns.listen",
        2,
        "at least one listen address",
    );
    rejects(
        "dns:\n  listen: [\"127.0.0.1:53\", \"127.0.0.1:53\"]\n",
        "dns.listen[1]",
        2,
        "listed twice",
    );
    rejects(
        "http:\n  listen: \"[::1]\"\n",
        "http.listen",
        2,
        "ADDR:PORT",
    );
    let config =
        parse("dns:\n  listen: [\"0.0.0.0:53\", \"[::]:53\"]\nhttp:\n  listen: \"0.0.0.0:0\"\n")
            .unwrap();
    assert_eq!(config.dns.listen.len(), 2);
    assert_eq!(config.http.listen.port(), 0);
}

#[test]
fn upstream_gets_default_port() {
    let config = parse(
            "dns:\n  upstream: [\"10.0.0.2\", \"10.0.0.3:5300\", \"fd00::2\", \"[fd00::3]\", \"[fd00::4]:54\"]\n",
        )
        .unwrap();
    let expect: Vec<SocketAddr> = [
        "10.0.0.2:53",
        "10.0.0.3:5300",
        "[fd00::2]:53",
        "[fd00::3]:53",
        "[fd00::4]:54",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    assert_eq!(config.dns.upstream, expect);
    rejects(
        "dns:\n  upstream: [\"dns.google\"]\n",
        "dns.upstream[0]",
        2,
        "IP address",
    );
    rejects(
        "dns:\n  upstream: [\"10.0.0.2:0\"]\n",
        "dns.upstream[0]",
        2,
        "IP address",
    );
    let config = cli(&["--upstream", "1.1.1.1"]);
    assert_eq!(
        build(None, &config).unwrap().dns.upstream,
        vec!["1.1.1.1:53".parse::<SocketAddr>().unwrap()]
    );
}

#[test]
fn allow_recursion_from_takes_cidrs() {
    let config =
        parse("dns:\n  allow_recursion_from: [\"10.1.2.3/8\", \"192.0.2.1\", \"2001:db8::/32\"]\n")
            .unwrap();
    let nets: Vec<String> = config
        .dns
        .allow_recursion_from
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, vec!["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"]);
    rejects(
        "dns:\n  allow_recursion_from:\n    - 10.0.0.0/8\n    - 10.0.0.0/33\n",
        "dns.allow_recursion_from[1]",
        4,
        "CIDR",
    );
    // An empty list is allowed: nobody may recurse.
    assert!(
        parse("dns:\n  allow_recursion_from: []\n")
            .unwrap()
            .dns
            .allow_recursion_from
            .is_empty()
    );
}

#[test]
fn log_level_and_format_are_validated() {
    rejects(
        "log:\n  level: \"info,=\"\n",
        "log.level",
        2,
        "tracing filter directive",
    );
    rejects(
        "log:\n  level: \"\"\n",
        "log.level",
        2,
        "tracing filter directive",
    );
    rejects(
        "log:\n  format: xml\n",
        "log.format",
        2,
        "expected text or json, found \"xml\"",
    );
    let config = parse("log:\n  level: rpcdns=debug,warn\n  format: json\n").unwrap();
    assert_eq!(config.log.level, "rpcdns=debug,warn");
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn dial_timeout_takes_seconds_or_durations() {
    let timeout =
        |v: &str| parse(&format!("etcd:\n  dial_timeout: {v}\n")).map(|c| c.etcd.dial_timeout);
    assert_eq!(timeout("3").unwrap(), Duration::from_secs(3));
    assert_eq!(timeout("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(timeout("5s").unwrap(), Duration::from_secs(5));
    assert_eq!(timeout("1m").unwrap(), Duration::from_secs(60));
    assert_eq!(timeout("\"2s\"").unwrap(), Duration::from_secs(2));
    for bad in ["0", "50ms", "6m", "1.5", "5x", "s", "-1", "1h"] {
        let e = timeout(bad).unwrap_err();
        assert_eq!(e.key(), Some("etcd.dial_timeout"), "{bad}: {e}");
        assert!(e.to_string().contains("500ms, 5s, 1m"), "{e}");
    }
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_duration(""), None);
    assert_eq!(parse_duration("ms"), None);
}

#[test]
fn tls_and_credentials() {
    let config =
        parse("etcd:\n  username: root\n  password: hunter2\n  tls:\n    ca_file: /etc/ca.pem\n")
            .unwrap();
    assert_eq!(config.etcd.username.as_deref(), Some("root"));
    assert_eq!(config.etcd.password, Some(Secret("hunter2".to_owned())));
    assert_eq!(
        config.etcd.tls.unwrap().ca_file,
        Some(PathBuf::from("/etc/ca.pem"))
    );
    // `tls: {}` turns TLS on with the system roots; no `tls` key leaves it off.
    assert!(parse("etcd:\n  tls: {}\n").unwrap().etcd.tls.is_some());
    rejects(
        "etcd:\n  tls:\n    cert_file: c.pem\n",
        "etcd.tls",
        3,
        "cert_file and key_file go together",
    );
    rejects(
        "etcd:\n  tls:\n    ca_file: \"\"\n",
        "etcd.tls.ca_file",
        3,
        "non-empty",
    );
    rejects(
        "etcd:\n  username: root\n",
        "etcd.username",
        2,
        "etcd.password must be set too",
    );
    rejects(
        "etcd:\n  password: x\n",
        "etcd.password",
        2,
        "etcd.username must be set too",
    );
    rejects("etcd:\n  tls: 5\n", "etcd.tls", 2, "expected a mapping");
}

#[test]
fn shape_errors_carry_the_line() {
    rejects(
        "dns:\n  zone: a.\netcd: 5\n",
        "etcd",
        3,
        "expected a mapping",
    );
    rejects("dns: [1]\n", "dns", 1, "expected a mapping");
    rejects(
        "log:\n  # comment\n\n  level: info\nhttp: x\n",
        "http",
        5,
        "expected a mapping",
    );
    rejects("dns:\n  ttl: 5\n  ttl: 6\n", "dns.ttl", 3, "duplicate");
    let e = err("dns:\n  zone: [\n");
    assert!(e.line().is_some(), "{e}");
    assert!(e.to_string().starts_with("test.yaml:"), "{e}");
    let e = err("just text\n");
    assert!(e.to_string().contains("test.yaml:1:1: "), "{e}");
    assert!(e.to_string().contains("expected a mapping"), "{e}");
}

// --- secrets -----------------------------------------------------------

#[test]
fn password_never_in_debug_or_errors() {
    const PW: &str = "s3cr3t-pa55";
    let config = parse(&format!("etcd:\n  username: root\n  password: {PW}\n")).unwrap();
    assert!(!format!("{config:?}").contains(PW));
    assert!(!config.to_redacted_yaml().contains(PW));
    // Errors around the password: wrong type, missing username, a later
    // error in the same file, a syntax error on its line.
    for text in [
        "etcd:\n  username: root\n  password: 123456\n".to_owned(),
        format!("etcd:\n  password: {PW}\n"),
        format!("etcd:\n  username: root\n  password: {PW}\n  bogus: 1\n"),
        format!("etcd:\n  username: root\n  password: {PW}\n  password: {PW}\n"),
        format!("etcd:\n  username: root\n  password: [{PW}\n"),
        format!("etcd:\n  username: root\n  password: \"{PW}\n"),
    ] {
        let e = err(&text);
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(PW), "{shown}");
        assert!(!shown.contains("123456"), "{shown}");
    }
    rejects(
        "etcd:\n  username: root\n  password: 123456\n",
        "etcd.password",
        3,
        "quote the password",
    );
}

// --- command line ------------------------------------------------------

#[test]
fn flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
            &path,
            "etcd:\n  endpoints: [\"a:1\", \"b:2\"]\n  patterns: [\"*.rpc\"]\ndns:\n  zone: file.\n  ttl: 7\n  negative_ttl: 9\n  listen: [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n  upstream: [\"10.0.0.1\"]\nhttp:\n  listen: 127.0.0.1:3\nlog:\n  level: debug\n  format: json\n",
        )
        .unwrap();
    let path = path.to_str().unwrap();

    let from_file = load(&cli(&["--config", path])).unwrap();
    assert_eq!(from_file.dns.ttl, 7);
    assert_eq!(from_file.etcd.endpoints, vec!["a:1", "b:2"]);

    let config = load(&cli(&[
        "--config",
        path,
        "--etcd",
        "x:1,y:2",
        "--etcd",
        "z:3",
        "--zone",
        "Flag",
        "--ttl",
        "11",
        "--dns-listen",
        "127.0.0.1:9",
        "--http-listen",
        "127.0.0.1:8",
        "--pattern",
        "*.api",
        "--pattern",
        "*.svc",
        "--upstream",
        "10.9.9.9:5353",
        "--log-level",
        "warn",
        "--log-format",
        "text",
    ]))
    .unwrap();
    // Lists are replaced, never merged.
    assert_eq!(config.etcd.endpoints, vec!["x:1", "y:2", "z:3"]);
    assert_eq!(config.etcd.patterns, vec!["*.api", "*.svc"]);
    assert_eq!(config.dns.listen, vec!["127.0.0.1:9".parse().unwrap()]);
    assert_eq!(config.dns.upstream, vec!["10.9.9.9:5353".parse().unwrap()]);
    assert_eq!(config.dns.zone, "flag.");
    assert_eq!(config.dns.ttl, 11);
    // No flag for negative_ttl: the file's value stays.
    assert_eq!(config.dns.negative_ttl, 9);
    assert_eq!(config.http.listen, "127.0.0.1:8".parse().unwrap());
    assert_eq!(config.log.level, "warn");
    assert_eq!(config.log.format, LogFormat::Text);
}

#[test]
fn flags_without_file_replace_defaults() {
    let config = build(
        None,
        &cli(&[
            "--pattern",
            "*.api",
            "--dns-listen",
            "127.0.0.1:0",
            "--dns-listen",
            "[::1]:0",
        ]),
    )
    .unwrap();
    assert_eq!(config.etcd.patterns, vec!["*.api"]);
    assert_eq!(config.dns.listen.len(), 2);
    assert_eq!(config.etcd.endpoints, vec![DEFAULT_ETCD]);
}

#[test]
fn flag_errors_name_the_flag() {
    let e = build(None, &cli(&["--ttl", "abc"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--ttl: expected an integer number of seconds in 1..=86400, found \"abc\""
    );
    let cases: &[(&[&str], &str)] = &[
        (&["--etcd", "http://x:1"], "--etcd"),
        (&["--zone", "a..b"], "--zone"),
        (&["--dns-listen", "nope"], "--dns-listen"),
        (&["--http-listen", "nope"], "--http-listen"),
        (&["--pattern", ""], "--pattern"),
        (&["--upstream", "nope"], "--upstream"),
        (&["--log-level", "info,="], "--log-level"),
        (&["--log-format", "xml"], "--log-format"),
    ];
    for (args, flag) in cases {
        let e = build(None, &cli(args)).unwrap_err();
        assert_eq!(e.flag(), Some(*flag), "{e}");
        assert!(
            e.to_string().starts_with(&format!("{flag}: expected")),
            "{e}"
        );
    }
    // A flag beats a bad file value: the file's value is never looked at.
    let config = build(Some(("dns:\n  ttl: 5\n", FILE)), &cli(&["--ttl", "6"])).unwrap();
    assert_eq!(config.dns.ttl, 6);
}

#[test]
fn check_config_subcommand_takes_a_file() {
    let cli = cli(&["check-config", "some.yaml"]);
    assert!(
        matches!(&cli.command, Some(Command::CheckConfig { file }) if file == Path::new("some.yaml"))
    );
    assert!(Cli::try_parse_from(["rpcdns", "--ttl", "5", "check-config", "x"]).is_err());
    let e = load(&cli).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert_eq!(e.to_string(), "failed to read config file some.yaml");
}

#[test]
fn grpc_service_configs_are_json_strings_or_off() {
    let config = parse(
            "grpc:\n  service_config: |\n    {\"loadBalancingConfig\": [\n      {\"round_robin\": {}}]}\n  overrides:\n    - pattern: \"legacy.*\"\n      service_config: off\n    - pattern: pay.rpc\n      service_config: '{\"loadBalancingPolicy\": \"pick_first\"}'\n",
        )
        .unwrap();
    assert_eq!(
        config.grpc.service_config.as_ref().map(ServiceConfig::json),
        Some(DEFAULT_SERVICE_CONFIG),
        "a block scalar, made compact"
    );
    assert_eq!(config.grpc.overrides.len(), 2);
    assert_eq!(config.grpc.overrides[0].pattern, "legacy.*");
    assert_eq!(config.grpc.overrides[0].service_config, None);
    assert_eq!(
        config.grpc.overrides[1]
            .service_config
            .as_ref()
            .map(ServiceConfig::json),
        Some(r#"{"loadBalancingPolicy":"pick_first"}"#)
    );
    let off = parse("grpc:\n  service_config: off\n  overrides: []\n").unwrap();
    assert_eq!(off.grpc.service_config, None);
    assert!(off.grpc.overrides.is_empty());
}

#[test]
fn bad_grpc_service_configs_name_key_and_line() {
    rejects(
        "dns:\n  ttl: 5\ngrpc:\n  service_config: '{\"loadBalancingConfig\": [{\"rr\": {}}]}'\n",
        "grpc.service_config",
        4,
        "invalid gRPC service config: loadBalancingConfig: none of [\"rr\"]",
    );
    rejects(
        "grpc:\n  service_config: '{\"loadBalancingConfig\": '\n",
        "grpc.service_config",
        2,
        "not valid JSON",
    );
    rejects(
        "grpc:\n  service_config: {\"loadBalancingConfig\": [{\"round_robin\": {}}]}\n",
        "grpc.service_config",
        2,
        "quote it",
    );
    rejects(
        "grpc:\n  service_config: 5\n",
        "grpc.service_config",
        2,
        "expected a JSON service config in a string, or off, found 5",
    );
    rejects(
        "grpc:\n  overrides:\n    - pattern: a.rpc\n      service_config: off\n    - pattern: b/rpc\n      service_config: off\n",
        "grpc.overrides[1].pattern",
        5,
        "cannot contain `/`",
    );
    rejects(
        "grpc:\n  overrides:\n    - pattern: a.rpc\n",
        "grpc.overrides[0].service_config",
        3,
        "required in every override",
    );
    rejects(
        "grpc:\n  overrides:\n    - pattern: a.rpc\n      service_config: '[]'\n",
        "grpc.overrides[0].service_config",
        4,
        "expected a JSON object, found a list",
    );
    let e = err("grpc:\n  overrides:\n    - pattern: a.rpc\n      servce_config: off\n");
    assert_eq!(e.line(), Some(4), "{e}");
    assert!(e.to_string().contains("servce_config"), "{e}");
    assert!(e.to_string().contains("unknown key"), "{e}");
}

#[test]
fn missing_file_is_a_read_error() {
    let e = load(&cli(&["--config", "/nonexistent/rpcdns.yaml"])).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/rpcdns.yaml"), "{e}");
    assert!(std::error::Error::source(&e).is_some());
}

// --- check-config output -----------------------------------------------

#[test]
fn redacted_yaml_round_trips_and_hides_the_password() {
    let text = "etcd:\n  endpoints: [\"a:1\"]\n  prefix: \"pre\\\"fix\"\n  username: root\n  password: hunter2\n  tls:\n    ca_file: ca.pem\n    cert_file: c.pem\n    key_file: k.pem\n  dial_timeout: 1500ms\ndns:\n  zone: x.\n  upstream: [\"10.0.0.1\"]\n  allow_recursion_from: []\nlog:\n  format: json\ngrpc:\n  service_config: off\n  overrides:\n    - pattern: \"pay.*\"\n      service_config: '{\"loadBalancingPolicy\": \"round_robin\"}'\n    - pattern: x.rpc\n      service_config: off\n";
    let config = parse(text).unwrap();
    let yaml = config.to_redacted_yaml();
    assert!(!yaml.contains("hunter2"), "{yaml}");
    assert!(yaml.contains("password: \"<redacted>\""), "{yaml}");
    assert!(yaml.contains("username: \"root\""), "{yaml}");
    assert!(yaml.contains("dial_timeout: 1500ms"), "{yaml}");
    let mut back = parse(&yaml).unwrap();
    assert_eq!(back.etcd.password, Some(Secret(REDACTED.to_owned())));
    back.etcd.password = config.etcd.password.clone();
    assert_eq!(back, config);
    // Defaults print every key, and come back unchanged.
    let defaults = Config::default().to_redacted_yaml();
    for key in ETCD_KEYS
        .iter()
        .chain(DNS_KEYS)
        .chain(LOG_KEYS)
        .chain(GRPC_KEYS)
    {
        assert!(
            defaults.contains(&format!("  {key}:")),
            "{key} missing:\n{defaults}"
        );
    }
    assert!(defaults.contains("password: null"));
    assert_eq!(parse(&defaults).unwrap(), Config::default());
}

#[test]
fn cookie_secret_is_32_hex_digits_and_never_shown() {
    let config = parse("dns:\n  cookie_secret: \"00112233445566778899AABBCCDDEEFF\"\n").unwrap();
    let key = config.dns.cookie_secret.clone().expect("a secret");
    assert_eq!(key.0[..3], [0x00, 0x11, 0x22]);
    assert_eq!(key.0[15], 0xff);
    assert!(!format!("{config:?}").contains("AABB"));
    assert!(!format!("{config:?}").to_lowercase().contains("aabb"));
    let yaml = config.to_redacted_yaml();
    assert!(!yaml.to_lowercase().contains("aabb"), "{yaml}");
    assert!(
        yaml.contains("cookie_secret: null  # set, not shown"),
        "{yaml}"
    );
    assert_eq!(Config::default().dns.cookie_secret, None);
    for bad in [
        "\"0011\"",
        "\"00112233445566778899aabbccddeeZZ\"",
        "12345",
        "\"00112233445566778899aabbccddeeff00\"",
    ] {
        let e = err(&format!("dns:\n  cookie_secret: {bad}\n"));
        assert_eq!(e.key(), Some("dns.cookie_secret"), "{e}");
        assert_eq!(e.line(), Some(2), "{e}");
        assert!(e.to_string().contains("32 hexadecimal digits"), "{e}");
        assert!(!e.to_string().contains("0011"), "the value is shown: {e}");
    }
}

#[test]
fn rrl_settings_and_their_ranges() {
    let rrl = Config::default().dns.rrl;
    assert_eq!(rrl.responses_per_second, 0, "off by default");
    assert_eq!(
        (rrl.slip, rrl.ipv4_prefix_length, rrl.ipv6_prefix_length),
        (2, 24, 56)
    );
    assert_eq!(
        rrl.exempt,
        vec![
            "127.0.0.0/8".parse::<IpNet>().unwrap(),
            "::1/128".parse().unwrap()
        ]
    );
    let rrl = parse("dns:\n  rrl:\n    responses_per_second: 50\n    slip: 0\n    ipv4_prefix_length: 32\n    ipv6_prefix_length: 64\n    exempt: [\"10.0.0.0/8\"]\n")
        .unwrap()
        .dns
        .rrl;
    assert_eq!((rrl.responses_per_second, rrl.slip), (50, 0));
    assert_eq!((rrl.ipv4_prefix_length, rrl.ipv6_prefix_length), (32, 64));
    assert_eq!(rrl.exempt, vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]);
    for (text, key, line) in [
        ("dns:\n  rrl:\n    slip: 11\n", "dns.rrl.slip", 3),
        (
            "dns:\n  rrl:\n    responses_per_second: -1\n",
            "dns.rrl.responses_per_second",
            3,
        ),
        (
            "dns:\n  rrl:\n\n    ipv4_prefix_length: 33\n",
            "dns.rrl.ipv4_prefix_length",
            4,
        ),
        (
            "dns:\n  rrl:\n    ipv6_prefix_length: 129\n",
            "dns.rrl.ipv6_prefix_length",
            3,
        ),
        (
            "dns:\n  rrl:\n    exempt: [\"10.0.0.0/33\"]\n",
            "dns.rrl.exempt[0]",
            3,
        ),
        ("dns:\n  rrl: 5\n", "dns.rrl", 2),
    ] {
        let e = err(text);
        assert_eq!((e.key(), e.line()), (Some(key), Some(line)), "{e}");
    }
}

#[test]
fn reverse_zones_are_cidrs_on_label_boundaries() {
    let config =
        parse("dns:\n  reverse_zones: [\"10.1.2.3/8\", \"fd00::/8\", \"192.168.1.0/24\"]\n")
            .unwrap();
    let nets: Vec<String> = config
        .dns
        .reverse_zones
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "fd00::/8", "192.168.1.0/24"]);
    assert!(Config::default().dns.reverse_zones.is_empty());
    rejects(
        "dns:\n  reverse_zones:\n    - 10.0.0.0/8\n    - 10.0.0.0/12\n",
        "dns.reverse_zones[1]",
        4,
        "multiple of 8",
    );
    rejects(
        "dns:\n  reverse_zones: [\"fd00::/7\"]\n",
        "dns.reverse_zones[0]",
        2,
        "multiple of 4",
    );
    rejects(
        "dns:\n  reverse_zones: [\"10.0.0.1\"]\n",
        "dns.reverse_zones[0]",
        2,
        "expected a CIDR",
    );
}

#[test]
fn sources_default_to_go_zero_from_the_etcd_section() {
    let config = parse("etcd:\n  prefix: \"sms.\"\n  patterns: [\"sms.*\"]\n").unwrap();
    assert_eq!(
        config.sources,
        vec![SourceConfig {
            format: Format::GoZero,
            prefix: "sms.".to_owned(),
            patterns: vec!["sms.*".to_owned()],
            suffix: String::new(),
        }]
    );
    // A go-zero entry takes what it does not set from there too.
    let config = parse(
        "etcd:\n  patterns: [\"*.api\"]\nsources:\n  - format: gozero\n    prefix: \"a\"\n  - format: GoMicro\n    suffix: Micro.\n",
    )
    .unwrap();
    assert_eq!(config.sources[0].patterns, vec!["*.api".to_owned()]);
    assert_eq!(config.sources[0].prefix, "a");
    assert_eq!(
        config.sources[1],
        SourceConfig {
            format: Format::GoMicro,
            prefix: "/micro/registry/".to_owned(),
            patterns: Vec::new(),
            suffix: "micro".to_owned(),
        }
    );
    // check-config prints them, and they read back the same.
    let yaml = config.to_redacted_yaml();
    assert!(
        yaml.contains("  - format: gomicro\n    prefix: \"/micro/registry/\"\n"),
        "{yaml}"
    );
    assert_eq!(parse(&yaml).unwrap().sources, config.sources);
}

#[test]
fn a_skydns_source_reads_coredns_paths() {
    for (text, prefix) in [
        ("sources:\n  - format: skydns\n", "/skydns/"),
        ("sources:\n  - format: skydns\n    prefix: /dns\n", "/dns/"),
    ] {
        let config = parse(text).unwrap();
        assert_eq!(config.sources[0].format, Format::SkyDns);
        assert_eq!(config.sources[0].prefix, prefix);
    }
}

#[test]
fn bad_sources_name_the_key_and_line() {
    for (text, key, line, says) in [
        ("sources: []\n", "sources", 1, "at least one source"),
        (
            "sources:\n  - prefix: x\n",
            "sources[0].format",
            2,
            "required",
        ),
        (
            "sources:\n  - format: consul\n",
            "sources[0].format",
            2,
            "gozero, kratos, gomicro or skydns",
        ),
        (
            "sources:\n  - format: gomicro\n    patterns: [\"*\"]\n",
            "sources[0].patterns",
            3,
            "go-zero",
        ),
        (
            "sources:\n  - format: gomicro\n  - format: gomicro\n",
            "sources[1]",
            3,
            "sources[0]",
        ),
        (
            "sources:\n  - format: gomicro\n    suffix: \"a b\"\n",
            "sources[0].suffix",
            3,
            "DNS labels",
        ),
        (
            "sources:\n  - format: skydns\n    suffix: x\n",
            "sources[0].suffix",
            3,
            "no suffix",
        ),
        (
            "sources:\n  - format: skydns\n  - format: skydns\n    prefix: /other\n",
            "sources[1]",
            3,
            "one SkyDNS tree",
        ),
        (
            "sources:\n  - format: gomicro\n    sufix: x\n",
            "sources[].sufix",
            3,
            "unknown key",
        ),
    ] {
        let e = err(text);
        assert_eq!((e.key(), e.line()), (Some(key), Some(line)), "{text}: {e}");
        assert!(e.to_string().contains(says), "{text}: {e}");
    }
}

#[test]
fn the_overlay_is_off_unless_it_has_a_prefix() {
    assert_eq!(Config::default().overlay, None);
    let config = parse("overlay:\n  prefix: /rpcdns/overlay/\n").unwrap();
    assert_eq!(config.overlay.as_deref(), Some("/rpcdns/overlay/"));
    assert_eq!(
        parse(&config.to_redacted_yaml()).unwrap().overlay,
        config.overlay
    );
    let e = err("overlay:\n  prefix: \"\"\n");
    assert_eq!(
        (e.key(), e.line()),
        (Some("overlay.prefix"), Some(2)),
        "{e}"
    );
    let e = err("overlay:\n  prefx: x\n");
    assert_eq!(e.key(), Some("overlay.prefx"), "{e}");
}
