//! The external programs the client tests run (clients.rs, grpc.rs): where
//! their sources and builds live, finding installed tools, what to do when
//! one is missing (fail under CI, skip by hand), and running one with a
//! private /etc/resolv.conf.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::harness::{Ran, rpcdns_bin, run};

/// Loopback addresses tried, in order, for a DNS server on port 53 that a
/// private resolv.conf names.
const PORT53_CANDIDATES: std::ops::RangeInclusive<u8> = 1..=20;

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The source of the client programs.
pub fn clients_dir() -> PathBuf {
    root().join("tests/clients")
}

/// Where built client programs and their caches live: `target/clients`,
/// next to the rpcdns binary's profile directory (so it follows
/// CARGO_TARGET_DIR), never in $HOME.
pub fn build_dir() -> PathBuf {
    let bin = Path::new(rpcdns_bin());
    bin.parent()
        .and_then(Path::parent)
        .map(|target| target.join("clients"))
        .unwrap_or_else(|| root().join("target/clients"))
}

/// True when this run is CI's, where every client must be installed.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Why a client cannot run: a panic under CI, a printed skip elsewhere.
pub fn missing(why: &str) {
    assert!(!in_ci(), "{why} (CI must have every client)");
    eprintln!("skipped: {why}");
}

/// The path of `name` on PATH or in the sbin directories; None (with the
/// reason printed) when it is missing on a developer machine, a panic under
/// CI.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        missing(&format!(
            "{name} is not installed: run scripts/install-deps.sh"
        ));
    }
    found
}

/// The tools venv's Python (scripts/install-deps.sh) when it can import
/// every module of `modules`; None, with the reason, otherwise.
pub fn venv_python(modules: &[&str]) -> Option<PathBuf> {
    let python = root().join("target/tools/venv/bin/python");
    let imports = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let ok = python.is_file()
        && Command::new(&python)
            .args(["-c", &imports])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        missing(&format!(
            "{} cannot `{imports}`: run scripts/install-deps.sh",
            python.display()
        ));
        return None;
    }
    Some(python)
}

/// True when `output` is missing or older than any of `inputs`.
pub fn stale(output: &Path, inputs: &[PathBuf]) -> bool {
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    let Some(built) = modified(output) else {
        return true;
    };
    inputs
        .iter()
        .any(|i| modified(i).is_none_or(|m: SystemTime| m > built))
}

// ----------------------------------------------------------------------------
// A private /etc/resolv.conf
// ----------------------------------------------------------------------------

pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
}

/// A loopback address whose port 53 is free for UDP and TCP right now:
/// 127.0.<net>.1 onwards. Tests that run at once pass different `net`s, so
/// that two cannot pick the same address between the check and the bind.
pub fn free_port53(net: u8) -> SocketAddr {
    PORT53_CANDIDATES
        .map(|last| SocketAddr::from((Ipv4Addr::new(127, 0, net, last), 53)))
        .find(|addr| UdpSocket::bind(addr).is_ok() && TcpListener::bind(addr).is_ok())
        .unwrap_or_else(|| {
            panic!("port 53 is taken on every one of 127.0.{net}.{PORT53_CANDIDATES:?}")
        })
}

/// /etc/nsswitch.conf with its `hosts:` line replaced by `hosts: files
/// dns`, so that an mdns rule for `.local` cannot take the names away.
pub fn nsswitch_files_dns() -> String {
    let current = std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
    let mut out: Vec<String> = current
        .lines()
        .filter(|l| !l.trim_start().starts_with("hosts:"))
        .map(str::to_string)
        .collect();
    out.push("hosts: files dns".to_string());
    out.join("\n") + "\n"
}

/// Runs `cmd` in a private mount namespace whose /etc/resolv.conf,
/// /etc/nsswitch.conf and /etc/hosts are the files in `etc`.
pub fn in_private_etc(unshare: &Path, etc: &Path, within: Duration, cmd: &[&str]) -> Ran {
    // The proxies of the environment must not carry curl elsewhere.
    let mut command = Command::new(unshare);
    command
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "set -e; \
             mount --bind \"$1/resolv.conf\" /etc/resolv.conf; \
             mount --bind \"$1/nsswitch.conf\" /etc/nsswitch.conf; \
             mount --bind \"$1/hosts\" /etc/hosts; \
             shift; exec \"$@\"",
        )
        .arg("sh")
        .arg(etc)
        .args(cmd);
    for proxy in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        command.env_remove(proxy);
    }
    run(&mut command, within)
}
