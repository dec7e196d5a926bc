//! Real gRPC clients calling real gRPC servers through rpcdns: Python
//! `grpcio` (gRPC C-core), Node `@grpc/grpc-js` and Go `google.golang.org/grpc`
//! (Debian's), each with a `dns://<rpcdns>/<service>:<port>` target and no
//! load-balancing setting of its own. The servers (a unary method that
//! returns the instance's id, and `grpc.health.v1`; grpc-go ones, as
//! go-zero's are, for the Go client, grpcio ones for the others) listen on
//! loopback addresses and are registered in a real etcd exactly as go-zero
//! registers them (a 10 s lease kept alive, `sms.rpc/<lease id>` →
//! `ip:port`), with a MaxConnectionAge, as the README advises go-zero
//! servers to set.
//!
//! For every client:
//! (a) with the `_grpc_config` TXT record (round_robin, rpcdns's default)
//!     60 calls spread over the three instances, each getting at least 10;
//! (b) without it (a service whose config is `off`), pick_first: all 60
//!     calls go to one instance;
//! (c) an instance whose lease is revoked (its server still up, as when a
//!     process loses its etcd session) stops receiving calls once the
//!     client re-resolves, and no call fails, not even when that server is
//!     then stopped;
//! (d) a newly registered instance starts receiving calls.
//! (c) and (d) run together, from one change in etcd, and the time each
//! took is printed (`grpc[<client>]: ...` lines): the bound is gRPC's
//! re-resolution (at most every 30 s, when a connection ends; see README
//! "Calling go-zero services"). Node's default resolver, through a private
//! /etc/resolv.conf rather than a DNS server in the target, gets (a) too.
//!
//! The programs are tests/clients/grpc/client.py, tests/clients/grpc-node/
//! client.js and tests/clients/grpc-go/main.go, all with one command line
//! and one output format (`CALL<TAB>ms<TAB>ok<TAB>id` per call); their
//! libraries come from scripts/install-deps.sh (PyPI into the tools venv,
//! npm into target/clients/grpc-node, Debian's golang-google-grpc-dev).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::programs::*;

// ----------------------------------------------------------------------------
// Constants
// ----------------------------------------------------------------------------

/// go-zero's lease TTL (its registrations are kept alive every third).
const LEASE_TTL: i64 = 10;
/// The servers' MaxConnectionAge: every connection ends after it, so
/// clients reconnect and ask for a new resolution.
const MAX_CONNECTION_AGE_MS: u64 = 5_000;
/// Calls in flight when the connection ends get this long to finish.
const MAX_CONNECTION_AGE_GRACE_MS: u64 = 1_000;
/// Calls of a spread check, and the least each instance must get.
const SPREAD_CALLS: usize = 60;
const MIN_PER_INSTANCE: usize = 10;
/// The pause between the calls of the continuous client.
const CALL_INTERVAL_MS: u64 = 50;
/// Consecutive calls without an instance that show it was dropped: with
/// round_robin over the instances, it would get one in every few.
const DROPPED_AFTER_CALLS: usize = 40;
/// How long a client may take to follow a change in etcd: gRPC re-resolves
/// at most every 30 s, when a connection ends (MaxConnectionAge), plus that
/// age and slack for two loaded cores.
const FOLLOW_DEADLINE: Duration = Duration::from_secs(75);
/// How long one spread run may take (a cold Node or Python start included).
const CLIENT_RUN: Duration = Duration::from_secs(60);
/// How long a server may take to print that it listens.
const SERVER_START: Duration = Duration::from_secs(30);

// ----------------------------------------------------------------------------
// Clients
// ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Python,
    Node,
    Go,
}

/// One client program, ready to run.
struct GrpcClient {
    lang: Lang,
    program: PathBuf,
    /// Arguments before the client's own (the script), and environment.
    prefix: Vec<String>,
    env: Vec<(&'static str, String)>,
}

impl GrpcClient {
    /// The client for `lang`, built if need be; None (skipped) when its
    /// library is missing on a developer machine, a panic under CI.
    fn find(lang: Lang) -> Option<GrpcClient> {
        let dir = clients_dir();
        match lang {
            Lang::Python => Some(GrpcClient {
                lang,
                program: venv_python(&["grpc", "grpc_health.v1"])?,
                prefix: vec![dir.join("grpc/client.py").display().to_string()],
                env: Vec::new(),
            }),
            Lang::Node => {
                let node = tool("node")?;
                let modules = build_dir().join("grpc-node/node_modules");
                if !modules.join("@grpc/grpc-js/package.json").is_file() {
                    missing(&format!(
                        "{} has no @grpc/grpc-js: run scripts/install-deps.sh",
                        modules.display()
                    ));
                    return None;
                }
                Some(GrpcClient {
                    lang,
                    program: node,
                    prefix: vec![dir.join("grpc-node/client.js").display().to_string()],
                    env: vec![
                        ("NODE_PATH", modules.display().to_string()),
                        // grpc-js asks the DNS server named in the target
                        // only with its alternative resolver; otherwise it
                        // ignores it and uses the system's.
                        ("GRPC_NODE_USE_ALTERNATIVE_RESOLVER", "true".to_owned()),
                    ],
                })
            }
            Lang::Go => Some(GrpcClient {
                lang,
                program: go_build("grpc-go")?,
                prefix: Vec::new(),
                env: Vec::new(),
            }),
        }
    }

    fn name(&self) -> &'static str {
        match self.lang {
            Lang::Python => "python grpcio",
            Lang::Node => "node grpc-js",
            Lang::Go => "go grpc",
        }
    }

    /// The TXT lookup setting that gives the library's documented
    /// behaviour with a config in DNS: grpcio (C-core) looks the record up
    /// only when asked to (README "Calling go-zero services").
    fn lookup(&self) -> &'static str {
        match self.lang {
            Lang::Python => "on",
            Lang::Node | Lang::Go => "default",
        }
    }

    fn command(&self, target: &str, calls: usize, interval_ms: u64, lookup: &str) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.prefix)
            .args(["--target", target])
            .args(["--calls", &calls.to_string()])
            .args(["--interval-ms", &interval_ms.to_string()])
            .args(["--service-config-lookup", lookup]);
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }

    /// Runs `calls` calls back to back; returns them.
    fn run(&self, target: &str, calls: usize, lookup: &str) -> Vec<Call> {
        let ran = run(&mut self.command(target, calls, 0, lookup), CLIENT_RUN);
        ran.expect_success(self.name());
        let calls_made: Vec<Call> = ran.stdout.lines().filter_map(Call::parse).collect();
        assert!(
            ran.stdout.lines().any(|l| l.starts_with("DONE\t")),
            "{}: no DONE line:\n{}",
            self.name(),
            ran.all()
        );
        assert_eq!(
            calls_made.len(),
            calls,
            "{}: calls made:\n{}",
            self.name(),
            ran.all()
        );
        calls_made
    }
}

/// Builds tests/clients/<dir> once per test run, with Debian's grpc-go in
/// GOPATH mode: no module proxy, no network.
fn go_build(dir: &str) -> Option<PathBuf> {
    static BUILT: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let go = tool("go")?;
    let gopath = PathBuf::from("/usr/share/gocode");
    if !gopath
        .join("src/google.golang.org/grpc/clientconn.go")
        .is_file()
    {
        missing("Debian's golang-google-grpc-dev is not installed: run scripts/install-deps.sh");
        return None;
    }
    let mut built = BUILT
        .get_or_init(|| Mutex::new(BTreeMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(bin) = built.get(dir) {
        return Some(bin.clone());
    }
    let out = build_dir().join("grpc-go");
    let bin = out.join(dir);
    run(
        Command::new(go)
            .args(["build", "-trimpath", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(clients_dir().join(dir))
            .env("GO111MODULE", "off")
            .env("GOPATH", &gopath)
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .env("GOENV", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOTELEMETRY", "off")
            .env("GOCACHE", out.join("cache"))
            .env("CGO_ENABLED", "0"),
        Duration::from_secs(300),
    )
    .expect_success(&format!("go build of tests/clients/{dir}"));
    built.insert(dir.to_owned(), bin.clone());
    Some(bin)
}

/// One call as a client printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    ok: bool,
    /// The instance id, or the error.
    text: String,
}

impl Call {
    /// `CALL<TAB>ms<TAB>ok|err<TAB>text`; None for other lines.
    fn parse(line: &str) -> Option<Call> {
        let mut fields = line.splitn(4, '\t');
        if fields.next() != Some("CALL") {
            return None;
        }
        let _ms = fields.next()?;
        let ok = match fields.next()? {
            "ok" => true,
            "err" => false,
            other => panic!("a call is ok or err, not {other:?}: {line:?}"),
        };
        Some(Call {
            ok,
            text: fields.next().unwrap_or_default().to_owned(),
        })
    }
}

/// Calls per instance id; panics on a failed call.
#[track_caller]
fn spread(client: &str, calls: &[Call]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for call in calls {
        assert!(call.ok, "{client}: a call failed: {}", call.text);
        *counts.entry(call.text.clone()).or_default() += 1;
    }
    counts
}

/// A client making calls until told to stop, its calls collected with the
/// time each was read.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    calls: Arc<Mutex<Vec<(Instant, Call)>>>,
    reader: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn start(client: &GrpcClient, target: &str) -> Running {
        let mut cmd = client.command(target, 0, CALL_INTERVAL_MS, client.lookup());
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let sink = calls.clone();
        let reader = std::thread::spawn(move || {
            let mut rest = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match Call::parse(&line) {
                    Some(call) => sink
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((Instant::now(), call)),
                    None => {
                        rest.push_str(&line);
                        rest.push('\n');
                    }
                }
            }
            rest
        });
        Running {
            stdin: child.stdin.take(),
            child,
            calls,
            reader: Some(reader),
        }
    }

    fn calls(&self) -> Vec<(Instant, Call)> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Closes its stdin, which ends it, and waits for it; returns every call
    /// and what else it printed.
    fn stop(mut self) -> (Vec<(Instant, Call)>, String) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(
                Instant::now() < deadline,
                "the client did not stop when its stdin closed"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
        let status = self.child.wait().expect("wait for the client");
        let rest = self
            .reader
            .take()
            .and_then(|r| r.join().ok())
            .unwrap_or_default();
        assert!(status.success(), "the client exited with {status}:\n{rest}");
        (self.calls(), rest)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----------------------------------------------------------------------------
// Servers and registrations
// ----------------------------------------------------------------------------

/// A gRPC server program: tests/clients/grpc/server.py (grpcio), or
/// tests/clients/grpc-go-server (grpc-go, as go-zero's servers are), both
/// with one command line.
#[derive(Clone)]
struct ServerProgram {
    program: PathBuf,
    prefix: Vec<String>,
}

impl ServerProgram {
    fn python() -> Option<ServerProgram> {
        Some(ServerProgram {
            program: venv_python(&["grpc", "grpc_health.v1"])?,
            prefix: vec![clients_dir().join("grpc/server.py").display().to_string()],
        })
    }

    fn go() -> Option<ServerProgram> {
        Some(ServerProgram {
            program: go_build("grpc-go-server")?,
            prefix: Vec::new(),
        })
    }
}

/// One gRPC server, stopped by PID on drop.
struct Server {
    child: Child,
    /// Kept open: the server exits when it closes, so it cannot outlive
    /// the test even if the test process dies.
    _stdin: Option<ChildStdin>,
}

impl Server {
    fn start(program: &ServerProgram, addr: SocketAddr, id: &str) -> Server {
        let mut cmd = Command::new(&program.program);
        cmd.args(&program.prefix)
            .args(["--listen", &addr.to_string(), "--id", id])
            .args([
                "--max-connection-age-ms",
                &MAX_CONNECTION_AGE_MS.to_string(),
            ])
            .args([
                "--max-connection-age-grace-ms",
                &MAX_CONNECTION_AGE_GRACE_MS.to_string(),
            ])
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = tx.send(first);
            // Drain the rest so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut server = Server {
            child,
            _stdin: stdin,
        };
        match rx.recv_timeout(SERVER_START) {
            Ok(line) if line == format!("LISTENING\t{addr}") => server,
            other => {
                let status = server.child.try_wait();
                panic!("server {id} on {addr} did not start: {other:?}, status {status:?}")
            }
        }
    }

    /// SIGTERM: the server stops accepting, finishes its calls, exits.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on every one of `addrs` (loopback addresses all route to
/// `lo`, each with its own ports).
fn port_free_on(addrs: &[Ipv4Addr]) -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind((addrs[0], 0)).expect("bind a loopback port");
        let port = first.local_addr().expect("bound address").port();
        let rest: Vec<_> = addrs[1..]
            .iter()
            .map(|&a| TcpListener::bind((a, port)))
            .collect();
        if rest.iter().all(Result::is_ok) {
            return port;
        }
    }
    panic!("no port free on all of {addrs:?}");
}

/// etcd, rpcdns serving `sms.rpc` with its default gRPC config and
/// `plain.rpc` with none, and three servers registered under both.
struct Fixture {
    env: TestEnv,
    server: ServerProgram,
    port: u16,
    /// Four loopback addresses: three instances, and one to add.
    addrs: Vec<Ipv4Addr>,
    servers: Vec<Option<Server>>,
    sms: Vec<Option<Registered>>,
    _plain: Vec<Registered>,
    _config: tempfile::TempDir,
}

impl Fixture {
    /// `net` picks the loopback addresses, 127.0.1.<net>1 to <net>4, so
    /// that tests running at once never share one; rpcdns listens on a
    /// free port of 127.0.0.1, or on `dns_listen`.
    async fn start(server: ServerProgram, net: u8, dns_listen: Option<SocketAddr>) -> Fixture {
        let addrs: Vec<Ipv4Addr> = (1..=4)
            .map(|i| Ipv4Addr::new(127, 0, 1, net * 10 + i))
            .collect();
        let port = port_free_on(&addrs);
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("rpcdns.yaml");
        std::fs::write(
            &config,
            "grpc:\n  overrides:\n    - pattern: plain.rpc\n      service_config: off\n",
        )
        .expect("write config");
        let config = config.display().to_string();
        let env = match dns_listen {
            None => TestEnv::start(&["--config", &config]).await,
            Some(listen) => {
                let etcd = Etcd::start();
                let client = etcd.client().await;
                let rpcdns = Rpcdns::spawn(
                    &[
                        "--etcd",
                        &etcd.endpoint(),
                        "--dns-listen",
                        &listen.to_string(),
                        "--http-listen",
                        "127.0.0.1:0",
                        "--config",
                        &config,
                    ]
                    .map(String::from),
                );
                rpcdns.wait_ready();
                TestEnv {
                    rpcdns,
                    client,
                    etcd,
                }
            }
        };
        let mut f = Fixture {
            env,
            server,
            port,
            addrs,
            servers: Vec::new(),
            sms: Vec::new(),
            _plain: Vec::new(),
            _config: dir,
        };
        for i in 0..3 {
            f.add_instance(i).await;
            let value = f.value(i);
            f._plain
                .push(register(&f.env.client, "plain.rpc", &value, LEASE_TTL).await);
        }
        f.wait_served("sms.rpc", 0..3);
        f.wait_served("plain.rpc", 0..3);
        f
    }

    fn value(&self, i: usize) -> String {
        format!("{}:{}", self.addrs[i], self.port)
    }

    fn id(i: usize) -> String {
        format!("inst{}", i + 1)
    }

    /// Starts server `i` and registers it under `sms.rpc`.
    async fn add_instance(&mut self, i: usize) {
        let addr = SocketAddr::from((self.addrs[i], self.port));
        self.servers
            .push(Some(Server::start(&self.server, addr, &Self::id(i))));
        let registered = register(&self.env.client, "sms.rpc", &self.value(i), LEASE_TTL).await;
        self.sms.push(Some(registered));
    }

    /// Waits until `service` answers exactly the addresses of `instances`.
    fn wait_served(&self, service: &str, instances: std::ops::Range<usize>) {
        let want = instances.map(|i| self.addrs[i]).collect();
        let name = format!("{service}.{ZONE}");
        eventually(PROPAGATION, || check_a(self.env.dns(), &name, &want));
    }

    /// `dns://<rpcdns>/<service>.svc.local:<port>`.
    fn target(&self, service: &str) -> String {
        format!(
            "dns://{}/{service}.{}:{}",
            self.env.dns(),
            ZONE.trim_end_matches('.'),
            self.port
        )
    }
}

// ----------------------------------------------------------------------------
// The checks
// ----------------------------------------------------------------------------

/// Everything the module doc lists, for one client.
async fn calls_spread_and_follow_etcd(lang: Lang, net: u8) {
    let Some(client) = GrpcClient::find(lang) else {
        return;
    };
    // Go clients call grpc-go servers, the others grpcio ones.
    let server = match lang {
        Lang::Go => ServerProgram::go(),
        Lang::Python | Lang::Node => ServerProgram::python(),
    };
    let Some(server) = server else {
        return;
    };
    let name = client.name();
    let mut f = Fixture::start(server, net, None).await;

    // (a) The TXT config: round_robin over every instance.
    let counts = spread(
        name,
        &client.run(&f.target("sms.rpc"), SPREAD_CALLS, client.lookup()),
    );
    eprintln!("grpc[{name}]: (a) with the TXT config, {SPREAD_CALLS} calls: {counts:?}");
    assert_eq!(
        counts.len(),
        3,
        "{name}: (a) calls reach every instance: {counts:?}"
    );
    assert!(
        counts.values().all(|&n| n >= MIN_PER_INSTANCE),
        "{name}: (a) each instance gets at least {MIN_PER_INSTANCE}: {counts:?}"
    );

    // (b) No TXT record: pick_first, one instance.
    let counts = spread(
        name,
        &client.run(&f.target("plain.rpc"), SPREAD_CALLS, client.lookup()),
    );
    eprintln!("grpc[{name}]: (b) without a TXT config, {SPREAD_CALLS} calls: {counts:?}");
    assert_eq!(
        counts.len(),
        1,
        "{name}: (b) pick_first uses one instance: {counts:?}"
    );
    if lang == Lang::Python {
        // grpcio does not look the record up unless asked: pick_first.
        let counts = spread(
            name,
            &client.run(&f.target("sms.rpc"), SPREAD_CALLS, "default"),
        );
        eprintln!("grpc[{name}]: (b) TXT lookup left off (grpcio's default): {counts:?}");
        assert_eq!(counts.len(), 1, "{name}: lookup off by default: {counts:?}");
    }

    // (c) and (d): one change in etcd while a client calls every 50 ms.
    let running = Running::start(&client, &f.target("sms.rpc"));
    eventually(Duration::from_secs(30), || {
        let calls = running.calls();
        let recent = spread(
            name,
            &calls
                .iter()
                .rev()
                .take(30)
                .map(|(_, c)| c.clone())
                .collect::<Vec<_>>(),
        );
        match recent.len() {
            3 => Ok(()),
            _ => Err(format!(
                "{name}: the running client's last calls reach {recent:?}"
            )),
        }
    });
    let changed = Instant::now();
    let revoked = f.sms[2].take().expect("instance 3 registered");
    revoked.revoke().await;
    f.add_instance(3).await;
    eventually(PROPAGATION, || {
        check_a(
            f.env.dns(),
            &format!("sms.rpc.{ZONE}"),
            &[f.addrs[0], f.addrs[1], f.addrs[3]].into_iter().collect(),
        )
    });
    let (old, new) = (Fixture::id(2), Fixture::id(3));
    // (d) The new instance gets calls.
    let mut first_new = None;
    eventually(FOLLOW_DEADLINE, || {
        let calls = running.calls();
        first_new = calls.iter().find(|(_, c)| c.text == new).map(|(at, _)| *at);
        first_new
            .map(|_| ())
            .ok_or_else(|| format!("{name}: no call reached the new instance {new}"))
    });
    // (c) The revoked one gets none: the last many calls all went elsewhere.
    let mut last_old = None;
    eventually(FOLLOW_DEADLINE, || {
        let calls = running.calls();
        let last = calls.iter().rposition(|(_, c)| c.text == old);
        last_old = last.map(|i| calls[i].0);
        let since = last.map_or(calls.len(), |i| calls.len() - i - 1);
        if since >= DROPPED_AFTER_CALLS {
            Ok(())
        } else {
            Err(format!("{name}: {since} calls since the last one to {old}"))
        }
    });
    // Now its server goes, as go-zero's would: no client holds a
    // connection to it any more, so no call may fail.
    f.servers[2].take().expect("server 3").stop();
    let stopped_at = running.calls().len();
    eventually(Duration::from_secs(10), || {
        let n = running.calls().len();
        (n >= stopped_at + 20)
            .then_some(())
            .ok_or(format!("{name}: {n} calls"))
    });
    let (calls, rest) = running.stop();
    let failed: Vec<&Call> = calls.iter().map(|(_, c)| c).filter(|c| !c.ok).collect();
    assert!(
        failed.is_empty(),
        "{name}: (c) calls failed while instances changed: {failed:?}\n{rest}"
    );
    let after_stop = spread(
        name,
        &calls[stopped_at..]
            .iter()
            .map(|(_, c)| c.clone())
            .collect::<Vec<_>>(),
    );
    assert!(!after_stop.contains_key(&old), "{name}: {after_stop:?}");
    assert_eq!(
        after_stop.len(),
        3,
        "{name}: calls still spread: {after_stop:?}"
    );
    let new_after = first_new.map(|at| at.saturating_duration_since(changed));
    let old_until = last_old.map(|at| at.saturating_duration_since(changed));
    eprintln!(
        "grpc[{name}]: (d) the new instance's first call {new_after:?} after the change; (c) the revoked instance's last call {old_until:?} after it; {} calls, none failed",
        calls.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_spreads_calls_and_follows_etcd() {
    calls_spread_and_follow_etcd(Lang::Python, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_grpc_js_spreads_calls_and_follows_etcd() {
    calls_spread_and_follow_etcd(Lang::Node, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_grpc_spreads_calls_and_follows_etcd() {
    calls_spread_and_follow_etcd(Lang::Go, 3).await;
}

/// Node's default resolver, the one most Node programs use: no DNS server
/// in the target (`dns:///...`) and no GRPC_NODE_USE_ALTERNATIVE_RESOLVER,
/// so grpc-js takes the addresses from getaddrinfo (glibc: nsswitch.conf,
/// resolv.conf) and the TXT record from c-ares (resolv.conf). In a private
/// mount namespace whose resolv.conf names rpcdns on port 53, the TXT
/// config still spreads the calls. Needs root, like the glibc test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_grpc_js_through_resolv_conf_spreads_calls() {
    let (Some(client), Some(server), Some(unshare)) = (
        GrpcClient::find(Lang::Node),
        ServerProgram::python(),
        tool("unshare"),
    ) else {
        return;
    };
    assert_eq!(
        effective_uid(),
        Some(0),
        "this test needs root: it bind-mounts its own /etc/resolv.conf (unshare --mount) \
         and runs rpcdns on port 53; run the suite as root, as CI does"
    );
    let listen = free_port53(54);
    let f = Fixture::start(server, 4, Some(listen)).await;
    let etc = tempfile::tempdir().expect("temp dir for resolv.conf");
    for (file, text) in [
        (
            "resolv.conf",
            format!("nameserver {}\noptions timeout:2 attempts:3\n", listen.ip()),
        ),
        ("nsswitch.conf", nsswitch_files_dns()),
        ("hosts", "127.0.0.1 localhost\n".to_owned()),
    ] {
        std::fs::write(etc.path().join(file), text).expect("write a private /etc file");
    }
    let target = format!("dns:///sms.rpc.{}:{}", ZONE.trim_end_matches('.'), f.port);
    let env: Vec<String> = client
        .env
        .iter()
        .filter(|(key, _)| *key != "GRPC_NODE_USE_ALTERNATIVE_RESOLVER")
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let program = client.program.display().to_string();
    let calls = SPREAD_CALLS.to_string();
    let mut cmd: Vec<&str> = vec!["env", "-u", "GRPC_NODE_USE_ALTERNATIVE_RESOLVER"];
    cmd.extend(env.iter().map(String::as_str));
    cmd.push(&program);
    cmd.extend(client.prefix.iter().map(String::as_str));
    cmd.extend(["--target", &target, "--calls", &calls]);
    let ran = in_private_etc(&unshare, etc.path(), CLIENT_RUN, &cmd);
    ran.expect_success("node client through resolv.conf");
    let calls: Vec<Call> = ran.stdout.lines().filter_map(Call::parse).collect();
    assert_eq!(calls.len(), SPREAD_CALLS, "{}", ran.all());
    let counts = spread(client.name(), &calls);
    eprintln!("grpc[node grpc-js, resolv.conf]: {SPREAD_CALLS} calls to {target}: {counts:?}");
    // grpc-js sends its first call or two before the TXT answer arrives.
    assert_eq!(counts.len(), 3, "calls reach every instance: {counts:?}");
    assert!(
        counts.values().all(|&n| n >= MIN_PER_INSTANCE),
        "each instance gets at least {MIN_PER_INSTANCE}: {counts:?}"
    );
}
