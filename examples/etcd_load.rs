//! Bulk-loads go-zero style registrations into etcd for the benchmarks, fast.
//!
//! Reads a file of `<key> <value>` lines (as `bench/lib/gen_dataset.py`
//! writes in `registrations.txt`; blank lines and `#` comments are skipped)
//! and puts every key with many concurrent transactions of up to `--batch`
//! puts each, spread over `--connections` gRPC connections. It prints the
//! rate in keys/s and the etcd revision after the last put.
//!
//! By default the keys carry no lease: they stay until deleted, which is what
//! a benchmark that loads once and measures for minutes wants (a go-zero
//! service keeps its lease alive; nobody keeps these alive). With
//! `--lease-ttl SECONDS` every key is attached to ONE lease granted for that
//! TTL and not kept alive by this program: all keys vanish together when it
//! expires, or at once with `etcdctl lease revoke <hex id>` (the id is
//! printed), which is how a benchmark can empty etcd in one step.
//!
//! ```text
//! cargo run --release --example etcd_load -- --etcd 127.0.0.1:2379 --file registrations.txt
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use etcd_client::{Client, ConnectOptions, PutOptions, Txn, TxnOp};

/// etcd's default `--max-txn-ops`: a transaction may hold at most this many
/// operations unless the server was started with a larger limit.
const DEFAULT_BATCH: usize = 128;
/// Transactions in flight at once; enough to keep etcd's raft batching full.
const DEFAULT_CONCURRENCY: usize = 32;
/// gRPC connections the transactions are spread over.
const DEFAULT_CONNECTIONS: usize = 4;
/// How long to wait for etcd to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often progress is printed while loading.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Parser, Debug)]
#[command(about = "Bulk-load go-zero style registrations (\"<key> <value>\" lines) into etcd")]
struct Args {
    /// etcd endpoints, HOST:PORT, comma-separated.
    #[arg(long, default_value = "127.0.0.1:2379", value_delimiter = ',')]
    etcd: Vec<String>,
    /// File of "<key> <value>" lines.
    #[arg(long)]
    file: std::path::PathBuf,
    /// Puts per transaction (etcd refuses more than its --max-txn-ops, default 128).
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = positive())]
    batch: usize,
    /// Transactions in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY, value_parser = positive())]
    concurrency: usize,
    /// gRPC connections to etcd.
    #[arg(long, default_value_t = DEFAULT_CONNECTIONS, value_parser = positive())]
    connections: usize,
    /// Attach every key to one new lease with this TTL (seconds), not kept alive.
    #[arg(long)]
    lease_ttl: Option<i64>,
}

/// A count flag: a positive integer.
fn positive() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// Why loading failed; printed once by `main`.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected \"<key> <value>\"")]
    Syntax { path: String, line: usize },
    #[error("etcd {what}: {source}")]
    Etcd {
        what: &'static str,
        source: etcd_client::Error,
    },
    #[error("a loader task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn etcd(what: &'static str) -> impl FnOnce(etcd_client::Error) -> LoadError {
    move |source| LoadError::Etcd { what, source }
}

/// Parses `<key> <value>` lines; keys and values are whitespace-free, as in
/// go-zero (its values are `host:port`).
fn parse_registrations(path: &str, text: &str) -> Result<Vec<(String, String)>, LoadError> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (Some(key), Some(value), None) => out.push((key.to_owned(), value.to_owned())),
            _ => {
                return Err(LoadError::Syntax {
                    path: path.to_owned(),
                    line: index + 1,
                });
            }
        }
    }
    Ok(out)
}

async fn load(args: Args) -> Result<(), LoadError> {
    let path = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).map_err(|source| LoadError::Read {
        path: path.clone(),
        source,
    })?;
    let registrations = Arc::new(parse_registrations(&path, &text)?);
    drop(text);

    let options = ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT);
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        clients.push(
            Client::connect(args.etcd.clone(), Some(options.clone()))
                .await
                .map_err(etcd("connect"))?,
        );
    }

    let lease = match args.lease_ttl {
        Some(ttl) => {
            let id = clients[0]
                .lease_grant(ttl, None)
                .await
                .map_err(etcd("lease grant"))?
                .id();
            eprintln!(
                "etcd_load: all keys under lease {id:x} (decimal {id}, TTL {ttl} s, not kept alive); \
                 `etcdctl lease revoke {id:x}` deletes them"
            );
            Some(id)
        }
        None => None,
    };

    let batches = registrations.len().div_ceil(args.batch);
    let next_batch = Arc::new(AtomicUsize::new(0));
    let done_keys = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    let progress = {
        let done_keys = Arc::clone(&done_keys);
        let total = registrations.len();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let done = done_keys.load(Ordering::Relaxed);
                let rate = done as f64 / started.elapsed().as_secs_f64();
                eprintln!("etcd_load: {done}/{total} keys ({rate:.0} keys/s)");
            }
        })
    };

    let mut workers = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let mut kv = clients[worker % clients.len()].kv_client();
        let registrations = Arc::clone(&registrations);
        let next_batch = Arc::clone(&next_batch);
        let done_keys = Arc::clone(&done_keys);
        let batch = args.batch;
        workers.push(tokio::spawn(async move {
            let mut last_revision = 0;
            loop {
                let index = next_batch.fetch_add(1, Ordering::Relaxed);
                if index >= batches {
                    return Ok::<i64, LoadError>(last_revision);
                }
                let start = index * batch;
                let end = (start + batch).min(registrations.len());
                let ops: Vec<TxnOp> = registrations[start..end]
                    .iter()
                    .map(|(key, value)| {
                        let options = lease.map(|id| PutOptions::new().with_lease(id));
                        TxnOp::put(key.as_str(), value.as_str(), options)
                    })
                    .collect();
                let response = kv
                    .txn(Txn::new().and_then(ops))
                    .await
                    .map_err(etcd("txn"))?;
                last_revision = last_revision.max(response.header().map_or(0, |h| h.revision()));
                done_keys.fetch_add(end - start, Ordering::Relaxed);
            }
        }));
    }

    let mut revision = 0;
    let mut failure = None;
    for worker in workers {
        match worker.await {
            Ok(Ok(r)) => revision = revision.max(r),
            Ok(Err(error)) => failure = failure.or(Some(error)),
            Err(error) => failure = failure.or(Some(LoadError::Task(error))),
        }
    }
    progress.abort();
    if let Some(error) = failure {
        return Err(error);
    }

    let elapsed = started.elapsed().as_secs_f64();
    let keys = registrations.len();
    println!(
        "etcd_load: {keys} keys in {elapsed:.2} s = {:.0} keys/s ({} txns of <= {}, {} in flight, {} connections); revision {revision}",
        keys as f64 / elapsed.max(f64::EPSILON),
        batches,
        args.batch,
        args.concurrency,
        clients.len(),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match load(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("etcd_load: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_value_lines_and_skips_comments() {
        let text = "# comment\n\nsvc0.rpc/1 10.1.1.1:10000\n  svc1.rpc/2\t10.1.1.2:10001  \n";
        let parsed = parse_registrations("f", text).unwrap();
        assert_eq!(
            parsed,
            vec![
                ("svc0.rpc/1".to_owned(), "10.1.1.1:10000".to_owned()),
                ("svc1.rpc/2".to_owned(), "10.1.1.2:10001".to_owned()),
            ]
        );
    }

    #[test]
    fn rejects_a_line_without_value_or_with_extra_fields() {
        let missing = parse_registrations("f", "ok/1 1.1.1.1:1\nlonely\n").unwrap_err();
        assert_eq!(missing.to_string(), "f:2: expected \"<key> <value>\"");
        let extra = parse_registrations("f", "a/1 b c\n").unwrap_err();
        assert_eq!(extra.to_string(), "f:1: expected \"<key> <value>\"");
    }
}
