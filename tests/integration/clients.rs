//! Real DNS clients against the real rpcdns fed by a real etcd: `dig` and
//! `kdig`, Go's own resolver, Node's `dns` module (c-ares), Java's JNDI DNS
//! provider, dnspython, and glibc through `/etc/resolv.conf` (`getent`,
//! `curl`, Python's `getaddrinfo`). Each client is a small program under
//! tests/clients/ that prints what it resolved, one `QUERY<TAB>VALUE` line
//! each; the test parses that and compares it with the exact answers the
//! go-zero style registrations call for, including a service too large for
//! UDP, which every client must fetch again over TCP.
//!
//! The clients come from scripts/install-deps.sh (Debian's knot-dnsutils,
//! golang-go, nodejs, default-jdk-headless, util-linux; dnspython in the
//! venv target/tools/venv). When one is missing the test fails under CI
//! (`CI` set) and, on a developer machine, skips saying why.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::harness::*;
use crate::programs::*;

// ----------------------------------------------------------------------------
// Constants
// ----------------------------------------------------------------------------

/// How long one client program may run (a JVM start and a cold Go build
/// on two loaded cores included).
const CLIENT_RUN: Duration = Duration::from_secs(120);

/// Instances of the large service: their A RRset (16 octets a record) and
/// SRV RRset are well over 1232 octets, so UDP truncates and clients must
/// retry over TCP, and well under 65,535, so TCP carries everything.
const BIG_INSTANCES: usize = 300;

/// Lease TTL of the test registrations; keep-alives run every third of it.
const LEASE_TTL: i64 = 30;

/// The small service and the large one, as go-zero's `Etcd.Key`.
const SMS: &str = "sms.rpc";
const BIG: &str = "big.rpc";

// ----------------------------------------------------------------------------
// Programs
// ----------------------------------------------------------------------------

/// Builds tests/clients/go once per test run (Go's own cache makes later
/// runs cheap): Debian's golang-go, standard library only, no network,
/// every cache under target/clients/go. The binary's path, or None when Go
/// is missing.
fn go_resolver() -> Option<PathBuf> {
    static BUILT: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    let go = tool("go")?;
    let mut built = BUILT
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(bin) = built.as_ref() {
        return Some(bin.clone());
    }
    let dir = build_dir().join("go");
    let bin = dir.join("resolve");
    let ran = run(
        Command::new(go)
            .args(["build", "-trimpath", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(clients_dir().join("go"))
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("path"))
            .env("GOMODCACHE", dir.join("path/pkg/mod"))
            .env("GOENV", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "")
            .env("GO111MODULE", "on")
            .env("GOTELEMETRY", "off")
            // The pure-Go resolver is what is under test, and a fresh
            // Debian's golang-go has no C compiler to go with cgo.
            .env("CGO_ENABLED", "0"),
        CLIENT_RUN,
    );
    ran.expect_success("go build of tests/clients/go");
    *built = Some(bin.clone());
    Some(bin)
}

/// Compiles tests/clients/java/Resolve.java into target/clients/java when
/// the class is missing or older than the source. The class directory and
/// the `java` launcher, or None when the JDK is missing.
fn java_resolver() -> Option<(PathBuf, PathBuf)> {
    static BUILT: OnceLock<Mutex<()>> = OnceLock::new();
    let java = tool("java")?;
    let javac = tool("javac")?;
    let _once = BUILT
        .get_or_init(|| Mutex::new(()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let source = clients_dir().join("java/Resolve.java");
    let classes = build_dir().join("java");
    if stale(
        &classes.join("Resolve.class"),
        std::slice::from_ref(&source),
    ) {
        run(
            Command::new(javac)
                .arg("-d")
                .arg(&classes)
                .arg(&source)
                .env_remove("JAVA_TOOL_OPTIONS"),
            CLIENT_RUN,
        )
        .expect_success("javac tests/clients/java/Resolve.java");
    }
    Some((java, classes))
}

// ----------------------------------------------------------------------------
// What the client programs print
// ----------------------------------------------------------------------------

/// One query's result as a client program printed it.
#[derive(Debug, Default)]
struct Resolved {
    /// Records or addresses, in the order printed.
    values: Vec<String>,
    /// The error the lookup ended with (`!ERROR ...`).
    error: Option<String>,
    /// Lines starting with `#` (`#done`, `#dials udp=1 tcp=0`).
    notes: Vec<String>,
}

/// Parses `QUERY<TAB>VALUE` lines into a map by query.
fn parse_client_output(stdout: &str) -> BTreeMap<String, Resolved> {
    let mut out: BTreeMap<String, Resolved> = BTreeMap::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let Some((query, value)) = line.split_once('\t') else {
            panic!("client printed a line without a tab: {line:?}\nall output:\n{stdout}");
        };
        let entry = out.entry(query.to_string()).or_default();
        if let Some(error) = value.strip_prefix("!ERROR ") {
            entry.error = Some(error.to_string());
        } else if let Some(note) = value.strip_prefix('#') {
            entry.notes.push(note.to_string());
        } else {
            entry.values.push(value.to_string());
        }
    }
    out
}

/// An SRV record in one spelling for every client: `0 10 8001 target`,
/// target lower-cased and without the final dot.
fn srv_text(value: &str) -> String {
    value.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The result of `query`, which must have succeeded.
#[track_caller]
fn ok_result<'a>(
    results: &'a BTreeMap<String, Resolved>,
    client: &str,
    query: &str,
) -> &'a Resolved {
    let got = results.get(query).unwrap_or_else(|| {
        panic!(
            "{client}: printed nothing for {query}; got {:?}",
            results.keys()
        )
    });
    assert!(
        got.error.is_none(),
        "{client} {query}: failed with {:?} (values so far {:?})",
        got.error,
        got.values
    );
    got
}

/// Asserts that `query` gave exactly the SRV records `want` (as a multiset).
#[track_caller]
fn assert_srv(results: &BTreeMap<String, Resolved>, client: &str, query: &str, want: &[String]) {
    let got = ok_result(results, client, query);
    let mut got: Vec<String> = got.values.iter().map(|v| srv_text(v)).collect();
    got.sort();
    let mut want: Vec<String> = want.to_vec();
    want.sort();
    assert!(
        got == want,
        "{client} {query}: SRV records differ\n got  {} {got:?}\n want {} {want:?}",
        got.len(),
        want.len()
    );
}

/// Asserts that `query` gave exactly the addresses `want`, each once.
#[track_caller]
fn assert_addrs(
    results: &BTreeMap<String, Resolved>,
    client: &str,
    query: &str,
    want: &BTreeSet<IpAddr>,
) {
    let got = ok_result(results, client, query);
    let parsed: Vec<IpAddr> = got
        .values
        .iter()
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{client} {query}: {v:?} is not an address: {e}"))
        })
        .collect();
    let set: BTreeSet<IpAddr> = parsed.iter().copied().collect();
    assert!(
        set == *want && parsed.len() == want.len(),
        "{client} {query}: addresses differ\n got  {} {parsed:?}\n want {} {want:?}",
        parsed.len(),
        want.len()
    );
}

/// Asserts that `query` failed with an error containing `needle`.
#[track_caller]
fn assert_error(results: &BTreeMap<String, Resolved>, client: &str, query: &str, needle: &str) {
    let got = results.get(query).unwrap_or_else(|| {
        panic!(
            "{client}: printed nothing for {query}; got {:?}",
            results.keys()
        )
    });
    let error = got.error.as_deref().unwrap_or("");
    assert!(
        error.contains(needle),
        "{client} {query}: want an error with {needle:?}, got error {:?} and values {:?}",
        got.error,
        got.values
    );
}

/// Asserts that `query` succeeded with no records (NODATA, for a client
/// that reports it so).
#[track_caller]
fn assert_empty(results: &BTreeMap<String, Resolved>, client: &str, query: &str) {
    let got = ok_result(results, client, query);
    assert!(
        got.values.is_empty(),
        "{client} {query}: want no records, got {:?}",
        got.values
    );
    assert!(
        !got.notes.is_empty(),
        "{client} {query}: the program never finished this query: {got:?}"
    );
}

// ----------------------------------------------------------------------------
// The registrations every client resolves
// ----------------------------------------------------------------------------

/// An instance as DNS shows it: its name, address and port.
#[derive(Debug, Clone)]
struct Instance {
    /// `<lease id>.<service>.svc.local`, no final dot.
    name: String,
    addr: IpAddr,
    port: u16,
}

impl Instance {
    fn srv(&self) -> String {
        format!("0 10 {} {}", self.port, self.name)
    }
}

/// A real etcd and rpcdns with go-zero registrations: `sms.rpc` (two
/// instances on one address, as after a restart, one more IPv4 and one IPv6)
/// and, when asked, `big.rpc` with BIG_INSTANCES instances on distinct
/// addresses.
struct Fixture {
    env: TestEnv,
    sms: Vec<Instance>,
    big: Vec<Instance>,
    _registrations: Vec<Registered>,
}

fn fqdn(service: &str) -> String {
    format!("{service}.{}", ZONE.trim_end_matches('.'))
}

/// The address of the large service's `i`th instance: 10.1.0.1 onwards.
fn big_addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

impl Fixture {
    async fn start(with_big: bool) -> Fixture {
        let env = TestEnv::start(&[]).await;
        Self::register_all(env, with_big).await
    }

    /// Registers everything in `env`'s etcd and waits until rpcdns serves it.
    async fn register_all(env: TestEnv, with_big: bool) -> Fixture {
        let small = [
            "10.0.0.5:8001",
            "10.0.0.5:8001",
            "10.0.0.6:8002",
            "[fd00::5]:8003",
        ];
        let mut jobs = tokio::task::JoinSet::new();
        let mut wanted: Vec<(&'static str, usize, String)> = small
            .iter()
            .enumerate()
            .map(|(i, v)| (SMS, i, v.to_string()))
            .collect();
        if with_big {
            wanted.extend(
                (0..BIG_INSTANCES).map(|i| (BIG, i, format!("{}:{}", big_addr(i), 9000 + i))),
            );
        }
        for (service, i, value) in wanted {
            let client = env.client.clone();
            jobs.spawn(async move {
                let r = register(&client, service, &value, LEASE_TTL).await;
                (service, i, value, r)
            });
        }
        let mut sms = vec![None; small.len()];
        let mut big = vec![None; if with_big { BIG_INSTANCES } else { 0 }];
        let mut registrations = Vec::new();
        while let Some(done) = jobs.join_next().await {
            let (service, i, value, r) = done.expect("registration task");
            let (host, port) = value.rsplit_once(':').expect("test value has a port");
            let instance = Instance {
                name: r.instance_name().trim_end_matches('.').to_string(),
                addr: host
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse()
                    .expect("test address"),
                port: port.parse().expect("test port"),
            };
            match service {
                SMS => sms[i] = Some(instance),
                _ => big[i] = Some(instance),
            }
            registrations.push(r);
        }
        let fixture = Fixture {
            env,
            sms: sms.into_iter().map(|i| i.expect("registered")).collect(),
            big: big.into_iter().map(|i| i.expect("registered")).collect(),
            _registrations: registrations,
        };
        fixture.wait_served();
        fixture
    }

    /// Waits until rpcdns answers every registration (SRV over TCP).
    fn wait_served(&self) {
        for (service, instances) in [(SMS, &self.sms), (BIG, &self.big)] {
            if instances.is_empty() {
                continue;
            }
            let want: BTreeSet<String> = instances.iter().map(Instance::srv).collect();
            let name = format!("{}.", fqdn(service));
            eventually(PROPAGATION, || {
                let msg = try_query_tcp(self.env.dns(), &name, RecordType::SRV, None)?;
                let got: BTreeSet<String> = srv_of(&msg.answers)
                    .iter()
                    .map(|s| {
                        srv_text(&format!(
                            "{} {} {} {}",
                            s.priority, s.weight, s.port, s.target
                        ))
                    })
                    .collect();
                if got == want {
                    Ok(())
                } else {
                    Err(format!(
                        "{name} SRV: {} of {} records",
                        got.len(),
                        want.len()
                    ))
                }
            });
        }
    }

    fn dns(&self) -> SocketAddr {
        self.env.dns()
    }

    fn srv(instances: &[Instance]) -> Vec<String> {
        instances.iter().map(Instance::srv).collect()
    }

    fn addrs(instances: &[Instance], v4: Option<bool>) -> BTreeSet<IpAddr> {
        instances
            .iter()
            .map(|i| i.addr)
            .filter(|a| v4.is_none_or(|v4| a.is_ipv4() == v4))
            .collect()
    }

    /// The instance registered with an IPv4 address first, and the IPv6 one.
    fn sms_v4(&self) -> &Instance {
        &self.sms[0]
    }

    fn sms_v6(&self) -> &Instance {
        &self.sms[3]
    }

    /// DNS responses rpcdns has sent over TCP so far (its own metric).
    fn tcp_responses(&self) -> u64 {
        let (code, body) = http_get(self.env.rpcdns.http_addr, "/metrics").expect("GET /metrics");
        assert_eq!(code, 200, "/metrics: {body}");
        body.lines()
            .filter(|l| {
                l.starts_with("rpcdns_dns_queries_total{") && l.contains("transport=\"tcp\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

/// Runs a client and returns its parsed output; asserts that the number of
/// TCP responses rpcdns sent while it ran is within `tcp`.
#[track_caller]
fn run_client(
    fixture: &Fixture,
    client: &str,
    cmd: &mut Command,
    tcp: std::ops::RangeInclusive<u64>,
) -> BTreeMap<String, Resolved> {
    let before = fixture.tcp_responses();
    let started = Instant::now();
    let ran = run(cmd, CLIENT_RUN);
    ran.expect_success(client);
    let tcp_used = fixture.tcp_responses() - before;
    eprintln!(
        "{client}: ran in {:?}, {tcp_used} TCP responses",
        started.elapsed()
    );
    assert!(
        tcp.contains(&tcp_used),
        "{client}: rpcdns sent {tcp_used} responses over TCP while it ran, want {tcp:?}\n{}",
        ran.all()
    );
    parse_client_output(&ran.stdout)
}

// ----------------------------------------------------------------------------
// dig and kdig
// ----------------------------------------------------------------------------

/// One response as dig or kdig printed it (the last one, after a retry).
#[derive(Debug)]
struct Printed {
    status: String,
    flags: BTreeSet<String>,
    edns: bool,
    transport: String,
    /// (owner, type, rdata), owner lower-cased without the final dot.
    answers: Vec<(String, String, String)>,
    additional: Vec<(String, String, String)>,
    /// The tool said it retried over TCP after a truncated answer.
    retried_over_tcp: bool,
}

/// Parses dig's or kdig's default output.
fn parse_dig(text: &str) -> Result<Printed, String> {
    let retried_over_tcp = text.contains(";; Truncated, retrying in TCP mode")
        || text.contains("truncated reply") && text.contains("retrying over TCP");
    // The response is the last header block (dig and kdig print the
    // retried TCP response only, but be safe).
    let start = text
        .rfind("->>HEADER<<-")
        .ok_or_else(|| format!("no response header in:\n{text}"))?;
    let body = &text[start..];
    let status = body
        .split("status: ")
        .nth(1)
        .map(|s| {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect()
        })
        .ok_or_else(|| format!("no status in:\n{body}"))?;
    let flags = body
        .lines()
        .find_map(|l| {
            let l = l.trim_start_matches(';').trim_start();
            l.strip_prefix("flags:")
                .or_else(|| l.strip_prefix("Flags:"))
        })
        .map(|f| {
            f.split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .ok_or_else(|| format!("no flags in:\n{body}"))?;
    let edns = body.contains("; EDNS: version") || body.contains(";; EDNS PSEUDOSECTION");
    let transport = ["(TCP)", "(UDP)"]
        .iter()
        .find(|t| {
            body.lines().any(|l| {
                (l.starts_with(";; SERVER:") || l.starts_with(";; From ")) && l.contains(*t)
            })
        })
        .map(|t| t.trim_matches(|c| c == '(' || c == ')').to_string())
        .ok_or_else(|| format!("no server line with the transport in:\n{body}"))?;
    let section = |title: &str| -> Vec<(String, String, String)> {
        let Some(at) = body.find(title) else {
            return Vec::new();
        };
        body[at + title.len()..]
            .lines()
            .skip(1)
            .take_while(|l| !l.trim().is_empty() && !l.starts_with(";;"))
            .filter_map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                // owner TTL class type rdata...
                (fields.len() >= 5).then(|| {
                    (
                        fields[0].trim_end_matches('.').to_ascii_lowercase(),
                        fields[3].to_string(),
                        fields[4..].join(" "),
                    )
                })
            })
            .collect()
    };
    Ok(Printed {
        status,
        flags,
        edns,
        transport,
        answers: section(";; ANSWER SECTION:"),
        additional: section(";; ADDITIONAL SECTION:"),
        retried_over_tcp,
    })
}

/// The two tools and how each says "EDNS on/off" and "TCP".
#[derive(Clone, Copy)]
enum Dig {
    Dig,
    Kdig,
}

impl Dig {
    fn name(self) -> &'static str {
        match self {
            Dig::Dig => "dig",
            Dig::Kdig => "kdig",
        }
    }

    /// Runs one query; `extra` are options such as `+tcp`.
    #[track_caller]
    fn query(
        self,
        bin: &Path,
        dns: SocketAddr,
        name: &str,
        rtype: &str,
        edns: bool,
        extra: &[&str],
    ) -> Printed {
        let mut cmd = Command::new(bin);
        cmd.arg(format!("@{}", dns.ip()))
            .args(["-p", &dns.port().to_string()])
            .arg(if edns { "+edns=0" } else { "+noedns" });
        match self {
            Dig::Dig => cmd.args(["+time=2", "+tries=3"]),
            Dig::Kdig => cmd.args(["+time=2", "+retry=2"]),
        };
        cmd.args(extra).args([name, rtype]).env_remove("HOME");
        let what = format!("{} {name} {rtype} edns={edns} {extra:?}", self.name());
        let ran = run(&mut cmd, CLIENT_RUN);
        ran.expect_success(&what);
        parse_dig(&ran.all()).unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

/// Checks a printed response: rcode, AA, no TC, EDNS iff asked, the
/// transport, and the answer's (type, rdata) multiset at `owner`.
#[track_caller]
fn check_printed(
    what: &str,
    p: &Printed,
    owner: &str,
    rtype: &str,
    want: &[String],
    edns: bool,
    transport: &str,
) {
    assert_eq!(p.status, "NOERROR", "{what}: status, {p:?}");
    assert!(
        p.flags.contains("aa") && p.flags.contains("qr"),
        "{what}: flags {:?}",
        p.flags
    );
    assert!(
        !p.flags.contains("tc"),
        "{what}: TC in the final response {:?}",
        p.flags
    );
    assert_eq!(p.edns, edns, "{what}: EDNS in the response, {p:?}");
    assert_eq!(p.transport, transport, "{what}: transport");
    let mut got: Vec<String> = p
        .answers
        .iter()
        .map(|(o, t, r)| {
            assert_eq!(o, owner, "{what}: owner of {t} {r}");
            assert_eq!(t, rtype, "{what}: type of {r}");
            normalize_rdata(t, r)
        })
        .collect();
    got.sort();
    let mut want = want.to_vec();
    want.sort();
    assert!(
        got == want,
        "{what}: answers differ\n got  {} {got:?}\n want {} {want:?}",
        got.len(),
        want.len()
    );
}

/// Rdata in the comparison spelling: SRV as `srv_text`, addresses parsed.
fn normalize_rdata(rtype: &str, rdata: &str) -> String {
    match rtype {
        "SRV" => srv_text(rdata),
        "A" | "AAAA" => rdata
            .parse::<IpAddr>()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| rdata.to_string()),
        _ => rdata.to_string(),
    }
}

fn addr_texts(addrs: &BTreeSet<IpAddr>) -> Vec<String> {
    addrs.iter().map(IpAddr::to_string).collect()
}

/// dig and kdig (BIND's and Knot's tools) get exactly the registered
/// answers for A, AAAA and SRV at the service, its `_grpc._tcp` name and
/// its instances, over UDP and TCP, with and without EDNS; the SRV answer
/// carries the targets' addresses; NXDOMAIN and NODATA come as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_and_kdig_get_the_registered_answers_over_udp_and_tcp() {
    let tools: Vec<(Dig, PathBuf)> = [Dig::Dig, Dig::Kdig]
        .into_iter()
        .filter_map(|d| tool(d.name()).map(|p| (d, p)))
        .collect();
    if tools.is_empty() {
        return;
    }
    let f = Fixture::start(false).await;
    let service = fqdn(SMS);
    let grpc = format!("_grpc._tcp.{service}");
    let (v4, v6) = (f.sms_v4(), f.sms_v6());
    let cases: Vec<(&str, &str, Vec<String>)> = vec![
        (
            &service,
            "A",
            addr_texts(&Fixture::addrs(&f.sms, Some(true))),
        ),
        (
            &service,
            "AAAA",
            addr_texts(&Fixture::addrs(&f.sms, Some(false))),
        ),
        (&service, "SRV", Fixture::srv(&f.sms)),
        (&grpc, "SRV", Fixture::srv(&f.sms)),
        (&v4.name, "A", vec![v4.addr.to_string()]),
        (&v6.name, "AAAA", vec![v6.addr.to_string()]),
    ];
    let glue: Vec<(String, String, String)> = {
        let mut g: Vec<_> = f
            .sms
            .iter()
            .map(|i| {
                let t = if i.addr.is_ipv4() { "A" } else { "AAAA" };
                (i.name.clone(), t.to_string(), i.addr.to_string())
            })
            .collect();
        g.sort();
        g
    };
    for (dig, bin) in &tools {
        for tcp in [false, true] {
            for edns in [true, false] {
                let extra: &[&str] = if tcp { &["+tcp"] } else { &[] };
                let transport = if tcp { "TCP" } else { "UDP" };
                for (name, rtype, want) in &cases {
                    let what = format!("{} {name} {rtype} {transport} edns={edns}", dig.name());
                    let p = dig.query(bin, f.dns(), name, rtype, edns, extra);
                    check_printed(&what, &p, name, rtype, want, edns, transport);
                    assert!(!p.retried_over_tcp, "{what}: retried over TCP");
                    if *rtype == "SRV" {
                        let mut got = p.additional.clone();
                        for entry in &mut got {
                            entry.2 = normalize_rdata(&entry.1, &entry.2);
                        }
                        got.sort();
                        assert_eq!(got, glue, "{what}: the targets' addresses as glue");
                    }
                }
            }
        }
        // NXDOMAIN for a name that does not exist, NODATA for a type the
        // instance lacks, both authoritative.
        let nope = format!("nope.{service}");
        let p = dig.query(bin, f.dns(), &nope, "A", true, &[]);
        assert_eq!(p.status, "NXDOMAIN", "{} {nope}: {p:?}", dig.name());
        assert!(
            p.flags.contains("aa") && p.answers.is_empty(),
            "{} {nope}: {p:?}",
            dig.name()
        );
        let p = dig.query(bin, f.dns(), &v6.name, "A", true, &[]);
        assert_eq!(p.status, "NOERROR", "{} {} A: {p:?}", dig.name(), v6.name);
        assert!(
            p.answers.is_empty(),
            "{} {} A is NODATA: {p:?}",
            dig.name(),
            v6.name
        );
    }
}

/// A service too large for UDP: dig and kdig get a TC answer with no
/// records over UDP (with and without EDNS), say so, retry over TCP and
/// print every one of the BIG_INSTANCES records; `+ignore` shows the bare
/// truncated answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_and_kdig_retry_a_truncated_answer_over_tcp() {
    let tools: Vec<(Dig, PathBuf)> = [Dig::Dig, Dig::Kdig]
        .into_iter()
        .filter_map(|d| tool(d.name()).map(|p| (d, p)))
        .collect();
    if tools.is_empty() {
        return;
    }
    let f = Fixture::start(true).await;
    let service = fqdn(BIG);
    let grpc = format!("_grpc._tcp.{service}");
    let cases: Vec<(&str, &str, Vec<String>)> = vec![
        (
            &service,
            "A",
            addr_texts(&Fixture::addrs(&f.big, Some(true))),
        ),
        (&service, "SRV", Fixture::srv(&f.big)),
        (&grpc, "SRV", Fixture::srv(&f.big)),
    ];
    for (dig, bin) in &tools {
        for edns in [true, false] {
            for (name, rtype, want) in &cases {
                let what = format!("{} {name} {rtype} edns={edns}", dig.name());
                let p = dig.query(bin, f.dns(), name, rtype, edns, &[]);
                assert!(
                    p.retried_over_tcp,
                    "{what}: no retry over TCP reported: {p:?}"
                );
                check_printed(&what, &p, name, rtype, want, edns, "TCP");
                let p = dig.query(bin, f.dns(), name, rtype, edns, &["+ignore"]);
                assert!(
                    p.flags.contains("tc") && p.answers.is_empty() && p.transport == "UDP",
                    "{what} +ignore: want TC and no records over UDP, got {p:?}"
                );
            }
        }
    }
}

// ----------------------------------------------------------------------------
// Go
// ----------------------------------------------------------------------------

/// Go's own resolver (`net.Resolver{PreferGo: true}`, dialling rpcdns):
/// LookupSRV of `_grpc._tcp.<service>` and of the plain names with empty
/// service and proto, LookupHost of the service and of every SRV target
/// (what a Go gRPC client does next), NXDOMAIN as "no such host"; small
/// answers over UDP only, and the large service's A and SRV answers,
/// truncated over UDP, fetched again over TCP, every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_resolver_looks_up_srv_and_hosts() {
    let Some(bin) = go_resolver() else { return };
    let f = Fixture::start(true).await;
    let sms = fqdn(SMS);
    let big = fqdn(BIG);
    let q = |kind: &str, rest: &str| format!("{kind}:{rest}");
    let queries = [
        q("srv", &format!("grpc:tcp:{sms}")),
        q("srv", &format!("::{sms}")),
        q("srv", &format!("::_grpc._tcp.{sms}")),
        q("hosts", &format!("grpc:tcp:{sms}")),
        q("host", &sms),
        q("host", &f.sms_v4().name),
        q("host", &f.sms_v6().name),
        q("host", &format!("nope.{sms}")),
        q("srv", &format!("grpc:tcp:{big}")),
        q("host", &big),
    ];
    let results = run_client(
        &f,
        "go",
        Command::new(&bin).arg(f.dns().to_string()).args(&queries),
        2..=10,
    );
    // Go's dnsmessage (before Go 1.22) refuses an SRV target written with
    // a compression pointer, which RFC 2782 forbids: say so plainly.
    if let Some(error) = results
        .values()
        .filter_map(|r| r.error.as_deref())
        .find(|e| e.contains("cannot unmarshal DNS message"))
    {
        panic!(
            "go: {error}: Go's resolver could not parse an answer; a compressed SRV target \
             (RFC 2782: \"name compression is not to be used for this field\") does this"
        );
    }
    let small_srv = Fixture::srv(&f.sms);
    for query in &queries[0..3] {
        assert_srv(&results, "go", query, &small_srv);
    }
    // LookupSRV then LookupHost of each target: "<target> <address>".
    let got: BTreeSet<String> = ok_result(&results, "go", &queries[3])
        .values
        .iter()
        .map(|v| srv_text(v).replacen(". ", " ", 1))
        .collect();
    let want: BTreeSet<String> = f
        .sms
        .iter()
        .map(|i| format!("{} {}", i.name, i.addr))
        .collect();
    assert_eq!(
        got, want,
        "go {}: SRV targets and their addresses",
        queries[3]
    );
    assert_addrs(&results, "go", &queries[4], &Fixture::addrs(&f.sms, None));
    assert_addrs(
        &results,
        "go",
        &queries[5],
        &BTreeSet::from([f.sms_v4().addr]),
    );
    assert_addrs(
        &results,
        "go",
        &queries[6],
        &BTreeSet::from([f.sms_v6().addr]),
    );
    assert_error(&results, "go", &queries[7], "no such host");
    assert_srv(&results, "go", &queries[8], &Fixture::srv(&f.big));
    assert_addrs(&results, "go", &queries[9], &Fixture::addrs(&f.big, None));
    // The resolver's own dial counts: the small answers fit UDP, the large
    // ones were retried over TCP.
    for (query, tcp) in queries.iter().zip([0, 0, 0, 0, 0, 0, 0, 0, 1, 1]) {
        let notes = &ok_or_error(&results, query).notes;
        let dials = notes
            .iter()
            .find_map(|n| n.strip_prefix("dials "))
            .unwrap_or("");
        let tcp_dials: u64 = dials
            .split_whitespace()
            .find_map(|d| d.strip_prefix("tcp="))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("go {query}: no dial count in {notes:?}"));
        assert!(
            (tcp == 0) == (tcp_dials == 0),
            "go {query}: {tcp_dials} TCP connections ({dials}), want {}",
            if tcp == 0 { "none" } else { "some" }
        );
    }
}

fn ok_or_error<'a>(results: &'a BTreeMap<String, Resolved>, query: &str) -> &'a Resolved {
    results
        .get(query)
        .unwrap_or_else(|| panic!("printed nothing for {query}; got {:?}", results.keys()))
}

// ----------------------------------------------------------------------------
// Node, Java, dnspython: one set of queries, TYPE:NAME
// ----------------------------------------------------------------------------

/// The queries Node, Java and dnspython each make, in their own spelling
/// (`srv`/`SRV`), and the checks on what they print.
struct Queries {
    grpc_srv: String,
    srv: String,
    a: String,
    aaaa: String,
    instance_a: String,
    instance_aaaa: String,
    /// A of the IPv6-only instance: NODATA.
    nodata: String,
    nxdomain: String,
    big_srv: String,
    big_a: String,
}

impl Queries {
    fn new(f: &Fixture, lower_case: bool) -> Queries {
        let t = |s: &str| {
            if lower_case {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        let (sms, big) = (fqdn(SMS), fqdn(BIG));
        Queries {
            grpc_srv: format!("{}:_grpc._tcp.{sms}", t("SRV")),
            srv: format!("{}:{sms}", t("SRV")),
            a: format!("{}:{sms}", t("A")),
            aaaa: format!("{}:{sms}", t("AAAA")),
            instance_a: format!("{}:{}", t("A"), f.sms_v4().name),
            instance_aaaa: format!("{}:{}", t("AAAA"), f.sms_v6().name),
            nodata: format!("{}:{}", t("A"), f.sms_v6().name),
            nxdomain: format!("{}:nope.{sms}", t("A")),
            big_srv: format!("{}:{big}", t("SRV")),
            big_a: format!("{}:{big}", t("A")),
        }
    }

    fn all(&self) -> Vec<&str> {
        vec![
            &self.grpc_srv,
            &self.srv,
            &self.a,
            &self.aaaa,
            &self.instance_a,
            &self.instance_aaaa,
            &self.nodata,
            &self.nxdomain,
            &self.big_srv,
            &self.big_a,
        ]
    }

    /// Everything but the NODATA and NXDOMAIN queries, whose errors each
    /// client spells its own way.
    #[track_caller]
    fn check(&self, f: &Fixture, client: &str, results: &BTreeMap<String, Resolved>) {
        let srv = Fixture::srv(&f.sms);
        assert_srv(results, client, &self.grpc_srv, &srv);
        assert_srv(results, client, &self.srv, &srv);
        assert_addrs(
            results,
            client,
            &self.a,
            &Fixture::addrs(&f.sms, Some(true)),
        );
        assert_addrs(
            results,
            client,
            &self.aaaa,
            &Fixture::addrs(&f.sms, Some(false)),
        );
        assert_addrs(
            results,
            client,
            &self.instance_a,
            &BTreeSet::from([f.sms_v4().addr]),
        );
        assert_addrs(
            results,
            client,
            &self.instance_aaaa,
            &BTreeSet::from([f.sms_v6().addr]),
        );
        assert_srv(results, client, &self.big_srv, &Fixture::srv(&f.big));
        assert_addrs(
            results,
            client,
            &self.big_a,
            &Fixture::addrs(&f.big, Some(true)),
        );
    }
}

/// Node's `dns.promises.Resolver` (c-ares) with `setServers`: resolveSrv,
/// resolve4 and resolve6 give exactly the registered records; ENODATA and
/// ENOTFOUND for NODATA and NXDOMAIN; the large service's truncated UDP
/// answers are fetched again over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_dns_module_resolves_srv_and_addresses() {
    let Some(node) = tool("node") else { return };
    let f = Fixture::start(true).await;
    let q = Queries::new(&f, true);
    let results = run_client(
        &f,
        "node",
        Command::new(node)
            .arg(clients_dir().join("node/resolve.js"))
            .arg(f.dns().to_string())
            .args(q.all()),
        2..=4,
    );
    q.check(&f, "node", &results);
    assert_error(&results, "node", &q.nodata, "ENODATA");
    assert_error(&results, "node", &q.nxdomain, "ENOTFOUND");
}

/// Java's JNDI DNS provider (`InitialDirContext`, `dns://HOST:PORT/`):
/// the SRV, A and AAAA attributes are exactly the registered records, an
/// IPv6-only instance has no A attribute, a missing name throws
/// NameNotFoundException, and the large service's truncated UDP answers
/// are fetched again over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_jndi_gets_srv_and_address_attributes() {
    let Some((java, classes)) = java_resolver() else {
        return;
    };
    let f = Fixture::start(true).await;
    let q = Queries::new(&f, false);
    let results = run_client(
        &f,
        "java",
        Command::new(java)
            .args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp"])
            .arg(&classes)
            .arg("Resolve")
            .arg(f.dns().to_string())
            .args(q.all())
            .env_remove("JAVA_TOOL_OPTIONS"),
        2..=4,
    );
    q.check(&f, "java", &results);
    assert_empty(&results, "java", &q.nodata);
    assert_error(&results, "java", &q.nxdomain, "NameNotFoundException");
}

/// dnspython's stub resolver: SRV, A and AAAA are exactly the registered
/// records, NoAnswer and NXDOMAIN as such, and the large service's
/// truncated UDP answers are fetched again over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnspython_resolves_srv_and_addresses() {
    let Some(python) = venv_python(&["dns.resolver"]) else {
        return;
    };
    let f = Fixture::start(true).await;
    let q = Queries::new(&f, false);
    let results = run_client(
        &f,
        "dnspython",
        Command::new(python)
            .arg(clients_dir().join("python/resolve.py"))
            .arg(f.dns().to_string())
            .args(q.all()),
        2..=4,
    );
    q.check(&f, "dnspython", &results);
    assert_error(&results, "dnspython", &q.nodata, "NoAnswer");
    assert_error(&results, "dnspython", &q.nxdomain, "NXDOMAIN");
}

// ----------------------------------------------------------------------------
// glibc through /etc/resolv.conf
// ----------------------------------------------------------------------------

/// A tiny HTTP server on a free loopback port that answers every request
/// with `body`; stopped on drop.
struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    fn start(body: String) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test HTTP server");
        let addr = listener.local_addr().expect("HTTP server address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(QUERY_TIMEOUT));
                // Read the request head, then answer and close.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        HttpServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, QUERY_TIMEOUT);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The effective user id, from /proc/self/status (no unsafe libc call).
/// glibc through /etc/resolv.conf, as every program on a host that names
/// rpcdns there resolves: in a private mount namespace whose resolv.conf
/// says `nameserver 127.0.53.x` (rpcdns on port 53) and whose nsswitch.conf
/// says `hosts: files dns`, `getent hosts`/`ahosts` give the registered
/// addresses, `curl http://<service>.svc.local:PORT/` fetches the body of
/// the HTTP server registered as that service (by the service name and by
/// the instance name), and Python's `socket.getaddrinfo` gives every
/// address of the small and of the large service (glibc retries the
/// truncated UDP answer over TCP). Needs root for the mount namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glibc_resolves_through_resolv_conf_for_getent_curl_and_getaddrinfo() {
    let (Some(unshare), Some(getent), Some(curl)) = (tool("unshare"), tool("getent"), tool("curl"))
    else {
        return;
    };
    let uid = effective_uid();
    assert_eq!(
        uid,
        Some(0),
        "this test needs root: it bind-mounts its own /etc/resolv.conf in a private mount \
         namespace (unshare --mount) and runs rpcdns on port 53; run the suite as root, as CI does"
    );
    let python = root().join("target/tools/venv/bin/python");
    let python = if python.is_file() {
        python
    } else {
        PathBuf::from("python3")
    };

    let etcd = Etcd::start();
    let client = etcd.client().await;
    let listen = free_port53(53);
    let rpcdns = Rpcdns::spawn(&[
        "--etcd".into(),
        etcd.endpoint(),
        "--dns-listen".into(),
        listen.to_string(),
        "--http-listen".into(),
        "127.0.0.1:0".into(),
        "--log-format".into(),
        "text".into(),
    ]);
    rpcdns.wait_ready();
    assert_eq!(
        rpcdns.dns_addr, listen,
        "rpcdns listens where resolv.conf points"
    );
    let env = TestEnv {
        rpcdns,
        client,
        etcd,
    };
    let f = Fixture::register_all(env, true).await;

    let body = format!("rpcdns clients test {}\n", std::process::id());
    let web = HttpServer::start(body.clone());
    let reg = register(&f.env.client, "web.rpc", &web.addr.to_string(), LEASE_TTL).await;
    let web_name = fqdn("web.rpc");
    let web_instance = reg.instance_name().trim_end_matches('.').to_string();
    let loopback = ipv4s(&["127.0.0.1"]);
    eventually(PROPAGATION, || {
        check_a(f.dns(), &format!("{web_name}."), &loopback)
    });

    let etc = tempfile::Builder::new()
        .prefix("rpcdns-clients-etc-")
        .tempdir()
        .expect("temp dir for resolv.conf");
    let files = [
        (
            "resolv.conf",
            format!("nameserver {}\noptions timeout:2 attempts:3\n", listen.ip()),
        ),
        ("nsswitch.conf", nsswitch_files_dns()),
        ("hosts", "127.0.0.1 localhost\n::1 localhost\n".to_string()),
    ];
    for (file, text) in &files {
        std::fs::write(etc.path().join(file), text).expect("write a private /etc file");
    }
    let getent = getent.to_string_lossy().into_owned();
    let curl = curl.to_string_lossy().into_owned();
    let python = python.to_string_lossy().into_owned();
    let started = Instant::now();

    // getent hosts: the service and the instance, one address each.
    for name in [&web_name, &web_instance] {
        let ran = in_private_etc(&unshare, etc.path(), CLIENT_RUN, &[&getent, "hosts", name]);
        ran.expect_success(&format!("getent hosts {name}"));
        let fields: Vec<&str> = ran.stdout.split_whitespace().collect();
        assert_eq!(
            fields,
            ["127.0.0.1", name.as_str()],
            "getent hosts {name}: {}",
            ran.all()
        );
    }
    // getent ahosts: getaddrinfo's every address of a dual-stack service.
    let ran = in_private_etc(
        &unshare,
        etc.path(),
        CLIENT_RUN,
        &[&getent, "ahosts", &fqdn(SMS)],
    );
    ran.expect_success("getent ahosts");
    let got: BTreeSet<IpAddr> = ran
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(
        got,
        Fixture::addrs(&f.sms, None),
        "getent ahosts {}: {}",
        fqdn(SMS),
        ran.stdout
    );
    // A name rpcdns does not have: getent's "not found" exit code 2.
    let nope = format!("nope.{}", fqdn(SMS));
    let ran = in_private_etc(&unshare, etc.path(), CLIENT_RUN, &[&getent, "hosts", &nope]);
    assert_eq!(
        ran.status.code(),
        Some(2),
        "getent hosts {nope}: {}",
        ran.all()
    );

    // curl by the service name and by the instance name: the body proves
    // the whole path, etcd → rpcdns → glibc → the registered server.
    for name in [&web_name, &web_instance] {
        let url = format!("http://{name}:{}/", web.addr.port());
        let ran = in_private_etc(
            &unshare,
            etc.path(),
            CLIENT_RUN,
            &[&curl, "-sS", "--max-time", "20", "--noproxy", "*", &url],
        );
        ran.expect_success(&format!("curl {url}"));
        assert_eq!(ran.stdout, body, "curl {url}");
    }

    // Python's getaddrinfo, through glibc: the small service, the large
    // one (glibc retries its truncated UDP answer over TCP), NXDOMAIN.
    let queries = [
        format!("gai:{web_name}"),
        format!("gai:{}", fqdn(SMS)),
        format!("gai:{}", fqdn(BIG)),
        format!("gai:{nope}"),
    ];
    let mut cmd: Vec<&str> = vec![&python];
    let script = clients_dir().join("python/resolve.py");
    let script = script.to_string_lossy().into_owned();
    cmd.extend([script.as_str(), "-"]);
    cmd.extend(queries.iter().map(String::as_str));
    let tcp_before = f.tcp_responses();
    let ran = in_private_etc(&unshare, etc.path(), CLIENT_RUN, &cmd);
    ran.expect_success("python getaddrinfo");
    let results = parse_client_output(&ran.stdout);
    assert_addrs(
        &results,
        "getaddrinfo",
        &queries[0],
        &BTreeSet::from([IpAddr::from(Ipv4Addr::LOCALHOST)]),
    );
    assert_addrs(
        &results,
        "getaddrinfo",
        &queries[1],
        &Fixture::addrs(&f.sms, None),
    );
    assert_addrs(
        &results,
        "getaddrinfo",
        &queries[2],
        &Fixture::addrs(&f.big, None),
    );
    assert_error(&results, "getaddrinfo", &queries[3], "gaierror");
    assert!(
        f.tcp_responses() > tcp_before,
        "getaddrinfo of {} (300 addresses) never asked over TCP",
        fqdn(BIG)
    );
    eprintln!("glibc clients ran in {:?}", started.elapsed());
    drop(reg);
}

/// Go's resolver on SkyDNS records (CoreDNS's etcd format): SRV at a name
/// with records below it, each target resolved again, and an alias that is
/// a CNAME to another SkyDNS name, which Go follows inside the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_resolver_follows_skydns_records() {
    let Some(bin) = go_resolver() else { return };
    let etcd = Etcd::start();
    let client = etcd.client().await;
    for (key, value) in [
        (
            "db/primary",
            r#"{"host":"10.1.0.1","port":5432,"weight":30}"#,
        ),
        (
            "db/replica",
            r#"{"host":"fd00:1::2","port":5432,"weight":10}"#,
        ),
        ("web", r#"{"host":"alias.svc.local"}"#),
        ("alias", r#"{"host":"primary.db.svc.local"}"#),
    ] {
        put(&client, format!("/skydns/local/svc/{key}"), value).await;
    }
    let rpcdns = start_with_config(&etcd.endpoint(), "sources:\n  - format: skydns\n");
    let queries = [
        "srv:::db.svc.local",
        "hosts:::db.svc.local",
        "host:db.svc.local",
        "host:web.svc.local",
        "host:nope.db.svc.local",
    ];
    let ran = run(
        Command::new(&bin)
            .arg(rpcdns.dns_addr.to_string())
            .args(queries),
        CLIENT_RUN,
    );
    ran.expect_success("go");
    let results = parse_client_output(&ran.stdout);
    assert_srv(
        &results,
        "go",
        queries[0],
        &[
            "10 75 5432 primary.db.svc.local".to_owned(),
            "10 25 5432 replica.db.svc.local".to_owned(),
        ],
    );
    let got: BTreeSet<String> = ok_result(&results, "go", queries[1])
        .values
        .iter()
        .map(|v| srv_text(v).replacen(". ", " ", 1))
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([
            "primary.db.svc.local 10.1.0.1".to_owned(),
            "replica.db.svc.local fd00:1::2".to_owned(),
        ])
    );
    let both: BTreeSet<IpAddr> = ["10.1.0.1", "fd00:1::2"]
        .iter()
        .map(|a| a.parse().expect("address"))
        .collect();
    assert_addrs(&results, "go", queries[2], &both);
    // web → alias → primary.db: two CNAMEs, then the address.
    assert_addrs(
        &results,
        "go",
        queries[3],
        &BTreeSet::from(["10.1.0.1".parse().expect("address")]),
    );
    assert_error(&results, "go", queries[4], "no such host");
}
