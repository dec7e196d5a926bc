//! deploy/ checked by tools, not by eye: hadolint on the Dockerfiles, the
//! Compose Specification's schema on the compose file, the Kubernetes
//! schemas on the manifests, `systemd-analyze` on the unit, `rpcdns
//! check-config` on every config a recipe ships, and, for real, a dnsmasq
//! forwarding svc.local to rpcdns as the stub-domain recipes say, the demo
//! registrar registering the go-zero way, and the image's health check.
//!
//! The tools come from scripts/install-deps.sh (Debian's dnsmasq and
//! systemd-analyze; hadolint, check-jsonschema and kubernetes-validate in the
//! venv target/tools/venv). When one is missing the test fails under CI
//! (`CI` set, as .ci/run's environment has it) and, on a developer machine,
//! skips saying why.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

// ----------------------------------------------------------------------------
// Files and tools
// ----------------------------------------------------------------------------

/// Kubernetes versions the manifests are validated against: the oldest and
/// the newest that kubernetes-validate 1.37 ships schemas for and that are
/// still in use.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];

/// What the stub-domain recipes forward svc.local to: rpcdns's Service.
const SERVICE_IP: &str = "10.96.0.53";

/// How long dnsmasq may take to start answering.
const DNSMASQ_START: Duration = Duration::from_secs(10);

/// How long a recipe's helper script may take to stop after SIGTERM.
const SCRIPT_STOP: Duration = Duration::from_secs(10);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// One YAML document of the repository as JSON values.
fn yaml(rel: &str) -> Value {
    yaml_str(rel, &read(rel))
}

fn yaml_str(what: &str, text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{what} is not YAML: {e}"))
}

/// True when this run is CI's, where every tool must be installed.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The path of `name`: the tools venv first, then PATH, then the sbin
/// directories (dnsmasq lives in /usr/sbin, not on every user's PATH).
/// None (with the reason printed) when it is missing on a developer machine;
/// a panic when it is missing under CI.
fn tool(name: &str) -> Option<PathBuf> {
    let venv = root().join("target/tools/venv/bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(venv)
        .chain(std::env::split_paths(&path))
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let why = format!("{name} is not installed: run scripts/install-deps.sh");
    assert!(!in_ci(), "{why} (CI must have every tool)");
    eprintln!("skipped: {why}");
    None
}

/// Runs a short-lived tool to completion; (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), strip_ansi(&text))
}

/// The port of an `ADDR:PORT` string.
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} has no port"))
}

/// A process of ours, killed with its whole process group when dropped (a
/// script's children too), also when a test panics.
struct Spawned {
    child: Child,
    what: String,
}

impl Spawned {
    fn start(what: &str, cmd: &mut Command) -> Spawned {
        let child = cmd
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        Spawned {
            child,
            what: what.to_string(),
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM to the process itself, then its exit status within `within`.
    fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill(1)");
        assert!(
            sent.success(),
            "kill -TERM {} ({}) failed",
            self.child.id(),
            self.what
        );
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // The group id is the child's pid (process_group(0)).
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----------------------------------------------------------------------------
// Dockerfiles and compose
// ----------------------------------------------------------------------------

/// The Dockerfile's instructions, continuation lines joined, comments gone.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

fn with_keyword<'a>(instructions: &'a [String], keyword: &str) -> Vec<&'a str> {
    instructions
        .iter()
        .filter_map(|i| i.strip_prefix(keyword)?.strip_prefix(' '))
        .map(str::trim)
        .collect()
}

#[test]
fn dockerfiles_pass_hadolint_and_run_unprivileged() {
    let Some(hadolint) = tool("hadolint") else {
        return;
    };
    for file in ["deploy/Dockerfile", "deploy/registrar/Dockerfile"] {
        let (ok, out) = run(Command::new(&hadolint).arg(root().join(file)));
        assert!(ok, "hadolint {file}:\n{out}");
    }

    let text = read("deploy/Dockerfile");
    let steps = instructions(&text);
    let from = with_keyword(&steps, "FROM");
    assert!(
        from.len() >= 2 && from[0].starts_with("rust:") && from[0].contains(" AS "),
        "deploy/Dockerfile must build in a named rust stage, then run elsewhere: {from:?}"
    );
    assert!(
        from.last()
            .is_some_and(|f| f.starts_with("debian:bookworm-slim")),
        "deploy/Dockerfile's runtime stage: {from:?}"
    );
    // Numeric and not 0, so that Kubernetes' runAsNonRoot can check it.
    let user = with_keyword(&steps, "USER");
    let uid = user
        .last()
        .and_then(|u| u.split(':').next()?.parse::<u32>().ok());
    assert!(
        uid.is_some_and(|u| u != 0),
        "deploy/Dockerfile must end as a numeric non-root USER: {user:?}"
    );

    // What the image exposes is what its baked-in config listens on.
    let config = yaml("deploy/container/rpcdns.yaml");
    let dns_port = port_of(config["dns"]["listen"][0].as_str().unwrap_or_default());
    let http_port = port_of(config["http"]["listen"].as_str().unwrap_or_default());
    let exposed: Vec<&str> = with_keyword(&steps, "EXPOSE")
        .into_iter()
        .flat_map(str::split_whitespace)
        .collect();
    for want in [
        format!("{dns_port}/udp"),
        format!("{dns_port}/tcp"),
        format!("{http_port}/tcp"),
    ] {
        assert!(
            exposed.contains(&want.as_str()),
            "EXPOSE {exposed:?} lacks {want}"
        );
    }
    assert!(
        dns_port >= 1024,
        "the image runs without capabilities: it cannot bind port {dns_port}"
    );
}

#[test]
fn compose_file_matches_the_compose_specification() {
    let Some(check) = tool("check-jsonschema") else {
        return;
    };
    // check-jsonschema ships the Compose Specification's schema (vendored
    // from compose-spec/compose-spec): no network at test time.
    let (ok, out) = run(Command::new(&check)
        .arg("--builtin-schema")
        .arg("vendor.compose-spec")
        .arg(root().join("deploy/docker-compose.yml")));
    assert!(
        ok,
        "deploy/docker-compose.yml against the Compose schema:\n{out}"
    );

    let compose = yaml("deploy/docker-compose.yml");
    for service in ["etcd", "rpcdns", "registrar"] {
        assert!(
            compose["services"][service].is_object(),
            "deploy/docker-compose.yml lacks service {service}"
        );
    }
    for (service, dockerfile) in [
        ("rpcdns", "deploy/Dockerfile"),
        ("registrar", "deploy/registrar/Dockerfile"),
    ] {
        let build = &compose["services"][service]["build"];
        let context = build["context"].as_str().unwrap_or_default();
        let path = root()
            .join("deploy")
            .join(context)
            .join(build["dockerfile"].as_str().unwrap_or_default());
        assert!(
            path.ends_with(dockerfile) && path.is_file(),
            "{service} builds from {}, want {dockerfile}",
            path.display()
        );
    }
}

/// The image's HEALTHCHECK command, run as Docker would, against a real
/// rpcdns: healthy once ready, unhealthy when nothing answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_healthcheck_probes_readyz() {
    if tool("bash").is_none() {
        return;
    }
    let steps = instructions(&read("deploy/Dockerfile"));
    let health = with_keyword(&steps, "HEALTHCHECK");
    let exec = health
        .first()
        .and_then(|h| h.split_once("CMD "))
        .map(|(_, cmd)| cmd.trim())
        .unwrap_or_else(|| panic!("deploy/Dockerfile has no HEALTHCHECK ... CMD: {health:?}"));
    let argv: Vec<String> = serde_json::from_str(exec)
        .unwrap_or_else(|e| panic!("HEALTHCHECK CMD is not exec form {exec:?}: {e}"));
    let script = argv.last().cloned().unwrap_or_default();
    assert!(
        argv.first().map(String::as_str) == Some("bash") && script.contains("/9153"),
        "HEALTHCHECK CMD: {argv:?}"
    );
    let probe = |port: u16| {
        let body = script.replace("/9153", &format!("/{port}"));
        Command::new(&argv[0])
            .args(&argv[1..argv.len() - 1])
            .arg(body)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };

    let env = TestEnv::start(&[]).await;
    assert!(
        probe(env.rpcdns.http_addr.port()),
        "HEALTHCHECK fails on a ready rpcdns"
    );
    let closed = free_ports(1)[0];
    assert!(
        !probe(closed),
        "HEALTHCHECK passes with nothing on port {closed}"
    );
}

/// deploy/registrar/register.sh (the compose file's demo registrar) with
/// Debian's etcdctl against a real etcd: rpcdns serves what it registers,
/// under the go-zero key `<Key>/<lease id in decimal>`, and the name goes as
/// soon as it is stopped (it revokes its lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_registrar_registers_the_go_zero_way() {
    if tool("etcdctl").is_none() || tool("sh").is_none() {
        return;
    }
    let env = TestEnv::start(&[]).await;
    let log = tempfile::NamedTempFile::new().expect("registrar log file");
    let mut registrar = Spawned::start(
        "register.sh",
        Command::new("sh")
            .arg(root().join("deploy/registrar/register.sh"))
            .env(
                "ETCDCTL_ENDPOINTS",
                format!("http://{}", env.etcd.endpoint()),
            )
            .env("SERVICE_KEY", "demo.rpc")
            .env("SERVICE_ADDR", "10.0.0.9:8080")
            .env("LEASE_TTL", "10")
            .stdout(log.reopen().expect("registrar log handle"))
            .stderr(log.reopen().expect("registrar log handle")),
    );
    let output = || std::fs::read_to_string(log.path()).unwrap_or_default();

    eventually(PROPAGATION, || {
        if let Some(status) = registrar.exited() {
            panic!("register.sh exited with {status}:\n{}", output());
        }
        check_a(env.dns(), "demo.rpc.svc.local.", &ipv4s(&["10.0.0.9"]))
    });

    // The key is <Key>/<lease id in decimal>, and the lease is etcd's.
    let resp = env
        .client
        .clone()
        .get(
            "demo.rpc/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("read the registration");
    let kvs = resp.kvs();
    assert_eq!(kvs.len(), 1, "want one demo.rpc key:\n{}", output());
    let key = kvs[0].key_str().unwrap_or_default().to_string();
    let id = key.strip_prefix("demo.rpc/").unwrap_or_default();
    assert_eq!(
        id.parse::<i64>().ok(),
        Some(kvs[0].lease()),
        "{key} is not <Key>/<its lease id in decimal>"
    );
    eventually(PROPAGATION, || {
        check_a(
            env.dns(),
            &format!("{id}.demo.rpc.svc.local."),
            &ipv4s(&["10.0.0.9"]),
        )
    });

    let status = registrar.terminate(SCRIPT_STOP);
    assert!(
        status.is_some_and(|s| s.success()),
        "register.sh on SIGTERM: {status:?}\n{}",
        output()
    );
    // Revoked, not left to expire: gone well within the 10 s TTL.
    eventually(Duration::from_secs(5), || {
        check_nxdomain(env.dns(), "demo.rpc.svc.local.")
    });
}

// ----------------------------------------------------------------------------
// Kubernetes
// ----------------------------------------------------------------------------

const MANIFESTS: [&str; 9] = [
    "deploy/kubernetes/configmap.yaml",
    "deploy/kubernetes/deployment.yaml",
    "deploy/kubernetes/service.yaml",
    "deploy/kubernetes/kube-dns-stubdomains.yaml",
    "deploy/kubernetes/node-configmap.yaml",
    "deploy/kubernetes/node-daemonset.yaml",
    "deploy/kubernetes/node-service.yaml",
    "deploy/kubernetes/etcd-proxy-deployment.yaml",
    "deploy/kubernetes/etcd-proxy-service.yaml",
];

#[test]
fn kubernetes_manifests_match_the_kubernetes_schemas() {
    let Some(validate) = tool("kubernetes-validate") else {
        return;
    };
    for version in KUBERNETES_VERSIONS {
        let (ok, out) = run(Command::new(&validate)
            .arg("--strict")
            .arg("--kubernetes-version")
            .arg(version)
            .args(MANIFESTS.map(|m| root().join(m))));
        assert!(ok, "kubernetes-validate --strict -k {version}:\n{out}");
        let passed = out.matches(" passed for resource ").count();
        assert_eq!(
            passed,
            MANIFESTS.len(),
            "kubernetes-validate -k {version}:\n{out}"
        );
    }

    // What the schemas cannot say: the operational contract.
    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    let spec = &deployment["spec"];
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(spec["replicas"], 2, "replicas");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for resource in ["cpu", "memory"] {
        assert!(
            container["resources"]["requests"][resource].is_string(),
            "no {resource} request"
        );
    }
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(
        pod["securityContext"]["runAsUser"]
            .as_u64()
            .is_some_and(|u| u != 0),
        "runAsUser must be a non-root uid"
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    // rpcdns's shutdown grace is 5 s: SIGKILL must come later than that.
    assert!(
        pod["terminationGracePeriodSeconds"]
            .as_u64()
            .is_some_and(|s| s > 5),
        "terminationGracePeriodSeconds must exceed rpcdns's 5 s shutdown grace"
    );

    // Ports line up: ConfigMap listen → containerPort → Service 53 UDP+TCP.
    let config = configmap_rpcdns_yaml();
    let dns_port = port_of(config["dns"]["listen"][0].as_str().unwrap_or_default());
    let http_port = port_of(config["http"]["listen"].as_str().unwrap_or_default());
    let mut container_ports = BTreeMap::new();
    for port in container["ports"].as_array().into_iter().flatten() {
        container_ports.insert(
            port["name"].as_str().unwrap_or_default().to_string(),
            port["containerPort"].as_u64().unwrap_or_default(),
        );
    }
    for (name, want) in [
        ("dns-udp", dns_port),
        ("dns-tcp", dns_port),
        ("http", http_port),
    ] {
        assert_eq!(
            container_ports.get(name).copied(),
            Some(u64::from(want)),
            "containerPort {name} vs the ConfigMap's rpcdns.yaml"
        );
    }
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "http");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "http");
    let service = yaml("deploy/kubernetes/service.yaml");
    let mut served = Vec::new();
    for port in service["spec"]["ports"].as_array().into_iter().flatten() {
        let target = port["targetPort"].as_str().unwrap_or_default();
        assert!(
            container_ports.contains_key(target),
            "Service targetPort {target}"
        );
        served.push((port["port"].as_u64(), port["protocol"].as_str()));
    }
    assert!(
        served.contains(&(Some(53), Some("UDP"))),
        "Service ports {served:?}"
    );
    assert!(
        served.contains(&(Some(53), Some("TCP"))),
        "Service ports {served:?}"
    );
}

/// The DaemonSet variant (one rpcdns per node with an etcd gRPC proxy
/// beside it) agrees with its ConfigMap: rpcdns's first endpoint is the
/// proxy's loopback address, the proxy fronts the same members rpcdns
/// falls back to, the state directory is a volume, and its Service keeps
/// queries on the node. (The schemas are checked with the others.)
#[test]
fn the_node_daemonset_runs_a_grpc_proxy_beside_rpcdns() {
    let daemonset = yaml("deploy/kubernetes/node-daemonset.yaml");
    assert_eq!(daemonset["kind"], "DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    let named = |name: &str| {
        containers
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    };
    let (rpcdns, proxy) = (named("rpcdns"), named("etcd-proxy"));
    let map = yaml("deploy/kubernetes/node-configmap.yaml");
    let text = map["data"]["rpcdns.yaml"].as_str().expect("rpcdns.yaml");
    let config = yaml_str("node-configmap.yaml data.rpcdns.yaml", text);
    let endpoints: Vec<&str> = config["etcd"]["endpoints"]
        .as_array()
        .expect("etcd.endpoints")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let command: Vec<&str> = proxy["command"]
        .as_array()
        .expect("proxy command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(command[1..3], ["grpc-proxy", "start"]);
    let flag = |name: &str| {
        command
            .iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("proxy without --{name}"))
    };
    assert_eq!(
        flag("listen-addr"),
        endpoints[0],
        "rpcdns asks the proxy first"
    );
    assert!(
        flag("listen-addr").starts_with("127.0.0.1:"),
        "the proxy stays on the pod's loopback"
    );
    assert_eq!(
        flag("endpoints").split(',').collect::<Vec<_>>(),
        endpoints[1..]
    );
    let state_dir = config["state"]["dir"].as_str().expect("state.dir");
    let mounts = rpcdns["volumeMounts"].as_array().expect("volumeMounts");
    assert!(
        mounts.iter().any(|m| m["mountPath"] == state_dir),
        "state.dir {state_dir} is not a volume: {mounts:?}"
    );
    assert_eq!(rpcdns["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    for container in containers {
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    }
    let service = yaml("deploy/kubernetes/node-service.yaml");
    assert_eq!(service["spec"]["internalTrafficPolicy"], "Local");
    assert_eq!(
        service["spec"]["selector"],
        daemonset["spec"]["selector"]["matchLabels"]
    );
}

/// The shared proxy tier fronts the same members as the per-node
/// sidecar, and its Service reaches the port the proxies listen on.
#[test]
fn the_shared_proxy_tier_agrees_with_its_service() {
    let deployment = yaml("deploy/kubernetes/etcd-proxy-deployment.yaml");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let flag = |command: &Value, name: &str| -> String {
        command
            .as_array()
            .expect("command")
            .iter()
            .filter_map(Value::as_str)
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("no --{name}"))
            .to_owned()
    };
    let sidecar =
        &yaml("deploy/kubernetes/node-daemonset.yaml")["spec"]["template"]["spec"]["containers"][1];
    assert_eq!(
        flag(&container["command"], "endpoints"),
        flag(&sidecar["command"], "endpoints")
    );
    let listen = flag(&container["command"], "listen-addr");
    let port = port_of(&listen);
    assert_eq!(container["ports"][0]["containerPort"], u64::from(port));
    let service = yaml("deploy/kubernetes/etcd-proxy-service.yaml");
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        container["ports"][0]["name"]
    );
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

/// The rpcdns.yaml embedded in the ConfigMap.
fn configmap_rpcdns_yaml() -> Value {
    let map = yaml("deploy/kubernetes/configmap.yaml");
    let text = map["data"]["rpcdns.yaml"]
        .as_str()
        .unwrap_or_else(|| panic!("configmap.yaml has no data.rpcdns.yaml"));
    yaml_str("configmap.yaml data.rpcdns.yaml", text)
}

#[test]
fn every_config_a_recipe_ships_passes_check_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = vec![
        root().join("config/rpcdns.yaml"),
        root().join("deploy/container/rpcdns.yaml"),
    ];
    for map in [
        "deploy/kubernetes/configmap.yaml",
        "deploy/kubernetes/node-configmap.yaml",
    ] {
        let embedded = dir.path().join(map.replace('/', "-"));
        std::fs::write(
            &embedded,
            yaml(map)["data"]["rpcdns.yaml"]
                .as_str()
                .unwrap_or_default(),
        )
        .expect("write the ConfigMap's rpcdns.yaml");
        files.push(embedded);
    }
    for file in files {
        let path = file.to_string_lossy().into_owned();
        let (code, out, err) = run_rpcdns(&["check-config", &path], Duration::from_secs(10));
        assert_eq!(code, Some(0), "rpcdns check-config {path}:\n{out}{err}");
    }
}

// ----------------------------------------------------------------------------
// Stub domains: CoreDNS, kube-dns, dnsmasq
// ----------------------------------------------------------------------------

/// A forwarding rule of a recipe: names under `zone` go to `server`.
#[derive(Debug, PartialEq)]
struct StubDomain {
    zone: String,
    server: String,
}

/// deploy/coredns/Corefile's `svc.local:53 { forward . IP:PORT }` block.
fn corefile_stub() -> StubDomain {
    let text = read("deploy/coredns/Corefile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let zone = lines
        .first()
        .and_then(|l| l.strip_suffix('{'))
        .and_then(|l| l.trim().strip_suffix(":53"))
        .unwrap_or_else(|| panic!("Corefile does not open with `<zone>:53 {{`: {lines:?}"));
    let forward: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("forward . "))
        .collect();
    assert_eq!(forward.len(), 1, "Corefile: want one `forward . ADDR`");
    StubDomain {
        zone: zone.to_string(),
        server: forward[0].trim().to_string(),
    }
}

/// The kube-dns ConfigMap's stubDomains, read as kube-dns does (JSON).
fn kube_dns_stubs() -> Vec<StubDomain> {
    let map = yaml("deploy/kubernetes/kube-dns-stubdomains.yaml");
    assert_eq!(map["metadata"]["name"], "kube-dns");
    assert_eq!(map["metadata"]["namespace"], "kube-system");
    let text = map["data"]["stubDomains"].as_str().unwrap_or_default();
    let stubs: BTreeMap<String, Vec<String>> = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("stubDomains is not kube-dns's JSON map {text:?}: {e}"));
    stubs
        .into_iter()
        .flat_map(|(zone, servers)| {
            servers.into_iter().map(move |server| StubDomain {
                zone: zone.clone(),
                // kube-dns's default port for a stub domain server.
                server: if server.contains(':') {
                    server
                } else {
                    format!("{server}:53")
                },
            })
        })
        .collect()
}

/// kube-dns's dnsmasq line for a stub domain (what its dnsmasq-nanny passes
/// as `--server=/<zone>/<ip>#<port>`).
fn dnsmasq_server_line(stub: &StubDomain) -> String {
    let (ip, port) = stub.server.rsplit_once(':').unwrap_or((&stub.server, "53"));
    format!("server=/{}/{ip}#{port}", stub.zone)
}

#[test]
fn stub_domain_recipes_agree_with_the_service() {
    let zone = ZONE.trim_end_matches('.');
    let service = yaml("deploy/kubernetes/service.yaml");
    assert_eq!(service["spec"]["clusterIP"], SERVICE_IP);
    let want = StubDomain {
        zone: zone.to_string(),
        server: format!("{SERVICE_IP}:53"),
    };
    assert_eq!(corefile_stub(), want, "deploy/coredns/Corefile");
    assert_eq!(kube_dns_stubs(), vec![want], "kube-dns stubDomains");
    // The ConfigMap serves the zone the recipes forward (the default).
    let config = configmap_rpcdns_yaml();
    assert!(
        config["dns"]["zone"].is_null() || config["dns"]["zone"] == ZONE,
        "the ConfigMap's zone {} is not the recipes' {ZONE}",
        config["dns"]["zone"]
    );
}

/// dnsmasq on a free loopback port with exactly `config`; None when the
/// port was taken meanwhile (the caller picks another).
fn start_dnsmasq(dnsmasq: &Path, dir: &Path, config: &str) -> Option<(Spawned, u16)> {
    let conf = dir.join("dnsmasq.conf");
    std::fs::write(&conf, config).expect("write dnsmasq.conf");
    let port = free_ports(1)[0];
    let log = File::create(dir.join("dnsmasq.log")).expect("dnsmasq log file");
    let log2 = log.try_clone().expect("dnsmasq log handle");
    let mut spawned = Spawned::start(
        "dnsmasq",
        Command::new(dnsmasq)
            .arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", conf.display()))
            // Only the recipe's rules: no resolv.conf, no /etc/hosts, no
            // pid file, no interface but loopback.
            .args(["--no-resolv", "--no-hosts", "--pid-file="])
            .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
            .arg(format!("--port={port}"))
            .arg("--log-facility=-")
            .stdout(log)
            .stderr(log2),
    );
    let deadline = Instant::now() + DNSMASQ_START;
    loop {
        if spawned.exited().is_some() {
            let text = std::fs::read_to_string(dir.join("dnsmasq.log")).unwrap_or_default();
            if text.contains("in use") {
                return None;
            }
            panic!("dnsmasq exited at start with config:\n{config}\nlog:\n{text}");
        }
        // Any DNS answer (REFUSED for the root is fine) means it listens.
        let dns = format!("127.0.0.1:{port}").parse().expect("socket address");
        if try_query_udp(dns, ".", hickory_proto::rr::RecordType::NS, None).is_ok() {
            return Some((spawned, port));
        }
        if Instant::now() >= deadline {
            panic!("dnsmasq did not answer on port {port} within {DNSMASQ_START:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The stub-domain recipes, run for real: dnsmasq plays the cluster (or
/// host) resolver with the recipe's forwarding rule — deploy/dnsmasq's file
/// verbatim, and kube-dns's stubDomains turned into dnsmasq's rule as
/// kube-dns does — with only rpcdns's address swapped for the test's (the
/// part kube-proxy plays for the Service IP), and answers a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsmasq_forwards_svc_local_to_rpcdns_as_the_recipes_say() {
    let Some(dnsmasq) = tool("dnsmasq") else {
        return;
    };
    let Some(dig) = tool("dig") else {
        return;
    };
    let env = TestEnv::start(&[]).await;
    let _sms = register(&env.client, "sms.rpc", "10.0.0.5:8001", 10).await;
    let want = ipv4s(&["10.0.0.5"]);
    eventually(PROPAGATION, || {
        check_a(env.dns(), "sms.rpc.svc.local.", &want)
    });
    let rpcdns = format!("127.0.0.1#{}", env.dns().port());

    let host_recipe = read("deploy/dnsmasq/rpcdns.conf");
    assert_eq!(
        host_recipe.matches("127.0.0.1#5353").count(),
        1,
        "deploy/dnsmasq/rpcdns.conf: want one forwarding rule to 127.0.0.1#5353"
    );
    let kube_dns: String = kube_dns_stubs()
        .iter()
        .map(|s| dnsmasq_server_line(s) + "\n")
        .collect();
    let recipes = [
        (
            "deploy/dnsmasq/rpcdns.conf",
            host_recipe.replace("127.0.0.1#5353", &rpcdns),
        ),
        (
            "kube-dns stubDomains",
            kube_dns.replace(&format!("{SERVICE_IP}#53"), &rpcdns),
        ),
    ];
    for (recipe, config) in recipes {
        assert!(
            config.contains(&format!("server=/svc.local/{rpcdns}")),
            "{recipe}:\n{config}"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let (_dnsmasq, port) = (0..3)
            .find_map(|_| start_dnsmasq(&dnsmasq, dir.path(), &config))
            .unwrap_or_else(|| panic!("dnsmasq found no free port for {recipe}"));
        let resolver = format!("127.0.0.1:{port}").parse().expect("socket address");
        eventually(PROPAGATION, || {
            check_a(resolver, "sms.rpc.svc.local.", &want)
        });
        // And with the everyday client, as an operator would check it.
        let (ok, out) = run(Command::new(&dig)
            .args(["+short", "+time=2", "+tries=1", "-p", &port.to_string()])
            .args(["@127.0.0.1", "sms.rpc.svc.local", "A"]));
        assert!(
            ok && out.trim() == "10.0.0.5",
            "{recipe}: dig through dnsmasq:\n{out}"
        );
    }
}

// ----------------------------------------------------------------------------
// systemd
// ----------------------------------------------------------------------------

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let unit = read("deploy/systemd/rpcdns.service");
    let exec = "ExecStart=/usr/local/bin/rpcdns --config /etc/rpcdns/rpcdns.yaml";
    assert_eq!(unit.matches(exec).count(), 1, "want `{exec}` once");
    for directive in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(directive)),
            "deploy/systemd/rpcdns.service lacks {directive}"
        );
    }

    // verify checks that ExecStart's program exists: point it at the binary
    // under test; nothing else changes. It reports unknown keys and bad
    // values as warnings with exit 0, so any output fails the test.
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("rpcdns.service");
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/local/bin/rpcdns ",
            &format!("ExecStart={} ", rpcdns_bin()),
        ),
    )
    .expect("write the unit copy");
    let (ok, out) = run(Command::new(&analyze).arg("verify").arg(&copy));
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );

    // systemd's own exposure score, 0 (locked down) to 10 (exposed), times
    // ten: 2.0 or below is what systemd calls "OK".
    let (ok, out) = run(Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(root().join("deploy/systemd/rpcdns.service")));
    let score = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no overall exposure line");
    assert!(ok, "systemd-analyze security: {score}\n{out}");
}
