//! Connecting to etcd: the TLS files (read and checked once, at start),
//! the connection options (keep-alive, leader requirement, credentials),
//! and how a failure to connect is classified and logged (once per kind,
//! then every [`super::FAILURE_LOG_EVERY`] attempts; never the password).

use std::path::Path;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::*;
use crate::config::{EtcdConfig, TlsConfig};

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
pub(super) fn tls_files(tls: &TlsConfig) -> String {
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

pub(super) const CA_FILE_KEY: &str = "etcd.tls.ca_file";
pub(super) const CERT_FILE_KEY: &str = "etcd.tls.cert_file";
pub(super) const KEY_FILE_KEY: &str = "etcd.tls.key_file";

pub(super) fn read_tls_file(key: &'static str, path: &Path) -> Result<Vec<u8>, SyncError> {
    std::fs::read(path).map_err(|source| SyncError::TlsFileRead {
        key,
        path: path.to_owned(),
        source,
    })
}

/// At least one PEM certificate, and nothing that fails to decode.
pub(super) fn check_certificates(
    key: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<(), SyncError> {
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
pub(super) enum FailureKind {
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
    pub(super) fn of(error: &str) -> Self {
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

    pub(super) fn as_str(self) -> &'static str {
        match self {
            FailureKind::Credentials => "credentials",
            FailureKind::Permission => "permission",
            FailureKind::Tls => "tls",
            FailureKind::Unreachable => "unreachable",
        }
    }

    /// The log line: what is wrong and where to look.
    pub(super) fn message(self) -> &'static str {
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
pub(super) struct FailureLog {
    /// Failures so far of each kind, indexed by `FailureKind as usize`.
    counts: [u32; 4],
}

impl FailureLog {
    pub(super) fn should_log(&mut self, kind: FailureKind) -> bool {
        let count = &mut self.counts[kind as usize];
        let log = count.is_multiple_of(FAILURE_LOG_EVERY);
        *count = count.wrapping_add(1);
        log
    }

    pub(super) fn reset(&mut self) {
        *self = FailureLog::default();
    }
}

/// `error` with its causes, which etcd-client's `Display` leaves out (the
/// TLS and connection details live there). Shows a status's message, not
/// its metadata. etcd never echoes a password back, so neither does this.
pub(super) fn describe(error: &etcd_client::Error) -> String {
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
// Connection options
// ---------------------------------------------------------------------------

/// etcd-client builds the rustls configuration when it creates an
/// endpoint, before any I/O (a lazy channel, and no authentication without
/// a user): a client key that does not match its certificate shows up here,
/// once, as a start-up error instead of failing every session.
pub(super) async fn check_tls_accepted(endpoint: &str, tls: &TlsOptions) -> Result<(), String> {
    let probe = ConnectOptions::new().with_tls(tls.clone());
    match Client::connect([endpoint], Some(probe)).await {
        Err(error @ etcd_client::Error::TransportError(_)) => Err(describe(&error)),
        // Endpoint errors are reported by the first session.
        Ok(_) | Err(_) => Ok(()),
    }
}

pub(super) fn connect_options(config: &EtcdConfig, tls: Option<TlsOptions>) -> ConnectOptions {
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
