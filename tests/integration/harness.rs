//! Test harness: a real etcd per test, the real rpcdns binary, go-zero style
//! registrations, DNS and HTTP clients over real sockets, a cuttable TCP
//! proxy, and the one bounded `eventually` wait.
//!
//! Everything here panics on failure: a harness that cannot do its job is a
//! failed test, and the panic message says which step failed.

#![allow(dead_code)] // each test module uses a different part of the harness

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::{SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tempfile::TempDir;

// ----------------------------------------------------------------------------
// Deadlines
// ----------------------------------------------------------------------------

/// How long etcd may take to elect itself and answer `/health`.
pub const ETCD_START: Duration = Duration::from_secs(20);
/// How long rpcdns may take to log both listening lines.
pub const RPCDNS_START: Duration = Duration::from_secs(15);
/// How long a change in etcd may take to show in DNS. The SPEC promises
/// 100 ms p99 on an idle loopback; tests run in parallel on two cores, so
/// the deadline is generous and only catches "never".
pub const PROPAGATION: Duration = Duration::from_secs(10);
/// How long reconnection after an outage may take (capped backoff).
pub const RECONNECT: Duration = Duration::from_secs(30);
/// Per-query timeout: a dropped reply fails the test instead of hanging it.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How often `eventually` polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The zone rpcdns serves unless told otherwise.
pub const ZONE: &str = "svc.local.";

// ----------------------------------------------------------------------------
// eventually
// ----------------------------------------------------------------------------

/// Polls `check` until it returns Ok, or panics with its last error once
/// `within` has passed. The only way tests wait for asynchronous state.
#[track_caller]
pub fn eventually<F>(within: Duration, mut check: F)
where
    F: FnMut() -> Result<(), String>,
{
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => {
                panic!("condition not met within {within:?}: {e}")
            }
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

/// `eventually` for checks that need to await (etcd reads).
pub async fn eventually_async<F>(within: Duration, mut check: F)
where
    F: AsyncFnMut() -> Result<(), String>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => {
                panic!("condition not met within {within:?}: {e}")
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

// ----------------------------------------------------------------------------
// Ports
// ----------------------------------------------------------------------------

/// `n` distinct free loopback TCP ports (held together while choosing so
/// they differ; another process may still race us for them afterwards).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr of a bound socket").port())
        .collect()
}

// ----------------------------------------------------------------------------
// etcd
// ----------------------------------------------------------------------------

/// A real etcd process on free loopback ports with its own data directory.
pub struct Etcd {
    child: Option<Child>,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    starts: usize,
}

impl Etcd {
    /// Starts etcd and waits until it answers `/health`. Retries with new
    /// ports when the chosen ones were taken in the meantime.
    pub fn start() -> Etcd {
        let mut last_error = String::new();
        for _ in 0..3 {
            // /dev/shm keeps etcd's fsyncs cheap when many tests run at once.
            let dir = match Path::new("/dev/shm").is_dir() {
                true => tempfile::Builder::new()
                    .prefix("rpcdns-etcd-")
                    .tempdir_in("/dev/shm"),
                false => tempfile::Builder::new().prefix("rpcdns-etcd-").tempdir(),
            }
            .expect("create etcd temp dir");
            let ports = free_ports(2);
            let mut etcd = Etcd {
                child: None,
                dir,
                client_port: ports[0],
                peer_port: ports[1],
                starts: 0,
            };
            match etcd.spawn() {
                Ok(()) => return etcd,
                Err(e) => last_error = e,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    fn binary() -> PathBuf {
        std::env::var_os("ETCD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("etcd"))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("etcd-{}.log", self.starts))
    }

    fn spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let client_url = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::create(self.log_path()).map_err(|e| format!("create etcd log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("clone etcd log: {e}"))?;
        let child = Command::new(Self::binary())
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--initial-cluster-token=rpcdns-test")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", Self::binary().display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + ETCD_START;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                return Err(format!("etcd exited with {status}: {tail:?}"));
            }
            if let Ok((200, body)) = http_get(self.client_addr(), "/health")
                && body.contains("true")
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!("etcd not healthy within {ETCD_START:?}"));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `127.0.0.1:PORT` of the client URL, as rpcdns's `--etcd` takes it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port))
    }

    /// A fresh client connected to this etcd.
    pub async fn client(&self) -> Client {
        Client::connect([self.endpoint()], None)
            .await
            .expect("connect etcd client")
    }

    /// Kills etcd and waits for it to exit.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts etcd again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn() {
            panic!("etcd did not restart: {e}");
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

// ----------------------------------------------------------------------------
// etcd data helpers
// ----------------------------------------------------------------------------

/// A go-zero registration: a key kept alive by its own lease.
pub struct Registered {
    client: Client,
    lease: i64,
    key: String,
    keepalive: tokio::task::JoinHandle<()>,
}

impl Registered {
    /// The lease id, which go-zero also uses as the instance id.
    pub fn id(&self) -> i64 {
        self.lease
    }

    /// The whole key, `<service key>/<lease id>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The instance name rpcdns gives it (`<id>.<service>.<zone>`).
    pub fn instance_name(&self) -> String {
        let service = self.key.split('/').next().unwrap_or_default();
        format!("{}.{}.{ZONE}", self.lease, service.to_ascii_lowercase())
    }

    /// Revokes the lease: etcd deletes the key at once.
    pub async fn revoke(mut self) {
        self.keepalive.abort();
        self.client
            .lease_revoke(self.lease)
            .await
            .expect("revoke lease");
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // Without keep-alives the lease expires and etcd deletes the key.
        self.keepalive.abort();
    }
}

/// Registers `value` under `<service>/<lease id>` as go-zero does.
pub async fn register(client: &Client, service: &str, value: &str, ttl: i64) -> Registered {
    register_bytes(client, service, value.as_bytes(), ttl).await
}

/// `register` with an arbitrary value (for non-UTF-8 values).
pub async fn register_bytes(client: &Client, service: &str, value: &[u8], ttl: i64) -> Registered {
    let mut client = client.clone();
    let lease = client
        .lease_grant(ttl, None)
        .await
        .expect("grant lease")
        .id();
    let key = format!("{service}/{lease}");
    client
        .put(
            key.clone(),
            value.to_vec(),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put registration");
    let mut keep_client = client.clone();
    let keepalive = tokio::spawn(async move {
        let Ok((mut keeper, mut stream)) = keep_client.lease_keep_alive(lease).await else {
            return;
        };
        let period = Duration::from_millis((ttl.max(1) as u64) * 1000 / 3);
        loop {
            if keeper.keep_alive().await.is_err() {
                return;
            }
            if !matches!(stream.message().await, Ok(Some(_))) {
                return;
            }
            // A renewal period, like go-zero's, not a synchronisation.
            tokio::time::sleep(period).await;
        }
    });
    Registered {
        client,
        lease,
        key,
        keepalive,
    }
}

/// Plain put (no lease); returns the revision of the write.
pub async fn put(client: &Client, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> i64 {
    let resp = client
        .clone()
        .put(key, value, None)
        .await
        .expect("etcd put");
    resp.header().expect("put response header").revision()
}

/// Delete one key; returns the revision after the delete.
pub async fn delete(client: &Client, key: impl Into<Vec<u8>>) -> i64 {
    let resp = client.clone().delete(key, None).await.expect("etcd delete");
    resp.header().expect("delete response header").revision()
}

/// The current revision of the store.
pub async fn current_revision(client: &Client) -> i64 {
    let resp = client
        .clone()
        .get("\0", None)
        .await
        .expect("etcd get for revision");
    resp.header().expect("get response header").revision()
}

// ----------------------------------------------------------------------------
// rpcdns
// ----------------------------------------------------------------------------

/// The real rpcdns binary, its captured log, and its bound addresses.
pub struct Rpcdns {
    child: Child,
    log: Arc<Mutex<String>>,
    pub dns_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

pub fn rpcdns_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rpcdns")
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The `ADDR:PORT` after `marker` on some line of `log`.
fn find_addr(log: &str, marker: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let rest = &line[line.find(marker)? + marker.len()..];
        let token: String = rest
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
            .collect();
        token.parse().ok()
    })
}

impl Rpcdns {
    /// Starts rpcdns against `etcd` (`HOST:PORT`), on port-0 listeners,
    /// with `extra` arguments appended.
    pub fn start(etcd: &str, extra: &[&str]) -> Rpcdns {
        let mut args: Vec<String> = vec![
            "--etcd".into(),
            etcd.into(),
            "--dns-listen".into(),
            "127.0.0.1:0".into(),
            "--http-listen".into(),
            "127.0.0.1:0".into(),
            "--log-format".into(),
            "text".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(&args)
    }

    /// Starts rpcdns with exactly `args`.
    pub fn spawn(args: &[String]) -> Rpcdns {
        Self::spawn_with(args, |_| {})
    }

    /// Starts rpcdns with exactly `args`, after `configure` has had its say
    /// on the command (resource limits, environment).
    pub fn spawn_with(args: &[String], configure: impl FnOnce(&mut Command)) -> Rpcdns {
        let mut command = Command::new(rpcdns_bin());
        command
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().expect("spawn rpcdns");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout = child.stdout.take().expect("piped stdout");
        for stream in [Box::new(stderr) as Box<dyn Read + Send>, Box::new(stdout)] {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&strip_ansi(&line));
                    log.push('\n');
                }
            });
        }
        let deadline = Instant::now() + RPCDNS_START;
        loop {
            let text = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let dns = find_addr(&text, "listening for dns on ");
            let http = find_addr(&text, "listening for http on ");
            if let (Some(dns_addr), Some(http_addr)) = (dns, http) {
                return Rpcdns {
                    child,
                    log,
                    dns_addr,
                    http_addr,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Give the reader threads a moment's worth of polls to drain.
                std::thread::sleep(Duration::from_millis(100));
                let text = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
                panic!("rpcdns {args:?} exited with {status} before listening; log:\n{text}");
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "rpcdns {args:?} did not log both listening lines within {RPCDNS_START:?}; log:\n{text}"
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The process ID, for reading /proc/<pid> (memory, open files).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB (VmRSS of /proc/<pid>/status).
    pub fn rss_kib(&self) -> Result<u64, String> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no VmRSS line in {path}"))
    }

    /// Number of open file descriptors (entries of /proc/<pid>/fd).
    pub fn open_fds(&self) -> Result<usize, String> {
        let path = format!("/proc/{}/fd", self.pid());
        std::fs::read_dir(&path)
            .map(|dir| dir.count())
            .map_err(|e| format!("{path}: {e}"))
    }

    /// Everything rpcdns has written so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Status code of GET /readyz.
    pub fn readyz(&self) -> Result<u16, String> {
        http_get(self.http_addr, "/readyz").map(|(code, _)| code)
    }

    /// Waits until /readyz answers 200.
    #[track_caller]
    pub fn wait_ready(&self) {
        self.wait_ready_within(PROPAGATION);
    }

    #[track_caller]
    pub fn wait_ready_within(&self, within: Duration) {
        eventually(within, || match self.readyz()? {
            200 => Ok(()),
            code => Err(format!("/readyz answered {code}")),
        });
    }

    /// GET /debug/zone, parsed.
    pub fn debug_zone(&self) -> Result<serde_json::Value, String> {
        let (code, body) = http_get(self.http_addr, "/debug/zone")?;
        if code != 200 {
            return Err(format!("/debug/zone answered {code}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("/debug/zone is not JSON ({e}): {body}"))
    }

    /// The `skipped` list of /debug/zone as (key, reason) pairs.
    pub fn skipped(&self) -> Result<Vec<(String, String)>, String> {
        let zone = self.debug_zone()?;
        let list = zone
            .get("skipped")
            .and_then(|s| s.as_array())
            .ok_or_else(|| format!("/debug/zone has no \"skipped\" list: {zone}"))?;
        Ok(list
            .iter()
            .map(|e| {
                let key = e.get("key").and_then(|k| k.as_str()).unwrap_or_default();
                let reason = e.get("reason").and_then(|k| k.as_str()).unwrap_or_default();
                (key.to_string(), reason.to_string())
            })
            .collect())
    }

    /// `etcd_connected` of /debug/zone.
    pub fn etcd_connected(&self) -> Result<bool, String> {
        let zone = self.debug_zone()?;
        zone.get("etcd_connected")
            .and_then(|c| c.as_bool())
            .ok_or_else(|| format!("/debug/zone has no boolean \"etcd_connected\": {zone}"))
    }

    /// Exit status if the process has ended.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM (through kill(1): std only sends SIGKILL) and waits up
    /// to `within` for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.signal("TERM");
        self.wait_exit(within)
    }

    /// Sends `signal` (`TERM`, `INT`) through kill(1).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill(1)");
        assert!(sent.success(), "kill -{signal} {} failed", self.child.id());
    }

    /// Waits up to `within` for the process to exit; its status, if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The captured output so far, line by line.
    pub fn lines(&self) -> Vec<String> {
        self.log().lines().map(str::to_owned).collect()
    }
}

impl Drop for Rpcdns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- rpcdns log (dns {}, http {}) -----\n{}----- end of rpcdns log -----",
                self.dns_addr,
                self.http_addr,
                self.log()
            );
        }
    }
}

/// What a finished program printed.
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// stdout and stderr, for messages and for tools that warn on stderr.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn expect_success(&self, what: &str) -> &Ran {
        assert!(
            self.status.success(),
            "{what} exited with {}:\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `cmd` to completion within `within`, killing it (and failing the
/// test) when it takes longer, so that a hung client cannot hang the suite.
#[track_caller]
pub fn run(cmd: &mut Command, within: Duration) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out_pipe.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = out_thread.join().unwrap_or_default();
            let err = err_thread.join().unwrap_or_default();
            panic!("{cmd:?} still running after {within:?}; stdout:\n{out}\nstderr:\n{err}");
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    Ran {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    }
}

/// Runs `rpcdns args...` to completion (for check-config and bad configs).
pub fn run_rpcdns(args: &[&str], within: Duration) -> (Option<i32>, String, String) {
    let ran = run(
        Command::new(rpcdns_bin())
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG"),
        within,
    );
    (
        ran.status.code(),
        strip_ansi(&ran.stdout),
        strip_ansi(&ran.stderr),
    )
}

/// One etcd, one client and one rpcdns, ready.
pub struct TestEnv {
    pub rpcdns: Rpcdns,
    pub client: Client,
    pub etcd: Etcd,
}

impl TestEnv {
    pub async fn start(extra: &[&str]) -> TestEnv {
        let etcd = Etcd::start();
        let client = etcd.client().await;
        let rpcdns = Rpcdns::start(&etcd.endpoint(), extra);
        rpcdns.wait_ready();
        TestEnv {
            rpcdns,
            client,
            etcd,
        }
    }

    pub fn dns(&self) -> SocketAddr {
        self.rpcdns.dns_addr
    }
}

/// Writes `yaml` as `name` into `dir`; returns its path.
pub fn write_config(dir: &std::path::Path, name: &str, yaml: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write rpcdns config");
    path.display().to_string()
}

/// Starts rpcdns against `etcd` (`HOST:PORT`) with `yaml` as its config
/// file, and waits until it is ready (the file is read at start only).
pub fn start_with_config(etcd: &str, yaml: &str) -> Rpcdns {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "rpcdns.yaml", yaml);
    let rpcdns = Rpcdns::start(etcd, &["--config", &config]);
    rpcdns.wait_ready();
    rpcdns
}

/// Waits until `/debug/zone` lists `key` as skipped for `reason`.
pub fn wait_skipped(rpcdns: &Rpcdns, key: &str, reason: &str) {
    eventually(Duration::from_secs(10), || {
        let skipped = rpcdns.skipped()?;
        if skipped.contains(&(key.to_owned(), reason.to_owned())) {
            Ok(())
        } else {
            Err(format!("skipped: {skipped:?}"))
        }
    });
}

// ----------------------------------------------------------------------------
// HTTP
// ----------------------------------------------------------------------------

/// The value of one series in /metrics (name and labels as rendered).
pub fn metric(http: SocketAddr, series: &str) -> Result<f64, String> {
    let (code, body) = http_get(http, "/metrics")?;
    if code != 200 {
        return Err(format!("/metrics answered {code}"));
    }
    body.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .ok_or_else(|| format!("/metrics has no series {series}"))
}

/// GET `path` with HTTP/1.1 over a fresh connection; returns (status, body).
pub fn http_get(addr: impl ToSocketAddrs, path: &str) -> Result<(u16, String), String> {
    let addr = addr
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut stream = TcpStream::connect_timeout(&addr, QUERY_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(QUERY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write request: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read response from {addr}{path}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in response: {text:?}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status code in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size_line, rest) = body.split_once("\r\n").ok_or("bad chunk framing")?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size_line:?}: {e}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("chunk shorter than its size")?;
        out.push_str(chunk);
        body = rest.get(size + 2..).ok_or("chunk without CRLF")?;
    }
}

// ----------------------------------------------------------------------------
// DNS clients
// ----------------------------------------------------------------------------

/// A query message for `name`/`rtype`, RD clear, with EDNS(0) advertising
/// `edns` octets when given.
pub fn build_query(name: &str, rtype: RecordType, edns: Option<u16>) -> Message {
    let name = Name::from_ascii(name).unwrap_or_else(|e| panic!("bad test name {name}: {e}"));
    let mut msg = Message::query();
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(name, rtype));
    if let Some(payload) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        e.set_version(0);
        msg.set_edns(e);
    }
    msg
}

/// Sends `bytes` over UDP; the reply's bytes, or None after `timeout`.
pub fn udp_raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client UDP socket");
    socket.set_read_timeout(Some(timeout)).expect("set timeout");
    socket.send_to(bytes, addr).expect("send UDP query");
    let mut buf = vec![0u8; 65535];
    let deadline = Instant::now() + timeout;
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == addr => return Some(buf[..n].to_vec()),
            Ok(_) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// Sends every message in `queries` on one TCP connection (written in one
/// go, pipelined) and reads as many framed replies.
pub fn tcp_raw_many(addr: SocketAddr, queries: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
    let mut stream = TcpStream::connect_timeout(&addr, QUERY_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(QUERY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for q in queries {
        let len = u16::try_from(q.len()).map_err(|_| "query too long for TCP")?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(q);
    }
    stream.write_all(&out).map_err(|e| format!("write: {e}"))?;
    let mut replies = Vec::new();
    for i in 0..queries.len() {
        let mut len = [0u8; 2];
        stream
            .read_exact(&mut len)
            .map_err(|e| format!("reading length of reply {i}: {e}"))?;
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        stream
            .read_exact(&mut reply)
            .map_err(|e| format!("reading reply {i}: {e}"))?;
        replies.push(reply);
    }
    Ok(replies)
}

/// One query over TCP, raw bytes in and out.
pub fn tcp_raw(addr: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>, String> {
    tcp_raw_many(addr, &[bytes.to_vec()]).map(|mut v| v.remove(0))
}

fn decode_reply(query: &Message, bytes: &[u8]) -> Result<Message, String> {
    let reply = Message::from_vec(bytes).map_err(|e| format!("undecodable reply: {e}"))?;
    if reply.metadata.id != query.metadata.id {
        return Err(format!(
            "reply id {} for query id {}",
            reply.metadata.id, query.metadata.id
        ));
    }
    Ok(reply)
}

/// A UDP exchange returning the reply and its size in octets.
pub fn try_exchange_udp(addr: SocketAddr, query: &Message) -> Result<(Message, usize), String> {
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    let reply = udp_raw(addr, &bytes, QUERY_TIMEOUT).ok_or_else(|| {
        format!(
            "no UDP reply within {QUERY_TIMEOUT:?} to {:?}",
            query.queries
        )
    })?;
    Ok((decode_reply(query, &reply)?, reply.len()))
}

pub fn try_exchange_tcp(addr: SocketAddr, query: &Message) -> Result<Message, String> {
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    decode_reply(query, &tcp_raw(addr, &bytes)?)
}

pub fn try_query_udp(
    addr: SocketAddr,
    name: &str,
    rtype: RecordType,
    edns: Option<u16>,
) -> Result<Message, String> {
    try_exchange_udp(addr, &build_query(name, rtype, edns)).map(|(m, _)| m)
}

#[track_caller]
pub fn query_udp(addr: SocketAddr, name: &str, rtype: RecordType, edns: Option<u16>) -> Message {
    try_query_udp(addr, name, rtype, edns)
        .unwrap_or_else(|e| panic!("UDP query {name} {rtype}: {e}"))
}

pub fn try_query_tcp(
    addr: SocketAddr,
    name: &str,
    rtype: RecordType,
    edns: Option<u16>,
) -> Result<Message, String> {
    try_exchange_tcp(addr, &build_query(name, rtype, edns))
}

#[track_caller]
pub fn query_tcp(addr: SocketAddr, name: &str, rtype: RecordType, edns: Option<u16>) -> Message {
    try_query_tcp(addr, name, rtype, edns)
        .unwrap_or_else(|e| panic!("TCP query {name} {rtype}: {e}"))
}

// ----------------------------------------------------------------------------
// Raw DNS messages
// ----------------------------------------------------------------------------

/// Wire form of `name`, letter case kept as given (`SmS.rpc.` stays so).
pub fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(u8::try_from(label.len()).expect("test label fits a length byte"));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A raw OPT record: `payload` size, EDNS `version`, the 16 flag bits, and
/// options as (code, data).
pub fn raw_opt(payload: u16, version: u8, flags: u16, options: &[(u16, &[u8])]) -> Vec<u8> {
    let mut rdata = Vec::new();
    for (code, data) in options {
        rdata.extend_from_slice(&code.to_be_bytes());
        rdata.extend_from_slice(&(data.len() as u16).to_be_bytes());
        rdata.extend_from_slice(data);
    }
    let mut out = vec![0u8]; // root owner name
    out.extend_from_slice(&41u16.to_be_bytes());
    out.extend_from_slice(&payload.to_be_bytes());
    out.push(0); // extended rcode
    out.push(version);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(&rdata);
    out
}

/// A raw query: header with `id`, all flags clear, one question of `name`
/// (case kept) and `qtype` class IN, and `opt` as the one additional record.
pub fn raw_query(id: u16, name: &str, qtype: u16, opt: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // flags
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&0u16.to_be_bytes()); // ANCOUNT
    out.extend_from_slice(&0u16.to_be_bytes()); // NSCOUNT
    out.extend_from_slice(&(u16::from(opt.is_some())).to_be_bytes()); // ARCOUNT
    out.extend_from_slice(&encode_name(name));
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes()); // IN
    if let Some(opt) = opt {
        out.extend_from_slice(&opt);
    }
    out
}

/// RCODE (low four bits) of a raw message.
pub fn raw_rcode(msg: &[u8]) -> u8 {
    msg[3] & 0x0f
}

// ----------------------------------------------------------------------------
// Answer inspection
// ----------------------------------------------------------------------------

pub fn a_of(records: &[Record]) -> Vec<Ipv4Addr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

pub fn aaaa_of(records: &[Record]) -> Vec<Ipv6Addr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

pub fn srv_of(records: &[Record]) -> Vec<SRV> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// Each TXT record among `records`, as hickory displays it.
pub fn txt_of(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(t.to_string()),
            _ => None,
        })
        .collect()
}

/// The first SOA record among `records`, with its TTL and owner.
pub fn soa_of(records: &[Record]) -> Option<(SOA, u32, Name)> {
    records.iter().find_map(|r| match &r.data {
        RData::SOA(s) => Some((s.clone(), r.ttl, r.name.clone())),
        _ => None,
    })
}

/// Lower-cased absolute text of a name (`sms.rpc.svc.local.`).
pub fn lower(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// The set of IPv4 addresses in the answer section.
pub fn a_set(msg: &Message) -> BTreeSet<Ipv4Addr> {
    a_of(&msg.answers).into_iter().collect()
}

pub fn ipv4s(list: &[&str]) -> BTreeSet<Ipv4Addr> {
    list.iter()
        .map(|s| s.parse().expect("test address"))
        .collect()
}

/// Ok when `name` A answers exactly `want` (as a set, over UDP+EDNS).
pub fn check_a(dns: SocketAddr, name: &str, want: &BTreeSet<Ipv4Addr>) -> Result<(), String> {
    let msg = try_query_udp(dns, name, RecordType::A, Some(1232))?;
    let got = a_set(&msg);
    if msg.metadata.response_code.low() == 0 && &got == want {
        Ok(())
    } else {
        Err(format!(
            "{name} A: rcode {} answers {got:?}, want {want:?}",
            msg.metadata.response_code
        ))
    }
}

/// Ok when `name` A is NXDOMAIN.
pub fn check_nxdomain(dns: SocketAddr, name: &str) -> Result<(), String> {
    let msg = try_query_udp(dns, name, RecordType::A, Some(1232))?;
    match msg.metadata.response_code {
        hickory_proto::op::ResponseCode::NXDomain => Ok(()),
        code => Err(format!(
            "{name} A: rcode {code}, answers {:?}",
            a_of(&msg.answers)
        )),
    }
}

/// First 16 hex digits of the SHA-256 of `key` (the hashed instance label).
pub fn hashed_label(key: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

// ----------------------------------------------------------------------------
// Proxy
// ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyState {
    Open,
    Cut,
    Shutdown,
}

/// A TCP proxy to one target that a test can cut (close every connection
/// and refuse new ones) and restore (accept again on the same port). It
/// runs on its own thread and runtime, so a test blocked in a synchronous
/// DNS query never stalls it.
pub struct Proxy {
    addr: SocketAddr,
    control: tokio::sync::watch::Sender<ProxyState>,
    listening: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts an open proxy on a free loopback port.
    pub fn start(target: SocketAddr) -> Proxy {
        Self::start_in(target, ProxyState::Open)
    }

    /// Starts a proxy whose port is chosen but which refuses connections
    /// until `restore()`.
    pub fn start_cut(target: SocketAddr) -> Proxy {
        Self::start_in(target, ProxyState::Cut)
    }

    fn start_in(target: SocketAddr, initial: ProxyState) -> Proxy {
        let port = free_ports(1)[0];
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let (control, rx) = tokio::sync::watch::channel(initial);
        let listening = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (l, c) = (Arc::clone(&listening), Arc::clone(&connections));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(proxy_loop(addr, target, rx, l, c));
        });
        let proxy = Proxy {
            addr,
            control,
            listening,
            connections,
            thread: Some(thread),
        };
        if initial == ProxyState::Open {
            proxy.wait_listening(true);
        }
        proxy
    }

    /// `127.0.0.1:PORT` to give rpcdns as `--etcd`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Closes every open connection and refuses new ones; returns when done.
    pub fn cut(&self) {
        self.control.send_replace(ProxyState::Cut);
        self.wait_listening(false);
        eventually(Duration::from_secs(5), || {
            match self.connections.load(Ordering::SeqCst) {
                0 => Ok(()),
                n => Err(format!("{n} proxied connections still open")),
            }
        });
    }

    /// Accepts connections again on the same port; returns when listening.
    pub fn restore(&self) {
        self.control.send_replace(ProxyState::Open);
        self.wait_listening(true);
    }

    fn wait_listening(&self, want: bool) {
        eventually(Duration::from_secs(5), || {
            if self.listening.load(Ordering::SeqCst) == want {
                Ok(())
            } else {
                Err(format!("proxy listening != {want}"))
            }
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.control.send_replace(ProxyState::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn proxy_loop(
    addr: SocketAddr,
    target: SocketAddr,
    mut rx: tokio::sync::watch::Receiver<ProxyState>,
    listening: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
) {
    loop {
        // Wait to be open.
        loop {
            match *rx.borrow_and_update() {
                ProxyState::Open => break,
                ProxyState::Shutdown => return,
                ProxyState::Cut => {}
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
        let listener = loop {
            let socket = tokio::net::TcpSocket::new_v4().expect("proxy socket");
            socket.set_reuseaddr(true).expect("SO_REUSEADDR");
            match socket.bind(addr).and_then(|()| socket.listen(128)) {
                Ok(l) => break l,
                // The port may still be held by a closing socket; try again.
                Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        };
        listening.store(true, Ordering::SeqCst);
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() || *rx.borrow() != ProxyState::Open {
                        break;
                    }
                }
                accepted = listener.accept() => {
                    let Ok((inbound, _)) = accepted else { continue };
                    let mut conn_rx = rx.clone();
                    let conns = Arc::clone(&connections);
                    conns.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let mut inbound = inbound;
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = conn_rx.wait_for(|s| *s != ProxyState::Open) => {}
                            }
                        }
                        conns.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }
        }
        drop(listener);
        listening.store(false, Ordering::SeqCst);
        if *rx.borrow() == ProxyState::Shutdown {
            return;
        }
    }
}

// ----------------------------------------------------------------------------
// Tests of the harness itself (no rpcdns needed)
// ----------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_restart_keeps_data_and_registration_follows_lease() {
        let mut etcd = Etcd::start();
        let client = etcd.client().await;
        let rev = put(&client, "a.rpc/1", "10.0.0.1:80").await;
        assert!(rev > 1, "put revision {rev}");
        let reg = register(&client, "sms.rpc", "10.0.0.5:8001", 10).await;
        assert_eq!(reg.key(), format!("sms.rpc/{}", reg.id()));
        let got = client.clone().get(reg.key(), None).await.expect("get");
        assert_eq!(got.kvs()[0].value(), b"10.0.0.5:8001");
        assert_eq!(got.kvs()[0].lease(), reg.id());
        reg.revoke().await;
        let got = client.clone().get("sms.rpc/", None).await.expect("get");
        assert!(got.kvs().is_empty(), "revoke deletes the key");

        etcd.stop();
        assert!(
            http_get(etcd.client_addr(), "/health").is_err(),
            "stopped etcd still answers"
        );
        etcd.restart();
        let client = etcd.client().await;
        let got = client
            .clone()
            .get("a.rpc/1", None)
            .await
            .expect("get after restart");
        assert_eq!(got.kvs()[0].value(), b"10.0.0.1:80");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proxy_cut_and_restore() {
        let etcd = Etcd::start();
        let proxy = Proxy::start(etcd.client_addr());
        let (code, body) = http_get(proxy.endpoint().as_str(), "/health").expect("through proxy");
        assert_eq!(code, 200, "{body}");
        // A long-lived connection is closed by cut().
        let mut held = TcpStream::connect(proxy.endpoint()).expect("connect");
        held.set_read_timeout(Some(QUERY_TIMEOUT)).expect("timeout");
        proxy.cut();
        let mut buf = [0u8; 1];
        assert!(
            matches!(held.read(&mut buf), Ok(0) | Err(_)),
            "held connection survives cut"
        );
        assert!(
            TcpStream::connect(proxy.endpoint()).is_err(),
            "cut proxy accepts"
        );
        proxy.restore();
        let (code, _) = http_get(proxy.endpoint().as_str(), "/health").expect("after restore");
        assert_eq!(code, 200);
    }

    #[test]
    fn raw_helpers_build_what_hickory_reads() {
        let q = raw_query(7, "SmS.rpc.svc.local.", 1, Some(raw_opt(1232, 0, 0, &[])));
        let m = Message::from_vec(&q).expect("decodes");
        assert_eq!(m.metadata.id, 7);
        assert_eq!(m.queries[0].name().to_ascii(), "SmS.rpc.svc.local.");
        assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
        assert_eq!(hashed_label(b"abc"), "ba7816bf8f01cfea");
        assert_eq!(strip_ansi("\u{1b}[32mINFO\u{1b}[0m x"), "INFO x");
        assert_eq!(
            find_addr(
                "2025 INFO listening for dns on 127.0.0.1:5353 x",
                "listening for dns on "
            ),
            Some("127.0.0.1:5353".parse().expect("addr"))
        );
    }
}
