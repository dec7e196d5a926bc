//! Benchmark probe for `bench/replicas.sh`: drives registration changes at
//! a fixed rate against an etcd that many rpcdns replicas watch, and times
//! how long each change takes to show in the answers of every replica.
//!
//! `run` does two things at once for `--duration` seconds:
//!
//! - the **writer** changes `--rate` registrations per second of the
//!   dataset `bench/propagation.sh` loads (`svc<s>.rpc/<id>`, see
//!   `propagation_probe`): each change moves an instance to the other of two
//!   ports, a real change every replica must apply;
//! - the **sampler**, every `--sample-ms`, gives `probe.rpc/1` a new address
//!   and polls every replica (one UDP socket, the query re-sent after 1,
//!   2, 4 ms ... up to `--resend-ms` to the replicas that have not shown it
//!   yet) until each
//!   answers it: one latency per replica per sample, from the put's return
//!   to the first answer with the new address.
//!
//! It prints the writer's achieved rate and the latency percentiles over
//! every (replica, sample), the worst replica's p99, and the samples a
//! replica never showed within `--deadline-ms`.
//!
//! `flood` asks the replicas as fast as one socket can, round-robin, for
//! `--duration` seconds: DNS load that must not reach etcd.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use etcd_client::Client;
use tokio::net::UdpSocket;

/// First instance id of the dataset (as `propagation_probe` loads it).
const DATASET_ID_BASE: u64 = 7_000_000_000_000_000_000;
const PORT_BASE: u16 = 8000;
/// The name the sampler moves.
const PROBE_KEY: &str = "probe.rpc/1";
const PROBE_NAME: &str = "probe.rpc.svc.local.";
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;

#[derive(Parser)]
#[command(about = "rpcdns benchmark probe (many replicas)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Changes registrations at a rate and times each sample on every replica.
    Run {
        /// etcd endpoints, comma-separated.
        #[arg(long)]
        etcd: String,
        /// File of replica DNS addresses, one `IP:PORT` per line.
        #[arg(long)]
        replicas: PathBuf,
        /// Services of the loaded dataset.
        #[arg(long)]
        services: u64,
        /// Instances per service of the loaded dataset.
        #[arg(long)]
        per_service: u64,
        /// Registration changes per second.
        #[arg(long)]
        rate: u64,
        /// Seconds to run.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Milliseconds between samples.
        #[arg(long, default_value_t = 250)]
        sample_ms: u64,
        /// The longest wait, in milliseconds, before asking a replica not
        /// yet showing a sample again (1 ms first, doubling up to this).
        #[arg(long, default_value_t = 8)]
        resend_ms: u64,
        /// Give up on a sample at a replica after this many milliseconds.
        #[arg(long, default_value_t = 5000)]
        deadline_ms: u64,
    },
    /// Queries the replicas as fast as one socket can.
    Flood {
        #[arg(long)]
        replicas: PathBuf,
        /// Services of the loaded dataset (the names asked).
        #[arg(long)]
        services: u64,
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("replicas_probe: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run {
                etcd,
                replicas,
                services,
                per_service,
                rate,
                duration,
                sample_ms,
                resend_ms,
                deadline_ms,
            } => {
                let plan = Plan {
                    services,
                    per_service,
                    rate,
                    duration: Duration::from_secs(duration),
                    sample: Duration::from_millis(sample_ms),
                    resend: Duration::from_millis(resend_ms),
                    deadline: Duration::from_millis(deadline_ms),
                };
                run(&etcd, &read_replicas(&replicas)?, &plan).await
            }
            Command::Flood {
                replicas,
                services,
                duration,
            } => {
                flood(
                    &read_replicas(&replicas)?,
                    services,
                    Duration::from_secs(duration),
                )
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replicas_probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read_replicas(path: &PathBuf) -> Result<Vec<SocketAddr>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let replicas: Vec<SocketAddr> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().map_err(|e| format!("{l:?}: {e}")))
        .collect::<Result<_, String>>()?;
    if replicas.is_empty() || replicas.len() > usize::from(u16::MAX) {
        return Err(format!("{} replicas in {}", replicas.len(), path.display()));
    }
    Ok(replicas)
}

struct Plan {
    services: u64,
    per_service: u64,
    rate: u64,
    duration: Duration,
    sample: Duration,
    resend: Duration,
    deadline: Duration,
}

/// The value of instance `n` of service `s` on its first (`alt` false) or
/// second port: the dataset's address, `propagation_probe`'s layout.
fn dataset_value(n: u64, s: u64, alt: bool) -> String {
    let n32 = n as u32;
    let address = Ipv4Addr::new(127, 1 + (n32 >> 16) as u8, (n32 >> 8) as u8, n32 as u8);
    let port = PORT_BASE + (s % 1000) as u16 + u16::from(alt);
    format!("{address}:{port}")
}

async fn run(etcd: &str, replicas: &[SocketAddr], plan: &Plan) -> Result<(), String> {
    let endpoints: Vec<&str> = etcd.split(',').collect();
    let client = Client::connect(&endpoints, None)
        .await
        .map_err(|e| format!("etcd {etcd}: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(write_changes(
        client.clone(),
        plan.services,
        plan.per_service,
        plan.rate,
        stop.clone(),
        written.clone(),
        failed.clone(),
    ));
    let started = Instant::now();
    let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); replicas.len()];
    let mut lost = 0u64;
    let mut samples = 0u64;
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let mut kv = client.kv_client();
    while started.elapsed() < plan.duration {
        let next = Instant::now() + plan.sample;
        samples += 1;
        let n = samples as u32;
        let want = Ipv4Addr::new(127, 250, (n >> 8) as u8, n as u8);
        kv.put(PROBE_KEY, format!("{want}:9999"), None)
            .await
            .map_err(|e| format!("put {PROBE_KEY}: {e}"))?;
        let put_at = Instant::now();
        let seen = poll_all(&socket, replicas, want, plan).await?;
        for (i, at) in seen.into_iter().enumerate() {
            match at {
                Some(at) => latencies[i].push(at.saturating_duration_since(put_at)),
                None => lost += 1,
            }
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    let written = written.load(Ordering::Relaxed);
    println!(
        "writer: {written} changes in {:.1} s = {:.0}/s (asked {}/s), {} failed",
        elapsed.as_secs_f64(),
        written as f64 / elapsed.as_secs_f64(),
        plan.rate,
        failed.load(Ordering::Relaxed)
    );
    let mut all: Vec<Duration> = latencies.iter().flatten().copied().collect();
    all.sort();
    let worst = latencies
        .iter_mut()
        .map(|l| {
            l.sort();
            percentile(l, 0.99)
        })
        .max()
        .unwrap_or_default();
    println!(
        "propagation over {} replicas x {samples} samples: p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms; worst replica's p99 {:.1} ms; not seen within {} ms: {lost}",
        replicas.len(),
        ms(percentile(&all, 0.50)),
        ms(percentile(&all, 0.90)),
        ms(percentile(&all, 0.99)),
        ms(all.last().copied().unwrap_or_default()),
        ms(worst),
        plan.deadline.as_millis(),
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Changes `rate` registrations per second, in ticks of 10 ms, until `stop`.
async fn write_changes(
    client: Client,
    services: u64,
    per_service: u64,
    rate: u64,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) {
    let total = (services * per_service).max(1);
    let per_tick = (rate as f64 / 100.0).max(0.0);
    let mut owed = 0.0;
    let mut i: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    // Puts stay in flight across ticks (up to MAX_IN_FLIGHT), so a slow
    // commit does not hold back the next tick's changes.
    const MAX_IN_FLIGHT: usize = 256;
    let mut in_flight = tokio::task::JoinSet::new();
    let count = |done: Result<bool, tokio::task::JoinError>| match done {
        Ok(true) => written.fetch_add(1, Ordering::Relaxed),
        _ => failed.fetch_add(1, Ordering::Relaxed),
    };
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let n = i % total;
            let s = n / per_service.max(1);
            let alt = (i / total).is_multiple_of(2);
            i += 1;
            let key = format!("svc{s}.rpc/{}", DATASET_ID_BASE + n);
            let value = dataset_value(n, s, alt);
            let mut kv = client.kv_client();
            if in_flight.len() >= MAX_IN_FLIGHT
                && let Some(done) = in_flight.join_next().await
            {
                count(done);
            }
            in_flight.spawn(async move { kv.put(key, value, None).await.is_ok() });
        }
        while let Some(done) = in_flight.try_join_next() {
            count(done);
        }
    }
    while let Some(done) = in_flight.join_next().await {
        count(done);
    }
}

/// Asks every replica for the probe name until each answers `want`: the
/// instant each first did, `None` past the deadline.
async fn poll_all(
    socket: &UdpSocket,
    replicas: &[SocketAddr],
    want: Ipv4Addr,
    plan: &Plan,
) -> Result<Vec<Option<Instant>>, String> {
    let mut seen: Vec<Option<Instant>> = vec![None; replicas.len()];
    let mut pending = replicas.len();
    let mut query = encode_query(PROBE_NAME);
    let deadline = Instant::now() + plan.deadline;
    let mut buf = vec![0u8; 4096];
    // Re-asked after 1 ms, then 2, 4, ... up to `resend`: fine resolution
    // for the fast answers, bounded load for the slow ones.
    let mut wait = Duration::from_millis(1).min(plan.resend);
    while pending > 0 && Instant::now() < deadline {
        for (i, addr) in replicas.iter().enumerate() {
            if seen[i].is_none() {
                query[..2].copy_from_slice(&(i as u16).to_be_bytes());
                socket
                    .send_to(&query, addr)
                    .await
                    .map_err(|e| format!("send to {addr}: {e}"))?;
            }
        }
        let resend_at = tokio::time::Instant::now() + wait;
        wait = (wait * 2).min(plan.resend);
        while let Ok(received) =
            tokio::time::timeout_at(resend_at, socket.recv_from(&mut buf)).await
        {
            let (len, _) = received.map_err(|e| format!("receive: {e}"))?;
            let reply = &buf[..len];
            if len < 12 {
                continue;
            }
            let i = usize::from(u16::from_be_bytes([reply[0], reply[1]]));
            if i < seen.len() && seen[i].is_none() && has_address(reply, query.len(), want) {
                seen[i] = Some(Instant::now());
                pending -= 1;
            }
        }
    }
    Ok(seen)
}

/// Queries the replicas round-robin, as fast as one socket can.
async fn flood(replicas: &[SocketAddr], services: u64, duration: Duration) -> Result<(), String> {
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let names: Vec<Vec<u8>> = (0..services.clamp(1, 1000))
        .map(|s| encode_query(&format!("svc{s}.rpc.svc.local.")))
        .collect();
    let started = Instant::now();
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut buf = vec![0u8; 4096];
    let mut in_flight: HashSet<u16> = HashSet::new();
    while started.elapsed() < duration {
        for _ in 0..64 {
            let query = &names[(sent % names.len() as u64) as usize];
            let addr = replicas[(sent % replicas.len() as u64) as usize];
            let mut query = query.clone();
            let id = sent as u16;
            query[..2].copy_from_slice(&id.to_be_bytes());
            socket
                .send_to(&query, addr)
                .await
                .map_err(|e| format!("send: {e}"))?;
            in_flight.insert(id);
            sent += 1;
        }
        let until = tokio::time::Instant::now() + Duration::from_millis(2);
        while let Ok(Ok((len, _))) =
            tokio::time::timeout_at(until, socket.recv_from(&mut buf)).await
        {
            if len >= 12 && in_flight.remove(&u16::from_be_bytes([buf[0], buf[1]])) {
                answered += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "flood: {sent} queries sent, {answered} answered in {secs:.1} s = {:.0} answers/s over {} replicas",
        answered as f64 / secs,
        replicas.len()
    );
    Ok(())
}

/// An A/IN query for `name`, ID 0, RD clear, no EDNS.
fn encode_query(name: &str) -> Vec<u8> {
    let mut buf = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        buf.push(label.len() as u8);
        buf.extend_from_slice(label.as_bytes());
    }
    buf.push(0);
    buf.extend_from_slice(&TYPE_A.to_be_bytes());
    buf.extend_from_slice(&CLASS_IN.to_be_bytes());
    buf
}

/// Whether a NOERROR reply to our query (question `question_end - 12`
/// octets) has `want` among its A records.
fn has_address(reply: &[u8], question_end: usize, want: Ipv4Addr) -> bool {
    if reply[3] & 0x0f != 0 {
        return false;
    }
    let answers = u16::from_be_bytes([reply[6], reply[7]]);
    let mut at = question_end;
    for _ in 0..answers {
        loop {
            let Some(&len) = reply.get(at) else {
                return false;
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
            return false;
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        at += 10;
        let Some(rdata) = reply.get(at..at + rdlen) else {
            return false;
        };
        if rtype == TYPE_A && rdata == want.octets() {
            return true;
        }
        at += rdlen;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_values_alternate_ports() {
        assert_eq!(dataset_value(0, 0, false), "127.1.0.0:8000");
        assert_eq!(dataset_value(257, 3, true), "127.1.1.1:8004");
    }

    #[test]
    fn percentiles_of_sorted_samples() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&d, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn a_reply_with_the_address_is_recognised() {
        let query = encode_query(PROBE_NAME);
        let mut reply = query.clone();
        reply[2] = 0x84;
        reply[7] = 1;
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 250, 0, 7]);
        assert!(has_address(
            &reply,
            query.len(),
            Ipv4Addr::new(127, 250, 0, 7)
        ));
        assert!(!has_address(
            &reply,
            query.len(),
            Ipv4Addr::new(127, 250, 0, 8)
        ));
    }
}
