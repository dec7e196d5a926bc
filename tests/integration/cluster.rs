//! A real three-member etcd cluster on loopback for the fault tests: each
//! member on its own free ports with its own data directory under /dev/shm,
//! killed, stopped and started one at a time by PID, all killed on drop.
//! Also: which etcd member a process is connected to, read from
//! /proc/<pid>/net/tcp{,6} and the socket inodes of /proc/<pid>/fd.

#![allow(dead_code)] // the soak test may use parts the fault tests do not

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use tempfile::TempDir;

use crate::harness::{ETCD_START, POLL_INTERVAL, free_ports, http_get};

/// One member: its ports, its process when running.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    starts: usize,
}

/// A cluster of etcd members that know each other from the start.
pub struct EtcdCluster {
    dir: TempDir,
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts `n` members and waits until every one answers `/health` (which
    /// in etcd 3.4 means it sees a leader). Retries with new ports when a
    /// chosen port was taken in the meantime.
    pub fn start(n: usize) -> EtcdCluster {
        let mut last_error = String::new();
        for _ in 0..3 {
            let dir = match Path::new("/dev/shm").is_dir() {
                true => tempfile::Builder::new()
                    .prefix("rpcdns-cluster-")
                    .tempdir_in("/dev/shm"),
                false => tempfile::Builder::new().prefix("rpcdns-cluster-").tempdir(),
            }
            .expect("create cluster temp dir");
            let ports = free_ports(2 * n);
            let members = (0..n)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    child: None,
                    starts: 0,
                })
                .collect();
            let mut cluster = EtcdCluster { dir, members };
            let spawned: Result<(), String> = (0..n).try_for_each(|i| cluster.spawn(i));
            match spawned.and_then(|()| (0..n).try_for_each(|i| cluster.wait_healthy(i))) {
                Ok(()) => return cluster,
                Err(e) => last_error = e,
            }
        }
        panic!("etcd cluster did not start: {last_error}");
    }

    fn binary() -> PathBuf {
        std::env::var_os("ETCD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("etcd"))
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        let m = &self.members[i];
        self.dir.path().join(format!("{}-{}.log", m.name, m.starts))
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let initial_cluster = self.initial_cluster();
        self.members[i].starts += 1;
        let log = File::create(self.log_path(i)).map_err(|e| format!("create etcd log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("clone etcd log: {e}"))?;
        let m = &self.members[i];
        let client_url = format!("http://127.0.0.1:{}", m.client_port);
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(Self::binary())
            .arg(format!("--name={}", m.name))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join(&m.name).display()
            ))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=rpcdns-cluster-test")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", Self::binary().display()))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    fn wait_healthy(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + ETCD_START;
        loop {
            if let Some(child) = self.members[i].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.members[i].child = None;
                let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                return Err(format!("member {i} exited with {status}: {tail:?}"));
            }
            if let Ok((200, body)) = http_get(self.endpoint(i).as_str(), "/health")
                && body.contains("true")
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("member {i} not healthy within {ETCD_START:?}"));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// `127.0.0.1:PORT` of member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's endpoint, comma-separated, as `--etcd` takes them.
    pub fn endpoints_arg(&self) -> String {
        (0..self.len())
            .map(|i| self.endpoint(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Which member listens for clients on `port`.
    pub fn member_of_port(&self, port: u16) -> Option<usize> {
        self.members.iter().position(|m| m.client_port == port)
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// A client of member `i` alone, with short timeouts so that a request
    /// to a member that has just died fails instead of hanging.
    pub async fn client(&self, i: usize) -> Client {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        Client::connect([self.endpoint(i)], Some(options))
            .await
            .unwrap_or_else(|e| panic!("connect a client to member {i}: {e}"))
    }

    /// SIGKILL member `i` and wait for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM member `i` (a clean stop) and wait up to 10 s, then SIGKILL.
    pub fn stop(&mut self, i: usize) {
        let Some(mut child) = self.members[i].child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Freezes member `i` with SIGSTOP: its connections stay open but
    /// nothing answers (a hung machine, not a dead one).
    pub fn freeze(&self, i: usize) {
        self.signal(i, "STOP");
        let pid = self.pid(i).unwrap_or_default();
        crate::harness::eventually(Duration::from_secs(5), || {
            let stat =
                std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
            // pid (comm) STATE ...
            match stat.rsplit_once(')').map(|(_, rest)| rest.trim_start()) {
                Some(rest) if rest.starts_with('T') => Ok(()),
                _ => Err(format!("member {i} (pid {pid}) not stopped: {stat}")),
            }
        });
    }

    /// Lets a frozen member run again (SIGCONT).
    pub fn thaw(&self, i: usize) {
        self.signal(i, "CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self
            .pid(i)
            .unwrap_or_else(|| panic!("member {i} is not running"));
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill(1)");
        assert!(sent.success(), "kill -{signal} {pid} failed");
    }

    /// Starts member `i` again on its data directory and ports; returns once
    /// it answers `/health`.
    pub fn start_member(&mut self, i: usize) {
        assert!(!self.is_running(i), "member {i} is already running");
        let started = self.spawn(i).and_then(|()| self.wait_healthy(i));
        if let Err(e) = started {
            panic!("member {i} did not restart: {e}");
        }
    }

    /// The member `pid` holds an established TCP connection to, when it is
    /// exactly one (None when none or several).
    pub fn member_connected_from(&self, pid: u32) -> Result<usize, String> {
        let ports = established_remote_ports(pid)?;
        let members: BTreeSet<usize> = ports
            .iter()
            .filter_map(|p| self.member_of_port(*p))
            .collect();
        match members.len() {
            1 => Ok(*members.first().unwrap_or(&0)),
            _ => Err(format!(
                "process {pid} is connected to members {members:?} (remote ports {ports:?})"
            )),
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// Remote ports of the ESTABLISHED TCP connections whose sockets process
/// `pid` holds: socket inodes from /proc/<pid>/fd, matched against the rows
/// of /proc/<pid>/net/tcp and tcp6 (which list the whole network namespace).
pub fn established_remote_ports(pid: u32) -> Result<BTreeSet<u16>, String> {
    let fd_dir = format!("/proc/{pid}/fd");
    let mut inodes = BTreeSet::new();
    for entry in std::fs::read_dir(&fd_dir).map_err(|e| format!("{fd_dir}: {e}"))? {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
        {
            inodes.insert(inode.to_owned());
        }
    }
    let mut ports = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(remote), Some(state), Some(inode)) =
                (fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if *state != "01" || !inodes.contains(*inode) {
                continue;
            }
            if let Some(port) = remote
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            {
                ports.insert(port);
            }
        }
    }
    Ok(ports)
}
