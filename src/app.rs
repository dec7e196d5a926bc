//! Binds the listeners and runs sync, DNS and admin until shutdown.
//!
//! Shutdown order (STYLE.md): a signal cancels the token; `/readyz` turns
//! 503 at once; the etcd watcher stops; the DNS server stops accepting and
//! finishes in-flight answers (a TCP query half received is read and
//! answered); the admin endpoint stops last, so `/readyz` shows the drain.
//! All of it within [`DEFAULT_SHUTDOWN_GRACE`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Name;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{
    Config, DnsConfig, EtcdConfig, GrpcConfig, HttpConfig, LogConfig, SourceConfig, StateConfig,
};
use crate::ops::admin::{self, AdminState};
use crate::ops::metrics::Metrics;
use crate::ops::status::SyncStatus;
use crate::serve::cookie::CookieSecret;
use crate::serve::handler::DnsHandler;
use crate::serve::rrl::Rrl;
use crate::serve::tcp;
use crate::serve::udp::{self, UdpServer};
use crate::source::etcd;
use crate::source::sources::Sources;
use crate::source::state;
use crate::source::watcher::Watcher;
use crate::zone::{GrpcConfigs, ReverseZone, ZoneParams, ZoneStore, ZoneWriter};

/// How long shutdown may take before we stop waiting.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Attempts to find a port free for both UDP and TCP when asked for port 0.
const EPHEMERAL_BIND_ATTEMPTS: usize = 20;

/// Why rpcdns stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error("invalid zone name {zone}: {reason}")]
    Zone { zone: String, reason: String },
    #[error("invalid pattern: {0}")]
    Pattern(String),
    #[error("failed to bind dns listener {addr}: {source}")]
    BindDns { addr: SocketAddr, source: io::Error },
    #[error("failed to bind http listener {addr}: {source}")]
    BindHttp { addr: SocketAddr, source: io::Error },
    #[error("failed to start the udp threads: {0}")]
    UdpThreads(io::Error),
    #[error("failed to install the signal handler: {0}")]
    Signal(io::Error),
    #[error("etcd sync failed: {0}")]
    Sync(#[from] etcd::SyncError),
    #[error("{0} stopped unexpectedly")]
    TaskEnded(&'static str),
    #[error("state.dir {dir}: {source}")]
    StateDir { dir: String, source: io::Error },
}

/// The bound DNS and HTTP listeners; bound before anything runs so that a
/// port in use is a startup error, and so tests can use port 0.
pub struct Listeners {
    /// Per DNS address: one UDP socket per worker thread (all on the same
    /// port, `SO_REUSEPORT`), and the TCP listener on that port.
    pub dns: Vec<(Vec<std::net::UdpSocket>, TcpListener)>,
    pub http: TcpListener,
}

impl Listeners {
    /// Binds every DNS address (UDP and TCP on the same port) and the HTTP
    /// address, and logs the addresses actually bound.
    pub async fn bind(dns: &DnsConfig, http: &HttpConfig) -> Result<Self, RunError> {
        let threads = udp_threads();
        let mut sockets = Vec::with_capacity(dns.listen.len());
        for &addr in &dns.listen {
            let (udp, tcp) = bind_dns(addr, threads)
                .await
                .map_err(|source| RunError::BindDns { addr, source })?;
            let bound = tcp
                .local_addr()
                .map_err(|source| RunError::BindDns { addr, source })?;
            info!("listening for dns on {bound} (udp and tcp)");
            sockets.push((udp, tcp));
        }
        let listener =
            TcpListener::bind(http.listen)
                .await
                .map_err(|source| RunError::BindHttp {
                    addr: http.listen,
                    source,
                })?;
        let bound = listener.local_addr().map_err(|source| RunError::BindHttp {
            addr: http.listen,
            source,
        })?;
        info!("listening for http on {bound}");
        Ok(Self {
            dns: sockets,
            http: listener,
        })
    }
}

/// One UDP worker per core.
fn udp_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Binds UDP and TCP on the same address. With port 0 the kernel picks the
/// UDP port, and we retry until TCP can have the same one.
async fn bind_dns(
    addr: SocketAddr,
    threads: usize,
) -> io::Result<(Vec<std::net::UdpSocket>, TcpListener)> {
    let attempts = if addr.port() == 0 {
        EPHEMERAL_BIND_ATTEMPTS
    } else {
        1
    };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = udp::bind(addr, threads)?;
        let bound = match udp.first() {
            Some(socket) => socket.local_addr()?,
            None => return Err(io::Error::other("no udp socket bound")),
        };
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no port free for both udp and tcp")))
}

/// Runs rpcdns with `config` until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), RunError> {
    let Config {
        etcd,
        dns,
        http,
        log: LogConfig { .. },
        grpc,
        sources,
        overlay,
        state,
    } = config;
    raise_open_file_limit();
    let listeners = Listeners::bind(&dns, &http).await?;
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    let signals = tokio::spawn(async move {
        let result = wait_for_signal().await;
        signal_token.cancel();
        result
    });
    let result = serve(
        etcd,
        dns,
        grpc,
        (sources, overlay),
        state,
        listeners,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    signals.abort();
    result
}

/// Raises the soft limit of open files to the hard limit, as servers that
/// hold a descriptor per client do (and Go's runtime does for every
/// program): a shell's `ulimit -n 1024` would otherwise leave new TCP and
/// HTTP connections waiting for a descriptor long before the 4,096 TCP
/// connections rpcdns serves at once. Warns when even the hard limit is
/// too low for that.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads one rlimit from the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            limit.rlim_cur = before;
        }
    }
    // The TCP connections, plus sockets, etcd, HTTP and some slack.
    let wanted = (crate::serve::tcp::MAX_CONNECTIONS + 256) as libc::rlim_t;
    if limit.rlim_cur < wanted {
        tracing::warn!(
            limit = limit.rlim_cur,
            wanted,
            "the open-file limit is low: new TCP and HTTP connections will wait when it is reached; raise LimitNOFILE / ulimit -n"
        );
    } else if before != limit.rlim_cur {
        tracing::debug!(
            from = before,
            to = limit.rlim_cur,
            "raised the open-file limit"
        );
    }
}

/// Runs everything on already-bound listeners until `shutdown` is
/// cancelled. Library entry point for tests.
pub async fn serve(
    mut etcd_config: EtcdConfig,
    dns: DnsConfig,
    grpc: GrpcConfig,
    (sources, overlay): (Vec<SourceConfig>, Option<String>),
    state_config: StateConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let origin = Name::from_ascii(&dns.zone).map_err(|e| RunError::Zone {
        zone: dns.zone.clone(),
        reason: e.to_string(),
    })?;
    let GrpcConfig {
        service_config,
        overrides,
    } = grpc;
    let overrides = overrides
        .into_iter()
        .map(|o| (o.pattern, o.service_config))
        .collect();
    let params = ZoneParams {
        origin: origin.to_lowercase(),
        ttl: dns.ttl,
        negative_ttl: dns.negative_ttl,
        grpc: GrpcConfigs::new(service_config, overrides, dns.ttl).map_err(RunError::Pattern)?,
        reverse: dns
            .reverse_zones
            .iter()
            .copied()
            .map(ReverseZone::new)
            .collect(),
    };
    let origin_text = params.origin_text();
    let store = Arc::new(ZoneStore::new(params));
    let status = Arc::new(SyncStatus::new());
    let metrics = Arc::new(Metrics::new());
    let fingerprint = state::fingerprint(&origin_text, &format!("{sources:?} overlay {overlay:?}"));
    let mut sources = Sources::new(&sources, &origin_text).map_err(RunError::Pattern)?;
    if let Some(prefix) = &overlay {
        sources = sources.with_overlay(prefix);
    }
    // One read and watch for every source: over what their prefixes share.
    etcd_config.prefix = sources.watch_prefix();

    // etcd → zone.
    let mut watcher = Watcher::new(
        ZoneWriter::new(store.clone()),
        status.clone(),
        metrics.clone(),
        sources,
        origin_text.clone(),
    );
    // The state file: served until the first full read, then kept up to
    // date.
    let state_token = CancellationToken::new();
    let mut state_writer = None;
    if let Some(dir) = &state_config.dir {
        std::fs::create_dir_all(dir).map_err(|source| RunError::StateDir {
            dir: dir.display().to_string(),
            source,
        })?;
        match state::load(dir, &fingerprint, state_config.max_bytes) {
            Ok(Some(file)) => watcher.load_stale(file),
            Ok(None) => info!(dir = %dir.display(), "no state file yet"),
            Err(error) => warn!(
                file = %dir.join(state::FILE_NAME).display(),
                %error,
                "state file not served"
            ),
        }
        let keeper = Arc::new(state::Keeper::default());
        watcher = watcher.with_state(keeper.clone());
        state_writer = Some(tokio::spawn(state::run_writer(
            state::WriterConfig {
                dir: dir.clone(),
                fingerprint,
                zone: origin_text,
                max_bytes: state_config.max_bytes,
            },
            keeper,
            metrics.clone(),
            state_token.clone(),
        )));
    }
    let sync_token = shutdown.child_token();
    let mut sync =
        tokio::spawn(async move { etcd::run(&etcd_config, &mut watcher, sync_token).await });

    // DNS: UDP on the fast-path threads, TCP on tasks; both fall back to
    // the hickory handler for anything unusual.
    let mut handler = DnsHandler::new(store.clone(), dns.max_udp_payload).with_forwarding(
        crate::serve::forward::Forwarder::new(
            dns.upstream.clone(),
            dns.allow_recursion_from.clone(),
        ),
    );
    if let Some(key) = &dns.cookie_secret {
        handler = handler.with_cookie_secret(CookieSecret::new(key.0));
    }
    let handler = Arc::new(handler);
    // One limiter for every address: a client's account is the same
    // whichever listener it asks.
    let rrl = Rrl::new(&dns.rrl).map(Arc::new);
    let dns_token = CancellationToken::new();
    let mut udp_servers = Vec::with_capacity(listeners.dns.len());
    let mut tcp_servers = tokio::task::JoinSet::new();
    for (udp, tcp_listener) in listeners.dns {
        udp_servers.push(
            UdpServer::start(
                udp,
                store.clone(),
                handler.clone(),
                metrics.clone(),
                rrl.clone(),
                tokio::runtime::Handle::current(),
            )
            .map_err(RunError::UdpThreads)?,
        );
        tcp_servers.spawn(tcp::serve(
            tcp_listener,
            store.clone(),
            handler.clone(),
            metrics.clone(),
            dns_token.clone(),
        ));
    }

    // Admin.
    let admin_token = CancellationToken::new();
    let mut admin = tokio::spawn(admin::serve(
        listeners.http,
        AdminState::new(store.clone(), status.clone(), metrics),
        admin_token.clone(),
    ));

    // Wait for shutdown, or for a task that must not end.
    // Biased: cancelling `shutdown` also ends the sync task (its token is
    // a child), and that must read as a clean stop, not as a task that
    // ended on its own.
    let outcome = tokio::select! {
        biased;
        () = shutdown.cancelled() => Ok(()),
        result = &mut sync => match result {
            Ok(Ok(())) => Err(RunError::TaskEnded("etcd sync")),
            Ok(Err(error)) => Err(RunError::Sync(error)),
            Err(_) => Err(RunError::TaskEnded("etcd sync")),
        },
        _ = &mut admin => Err(RunError::TaskEnded("admin http server")),
    };
    // First, before anything stops: load balancers and Kubernetes see 503
    // and stop sending queries while the rest drains.
    status.begin_shutdown();
    if let Err(error) = &outcome {
        error!(%error, "shutting down");
    }
    info!("shutting down: readiness withdrawn, draining");

    // Stop in order: watcher, DNS, admin; all within the grace period.
    let drain = async {
        shutdown.cancel();
        if !sync.is_finished() {
            let _ = (&mut sync).await;
        }
        // The watcher has stopped: the state file gets its last change.
        state_token.cancel();
        if let Some(writer) = state_writer.take() {
            let _ = writer.await;
        }
        // The UDP threads finish the batch in hand; joining them blocks.
        let udp = tokio::task::spawn_blocking(move || {
            udp_servers
                .into_iter()
                .map(UdpServer::stop)
                .collect::<Vec<_>>()
        });
        dns_token.cancel();
        while let Some(result) = tcp_servers.join_next().await {
            if !matches!(result, Ok(Ok(()))) {
                warn!("a tcp server stopped with an error");
            }
        }
        match udp.await {
            // Then the full-path answers (forwarded queries) they handed
            // to the runtime.
            Ok(in_flight) => {
                for tracker in in_flight {
                    tracker.wait().await;
                }
            }
            Err(_) => warn!("udp threads did not stop cleanly"),
        }
        admin_token.cancel();
        if !admin.is_finished() {
            let _ = (&mut admin).await;
        }
    };
    if tokio::time::timeout(DEFAULT_SHUTDOWN_GRACE, drain)
        .await
        .is_err()
    {
        warn!(
            grace = ?DEFAULT_SHUTDOWN_GRACE,
            "shutdown took longer than the grace period; exiting anyway"
        );
        sync.abort();
        admin.abort();
    } else {
        info!("stopped");
    }
    outcome
}

/// Waits for SIGTERM or SIGINT and logs which arrived.
async fn wait_for_signal() -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    tokio::select! {
        _ = term.recv() => info!("received SIGTERM"),
        _ = int.recv() => info!("received SIGINT"),
    }
    Ok(())
}
