//! The quick start (`scripts/demo.sh`) run end to end with DEMO_NO_WAIT=1.
//! It needs the fixed demo ports, so it skips (saying why) when they are
//! taken.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::POLL_INTERVAL;

/// The whole demo, including its `cargo build`, may take this long.
const DEMO_DEADLINE: Duration = Duration::from_secs(180);

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

#[test]
fn demo_script_answers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/demo.sh");
    if !script.exists() {
        eprintln!("skipped: {} does not exist", script.display());
        return;
    }
    let busy: Vec<u16> = [2379, 2380, 5353, 9153]
        .into_iter()
        .filter(|p| !port_free(*p))
        .collect();
    if !busy.is_empty() {
        eprintln!("skipped: demo ports {busy:?} are in use on 127.0.0.1");
        return;
    }
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut child = Command::new("bash")
        .arg(&script)
        .current_dir(root)
        .env("DEMO_NO_WAIT", "1")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.reopen().expect("log handle"))
        .stderr(log.reopen().expect("log handle"))
        .spawn()
        .expect("run demo.sh");
    let deadline = Instant::now() + DEMO_DEADLINE;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // SIGTERM lets the script's trap stop what it started.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
    match status {
        Some(s) => assert!(s.success(), "demo.sh failed with {s}:\n{output}"),
        None => panic!("demo.sh still running after {DEMO_DEADLINE:?}:\n{output}"),
    }
}
