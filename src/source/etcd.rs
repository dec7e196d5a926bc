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

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, KvClient, TlsOptions, WatchOptions,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::config::{EtcdConfig, TlsConfig};
use crate::ops::metrics::ResyncReason;

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
// TLS files
// ---------------------------------------------------------------------------

/// Reads and checks the files named by `etcd.tls` and builds the TLS
/// settings every session uses. Called once, before the first connection: a
/// file that cannot be read or holds no usable PEM is a configuration
/// problem, and retrying would not fix it. Without `ca_file` the system
/// trust store is used, as go's `crypto/tls` (and so go-zero) does.
pub fn tls_options(tls: &TlsConfig, dial_timeout: Duration) -> Result<TlsOptions, SyncError> {
    let TlsConfig {
        ca_file,
        cert_file,
        key_file,
    } = tls;
    // The handshake gets the same allowance as the TCP connect before it.
    let mut options = TlsOptions::new().timeout(dial_timeout);
    options = match ca_file {
        Some(path) => {
            let pem = read_tls_file(CA_FILE_KEY, path)?;
            check_certificates(CA_FILE_KEY, path, &pem)?;
            options.ca_certificate(Certificate::from_pem(pem))
        }
        None => options.with_native_roots(),
    };
    match (cert_file, key_file) {
        (Some(cert_path), Some(key_path)) => {
            let cert = read_tls_file(CERT_FILE_KEY, cert_path)?;
            check_certificates(CERT_FILE_KEY, cert_path, &cert)?;
            let key = read_tls_file(KEY_FILE_KEY, key_path)?;
            // The parser's error is not shown: it may quote the file.
            if PrivateKeyDer::from_pem_slice(&key).is_err() {
                return Err(SyncError::TlsFileInvalid {
                    key: KEY_FILE_KEY,
                    path: key_path.clone(),
                    reason: "no PEM private key found (PKCS#8, PKCS#1 or SEC1)".to_owned(),
                });
            }
            options = options.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        // config.rs rejects one without the other; never guess which was meant.
        _ => {
            return Err(SyncError::TlsRefused {
                files: tls_files(tls),
                reason: "cert_file and key_file go together".to_owned(),
            });
        }
    }
    Ok(options)
}

/// `ca_file A, cert_file B, key_file C`, the ones set, for error messages.
fn tls_files(tls: &TlsConfig) -> String {
    let files: Vec<String> = [
        ("ca_file", &tls.ca_file),
        ("cert_file", &tls.cert_file),
        ("key_file", &tls.key_file),
    ]
    .into_iter()
    .filter_map(|(key, path)| Some(format!("{key} {}", path.as_ref()?.display())))
    .collect();
    match files.is_empty() {
        true => "the system trust store".to_owned(),
        false => files.join(", "),
    }
}

const CA_FILE_KEY: &str = "etcd.tls.ca_file";
const CERT_FILE_KEY: &str = "etcd.tls.cert_file";
const KEY_FILE_KEY: &str = "etcd.tls.key_file";

fn read_tls_file(key: &'static str, path: &Path) -> Result<Vec<u8>, SyncError> {
    std::fs::read(path).map_err(|source| SyncError::TlsFileRead {
        key,
        path: path.to_owned(),
        source,
    })
}

/// At least one PEM certificate, and nothing that fails to decode.
fn check_certificates(key: &'static str, path: &Path, pem: &[u8]) -> Result<(), SyncError> {
    let invalid = |reason: String| SyncError::TlsFileInvalid {
        key,
        path: path.to_owned(),
        reason,
    };
    let mut count = 0;
    for item in CertificateDer::pem_slice_iter(pem) {
        match item {
            Ok(_) => count += 1,
            Err(error) => return Err(invalid(format!("not a PEM certificate file: {error}"))),
        }
    }
    if count == 0 {
        return Err(invalid(
            "no PEM certificate found (expected -----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Failure logging (pure)
// ---------------------------------------------------------------------------

/// What kind of problem a failed session hit; each has its own log line,
/// so an operator reads "wrong password", not just "unreachable".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// Refused credentials, no credentials where etcd needs them, or
    /// credentials where etcd has authentication off.
    Credentials,
    /// Authenticated, but the user may not read the watched keys.
    Permission,
    /// The TLS handshake failed: untrusted server, refused client
    /// certificate, or TLS on one side only.
    Tls,
    /// Anything else: down, unreachable, timed out, no leader.
    Unreachable,
}

impl FailureKind {
    /// Sorts a failure by its text: etcd sends its errors as gRPC status
    /// messages (`rpctypes` in etcd's api), and rustls's reach us as the
    /// causes of a transport error, so the text is all there is to go on.
    fn of(error: &str) -> Self {
        let error = error.to_ascii_lowercase();
        if [
            "authentication failed",
            "user name",
            "invalid auth token",
            "authentication is not enabled",
        ]
        .iter()
        .any(|needle| error.contains(needle))
        {
            FailureKind::Credentials
        } else if error.contains("permission denied") {
            FailureKind::Permission
        } else if ["certificate", "tls", "handshake", "alert"]
            .iter()
            .any(|needle| error.contains(needle))
        {
            FailureKind::Tls
        } else {
            FailureKind::Unreachable
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            FailureKind::Credentials => "credentials",
            FailureKind::Permission => "permission",
            FailureKind::Tls => "tls",
            FailureKind::Unreachable => "unreachable",
        }
    }

    /// The log line: what is wrong and where to look.
    fn message(self) -> &'static str {
        match self {
            FailureKind::Credentials => {
                "etcd refused the credentials (check etcd.username and etcd.password); \
                 serving the last-known zone and retrying"
            }
            FailureKind::Permission => {
                "etcd denied reading the watched keys (grant the user's role read on \
                 etcd.prefix); serving the last-known zone and retrying"
            }
            FailureKind::Tls => {
                "tls handshake with etcd failed (check etcd.tls: ca_file must sign the \
                 server's certificate, cert_file/key_file must be accepted by etcd); \
                 serving the last-known zone and retrying"
            }
            FailureKind::Unreachable => {
                "etcd unreachable; serving the last-known zone and reconnecting"
            }
        }
    }
}

/// Decides which failures are logged: the first of each kind in an outage,
/// then every [`FAILURE_LOG_EVERY`]th of that kind, so a wrong password
/// retried forever costs a line every few minutes, not one per attempt.
/// Counted per kind, not "since the last change": a refused client
/// certificate shows up as a TLS alert on one attempt and as a closed
/// connection on the next, and alternating kinds must not log every time.
#[derive(Debug, Default)]
struct FailureLog {
    /// Failures so far of each kind, indexed by `FailureKind as usize`.
    counts: [u32; 4],
}

impl FailureLog {
    fn should_log(&mut self, kind: FailureKind) -> bool {
        let count = &mut self.counts[kind as usize];
        let log = count.is_multiple_of(FAILURE_LOG_EVERY);
        *count = count.wrapping_add(1);
        log
    }

    fn reset(&mut self) {
        *self = FailureLog::default();
    }
}

/// `error` with its causes, which etcd-client's `Display` leaves out (the
/// TLS and connection details live there). Shows a status's message, not
/// its metadata. etcd never echoes a password back, so neither does this.
fn describe(error: &etcd_client::Error) -> String {
    use std::error::Error as _;
    let (mut text, mut source) = match error {
        etcd_client::Error::GRpcStatus(status) => (
            format!("{:?}: {}", status.code(), status.message()),
            status.source(),
        ),
        etcd_client::Error::TransportError(error) => (error.to_string(), error.source()),
        other => (other.to_string(), None),
    };
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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

/// etcd-client builds the rustls configuration when it creates an
/// endpoint, before any I/O (a lazy channel, and no authentication without
/// a user): a client key that does not match its certificate shows up here,
/// once, as a start-up error instead of failing every session.
async fn check_tls_accepted(endpoint: &str, tls: &TlsOptions) -> Result<(), String> {
    let probe = ConnectOptions::new().with_tls(tls.clone());
    match Client::connect([endpoint], Some(probe)).await {
        Err(error @ etcd_client::Error::TransportError(_)) => Err(describe(&error)),
        // Endpoint errors are reported by the first session.
        Ok(_) | Err(_) => Ok(()),
    }
}

fn connect_options(config: &EtcdConfig, tls: Option<TlsOptions>) -> ConnectOptions {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.dial_timeout)
        .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
        // etcd's default policy (PermitWithoutStream = false) answers pings
        // on a connection without streams with GOAWAY; our watch stream is
        // always open while it matters.
        .with_keep_alive_while_idle(false)
        // A member cut off from its cluster then fails our watch instead of
        // silently serving nothing new, and we move to a live member.
        .with_require_leader(true);
    if let Some(username) = &config.username {
        let password = config
            .password
            .as_ref()
            .map(|secret| secret.0.clone())
            .unwrap_or_default();
        // etcd's simple tokens expire after `--auth-token-ttl` (300 s) unused;
        // a unary request refused for an expired token authenticates again
        // and is retried once. The watch stream is checked only when opened,
        // and each session authenticates afresh when it connects.
        options = options
            .with_user(username.clone(), password)
            .with_auto_token_refresh(true);
    }
    if let Some(tls) = tls {
        // With TLS set, etcd-client dials `https://HOST:PORT`.
        options = options.with_tls(tls);
    }
    options
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

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {

    #[test]
    fn an_unknown_watch_event_type_is_an_error_not_a_panic() {
        use etcd_client::proto::{PbEvent, PbKeyValue, PbWatchResponse};
        let event = |r#type| PbEvent {
            r#type,
            kv: Some(PbKeyValue {
                key: b"sms.rpc/1".to_vec(),
                value: b"10.0.0.5:8001".to_vec(),
                mod_revision: 7,
                ..Default::default()
            }),
            prev_kv: None,
        };
        let response = |types: &[i32]| {
            etcd_client::WatchResponse(PbWatchResponse {
                events: types.iter().map(|&t| event(t)).collect(),
                ..Default::default()
            })
        };
        let events = convert_events(&response(&[0, 1])).expect("PUT and DELETE");
        assert_eq!(events.len(), 2);
        assert!(matches!(
            events[0],
            KvEvent::Put {
                mod_revision: 7,
                ..
            }
        ));
        assert!(matches!(
            events[1],
            KvEvent::Delete {
                mod_revision: 7,
                ..
            }
        ));
        assert_eq!(convert_events(&response(&[0, 2, 1])).err(), Some(2));
        assert_eq!(convert_events(&response(&[-1])).err(), Some(-1));
    }
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    use etcd_client::{CompactionOptions, PutOptions, Txn, TxnOp};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio::task::{JoinHandle, JoinSet};

    use super::*;

    /// How long any one expected record may take to arrive.
    const WAIT: Duration = Duration::from_secs(10);

    // ----- pure parts ------------------------------------------------------

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"sms"), b"smt".to_vec());
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn empty_prefix_is_every_key() {
        assert_eq!(
            KeyRange::for_prefix(""),
            KeyRange {
                start: vec![0],
                end: vec![0],
            }
        );
        assert_eq!(
            KeyRange::for_prefix("apps/"),
            KeyRange {
                start: b"apps/".to_vec(),
                end: b"apps0".to_vec(),
            }
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        assert_eq!(backoff_delay(0, 0.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(1, 0.0), Duration::from_millis(200));
        assert_eq!(backoff_delay(3, 0.0), Duration::from_millis(800));
        assert_eq!(backoff_delay(6, 0.0), BACKOFF_MAX);
        assert_eq!(backoff_delay(u32::MAX, 0.0), BACKOFF_MAX);
        assert_eq!(backoff_delay(0, 1.0), Duration::from_millis(120));
        assert_eq!(backoff_delay(0, -1.0), Duration::from_millis(80));
        assert_eq!(backoff_delay(10, 1.0), Duration::from_secs(6));
        // Out-of-range jitter is clamped, never a negative or huge delay.
        assert_eq!(backoff_delay(0, -7.0), Duration::from_millis(80));
    }

    #[test]
    fn backoff_grows_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(80) && delays[0] <= Duration::from_millis(120));
        assert!(delays[9] >= Duration::from_secs(4) && delays[9] <= Duration::from_secs(6));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(120));
    }

    #[tokio::test]
    async fn a_missing_tls_file_stops_run_with_its_key_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing-ca.pem");
        let mut config = config(vec!["127.0.0.1:1".to_owned()], "");
        config.tls = Some(crate::config::TlsConfig {
            ca_file: Some(missing.clone()),
            cert_file: None,
            key_file: None,
        });
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut sink = RecordingSink(tx);
        let result = run(&config, &mut sink, CancellationToken::new()).await;
        let Err(error) = result else {
            panic!("run accepted a missing ca_file");
        };
        assert!(matches!(error, SyncError::TlsFileRead { .. }));
        let text = error.to_string();
        assert!(text.contains("etcd.tls.ca_file"), "{text}");
        assert!(text.contains(&missing.display().to_string()), "{text}");
    }

    #[test]
    fn tls_files_without_pem_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let tls = |ca, cert, key| crate::config::TlsConfig {
            ca_file: ca,
            cert_file: cert,
            key_file: key,
        };
        let error = tls_options(&tls(Some(junk.clone()), None, None), WAIT).unwrap_err();
        assert!(
            matches!(
                error,
                SyncError::TlsFileInvalid {
                    key: "etcd.tls.ca_file",
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("junk.pem"), "{error}");

        // A certificate-looking file with a broken body.
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error =
            tls_options(&tls(None, Some(broken.clone()), Some(junk.clone())), WAIT).unwrap_err();
        assert!(
            matches!(
                error,
                SyncError::TlsFileInvalid {
                    key: "etcd.tls.cert_file",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn failures_are_sorted_by_kind() {
        let kind = FailureKind::of;
        assert_eq!(
            kind("InvalidArgument: etcdserver: authentication failed, invalid user ID or password"),
            FailureKind::Credentials
        );
        assert_eq!(
            kind("InvalidArgument: etcdserver: user name is empty"),
            FailureKind::Credentials
        );
        assert_eq!(
            kind("PermissionDenied: etcdserver: permission denied"),
            FailureKind::Permission
        );
        assert_eq!(
            kind("Unavailable: tcp connect error: invalid peer certificate: UnknownIssuer"),
            FailureKind::Tls
        );
        assert_eq!(
            kind("Unknown: received fatal alert: CertificateRequired"),
            FailureKind::Tls
        );
        assert_eq!(
            kind("Unavailable: tcp connect error: Connection refused (os error 111)"),
            FailureKind::Unreachable
        );
    }

    #[test]
    fn each_kind_of_failure_is_logged_once_per_period() {
        let mut log = FailureLog::default();
        assert!(log.should_log(FailureKind::Credentials));
        let repeats = (1..FAILURE_LOG_EVERY)
            .filter(|_| log.should_log(FailureKind::Credentials))
            .count();
        assert_eq!(repeats, 0);
        // The FAILURE_LOG_EVERY-th repeat is logged again, then quiet again.
        assert!(log.should_log(FailureKind::Credentials));
        assert!(!log.should_log(FailureKind::Credentials));
        // Another kind is logged at once, but alternating does not re-log.
        assert!(log.should_log(FailureKind::Tls));
        assert!(!log.should_log(FailureKind::Credentials));
        assert!(!log.should_log(FailureKind::Tls));
        log.reset();
        assert!(log.should_log(FailureKind::Credentials));
    }

    // ----- against a real etcd ----------------------------------------------

    #[tokio::test]
    async fn small_pages_read_everything_at_one_revision() {
        let etcd = EtcdServer::start().await;
        let mut client = etcd.client().await;
        let mut revision = 0;
        // etcd takes at most 128 operations per transaction.
        for chunk in (0..1000).collect::<Vec<u32>>().chunks(100) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|i| {
                    TxnOp::put(
                        format!("a.rpc/{i:04}"),
                        format!("10.0.0.1:{}", 1000 + i),
                        None,
                    )
                })
                .collect();
            let response = client.txn(Txn::new().and_then(ops)).await.unwrap();
            revision = response.header().unwrap().revision();
        }
        let mut kv = client.kv_client();
        let range = KeyRange::for_prefix("");
        let (kvs, read_revision) = read_all(&mut kv, &range, 300).await.unwrap();
        assert_eq!(kvs.len(), 1000, "four pages of 300");
        assert_eq!(read_revision, revision);
        assert!(
            kvs.windows(2).all(|w| w[0].0 < w[1].0),
            "in key order, no repeats"
        );
    }

    #[tokio::test]
    async fn paged_read_then_watch_puts_and_deletes() {
        let etcd = EtcdServer::start().await;
        let mut client = etcd.client().await;
        // Keys under the prefix, plus keys just outside it.
        let mut expected = BTreeMap::new();
        let mut revision = 0;
        for chunk in (0..2500).collect::<Vec<u32>>().chunks(100) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|i| {
                    let key = format!("p/a.rpc/{i:05}");
                    let value = format!("10.0.0.1:{}", 1000 + i);
                    expected.insert(key.clone().into_bytes(), value.clone().into_bytes());
                    TxnOp::put(key, value, None)
                })
                .collect();
            let response = client.txn(Txn::new().and_then(ops)).await.unwrap();
            revision = response.header().unwrap().revision();
        }
        client.put("p", "outside", None).await.unwrap();
        client.put("p0", "outside", None).await.unwrap();
        let revision_after = put(&mut client, "o/x", "outside").await;

        let mut sync = Sync::start(config(vec![etcd.endpoint()], "p/"));
        assert_eq!(sync.next().await, Record::Connected(true));
        let Record::Reset {
            kvs,
            revision: read_revision,
            reason,
        } = sync.next().await
        else {
            panic!("expected a reset");
        };
        assert_eq!(reason, ResyncReason::Initial);
        assert_eq!(kvs.len(), 2500);
        assert_eq!(kvs, expected);
        // The read happened after the outside puts, at one revision.
        assert!(read_revision >= revision_after && revision_after > revision);

        let put_revision = put(&mut client, "p/b.rpc/1", "10.0.0.2:80").await;
        client.put("o/y", "outside", None).await.unwrap();
        let delete_revision = client
            .delete("p/a.rpc/00007", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let events = sync.events_until(2).await;
        assert_eq!(
            events,
            vec![
                KvEvent::Put {
                    key: b"p/b.rpc/1".to_vec(),
                    value: b"10.0.0.2:80".to_vec(),
                    mod_revision: put_revision,
                },
                KvEvent::Delete {
                    key: b"p/a.rpc/00007".to_vec(),
                    mod_revision: delete_revision,
                },
            ]
        );
        sync.stop().await;
    }

    #[tokio::test]
    async fn lease_expiry_arrives_as_a_delete() {
        let etcd = EtcdServer::start().await;
        let mut client = etcd.client().await;
        client.put("other", "x", None).await.unwrap();
        let mut sync = Sync::start(config(vec![etcd.endpoint()], ""));
        assert_eq!(sync.next().await, Record::Connected(true));
        let Record::Reset { kvs, .. } = sync.next().await else {
            panic!("expected a reset");
        };
        // Prefix "" reads every key.
        assert_eq!(kvs.keys().collect::<Vec<_>>(), vec![&b"other".to_vec()]);

        let lease = client.lease_grant(1, None).await.unwrap().id();
        client
            .put(
                "sms.rpc/1",
                "10.0.0.5:8001",
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .unwrap();
        let events = sync.events_until(2).await;
        assert!(matches!(&events[0], KvEvent::Put { key, .. } if key == b"sms.rpc/1"));
        assert!(matches!(&events[1], KvEvent::Delete { key, .. } if key == b"sms.rpc/1"));
        sync.stop().await;
    }

    #[tokio::test]
    async fn outage_resumes_the_watch_and_compaction_forces_a_reread() {
        let etcd = EtcdServer::start().await;
        let mut client = etcd.client().await;
        let mut proxy = Proxy::start(etcd.addr()).await;
        put(&mut client, "k1", "1").await;
        put(&mut client, "k2", "2").await;

        let mut sync = Sync::start(config(vec![proxy.endpoint()], ""));
        assert_eq!(sync.next().await, Record::Connected(true));
        assert!(matches!(sync.next().await, Record::Reset { .. }));

        // Outage 1: changes made meanwhile arrive as events, no re-read.
        proxy.close().await;
        assert_eq!(sync.next().await, Record::Connected(false));
        let r3 = put(&mut client, "k3", "3").await;
        let r4 = client
            .delete("k1", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        proxy.open().await;
        assert_eq!(sync.next().await, Record::Connected(true));
        let events = sync.events_until(2).await;
        assert_eq!(
            events,
            vec![
                KvEvent::Put {
                    key: b"k3".to_vec(),
                    value: b"3".to_vec(),
                    mod_revision: r3,
                },
                KvEvent::Delete {
                    key: b"k1".to_vec(),
                    mod_revision: r4,
                },
            ]
        );

        // Outage 2: the resume revision is compacted away meanwhile.
        proxy.close().await;
        assert_eq!(sync.next().await, Record::Connected(false));
        put(&mut client, "k4", "4").await;
        client.delete("k3", None).await.unwrap();
        let last = put(&mut client, "k2", "two").await;
        client
            .compact(last, Some(CompactionOptions::new().with_physical()))
            .await
            .unwrap();
        proxy.open().await;
        assert_eq!(sync.next().await, Record::Connected(true));
        let Record::Reset {
            kvs,
            revision,
            reason,
        } = sync.next().await
        else {
            panic!("expected a reset");
        };
        assert_eq!(reason, ResyncReason::Compacted);
        assert_eq!(revision, last);
        let expected: BTreeMap<Vec<u8>, Vec<u8>> = [
            (b"k2".to_vec(), b"two".to_vec()),
            (b"k4".to_vec(), b"4".to_vec()),
        ]
        .into();
        assert_eq!(kvs, expected);

        // And the watch goes on from there.
        let r5 = put(&mut client, "k5", "5").await;
        assert_eq!(
            sync.events_until(1).await,
            vec![KvEvent::Put {
                key: b"k5".to_vec(),
                value: b"5".to_vec(),
                mod_revision: r5,
            }]
        );
        sync.stop().await;
    }

    #[tokio::test]
    async fn etcd_restart_resumes_without_reread() {
        let mut etcd = EtcdServer::start().await;
        let mut client = etcd.client().await;
        put(&mut client, "k1", "1").await;
        let mut sync = Sync::start(config(vec![etcd.endpoint()], ""));
        assert_eq!(sync.next().await, Record::Connected(true));
        assert!(matches!(sync.next().await, Record::Reset { .. }));

        etcd.kill();
        assert_eq!(sync.next().await, Record::Connected(false));
        etcd.restart().await;
        let mut client = etcd.client().await;
        let r2 = put(&mut client, "k2", "2").await;
        assert_eq!(sync.next().await, Record::Connected(true));
        // The very next record is the event: no reset in between.
        assert_eq!(
            sync.next().await,
            Record::Apply {
                events: vec![KvEvent::Put {
                    key: b"k2".to_vec(),
                    value: b"2".to_vec(),
                    mod_revision: r2,
                }],
                revision: r2,
            }
        );
        sync.stop().await;
    }

    #[tokio::test]
    async fn a_dead_endpoint_among_several_is_survived() {
        let etcd = EtcdServer::start().await;
        let mut client = etcd.client().await;
        put(&mut client, "k1", "1").await;
        let dead = format!("127.0.0.1:{}", free_port());
        let mut sync = Sync::start(config(vec![dead, etcd.endpoint()], ""));
        assert_eq!(sync.next().await, Record::Connected(true));
        let Record::Reset { kvs, .. } = sync.next().await else {
            panic!("expected a reset");
        };
        assert_eq!(kvs.len(), 1);
        let r2 = put(&mut client, "k2", "2").await;
        let events = sync.events_until(1).await;
        assert_eq!(events[0].mod_revision(), r2);
        sync.stop().await;
    }

    // ----- harness -----------------------------------------------------------

    fn config(endpoints: Vec<String>, prefix: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            prefix: prefix.to_owned(),
            patterns: vec!["*.rpc".to_owned()],
            username: None,
            password: None,
            tls: None,
            dial_timeout: Duration::from_secs(2),
        }
    }

    async fn put(client: &mut Client, key: &str, value: &str) -> i64 {
        client
            .put(key, value, None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision()
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap()
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Record {
        Reset {
            kvs: BTreeMap<Vec<u8>, Vec<u8>>,
            revision: i64,
            reason: ResyncReason,
        },
        Apply {
            events: Vec<KvEvent>,
            revision: i64,
        },
        Connected(bool),
    }

    struct RecordingSink(mpsc::UnboundedSender<Record>);

    impl SyncSink for RecordingSink {
        fn reset(&mut self, kvs: Vec<(Vec<u8>, Vec<u8>)>, revision: i64, reason: ResyncReason) {
            let count = kvs.len();
            let kvs: BTreeMap<_, _> = kvs.into_iter().collect();
            assert_eq!(kvs.len(), count, "a key came back twice");
            let _ = self.0.send(Record::Reset {
                kvs,
                revision,
                reason,
            });
        }

        fn apply(&mut self, events: Vec<KvEvent>, revision: i64) {
            assert!(!events.is_empty(), "empty batches are not applied");
            let _ = self.0.send(Record::Apply { events, revision });
        }

        fn set_connected(&mut self, connected: bool) {
            let _ = self.0.send(Record::Connected(connected));
        }
    }

    /// `run` in a task, with its records.
    struct Sync {
        records: mpsc::UnboundedReceiver<Record>,
        shutdown: CancellationToken,
        task: JoinHandle<Result<(), SyncError>>,
    }

    impl Sync {
        fn start(config: EtcdConfig) -> Self {
            let (tx, records) = mpsc::unbounded_channel();
            let shutdown = CancellationToken::new();
            let token = shutdown.clone();
            let task = tokio::spawn(async move {
                let mut sink = RecordingSink(tx);
                run(&config, &mut sink, token).await
            });
            Self {
                records,
                shutdown,
                task,
            }
        }

        async fn next(&mut self) -> Record {
            match tokio::time::timeout(WAIT, self.records.recv()).await {
                Ok(Some(record)) => record,
                Ok(None) => panic!("sync task ended"),
                Err(_) => panic!("no record within {WAIT:?}"),
            }
        }

        /// Collects the events of `Apply` records until there are `count`
        /// of them; any other record is a failure.
        async fn events_until(&mut self, count: usize) -> Vec<KvEvent> {
            let mut events = Vec::new();
            while events.len() < count {
                match self.next().await {
                    Record::Apply {
                        events: batch,
                        revision,
                    } => {
                        assert_eq!(batch.last().map(KvEvent::mod_revision), Some(revision));
                        events.extend(batch);
                    }
                    other => panic!("expected events, got {other:?}"),
                }
            }
            events
        }

        /// Cancels and checks `run` returns `Ok` promptly.
        async fn stop(self) {
            self.shutdown.cancel();
            let result = tokio::time::timeout(Duration::from_secs(5), self.task)
                .await
                .expect("run did not stop on shutdown")
                .expect("run panicked");
            assert!(result.is_ok());
        }
    }

    /// A throwaway single-member etcd on free loopback ports.
    struct EtcdServer {
        child: Option<Child>,
        dir: tempfile::TempDir,
        client_port: u16,
        peer_port: u16,
    }

    impl EtcdServer {
        async fn start() -> Self {
            let mut server = EtcdServer {
                child: None,
                dir: tempfile::tempdir().unwrap(),
                client_port: free_port(),
                peer_port: free_port(),
            };
            server.restart().await;
            server
        }

        fn endpoint(&self) -> String {
            format!("127.0.0.1:{}", self.client_port)
        }

        fn addr(&self) -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], self.client_port))
        }

        fn log_path(&self) -> PathBuf {
            self.dir.path().join("etcd.log")
        }

        /// Starts etcd (again) on the same data dir and ports, and waits
        /// until it answers.
        async fn restart(&mut self) {
            let binary = std::env::var_os("ETCD_BIN").unwrap_or_else(|| "etcd".into());
            let client_url = format!("http://127.0.0.1:{}", self.client_port);
            let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .unwrap();
            let child = Command::new(binary)
                .arg("--name=default")
                .arg(format!(
                    "--data-dir={}",
                    self.dir.path().join("data").display()
                ))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=default={peer_url}"))
                // A one-member cluster elects itself fast with short timers.
                .arg("--heartbeat-interval=20")
                .arg("--election-timeout=200")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("cannot start etcd (set ETCD_BIN or put etcd on PATH)");
            self.child = Some(child);
            let deadline = Instant::now() + WAIT;
            loop {
                if let Ok(Ok(mut client)) = tokio::time::timeout(
                    Duration::from_secs(1),
                    Client::connect([self.endpoint()], None),
                )
                .await
                    && let Ok(Ok(_)) =
                        tokio::time::timeout(Duration::from_secs(1), client.get("probe", None))
                            .await
                {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd did not come up: {}",
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        async fn client(&self) -> Client {
            Client::connect([self.endpoint()], None).await.unwrap()
        }

        fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        }
    }

    impl Drop for EtcdServer {
        fn drop(&mut self) {
            self.kill();
            if std::thread::panicking() {
                eprintln!("--- etcd log ---\n{}", self.log());
            }
        }
    }

    /// A TCP proxy in front of etcd that can drop every connection and stop
    /// listening, then listen again on the same port: an outage that leaves
    /// etcd itself up, so the test can change and compact it meanwhile.
    struct Proxy {
        port: u16,
        upstream: SocketAddr,
        task: Option<JoinHandle<()>>,
    }

    impl Proxy {
        async fn start(upstream: SocketAddr) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            Proxy {
                port,
                upstream,
                task: Some(tokio::spawn(proxy_loop(listener, upstream))),
            }
        }

        fn endpoint(&self) -> String {
            format!("127.0.0.1:{}", self.port)
        }

        /// Stops listening and drops every connection (aborting the task
        /// drops the listener and the JoinSet, which aborts the copies).
        async fn close(&mut self) {
            if let Some(task) = self.task.take() {
                task.abort();
                let _ = task.await;
            }
        }

        async fn open(&mut self) {
            let deadline = Instant::now() + WAIT;
            let listener = loop {
                match TcpListener::bind(("127.0.0.1", self.port)).await {
                    Ok(listener) => break listener,
                    Err(error) => {
                        assert!(Instant::now() < deadline, "cannot re-bind proxy: {error}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            };
            self.task = Some(tokio::spawn(proxy_loop(listener, self.upstream)));
        }
    }

    async fn proxy_loop(listener: TcpListener, upstream: SocketAddr) {
        let mut connections = JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            while connections.try_join_next().is_some() {}
            connections.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    }
}
