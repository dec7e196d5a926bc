//! The external programs the client tests run (clients.rs, grpc.rs): where
//! their sources and builds live, finding installed tools, and what to do
//! when one is missing (fail under CI, skip by hand).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use crate::harness::rpcdns_bin;

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
