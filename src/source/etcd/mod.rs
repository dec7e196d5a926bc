//! etcd client side: paged first read at one revision, watch from
//! revision+1, reconnect with backoff, resume or re-read; no DNS types.
//!
//! [`run`] owns the whole conversation with etcd and reports what it learns
//! to a [`SyncSink`]: a full state ([`SyncSink::reset`]) after the first read
//! and after any re-read, then each watch response's events in order
//! ([`SyncSink::apply`]), and the connection state in between.
//!
//! ```text
//!  connect ──▶ paged get @R ──reset(R)──▶ watch from R+1 ──apply──▶ …
//!     ▲                                      │ stream error / lost
//!     └──── backoff ◀── set_connected(false) ┘   (resume from last+1, no re-read)
//!                                            │ canceled: compacted
//!                                            └──▶ paged get again ──reset(Compacted)
//! ```
//!
//! Security (SPEC §7): `etcd.tls` turns on TLS (rustls) with the CA file for
//! server verification and an optional client certificate; its files are
//! read and checked once, before the first connection ([`tls_options`]), so
//! a missing or broken file stops rpcdns at start with the file named.
//! `etcd.username`/`password` authenticate every session. A refused
//! password, certificate or permission is retried like an outage (the
//! operator may fix etcd's side), logged once per kind of failure and then
//! every [`FAILURE_LOG_EVERY`] attempts; the password is never logged.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KvClient, WatchOptions};
use tokio_util::sync::CancellationToken;

use crate::config::EtcdConfig;
use crate::ops::metrics::ResyncReason;

mod connect;
#[cfg(test)]
mod tests;

pub use connect::tls_options;
use connect::*;

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/// Keys per page of the full read. etcd 3.4 walks every key left in the
/// range on each page (it counts them), so a full read costs pages ×
/// remaining keys: large pages keep 100k keys to ten requests. Each page is
/// one gRPC message; go-zero registrations are ~60 octets, so a page is
/// well under a megabyte, and a page too large to decode (huge bad values)
/// is read again in halves.
pub const PAGE_SIZE: i64 = 10_000;

/// The largest gRPC message we decode: one page of the full read.
pub const MAX_PAGE_BYTES: usize = 64 << 20;

/// First reconnect delay after a lost connection.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);

/// Reconnect delays double up to this cap.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Each delay is scaled by a random factor in `1 ± BACKOFF_JITTER`, so that
/// many rpcdns instances do not reconnect to a restarted etcd in lockstep.
pub const BACKOFF_JITTER: f64 = 0.2;

/// HTTP/2 keep-alive ping interval. etcd's server rejects pings more often
/// than `--grpc-keepalive-min-time` (default 5 s) with GOAWAY
/// `too_many_pings`, so this stays above it.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(6);

/// How long a keep-alive ping may go unanswered before the connection is
/// declared dead: a silently dead peer is noticed within
/// `KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT` (9 s).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Upper bound for one unary request (a page of the read) or for opening
/// the watch stream. A member without a leader can hold a linearizable read
/// for a long time; this turns that into a reconnect.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// While etcd keeps failing the same way (wrong password, untrusted
/// certificate, down), the failure is logged on the first attempt and then
/// once per this many attempts: with the backoff capped at
/// [`BACKOFF_MAX`], about every five minutes. A different failure is logged
/// at once.
pub const FAILURE_LOG_EVERY: u32 = 60;

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// One change from an etcd watch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        mod_revision: i64,
    },
    Delete {
        key: Vec<u8>,
        mod_revision: i64,
    },
}

impl KvEvent {
    pub fn key(&self) -> &[u8] {
        match self {
            KvEvent::Put { key, .. } | KvEvent::Delete { key, .. } => key,
        }
    }

    pub fn mod_revision(&self) -> i64 {
        match self {
            KvEvent::Put { mod_revision, .. } | KvEvent::Delete { mod_revision, .. } => {
                *mod_revision
            }
        }
    }

    /// Label value for `rpcdns_etcd_events_total{type}`.
    pub fn type_str(&self) -> &'static str {
        match self {
            KvEvent::Put { .. } => "put",
            KvEvent::Delete { .. } => "delete",
        }
    }
}

/// Receives what [`run`] learns from etcd. Called from one task, in order.
pub trait SyncSink: Send {
    /// The full state at `revision` (first read, or re-read); replace
    /// everything in one step.
    fn reset(&mut self, kvs: Vec<(Vec<u8>, Vec<u8>)>, revision: i64, reason: ResyncReason);
    /// One watch response's events, in order; apply all, then publish once.
    /// `revision` is the mod revision of the last event, i.e. the revision
    /// the state reflects once they are applied (it only ever grows).
    fn apply(&mut self, events: Vec<KvEvent>, revision: i64);
    /// The etcd connection went up (`true`) or was lost (`false`).
    fn set_connected(&mut self, connected: bool);
}

/// Errors that stop [`run`]; everything else is retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error("failed to read {key} {}: {source}", path.display())]
    TlsFileRead {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key} {}: {reason}", path.display())]
    TlsFileInvalid {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// rustls refused the files together (a key that does not match its
    /// certificate, no system roots); `files` names the ones set.
    #[error("etcd.tls: cannot use {files}: {reason}")]
    TlsRefused { files: String, reason: String },
    #[error("invalid etcd endpoints {endpoints:?}: {source}")]
    InvalidEndpoints {
        endpoints: Vec<String>,
        #[source]
        source: etcd_client::Error,
    },
}

impl SyncError {
    /// None of these get better by trying again: they come from the config.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------
// Key range and backoff (pure)
// ---------------------------------------------------------------------------

/// The `[start, end)` key range read and watched, in etcd's encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyRange {
    start: Vec<u8>,
    end: Vec<u8>,
}

impl KeyRange {
    /// Every key starting with `prefix`; `""` means every key (etcd spells
    /// that as key `\0`, range end `\0`).
    fn for_prefix(prefix: &str) -> Self {
        if prefix.is_empty() {
            KeyRange {
                start: vec![0],
                end: vec![0],
            }
        } else {
            KeyRange {
                start: prefix.as_bytes().to_vec(),
                end: prefix_end(prefix.as_bytes()),
            }
        }
    }
}

/// The smallest key greater than every key starting with `prefix`: the last
/// byte that is not 0xff, plus one, with what follows it cut off. A prefix of
/// only 0xff bytes has no such key; `\0` then means "to the end".
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The delay before reconnect attempt `attempt` (0-based): `BACKOFF_INITIAL`
/// doubled per attempt, capped at `BACKOFF_MAX`, then scaled by
/// `1 + BACKOFF_JITTER * jitter`, where `jitter` is in `[-1, 1]`.
fn backoff_delay(attempt: u32, jitter: f64) -> Duration {
    let doubled = BACKOFF_INITIAL.saturating_mul(2u32.saturating_pow(attempt.min(31)));
    let base = doubled.min(BACKOFF_MAX);
    base.mul_f64(1.0 + BACKOFF_JITTER * jitter.clamp(-1.0, 1.0))
}

/// Capped exponential backoff with jitter.
#[derive(Debug, Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let delay = backoff_delay(self.attempt, rand::random_range(-1.0..=1.0));
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

// ---------------------------------------------------------------------------
// The sync loop
// ---------------------------------------------------------------------------

/// Why a session with etcd ended.
enum Interrupt {
    /// Connecting failed, a request failed, or the watch stream ended:
    /// reconnect after a backoff and resume from the last revision seen.
    Lost(String),
    /// The server canceled the watch for a reason other than compaction; a
    /// re-read is due, after a backoff so a persistent refusal cannot spin.
    Canceled(String),
}

/// What the loop knows across sessions.
struct SyncState {
    /// `Some` when the next session must read everything first.
    resync: Option<ResyncReason>,
    /// Every change up to and including this revision has reached the sink.
    last_revision: i64,
    /// Whether the sink was last told "connected".
    connected: bool,
    /// Which failures of the current outage (or of never connecting) to log.
    failures: FailureLog,
    /// The previous session ended with a cancel; contact alone then does not
    /// reset the backoff, only a watch that delivers does.
    after_cancel: bool,
    backoff: Backoff,
    /// Which of the configured endpoints the next session tries.
    endpoint_index: usize,
}

/// Mirrors the configured key range into `sink` until `shutdown` fires.
///
/// Returns `Ok(())` on shutdown; connection problems are retried forever
/// (rpcdns keeps serving the last-known zone meanwhile). Only configuration
/// problems return an error.
pub async fn run(
    config: &EtcdConfig,
    sink: &mut impl SyncSink,
    shutdown: CancellationToken,
) -> Result<(), SyncError> {
    if config.endpoints.is_empty() {
        return Err(SyncError::InvalidEndpoints {
            endpoints: Vec::new(),
            source: etcd_client::Error::InvalidArgs("empty endpoints".to_owned()),
        });
    }
    let tls = match &config.tls {
        Some(tls_config) => {
            let tls = tls_options(tls_config, config.dial_timeout)?;
            check_tls_accepted(&config.endpoints[0], &tls)
                .await
                .map_err(|reason| SyncError::TlsRefused {
                    files: tls_files(tls_config),
                    reason,
                })?;
            Some(tls)
        }
        None => None,
    };
    let range = KeyRange::for_prefix(&config.prefix);
    // Holds the password; ConnectOptions' Debug would show it, so it is
    // never logged.
    let options = connect_options(config, tls);
    let mut state = SyncState {
        resync: Some(ResyncReason::Initial),
        last_revision: 0,
        connected: false,
        failures: FailureLog::default(),
        after_cancel: false,
        backoff: Backoff::default(),
        endpoint_index: 0,
    };

    loop {
        let interrupt = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            result = session(config, &options, &range, sink, &mut state) => result?,
        };
        match interrupt {
            Interrupt::Lost(error) => {
                state.after_cancel = false;
                if state.connected {
                    state.connected = false;
                    sink.set_connected(false);
                }
                let kind = FailureKind::of(&error);
                if state.failures.should_log(kind) {
                    tracing::warn!(
                        endpoints = ?config.endpoints,
                        user = config.username.as_deref(),
                        problem = kind.as_str(),
                        %error,
                        "{}",
                        kind.message()
                    );
                } else {
                    tracing::debug!(%error, "etcd reconnect attempt failed");
                }
            }
            Interrupt::Canceled(reason) => {
                state.after_cancel = true;
                tracing::warn!(%reason, "etcd canceled the watch; reading everything again");
            }
        }
        let delay = state.backoff.next_delay();
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connection: connect, read everything if due, then watch until the
/// stream fails. Only configuration errors are returned as `Err`.
async fn session(
    config: &EtcdConfig,
    options: &ConnectOptions,
    range: &KeyRange,
    sink: &mut impl SyncSink,
    state: &mut SyncState,
) -> Result<Interrupt, SyncError> {
    // One member per session, the next one after each failure. etcd-client
    // would balance over all endpoints (tonic's p2c balancer), but its
    // per-endpoint load is a constant and a down member's lazy connection
    // counts as ready, so about every other request would land on a dead
    // member and fail, tearing down a healthy watch. A session pinned to one
    // member fails only when that member does, and the retry moves on.
    let endpoint = &config.endpoints[state.endpoint_index % config.endpoints.len()];
    state.endpoint_index = state.endpoint_index.wrapping_add(1);
    let client = match Client::connect([endpoint], Some(options.clone())).await {
        Ok(client) => client,
        Err(source @ (etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_))) => {
            return Err(SyncError::InvalidEndpoints {
                endpoints: config.endpoints.clone(),
                source,
            });
        }
        Err(error) => {
            return Ok(Interrupt::Lost(format!(
                "{endpoint}: connect: {}",
                describe(&error)
            )));
        }
    };
    let mut kv = client.kv_client().max_decoding_message_size(MAX_PAGE_BYTES);
    // A watch that catches up after an outage gets many revisions per
    // response; with `fragment` etcd splits one larger than its request
    // limit (1.5 MiB by default) into several, which are put together
    // again below. The decoding limit is the full read's, for headroom.
    let mut watch_client = client
        .watch_client()
        .max_decoding_message_size(MAX_PAGE_BYTES);

    loop {
        if let Some(reason) = state.resync {
            let (kvs, revision) = match read_all(&mut kv, range, PAGE_SIZE).await {
                Ok(read) => read,
                // A compaction between two pages fails the later page; the
                // read starts over at the new current revision.
                Err(ReadError::Compacted) => continue,
                Err(ReadError::Failed(error)) => {
                    return Ok(Interrupt::Lost(format!("{endpoint}: read: {error}")));
                }
            };
            on_contact(endpoint, sink, state);
            tracing::debug!(keys = kvs.len(), revision, %reason, "etcd full read done");
            sink.reset(kvs, revision, reason);
            state.resync = None;
            state.last_revision = revision;
        }

        let start_revision = state.last_revision + 1;
        let watch_options = WatchOptions::new()
            .with_range(range.end.clone())
            .with_start_revision(start_revision)
            .with_progress_notify()
            .with_fragment();
        let opened = tokio::time::timeout(
            REQUEST_TIMEOUT,
            watch_client.watch(range.start.clone(), Some(watch_options)),
        )
        .await;
        // The stream must stay whole: dropping its request half ends the
        // client side of the gRPC stream, and etcd then closes the watch.
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                return Ok(Interrupt::Lost(format!(
                    "{endpoint}: watch: {}",
                    describe(&error)
                )));
            }
            Err(_) => return Ok(Interrupt::Lost(format!("{endpoint}: watch: timed out"))),
        };
        tracing::debug!(start_revision, "etcd watch opened");

        // Events of a fragmented response, held until its last fragment.
        let mut fragments: Vec<KvEvent> = Vec::new();
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return Ok(Interrupt::Lost(format!("{endpoint}: watch stream ended")));
                }
                Err(error) => {
                    return Ok(Interrupt::Lost(format!(
                        "{endpoint}: watch: {}",
                        describe(&error)
                    )));
                }
            };
            on_contact(endpoint, sink, state);

            if response.canceled() {
                // "The client should treat the watcher as canceled and should
                // not try to create any watcher with the same start_revision
                // again" (etcd rpc.proto, WatchResponse.compact_revision).
                if response.compact_revision() > 0 {
                    tracing::info!(
                        resume_revision = start_revision,
                        compact_revision = response.compact_revision(),
                        "etcd compacted the resume revision; reading everything again"
                    );
                    state.resync = Some(ResyncReason::Compacted);
                    break;
                }
                state.resync = Some(ResyncReason::Canceled);
                return Ok(Interrupt::Canceled(response.cancel_reason().to_owned()));
            }
            if response.created() {
                continue;
            }

            let mut events = match convert_events(&response) {
                Ok(events) => events,
                Err(event_type) => {
                    // An event we cannot apply: what else changed is
                    // unknown, so read everything again.
                    state.resync = Some(ResyncReason::Canceled);
                    return Ok(Interrupt::Canceled(format!(
                        "unknown event type {event_type}"
                    )));
                }
            };
            if response.0.fragment {
                // Not the last fragment: apply the response as one batch
                // when it is whole, so the zone never shows half of it.
                fragments.append(&mut events);
                continue;
            }
            if !fragments.is_empty() {
                fragments.append(&mut events);
                events = std::mem::take(&mut fragments);
            }
            state.after_cancel = false;
            state.backoff.reset();
            match events.last() {
                Some(last) => {
                    let revision = last.mod_revision();
                    state.last_revision = state.last_revision.max(revision);
                    sink.apply(events, revision);
                }
                None => {
                    // A progress notification: etcd (3.4 `progress`) only
                    // sends one to a watcher that is in sync, so every change
                    // up to its header revision has been delivered and a
                    // resume may start after it. The header revision of an
                    // event response is NOT such a promise (a catching-up
                    // watcher gets events in batches with the current
                    // revision), hence events use their own mod_revision.
                    if let Some(header) = response.header() {
                        state.last_revision = state.last_revision.max(header.revision());
                    }
                }
            }
        }
    }
}

/// The first successful response of a session: tell the sink and the log.
fn on_contact(endpoint: &str, sink: &mut impl SyncSink, state: &mut SyncState) {
    if state.connected {
        return;
    }
    state.connected = true;
    state.failures.reset();
    if !state.after_cancel {
        state.backoff.reset();
    }
    sink.set_connected(true);
    tracing::info!(endpoint, "connected to etcd");
}

/// The events of a watch response, or the first event type that is
/// neither PUT (0) nor DELETE (1). mvccpb.Event defines no other and etcd
/// sends no other, but the number comes from the network: it is read from
/// the field, because etcd-client's `event_type()` panics on it.
fn convert_events(response: &etcd_client::WatchResponse) -> Result<Vec<KvEvent>, i32> {
    let mut events = Vec::with_capacity(response.events().len());
    for event in response.events() {
        let Some(kv) = event.kv() else { continue };
        events.push(match event.0.r#type {
            0 => KvEvent::Put {
                key: kv.key().to_vec(),
                value: kv.value().to_vec(),
                mod_revision: kv.mod_revision(),
            },
            1 => KvEvent::Delete {
                key: kv.key().to_vec(),
                mod_revision: kv.mod_revision(),
            },
            other => return Err(other),
        });
    }
    Ok(events)
}

#[derive(Debug)]
enum ReadError {
    /// A later page's revision was compacted away mid-read.
    Compacted,
    Failed(String),
}

/// Reads every key in `range` at one revision, `PAGE_SIZE` keys per request:
/// the first page fixes revision R, every later page is read at R, so the
/// result is one consistent view.
async fn read_all(
    kv: &mut KvClient,
    range: &KeyRange,
    page_size: i64,
) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, i64), ReadError> {
    let mut kvs = Vec::new();
    // 0 asks for the current revision; the first page's header fixes it.
    let mut revision = 0;
    let mut from = range.start.clone();
    let mut page_size = page_size.max(1);
    loop {
        let mut get_options = GetOptions::new()
            .with_range(range.end.clone())
            .with_limit(page_size);
        if revision > 0 {
            get_options = get_options.with_revision(revision);
        }
        let mut response =
            match tokio::time::timeout(REQUEST_TIMEOUT, kv.get(from.clone(), Some(get_options)))
                .await
            {
                Ok(Ok(response)) => response,
                Ok(Err(etcd_client::Error::GRpcStatus(status)))
                    if revision > 0 && status.message().contains("compacted") =>
                {
                    return Err(ReadError::Compacted);
                }
                // A page too large to decode: read it again in halves.
                Ok(Err(etcd_client::Error::GRpcStatus(status)))
                    if page_size > 1 && status.message().contains("message length too large") =>
                {
                    page_size /= 2;
                    continue;
                }
                Ok(Err(error)) => return Err(ReadError::Failed(describe(&error))),
                Err(_) => return Err(ReadError::Failed("get timed out".to_owned())),
            };
        if revision == 0 {
            revision = response
                .header()
                .map(|header| header.revision())
                .filter(|&revision| revision > 0)
                .ok_or_else(|| ReadError::Failed("get response without a revision".to_owned()))?;
        }
        let more = response.more();
        let page = response.take_kvs();
        let next = page.last().map(|last| {
            // The smallest key after the last one read.
            let mut next = last.key().to_vec();
            next.push(0);
            next
        });
        kvs.extend(page.into_iter().map(etcd_client::KeyValue::into_key_value));
        match next {
            Some(next) if more => from = next,
            _ => return Ok((kvs, revision)),
        }
    }
}
