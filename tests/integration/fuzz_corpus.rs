//! The fuzz corpora, replayed on stable Rust: every committed input of
//! `fuzz/corpus/<target>/` and every fixed crash of
//! `fuzz/regressions/<target>/` goes through the same entry points as the
//! cargo-fuzz targets (`rpcdns::fuzzing`), so the normal suite keeps the
//! invariants the fuzzers checked. In-process: no etcd, no sockets.

use std::path::{Path, PathBuf};

use rpcdns::fuzzing::{self, RequestPath};

/// The inputs of one fuzz target: its corpus and its regressions.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for folder in ["corpus", "regressions"] {
        let dir = root.join(folder).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable corpus folder").path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("readable corpus file");
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

/// Runs `check` on every input; fails listing each input that broke an
/// invariant (or panicked) and why.
fn replay(target: &str, minimum: usize, check: impl Fn(&[u8]) -> Result<(), String>) {
    let inputs = inputs(target);
    assert!(
        inputs.len() >= minimum,
        "expected at least {minimum} committed inputs for {target}, found {}",
        inputs.len()
    );
    let mut failures = Vec::new();
    for (path, bytes) in &inputs {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(bytes)));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(violation)) => failures.push(format!("{}: {violation}", path.display())),
            Err(_) => failures.push(format!("{}: panicked", path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {target} inputs broke an invariant:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

#[test]
fn request_path_corpus_holds_every_invariant() {
    let path = RequestPath::new();
    replay("request_path", 100, |packet| path.check(packet));
}

#[test]
fn registration_corpus_holds_every_invariant() {
    replay("registration", 50, fuzzing::check_key_value);
}

/// The checks are not vacuous: a response that breaks them is caught.
#[test]
fn the_request_path_checks_catch_a_broken_response() {
    use rpcdns::fuzzing::{Path as Via, Transport, check_response};
    let path = RequestPath::new();
    let query = [
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, b's', b'm', b's', 3, b'r', b'p', b'c',
        3, b's', b'v', b'c', 5, b'l', b'o', b'c', b'a', b'l', 0, 0, 1, 0, 1,
    ];
    path.check(&query)
        .expect("a plain A query is answered well");
    let good = path.udp(&path.handlers()[1], &query).expect("an answer");
    assert_eq!(good.0, Via::Fast);
    let udp = Transport::Udp {
        max_udp_payload: 1232,
    };
    check_response(&query, udp, Some(&good)).expect("the real answer passes");
    let mut wrong_id = good.1.clone();
    wrong_id[1] ^= 1;
    assert!(
        check_response(&query, udp, Some(&(Via::Fast, wrong_id))).is_err(),
        "wrong ID"
    );
    let mut no_qr = good.1.clone();
    no_qr[2] &= 0x7f;
    assert!(
        check_response(&query, udp, Some(&(Via::Fast, no_qr))).is_err(),
        "QR clear"
    );
    let mut case = good.1.clone();
    case[13] = b'S';
    assert!(
        check_response(&query, udp, Some(&(Via::Fast, case))).is_err(),
        "question case"
    );
    let mut big = good.1.clone();
    big.resize(600, 0);
    assert!(
        check_response(&query, udp, Some(&(Via::Fast, big))).is_err(),
        "over 512"
    );
    let mut response = query.to_vec();
    response[2] |= 0x80;
    assert!(
        check_response(&response, udp, Some(&good)).is_err(),
        "answered a response"
    );
}
