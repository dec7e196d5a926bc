//! Many replicas on one etcd (issue 13): replicas connected through etcd's
//! own gRPC proxy (`etcd grpc-proxy`, in Debian's etcd), which coalesces
//! their identical watches into one per proxy, and survive a proxy's
//! death by moving to their next endpoint. Every replica is held to the
//! convergence checker. The figures (10 to 100 replicas, etcd CPU) are
//! `bench/replicas.sh`'s.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::EtcdCluster;
use crate::harness::*;

/// One `etcd grpc-proxy start`, killed by PID on drop.
pub struct GrpcProxy {
    child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl GrpcProxy {
    /// A proxy in front of `endpoints` (`HOST:PORT,...`) on a free
    /// loopback port; returns once it serves reads.
    pub fn start(endpoints: &str) -> GrpcProxy {
        let dir = tempfile::tempdir().expect("proxy temp dir");
        let port = free_ports(1)[0];
        let log = std::fs::File::create(dir.path().join("proxy.log")).expect("proxy log");
        let child = Command::new(etcd_bin())
            .args(["grpc-proxy", "start"])
            .arg(format!("--endpoints={endpoints}"))
            .arg(format!("--listen-addr=127.0.0.1:{port}"))
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("proxy log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd grpc-proxy");
        let proxy = GrpcProxy {
            child: Some(child),
            port,
            _dir: dir,
        };
        eventually(ETCD_START, || {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &proxy.endpoint(), "get", "--limit=1", "x"])
                .output()
                .map_err(|e| format!("etcdctl: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
        proxy
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the proxy (SIGKILL): its connections drop at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for GrpcProxy {
    fn drop(&mut self) {
        self.kill();
    }
}

fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("etcd"))
}

/// etcd's gauge `name` summed over the cluster's members (each proxy
/// holds its watch on one member).
pub fn cluster_gauge(cluster: &EtcdCluster, name: &str) -> Result<f64, String> {
    let mut sum = 0.0;
    for i in 0..cluster.len() {
        let (code, body) = http_get(cluster.endpoint(i).as_str(), "/metrics")?;
        if code != 200 {
            return Err(format!("member {i} /metrics: {code}"));
        }
        sum += body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .ok_or_else(|| format!("member {i}: no {name}"))?;
    }
    Ok(sum)
}

/// Six replicas behind two gRPC proxies (three list each proxy first) on
/// a three-member cluster. Through churn, every replica converges on
/// etcd (the convergence checker, each replica in turn) at the same SOA
/// serial, while etcd holds one watch stream per proxy, not per replica.
/// Then the first proxy is killed: queries to every replica keep being
/// answered throughout, its replicas move to the other proxy, and after
/// more churn every replica converges again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_through_grpc_proxies_share_watches_and_survive_a_proxy() {
    let cluster = EtcdCluster::start(3);
    let client = cluster.client(0).await;
    let mut proxies = [
        GrpcProxy::start(&cluster.endpoints_arg()),
        GrpcProxy::start(&cluster.endpoints_arg()),
    ];
    let streams_before =
        cluster_gauge(&cluster, "etcd_debugging_mvcc_watch_stream_total").expect("etcd metrics");
    let replicas: Vec<Rpcdns> = (0..6)
        .map(|i| {
            let (first, second) = (&proxies[i % 2], &proxies[1 - i % 2]);
            Rpcdns::start(&format!("{},{}", first.endpoint(), second.endpoint()), &[])
        })
        .collect();
    for replica in &replicas {
        replica.wait_ready();
    }
    let seed: u64 = rand::random();
    eprintln!("replicas churn seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut gone: Vec<String> = Vec::new();
    let churn = |rng: &mut StdRng| {
        let service = rng.random_range(0..8);
        let id = rng.random_range(0..6);
        let value = format!("10.9.{service}.{id}:{}", 8000 + rng.random_range(0..2));
        (
            format!("r{service}.rpc/{id}"),
            value,
            rng.random_range(0..4) == 0,
        )
    };
    for _ in 0..150 {
        let (key, value, delete) = churn(&mut rng);
        if delete {
            crate::harness::delete(&client, key.clone()).await;
        } else {
            put(&client, key.clone(), value).await;
        }
        let service = key.split('/').next().unwrap_or_default();
        gone.push(format!("{service}.{ZONE}"));
    }
    gone.sort();
    gone.dedup();
    let converge_all = |replicas: &[Rpcdns], gone: Vec<String>| {
        let client = client.clone();
        let dnses: Vec<_> = replicas.iter().map(|r| r.dns_addr).collect();
        async move {
            for dns in dnses {
                crate::converge::converge(&client, dns, &gone, PROPAGATION).await;
            }
        }
    };
    converge_all(&replicas, gone.clone()).await;
    let revision = current_revision(&client).await;
    for replica in &replicas {
        eventually(PROPAGATION, || {
            let zone = replica.debug_zone()?;
            match zone["serial"].as_i64() {
                Some(serial) if serial == revision => Ok(()),
                other => Err(format!("serial {other:?}, etcd at {revision}")),
            }
        });
    }
    // One stream per proxy (plus what was there before), whatever the
    // number of replicas.
    let streams =
        cluster_gauge(&cluster, "etcd_debugging_mvcc_watch_stream_total").expect("etcd metrics");
    eprintln!(
        "etcd watch streams: {streams_before} before the replicas, {streams} with 6 replicas behind 2 proxies"
    );
    assert!(
        streams - streams_before <= 2.0,
        "{streams} watch streams on etcd for 6 replicas behind 2 proxies (before: {streams_before})"
    );

    // The first proxy dies: queries never stop being answered.
    let probe = "r0.rpc.svc.local.";
    let answered = |replicas: &[Rpcdns]| -> Result<(), String> {
        for replica in replicas {
            let reply = try_query_udp(replica.dns_addr, probe, RecordType::A, None)?;
            if reply.metadata.response_code != hickory_proto::op::ResponseCode::NoError
                && reply.metadata.response_code != hickory_proto::op::ResponseCode::NXDomain
            {
                return Err(format!(
                    "{}: {:?}",
                    replica.dns_addr, reply.metadata.response_code
                ));
            }
        }
        Ok(())
    };
    proxies[0].kill();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        answered(&replicas).expect("every replica answers while a proxy dies");
    }
    for replica in &replicas {
        eventually(Duration::from_secs(20), || {
            match replica.etcd_connected()? {
                true => Ok(()),
                false => Err("not reconnected".to_owned()),
            }
        });
    }
    for _ in 0..100 {
        let (key, value, delete) = churn(&mut rng);
        if delete {
            crate::harness::delete(&client, key.clone()).await;
        } else {
            put(&client, key.clone(), value).await;
        }
    }
    converge_all(&replicas, gone).await;
    for replica in &replicas {
        assert!(
            replica.log().contains("connected to etcd"),
            "{}",
            replica.log()
        );
    }
}
