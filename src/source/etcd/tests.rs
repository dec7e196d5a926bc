//! Tests of the etcd side: the pure parts (key ranges, backoff, TLS files,
//! failure classification, watch events) and sessions against a real etcd.

use super::connect::*;
use super::*;

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
                    tokio::time::timeout(Duration::from_secs(1), client.get("probe", None)).await
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
