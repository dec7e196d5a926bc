//! Benchmark probe for `bench/propagation.sh` and `bench/scale.sh`: loads a
//! synthetic go-zero dataset into etcd, writes the equivalent zone file and a
//! dnsperf query file, times etcd changes until DNS answers reflect them, and
//! reads first-sync times out of rpcdns's JSON log.
//!
//! The dataset is S services × K instances, derived from the two numbers
//! alone so that every subcommand agrees on it without sharing files:
//!
//! ```text
//! key    svc<s>.rpc/<7000000000000000000 + n>     n = s·K + k, the instance's index
//! value  127.<1 + n/65536>.<n/256 % 256>.<n % 256>:<8000 + s % 1000>
//! ```
//!
//! Addresses are loopback ones (SPEC §1 accepts them), so the data points at
//! nothing but this machine. Nothing here sleeps: DNS is polled in a tight
//! loop, each poll bounded by a per-query timeout and the whole wait by a
//! deadline.
//!
//! Subcommands (`--help` on each): `load`, `zonefile`, `queries`, `probe`,
//! `sync-times`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use etcd_client::{Client, KvClient, Txn, TxnOp};
use tokio::net::UdpSocket;

/// First instance id of the dataset; ids look like go-zero lease ids (19
/// decimal digits).
const DATASET_ID_BASE: u64 = 7_000_000_000_000_000_000;
/// First instance id the probe adds; never collides with the dataset's.
const PROBE_ID_BASE: u64 = 9_100_000_000_000_000_000;
/// First port of the dataset's services.
const PORT_BASE: u16 = 8000;
/// How long one DNS poll waits for its reply before asking again.
const POLL_TIMEOUT: Duration = Duration::from_millis(200);
/// DNS header flags of a response: QR bit.
const FLAG_QR: u8 = 0x80;
/// RCODE values (RFC 1035 §4.1.1).
const RCODE_NOERROR: u8 = 0;
const RCODE_NXDOMAIN: u8 = 3;
/// Record types and class (RFC 1035 §3.2.2, RFC 2782).
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

#[derive(Parser)]
#[command(about = "rpcdns benchmark probe (propagation and scale)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone, Copy)]
struct Dataset {
    /// Number of services (S).
    #[arg(long)]
    services: u64,
    /// Instances per service (K).
    #[arg(long)]
    per_service: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Puts the dataset into etcd (no lease), in concurrent transactions.
    Load {
        #[command(flatten)]
        dataset: Dataset,
        /// etcd endpoint, HOST:PORT.
        #[arg(long)]
        etcd: String,
        /// Puts per transaction (etcd's --max-txn-ops must allow it).
        #[arg(long, default_value_t = 128)]
        batch: u64,
        /// Transactions in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Writes the RFC 1035 zone file of the records rpcdns serves for the
    /// dataset (SPEC §4), for Knot.
    Zonefile {
        #[command(flatten)]
        dataset: Dataset,
        /// Zone apex, absolute.
        #[arg(long, default_value = "svc.local.")]
        zone: String,
        /// TTL of positive answers (rpcdns's `ttl`).
        #[arg(long, default_value_t = 5)]
        ttl: u32,
        /// SOA minimum (rpcdns's `negative_ttl`).
        #[arg(long, default_value_t = 5)]
        negative_ttl: u32,
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes a dnsperf query file: 45% service A, 45% SRV (half of them at
    /// the `_grpc._tcp` name), 10% names that do not exist.
    Queries {
        #[command(flatten)]
        dataset: Dataset,
        #[arg(long, default_value = "svc.local.")]
        zone: String,
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Times changes: for each, put a new instance into a service (then
    /// delete it) and poll DNS until the answer reflects the change.
    Probe {
        /// Services of the loaded dataset; changes go into these.
        #[arg(long)]
        services: u64,
        /// etcd endpoint, HOST:PORT.
        #[arg(long)]
        etcd: String,
        /// rpcdns DNS address.
        #[arg(long)]
        dns: SocketAddr,
        #[arg(long, default_value = "svc.local.")]
        zone: String,
        /// Number of puts (each followed by the delete of the same key,
        /// unless --puts-only).
        #[arg(long, default_value_t = 1000)]
        changes: u64,
        /// Only put (the instances stay), for update-time measurements.
        #[arg(long)]
        puts_only: bool,
        /// Give up on one change after this many milliseconds.
        #[arg(long, default_value_t = 5000)]
        deadline_ms: u64,
        /// Changes made first and not counted (connections, caches).
        #[arg(long, default_value_t = 20)]
        warmup: u64,
    },
    /// Reads rpcdns's JSON log and prints the first-sync times.
    SyncTimes {
        /// rpcdns's log (`--log-format json`).
        #[arg(long)]
        log: PathBuf,
        /// When rpcdns was started, seconds since the epoch (bash's
        /// $EPOCHREALTIME).
        #[arg(long)]
        started: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Load {
            dataset,
            etcd,
            batch,
            concurrency,
        } => runtime(true).and_then(|rt| rt.block_on(load(dataset, &etcd, batch, concurrency))),
        Command::Zonefile {
            dataset,
            zone,
            ttl,
            negative_ttl,
            out,
        } => zonefile(dataset, &zone, ttl, negative_ttl, &out),
        Command::Queries {
            dataset,
            zone,
            count,
            out,
        } => queries(dataset, &zone, count, &out),
        Command::Probe {
            services,
            etcd,
            dns,
            zone,
            changes,
            puts_only,
            deadline_ms,
            warmup,
        } => {
            let plan = ProbePlan {
                services,
                zone,
                changes,
                puts_only,
                deadline: Duration::from_millis(deadline_ms),
                warmup,
            };
            runtime(false).and_then(|rt| rt.block_on(probe(&etcd, dns, &plan)))
        }
        Command::SyncTimes { log, started } => sync_times(&log, started),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("propagation_probe: {error}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        // The probe times single round trips: one thread, no hand-offs.
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))
}

// ---------------------------------------------------------------------------
// Dataset
// ---------------------------------------------------------------------------

fn service_key(s: u64) -> String {
    format!("svc{s}.rpc")
}

/// The loopback address of instance `n` (n ≤ 64·2^16, see [`check_size`]).
fn address(n: u64) -> Ipv4Addr {
    let n = n as u32; // datasets stay far below 2^32 instances
    Ipv4Addr::new(127, 1 + (n >> 16) as u8, (n >> 8) as u8, n as u8)
}

fn port(s: u64) -> u16 {
    PORT_BASE + (s % 1000) as u16
}

/// (key, value, instance id) of instance `k` of service `s`.
fn instance(dataset: Dataset, s: u64, k: u64) -> (String, String, u64) {
    let n = s * dataset.per_service + k;
    let id = DATASET_ID_BASE + n;
    (
        format!("{}/{id}", service_key(s)),
        format!("{}:{}", address(n), port(s)),
        id,
    )
}

fn check_size(dataset: Dataset) -> Result<u64, String> {
    let total = dataset.services * dataset.per_service;
    // Second address octet 1..=64: below the probe's 127.200/16.
    if total == 0 || total > 64 << 16 {
        return Err(format!(
            "{total} instances: the dataset must have 1..={} instances",
            64 << 16
        ));
    }
    Ok(total)
}

async fn load(dataset: Dataset, etcd: &str, batch: u64, concurrency: usize) -> Result<(), String> {
    let total = check_size(dataset)?;
    let client = Client::connect([etcd], None)
        .await
        .map_err(|e| format!("cannot connect to etcd at {etcd}: {e}"))?;
    let started = Instant::now();
    // Workers take the next batch of instance indexes from one counter.
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let mut kv: KvClient = client.kv_client();
        let next = next.clone();
        workers.spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= total {
                    return Ok::<(), String>(());
                }
                let ops: Vec<TxnOp> = (first..(first + batch).min(total))
                    .map(|n| {
                        let (key, value, _) =
                            instance(dataset, n / dataset.per_service, n % dataset.per_service);
                        TxnOp::put(key, value, None)
                    })
                    .collect();
                kv.txn(Txn::new().and_then(ops))
                    .await
                    .map_err(|e| format!("etcd transaction at instance {first}: {e}"))?;
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.map_err(|e| format!("loader task failed: {e}"))??;
    }
    let elapsed = started.elapsed();
    println!(
        "loaded {total} instances ({} services x {}) in {:.2} s ({:.0} keys/s)",
        dataset.services,
        dataset.per_service,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

fn create(path: &PathBuf) -> Result<BufWriter<File>, String> {
    File::create(path)
        .map(|f| BufWriter::with_capacity(1 << 20, f))
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

fn zonefile(
    dataset: Dataset,
    zone: &str,
    ttl: u32,
    negative_ttl: u32,
    out: &PathBuf,
) -> Result<(), String> {
    check_size(dataset)?;
    let mut w = create(out)?;
    let write = |w: &mut BufWriter<File>| -> std::io::Result<()> {
        writeln!(w, "$ORIGIN {zone}")?;
        writeln!(w, "$TTL {ttl}")?;
        writeln!(
            w,
            "@ IN SOA ns.{zone} hostmaster.{zone} 1 60 10 86400 {negative_ttl}"
        )?;
        writeln!(w, "@ IN NS ns.{zone}")?;
        for s in 0..dataset.services {
            let svc = service_key(s);
            for k in 0..dataset.per_service {
                let (_, _, id) = instance(dataset, s, k);
                let n = s * dataset.per_service + k;
                let ip = address(n);
                writeln!(w, "{svc} IN A {ip}")?;
                writeln!(w, "{svc} IN SRV 0 10 {} {id}.{svc}", port(s))?;
                writeln!(w, "_grpc._tcp.{svc} IN SRV 0 10 {} {id}.{svc}", port(s))?;
                writeln!(w, "{id}.{svc} IN A {ip}")?;
            }
        }
        w.flush()
    };
    write(&mut w).map_err(|e| format!("cannot write {}: {e}", out.display()))
}

fn queries(dataset: Dataset, zone: &str, count: u64, out: &PathBuf) -> Result<(), String> {
    check_size(dataset)?;
    let mut w = create(out)?;
    let mut write = || -> std::io::Result<()> {
        for i in 0..count {
            // A fixed stride walks the services in a scattered order without
            // a random number generator: the file is the same every run.
            let s = (i.wrapping_mul(7919)) % dataset.services;
            let svc = service_key(s);
            match i % 20 {
                0..=8 => writeln!(w, "{svc}.{zone} A")?,
                9..=12 => writeln!(w, "{svc}.{zone} SRV")?,
                13..=17 => writeln!(w, "_grpc._tcp.{svc}.{zone} SRV")?,
                _ => writeln!(w, "nope{i}.rpc.{zone} A")?,
            }
        }
        w.flush()
    };
    write().map_err(|e| format!("cannot write {}: {e}", out.display()))
}

// ---------------------------------------------------------------------------
// DNS polling
// ---------------------------------------------------------------------------

/// A UDP DNS client for one name: the query is encoded once, and only its
/// ID changes from one poll to the next.
struct Poller {
    socket: UdpSocket,
    query: Vec<u8>,
    id: u16,
    reply: Vec<u8>,
}

/// What one reply said.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// NOERROR with this A record in the answer section.
    Address,
    NxDomain,
    /// Anything else (NOERROR without our address, another rcode).
    Other,
}

impl Poller {
    async fn new(server: SocketAddr) -> Result<Self, String> {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind a UDP socket: {e}"))?;
        socket
            .connect(server)
            .await
            .map_err(|e| format!("cannot connect a UDP socket to {server}: {e}"))?;
        Ok(Self {
            socket,
            query: Vec::with_capacity(300),
            id: 0,
            reply: vec![0; 65_535],
        })
    }

    /// Sets the name the next polls ask for (type A, class IN, RD clear,
    /// no EDNS: the reply is the plain RFC 1035 form).
    fn ask(&mut self, name: &str) {
        encode_query(&mut self.query, name);
    }

    /// One exchange; `None` when no reply came within [`POLL_TIMEOUT`].
    async fn poll(&mut self, want: Ipv4Addr) -> Result<Option<Seen>, String> {
        self.id = self.id.wrapping_add(1);
        self.query[..2].copy_from_slice(&self.id.to_be_bytes());
        self.socket
            .send(&self.query)
            .await
            .map_err(|e| format!("DNS send: {e}"))?;
        let deadline = tokio::time::Instant::now() + POLL_TIMEOUT;
        loop {
            let received =
                tokio::time::timeout_at(deadline, self.socket.recv(&mut self.reply)).await;
            let len = match received {
                Err(_) => return Ok(None),
                Ok(Err(e)) => return Err(format!("DNS receive: {e}")),
                Ok(Ok(len)) => len,
            };
            let reply = &self.reply[..len];
            // A late reply to an earlier poll is not this one's.
            if len < 12 || reply[..2] != self.id.to_be_bytes() || reply[2] & FLAG_QR == 0 {
                continue;
            }
            return Ok(Some(classify(reply, self.query.len(), want)));
        }
    }
}

/// Writes an A/IN query for `name` with ID 0 into `buf`.
fn encode_query(buf: &mut Vec<u8>, name: &str) {
    buf.clear();
    buf.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        // Names built here have labels well under 64 octets.
        buf.push(label.len() as u8);
        buf.extend_from_slice(label.as_bytes());
    }
    buf.push(0);
    buf.extend_from_slice(&TYPE_A.to_be_bytes());
    buf.extend_from_slice(&CLASS_IN.to_be_bytes());
}

/// Reads the rcode and the answer section of a reply to our query (whose
/// question is `question_end - 12` octets long and is echoed first).
fn classify(reply: &[u8], question_end: usize, want: Ipv4Addr) -> Seen {
    let rcode = reply[3] & 0x0f;
    if rcode == RCODE_NXDOMAIN {
        return Seen::NxDomain;
    }
    if rcode != RCODE_NOERROR {
        return Seen::Other;
    }
    let answers = u16::from_be_bytes([reply[6], reply[7]]);
    let mut at = question_end;
    for _ in 0..answers {
        // Owner name: labels ending in a zero octet or a 2-octet pointer.
        loop {
            let Some(&len) = reply.get(at) else {
                return Seen::Other;
            };
            if len & 0xc0 == 0xc0 {
                at += 2;
                break;
            }
            at += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        let Some(fixed) = reply.get(at..at + 10) else {
            return Seen::Other;
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        at += 10;
        let Some(rdata) = reply.get(at..at + rdlen) else {
            return Seen::Other;
        };
        if rtype == TYPE_A && rdata == want.octets() {
            return Seen::Address;
        }
        at += rdlen;
    }
    Seen::Other
}

// ---------------------------------------------------------------------------
// Probe
// ---------------------------------------------------------------------------

struct ProbePlan {
    services: u64,
    zone: String,
    changes: u64,
    puts_only: bool,
    deadline: Duration,
    warmup: u64,
}

/// Durations of one kind of change, plus how many never showed.
#[derive(Default)]
struct Samples {
    visible: Vec<Duration>,
    rpc: Vec<Duration>,
    polls: u64,
    missed: u64,
}

impl Samples {
    fn report(&mut self, what: &str) {
        let n = self.visible.len();
        self.visible.sort();
        self.rpc.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let pct = |v: &[Duration], p: f64| -> f64 {
            if v.is_empty() {
                return f64::NAN;
            }
            // Nearest rank: the smallest sample with at least p% at or below.
            let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
            ms(v[rank.min(v.len()) - 1])
        };
        let mean = if n == 0 {
            f64::NAN
        } else {
            self.visible.iter().map(|d| ms(*d)).sum::<f64>() / n as f64
        };
        println!(
            "{what:<6} n={n} p50={:.3}ms p90={:.3}ms p99={:.3}ms max={:.3}ms mean={:.3}ms \
             missed={} polls/change={:.1} rpc_p50={:.3}ms rpc_p99={:.3}ms",
            pct(&self.visible, 50.0),
            pct(&self.visible, 90.0),
            pct(&self.visible, 99.0),
            self.visible.last().map_or(f64::NAN, |d| ms(*d)),
            mean,
            self.missed,
            self.polls as f64 / (n as f64).max(1.0),
            pct(&self.rpc, 50.0),
            pct(&self.rpc, 99.0),
        );
    }
}

/// Polls until `done(seen)` or the deadline; the time from `since` to the
/// reply that satisfied it, or `None` on deadline.
async fn wait_for(
    poller: &mut Poller,
    want: Ipv4Addr,
    since: Instant,
    deadline: Duration,
    target: Seen,
    polls: &mut u64,
) -> Result<Option<Duration>, String> {
    loop {
        *polls += 1;
        let seen = poller.poll(want).await?;
        let elapsed = since.elapsed();
        if seen.as_ref() == Some(&target) {
            return Ok(Some(elapsed));
        }
        if elapsed >= deadline {
            return Ok(None);
        }
    }
}

async fn probe(etcd: &str, dns: SocketAddr, plan: &ProbePlan) -> Result<(), String> {
    if plan.services == 0 {
        return Err("--services must be at least 1".into());
    }
    let mut client = Client::connect([etcd], None)
        .await
        .map_err(|e| format!("cannot connect to etcd at {etcd}: {e}"))?;
    let mut poller = Poller::new(dns).await?;
    let mut puts = Samples::default();
    let mut deletes = Samples::default();
    let zone = plan.zone.trim_end_matches('.');
    // The keys still in etcd when a change fails half-way: removed at the end.
    let mut leftovers: VecDeque<String> = VecDeque::new();
    let started = Instant::now();
    for i in 0..plan.warmup + plan.changes {
        let counted = i >= plan.warmup;
        // Spread the changes over the services with a fixed stride.
        let s = i.wrapping_mul(7919) % plan.services;
        let id = PROBE_ID_BASE + i;
        let svc = service_key(s);
        let key = format!("{svc}/{id}");
        // 127.200/16 and up: never one of the dataset's addresses.
        let want = Ipv4Addr::new(127, 200 + (i >> 16) as u8, (i >> 8) as u8, i as u8);
        poller.ask(&format!("{id}.{svc}.{zone}"));

        let rpc_start = Instant::now();
        client
            .put(key.as_str(), format!("{want}:{}", port(s)), None)
            .await
            .map_err(|e| format!("etcd put {key}: {e}"))?;
        let since = Instant::now();
        let mut polls = 0;
        let visible = wait_for(
            &mut poller,
            want,
            since,
            plan.deadline,
            Seen::Address,
            &mut polls,
        )
        .await?;
        if counted {
            puts.rpc.push(since - rpc_start);
            puts.polls += polls;
            match visible {
                Some(d) => puts.visible.push(d),
                None => puts.missed += 1,
            }
        }
        if plan.puts_only {
            continue;
        }

        let rpc_start = Instant::now();
        client
            .delete(key.as_str(), None)
            .await
            .map_err(|e| format!("etcd delete {key}: {e}"))?;
        let since = Instant::now();
        let mut polls = 0;
        let gone = wait_for(
            &mut poller,
            want,
            since,
            plan.deadline,
            Seen::NxDomain,
            &mut polls,
        )
        .await?;
        if counted {
            deletes.rpc.push(since - rpc_start);
            deletes.polls += polls;
            match gone {
                Some(d) => deletes.visible.push(d),
                None => deletes.missed += 1,
            }
        }
        if gone.is_none() {
            leftovers.push_back(key);
        }
    }
    let elapsed = started.elapsed();
    // Leave the zone as it was found (puts-only runs keep their instances:
    // the caller measures the next size on a fresh etcd anyway).
    while let Some(key) = leftovers.pop_front() {
        let _ = client.delete(key.as_str(), None).await;
    }
    println!(
        "{} changes after {} warm-up ones, in {:.1} s; visible = first DNS answer that \
         reflects the change, timed from the etcd RPC returning",
        plan.changes * if plan.puts_only { 1 } else { 2 },
        plan.warmup * if plan.puts_only { 1 } else { 2 },
        elapsed.as_secs_f64()
    );
    puts.report("put");
    if !plan.puts_only {
        deletes.report("delete");
    }
    if puts.missed + deletes.missed > 0 {
        return Err(format!(
            "{} changes did not show in DNS within {:?}",
            puts.missed + deletes.missed,
            plan.deadline
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// First-sync times
// ---------------------------------------------------------------------------

/// Seconds since the epoch of an RFC 3339 UTC timestamp as tracing writes
/// it (`2026-11-26T23:58:00.123456Z`).
fn parse_timestamp(text: &str) -> Option<f64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let ss = t.next()?.parse::<f64>().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) as f64 + ss)
}

fn sync_times(log: &PathBuf, started: f64) -> Result<(), String> {
    let file = File::open(log).map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let mut connected = None;
    let mut loaded = None;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| format!("cannot read {}: {e}", log.display()))?;
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let message = entry["fields"]["message"].as_str().unwrap_or_default();
        let at = entry["timestamp"].as_str().and_then(parse_timestamp);
        match message {
            "connected to etcd" if connected.is_none() => connected = at,
            "zone loaded from etcd" if loaded.is_none() => {
                loaded = at.map(|at| (at, entry["fields"]["instances"].as_u64()));
            }
            _ => {}
        }
    }
    let Some((loaded, instances)) = loaded else {
        return Err(format!(
            "no 'zone loaded from etcd' line in {}",
            log.display()
        ));
    };
    println!(
        "instances={} start_to_loaded_ms={:.1} read_to_loaded_ms={}",
        instances.map_or("?".into(), |n| n.to_string()),
        (loaded - started) * 1e3,
        connected.map_or("?".into(), |c| format!("{:.1}", (loaded - c) * 1e3)),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_epoch_seconds() {
        let at = parse_timestamp("2024-03-01T00:00:01.500000Z");
        // 2024-03-01 is day 19783 since 1970-01-01.
        assert_eq!(at, Some(19_783.0 * 86_400.0 + 1.5));
        assert_eq!(parse_timestamp("2024-03-01 00:00:01"), None);
    }

    #[test]
    fn replies_are_classified() {
        let want = Ipv4Addr::new(127, 200, 0, 1);
        let mut q = Vec::new();
        encode_query(&mut q, "1.svc0.rpc.svc.local.");
        assert_eq!(q.len(), 12 + 22 + 4);
        // Header with QR+AA, NOERROR, one question, one answer; the question
        // echoed; one A record whose owner is a pointer to the question.
        let mut reply = q.clone();
        reply[2] = 0x84;
        reply[7] = 1;
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
        reply.extend_from_slice(&want.octets());
        assert_eq!(classify(&reply, q.len(), want), Seen::Address);
        assert_eq!(
            classify(&reply, q.len(), Ipv4Addr::new(127, 0, 0, 1)),
            Seen::Other
        );
        let mut nx = q.clone();
        nx[3] = RCODE_NXDOMAIN;
        assert_eq!(classify(&nx, q.len(), want), Seen::NxDomain);
    }

    #[test]
    fn dataset_addresses_are_distinct_loopback_ones() {
        let d = Dataset {
            services: 3,
            per_service: 2,
        };
        let (key, value, id) = instance(d, 2, 1);
        assert_eq!(key, format!("svc2.rpc/{}", DATASET_ID_BASE + 5));
        assert_eq!(value, "127.1.0.5:8002");
        assert_eq!(id, DATASET_ID_BASE + 5);
        assert_ne!(address(256), address(0));
        assert!(
            check_size(Dataset {
                services: 200_000,
                per_service: 5
            })
            .is_ok()
        );
    }
}
