//! Securing the etcd connection (SPEC §7): TLS with a CA and client
//! certificates (made here with the `openssl` CLI), username and password
//! against an etcd with authentication on, the clear log line and the 503
//! while etcd refuses us, and the password never showing in any output.
//!
//! The TLS etcd is started here rather than by `harness::Etcd`, which
//! speaks plain HTTP only; it follows the same rules (free ports, own temp
//! dir, killed by PID on drop, readiness polled with a deadline).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, Permission, TlsOptions};
use tempfile::TempDir;

use crate::harness::*;

const SMS: &str = "sms.rpc.svc.local.";
/// How long rpcdns may take to exit on a start-up error.
const EXIT: Duration = Duration::from_secs(15);
/// Log lines `source/etcd.rs` writes; a change there must show up here.
/// The warning for an etcd that cannot be reached at all.
const UNREACHABLE: &str = "etcd unreachable";
const TLS_FAILED: &str = "tls handshake with etcd failed";
const CREDENTIALS_REFUSED: &str = "etcd refused the credentials";
const ATTEMPT_FAILED: &str = "etcd reconnect attempt failed";
/// rpcdns at info, plus the debug line of each quiet retry, so a test can
/// tell "retried five times, logged once" from "tried once".
const LOG_RETRIES: &str = "info,rpcdns::source::etcd=debug";

// ----------------------------------------------------------------------------
// Certificates
// ----------------------------------------------------------------------------

/// A throwaway PKI: `ca` signs the etcd server certificate (SAN IP
/// 127.0.0.1) and a client certificate; `other-ca` signs nothing rpcdns
/// should trust.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("rpcdns-pki-")
            .tempdir()
            .expect("create pki dir");
        let pki = Pki { dir };
        pki.ca("ca");
        pki.ca("other-ca");
        pki.leaf(
            "server",
            "ca",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        );
        pki.leaf("client", "ca", "extendedKeyUsage=clientAuth");
        pki
    }

    /// `NAME.pem` (certificate) or `NAME-key.pem` (key) in the PKI dir.
    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn path_str(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run openssl (scripts/install-deps.sh installs it)");
        assert!(
            output.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=rpcdns test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    fn leaf(&self, name: &str, ca: &str, extensions: &str) {
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN=rpcdns test {name}"),
        ]);
        let ext = format!("{name}.ext");
        std::fs::write(
            self.path(&ext),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}\n"
            ),
        )
        .expect("write extensions file");
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}-key.pem"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }

    /// TLS settings of a client trusting `ca` and presenting `client`.
    fn client_tls(&self) -> TlsOptions {
        let read = |file: &str| std::fs::read(self.path(file)).expect("read pki file");
        TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read("ca.pem")))
            .identity(Identity::from_pem(
                read("client.pem"),
                read("client-key.pem"),
            ))
    }
}

// ----------------------------------------------------------------------------
// etcd over TLS with client-certificate authentication
// ----------------------------------------------------------------------------

struct TlsEtcd {
    child: Option<Child>,
    _dir: TempDir,
    client_port: u16,
}

impl TlsEtcd {
    /// Starts etcd with `https://127.0.0.1:PORT` for clients, requiring a
    /// client certificate signed by the PKI's CA, and waits until a client
    /// with such a certificate can read.
    async fn start(pki: &Pki) -> TlsEtcd {
        let dir = tempfile::Builder::new()
            .prefix("rpcdns-etcd-tls-")
            .tempdir()
            .expect("create etcd temp dir");
        let ports = free_ports(2);
        let client_url = format!("https://127.0.0.1:{}", ports[0]);
        let peer_url = format!("http://127.0.0.1:{}", ports[1]);
        let log = File::create(dir.path().join("etcd.log")).expect("create etcd log");
        let log2 = log.try_clone().expect("clone etcd log");
        let binary = std::env::var_os("ETCD_BIN").unwrap_or_else(|| "etcd".into());
        let child = Command::new(binary)
            .arg("--name=tls")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=tls={peer_url}"))
            .arg(format!("--cert-file={}", pki.path_str("server.pem")))
            .arg(format!("--key-file={}", pki.path_str("server-key.pem")))
            .arg("--client-cert-auth")
            .arg(format!("--trusted-ca-file={}", pki.path_str("ca.pem")))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("cannot start etcd (set ETCD_BIN or put etcd on PATH)");
        let mut etcd = TlsEtcd {
            child: Some(child),
            _dir: dir,
            client_port: ports[0],
        };
        let deadline = Instant::now() + ETCD_START;
        loop {
            if let Ok(mut client) = etcd.try_client(pki).await
                && let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_secs(1), client.get("probe", None)).await
            {
                return etcd;
            }
            if let Some(child) = etcd.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("TLS etcd exited with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "TLS etcd not ready within {ETCD_START:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    async fn try_client(&self, pki: &Pki) -> Result<Client, etcd_client::Error> {
        let options = ConnectOptions::new()
            .with_tls(pki.client_tls())
            .with_connect_timeout(Duration::from_secs(1));
        Client::connect([self.endpoint()], Some(options)).await
    }
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ----------------------------------------------------------------------------
// Helpers
// ----------------------------------------------------------------------------

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

/// Waits until rpcdns has failed `attempts` times (its debug line per quiet
/// retry), then checks `line` was logged exactly once and /readyz is 503.
#[track_caller]
fn assert_refused_quietly(rpcdns: &Rpcdns, line: &str, attempts: usize) {
    eventually(RECONNECT, || {
        let log = rpcdns.log();
        match count(&log, ATTEMPT_FAILED) >= attempts {
            true => Ok(()),
            false => Err(format!("fewer than {attempts} retries logged:\n{log}")),
        }
    });
    let log = rpcdns.log();
    assert_eq!(
        count(&log, line),
        1,
        "expected {line:?} once, for all {attempts}+ failures:\n{log}"
    );
    assert_eq!(rpcdns.readyz(), Ok(503), "ready without a read:\n{log}");
}

// ----------------------------------------------------------------------------
// TLS
// ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_syncs_and_answers() {
    let pki = Pki::new();
    let etcd = TlsEtcd::start(&pki).await;
    let client = etcd.try_client(&pki).await.expect("TLS etcd client");
    let _r = register(&client, "sms.rpc", "10.0.0.5:8001", 10).await;

    let config = write_config(
        pki.dir.path(),
        "rpcdns.yaml",
        &format!(
            "etcd:\n  tls:\n    ca_file: \"{}\"\n    cert_file: \"{}\"\n    key_file: \"{}\"\n",
            pki.path_str("ca.pem"),
            pki.path_str("client.pem"),
            pki.path_str("client-key.pem"),
        ),
    );
    let rpcdns = Rpcdns::start(&etcd.endpoint(), &["--config", &config]);
    rpcdns.wait_ready();
    eventually(PROPAGATION, || {
        check_a(rpcdns.dns_addr, SMS, &ipv4s(&["10.0.0.5"]))
    });
    // And the watch runs over TLS too.
    let _r2 = register(&client, "sms.rpc", "10.0.0.6:8001", 10).await;
    eventually(PROPAGATION, || {
        check_a(rpcdns.dns_addr, SMS, &ipv4s(&["10.0.0.5", "10.0.0.6"]))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_the_client_certificate_or_with_the_wrong_ca_never_syncs() {
    let pki = Pki::new();
    let etcd = TlsEtcd::start(&pki).await;
    let client = etcd.try_client(&pki).await.expect("TLS etcd client");
    let _r = register(&client, "sms.rpc", "10.0.0.5:8001", 10).await;

    // The server is trusted, but etcd wants a client certificate.
    let no_cert = write_config(
        pki.dir.path(),
        "no-cert.yaml",
        &format!(
            "etcd:\n  tls:\n    ca_file: \"{}\"\n",
            pki.path_str("ca.pem")
        ),
    );
    // The client certificate is fine, but the server's is not trusted.
    let wrong_ca = write_config(
        pki.dir.path(),
        "wrong-ca.yaml",
        &format!(
            "etcd:\n  tls:\n    ca_file: \"{}\"\n    cert_file: \"{}\"\n    key_file: \"{}\"\n",
            pki.path_str("other-ca.pem"),
            pki.path_str("client.pem"),
            pki.path_str("client-key.pem"),
        ),
    );
    // TLS on our side only: etcd answers https, not plain gRPC... and the
    // reverse (no etcd.tls against this etcd) is the plain-text failure.
    let args = ["--log-level", LOG_RETRIES, "--config"];
    let without_cert = Rpcdns::start(&etcd.endpoint(), &[&args[..], &[&no_cert]].concat());
    let with_wrong_ca = Rpcdns::start(&etcd.endpoint(), &[&args[..], &[&wrong_ca]].concat());
    // With TLS 1.3 etcd refuses a missing client certificate after the
    // client has finished its half of the handshake, so the client sees a
    // TLS alert or just a closed connection, depending on timing: either
    // warning may come, each at most once.
    eventually(RECONNECT, || {
        let log = without_cert.log();
        match count(&log, ATTEMPT_FAILED) >= 4 {
            true => Ok(()),
            false => Err(format!(
                "fewer than 4 retries logged:
{log}"
            )),
        }
    });
    let log = without_cert.log();
    let warnings = (count(&log, TLS_FAILED), count(&log, UNREACHABLE));
    assert!(
        matches!(warnings, (1, 0) | (0, 1) | (1, 1)),
        "expected one TLS or unreachable warning (at most one of each), got {warnings:?}:\n{log}"
    );
    assert_eq!(
        without_cert.readyz(),
        Ok(503),
        "ready without a read:\n{log}"
    );
    assert_refused_quietly(&with_wrong_ca, TLS_FAILED, 4);
    for rpcdns in [&without_cert, &with_wrong_ca] {
        eventually(PROPAGATION, || match rpcdns.etcd_connected()? {
            false => Ok(()),
            true => Err("etcd_connected is true".into()),
        });
    }
    let log = with_wrong_ca.log();
    assert!(
        log.contains("UnknownIssuer") || log.contains("unknown issuer"),
        "the log line should say why the server was not trusted:\n{log}"
    );
}

#[test]
fn a_missing_or_unusable_tls_file_stops_rpcdns_naming_it() {
    let pki = Pki::new();
    let missing = pki.path_str("missing-ca.pem");
    let listen = [
        "--dns-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ];
    let cases = [
        (
            "missing ca_file",
            format!("etcd:\n  tls:\n    ca_file: \"{missing}\"\n"),
            vec!["etcd.tls.ca_file", missing.as_str()],
        ),
        (
            "a key as ca_file",
            format!(
                "etcd:\n  tls:\n    ca_file: \"{}\"\n",
                pki.path_str("ca-key.pem")
            ),
            vec!["etcd.tls.ca_file", "no PEM certificate"],
        ),
        (
            "a certificate as key_file",
            format!(
                "etcd:\n  tls:\n    cert_file: \"{0}\"\n    key_file: \"{0}\"\n",
                pki.path_str("client.pem")
            ),
            vec!["etcd.tls.key_file", "no PEM private key"],
        ),
        (
            "a key that does not match its certificate",
            format!(
                "etcd:\n  tls:\n    ca_file: \"{}\"\n    cert_file: \"{}\"\n    key_file: \"{}\"\n",
                pki.path_str("ca.pem"),
                pki.path_str("client.pem"),
                pki.path_str("server-key.pem"),
            ),
            vec!["etcd.tls: cannot use", "client.pem", "server-key.pem"],
        ),
    ];
    for (i, (what, yaml, expected)) in cases.iter().enumerate() {
        let config = write_config(pki.dir.path(), &format!("bad-{i}.yaml"), yaml);
        let mut args = vec!["--config", config.as_str()];
        args.extend(listen);
        let (code, out, err) = run_rpcdns(&args, EXIT);
        // A start-up failure: 1 while etcd.rs reports it from the sync task,
        // 2 once main checks the files with the rest of the configuration.
        assert!(
            matches!(code, Some(1 | 2)),
            "{what}: exit code {code:?}; stdout:\n{out}\nstderr:\n{err}"
        );
        for needle in expected {
            assert!(
                err.contains(needle),
                "{what}: stderr lacks {needle:?}:\n{err}"
            );
        }
    }
}

// ----------------------------------------------------------------------------
// Username and password
// ----------------------------------------------------------------------------

const ROOT_PASSWORD: &str = "root-Pw-7f3a9";
const RPCDNS_PASSWORD: &str = "rpcdns-Pw-91c2e";
const WRONG_PASSWORD: &str = "wrong-Pw-5d8b0";

/// Turns authentication on: `root`, and `rpcdns` whose role may only read
/// keys under `sms.` (the prefix rpcdns watches in these tests). Returns a
/// root client.
async fn enable_auth(etcd: &Etcd) -> Client {
    let mut client = etcd.client().await;
    client
        .user_add("root", ROOT_PASSWORD, None)
        .await
        .expect("add root");
    client
        .user_grant_role("root", "root")
        .await
        .expect("grant root");
    client
        .role_add("rpcdns-role")
        .await
        .expect("add rpcdns-role");
    client
        .role_grant_permission("rpcdns-role", Permission::read("sms.").with_prefix())
        .await
        .expect("grant read on sms.");
    client
        .user_add("rpcdns", RPCDNS_PASSWORD, None)
        .await
        .expect("add rpcdns");
    client
        .user_grant_role("rpcdns", "rpcdns-role")
        .await
        .expect("grant rpcdns-role");
    client.auth_enable().await.expect("enable auth");
    let options = ConnectOptions::new().with_user("root", ROOT_PASSWORD);
    Client::connect([etcd.endpoint()], Some(options))
        .await
        .expect("connect as root")
}

fn auth_config(dir: &Path, name: &str, password: &str) -> String {
    write_config(
        dir,
        name,
        &format!("etcd:\n  prefix: \"sms.\"\n  username: \"rpcdns\"\n  password: \"{password}\"\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_syncs_with_the_right_password_and_retries_the_wrong_one_quietly() {
    let etcd = Etcd::start();
    let mut root = enable_auth(&etcd).await;
    let _r = register(&root, "sms.rpc", "10.0.0.5:8001", 10).await;
    let dir = tempfile::tempdir().expect("config dir");
    let right = auth_config(dir.path(), "right.yaml", RPCDNS_PASSWORD);
    let wrong = auth_config(dir.path(), "wrong.yaml", WRONG_PASSWORD);

    let good = Rpcdns::start(&etcd.endpoint(), &["--config", &right]);
    let bad = Rpcdns::start(
        &etcd.endpoint(),
        &["--log-level", LOG_RETRIES, "--config", &wrong],
    );
    good.wait_ready();
    eventually(PROPAGATION, || {
        check_a(good.dns_addr, SMS, &ipv4s(&["10.0.0.5"]))
    });
    assert_refused_quietly(&bad, CREDENTIALS_REFUSED, 4);
    let log = bad.log();
    assert!(
        log.contains("rpcdns"),
        "the log line names the user:\n{log}"
    );

    // It kept retrying: once etcd takes that password, it syncs.
    root.user_change_password("rpcdns", WRONG_PASSWORD)
        .await
        .expect("change rpcdns's password");
    bad.wait_ready_within(RECONNECT);
    eventually(PROPAGATION, || {
        check_a(bad.dns_addr, SMS, &ipv4s(&["10.0.0.5"]))
    });

    // No password in any output: logs (debug included) and check-config.
    let (code, out, err) = run_rpcdns(&["check-config", &wrong], EXIT);
    assert_eq!(code, Some(0), "check-config:\n{out}\n{err}");
    let outputs = [good.log(), bad.log(), out, err];
    for password in [RPCDNS_PASSWORD, WRONG_PASSWORD] {
        for output in &outputs {
            assert!(
                !output.contains(password),
                "a password was printed:\n{output}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_without_credentials_or_permission_is_a_clear_refusal() {
    let etcd = Etcd::start();
    let _root = enable_auth(&etcd).await;
    let dir = tempfile::tempdir().expect("config dir");
    // No username at all against an etcd that requires one.
    let anonymous = write_config(dir.path(), "anon.yaml", "etcd:\n  prefix: \"sms.\"\n");
    // The right password, but a prefix the role may not read.
    let outside = write_config(
        dir.path(),
        "outside.yaml",
        &format!(
            "etcd:\n  prefix: \"\"\n  username: \"rpcdns\"\n  password: \"{RPCDNS_PASSWORD}\"\n"
        ),
    );
    let anon = Rpcdns::start(
        &etcd.endpoint(),
        &["--log-level", LOG_RETRIES, "--config", &anonymous],
    );
    let denied = Rpcdns::start(
        &etcd.endpoint(),
        &["--log-level", LOG_RETRIES, "--config", &outside],
    );
    assert_refused_quietly(&anon, CREDENTIALS_REFUSED, 3);
    assert_refused_quietly(&denied, "etcd denied reading the watched keys", 3);
    assert!(!denied.log().contains(RPCDNS_PASSWORD));
}
