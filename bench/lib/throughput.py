#!/usr/bin/env python3
"""Benchmark 1 of the performance issue: UDP throughput and latency of rpcdns, Knot DNS and NSD.

Run through bench/throughput.sh, which installs the tools and builds the
binaries first. For each dataset size it:

  1. generates S services x K instances (bench/lib/gen_dataset.py): the
     go-zero registrations, the equivalent zone file, a dnsperf query file;
  2. starts a private etcd, loads the registrations (examples/etcd_load.rs),
     starts rpcdns on it and waits until it serves all S x K instances;
  3. starts knotd and nsd in the foreground on the zone file (their own
     configuration, run and storage directories in the temporary directory);
  4. checks with dig that the three answer sample queries alike;
  5. runs ROUNDS rounds of saturating dnsperf runs, the servers' order
     rotated every round: QPS, lost queries, and the server's CPU time
     (utime + stime of every thread of every process of the server, from
     /proc/<pid>/stat) divided by the queries answered;
  6. runs one paced dnsperf per server (PACED_QPS, -v: one line per query
     with its latency) and takes p50/p99 of those latencies;
  7. prints per server the medians and the ratios to Knot.

Servers are pinned to SERVER_CPU and dnsperf to LOAD_CPU (taskset). Every
process it starts is stopped by PID on exit, on Ctrl-C and on SIGTERM.
Settings come from the environment (see bench/README.md and main()).
"""

import datetime
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ZONE = "svc.local."
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Upper bound on etcd's backend size (etcd's own maximum is 8 GiB); the 1M-key
# datasets of the scale benchmark need more than the default 2 GiB quota.
ETCD_QUOTA_BYTES = 8 * 1024**3
STOP_GRACE_S = 5.0
READY_TIMEOUT_S = 300.0


# --------------------------------------------------------------------------
# Output: everything printed also goes to the results file.
# --------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.extend(text.split("\n"))

    def command(self, argv: list[str]) -> None:
        self.say("$ " + shlex.join(argv))


REPORT = Report()


def say(text: str = "") -> None:
    REPORT.say(text)


# --------------------------------------------------------------------------
# Processes: started in their own session (so Ctrl-C reaches only us, and we
# stop them in order), recorded by PID, stopped with their descendants.
# --------------------------------------------------------------------------


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """root and every process below it (NSD forks its server processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_cpu_split(root: int) -> tuple[float, float]:
    """(utime, stime) of a process tree in seconds; /proc/<pid>/stat sums all threads of a process."""
    user = system = 0
    for pid in descendants(root):
        fields = proc_stat(pid)
        if fields:
            # Fields 14 and 15 of proc(5), utime and stime, in clock ticks.
            user += int(fields[11])
            system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of a process tree."""
    return sum(tree_cpu_split(root))


class Procs:
    def __init__(self) -> None:
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], log: Path) -> subprocess.Popen:
        REPORT.command(argv)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.running.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        tree = [p for p in descendants(proc.pid) if p != proc.pid]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in tree:  # children the parent did not take down with it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        def gone() -> bool:
            return all((proc_stat(pid) or ["Z"])[0] == "Z" for pid in tree)

        wait_until(f"{shlex.join(proc.args[:4])} children to exit", gone, STOP_GRACE_S)
        self.running = [(n, p) for n, p in self.running if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.running)):
            self.stop(proc)


PROCS = Procs()


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def wait_until(what: str, check, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.05)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (urllib.error.URLError, OSError):
        return 0, ""


# --------------------------------------------------------------------------
# DNS checks with dig
# --------------------------------------------------------------------------


def dig(port: int, name: str, qtype: str) -> dict:
    """One query without EDNS (as dnsperf sends them); answer in comparable form."""
    argv = ["dig", "+norec", "+noedns", "+time=2", "+tries=2", "-p", str(port), "@127.0.0.1", name, qtype]
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    status = re.search(r"status: (\w+)", out)
    flags = re.search(r";; flags: ([\w ]*);", out)
    size = re.search(r"MSG SIZE\s+rcvd: (\d+)", out)
    sections: dict[str, list[str]] = {"ANSWER": [], "AUTHORITY": [], "ADDITIONAL": []}
    current = None
    for line in out.splitlines():
        header = re.match(r";; (ANSWER|AUTHORITY|ADDITIONAL) SECTION:", line)
        if header:
            current = header.group(1)
        elif not line.strip() or line.startswith(";"):
            current = None if not line.strip() else current
        elif current:
            fields = line.split()
            fields[0] = fields[0].lower()
            if fields[3] == "SOA":
                fields[6] = "<serial>"  # rpcdns's serial is the etcd revision
            sections[current].append(" ".join(fields))
    return {
        "rcode": status.group(1) if status else "NO ANSWER",
        "aa": bool(flags and "aa" in flags.group(1).split()),
        "tc": bool(flags and "tc" in flags.group(1).split()),
        "answer": sorted(sections["ANSWER"]),
        "authority": sorted(sections["AUTHORITY"]),
        "additional": sorted(sections["ADDITIONAL"]),
        "size": int(size.group(1)) if size else 0,
    }


def apex_ns_in_positive_answer(answer: dict) -> list[str]:
    """The authority section minus an apex NS RRset next to a non-empty answer.

    NSD (without minimal-responses) adds the zone's NS RRset to the authority
    section of positive answers; RFC 2181 section 6.1 allows it, rpcdns and
    Knot leave it out. It is not a difference in substance.
    """
    if not answer["answer"]:
        return answer["authority"]
    return [rr for rr in answer["authority"] if rr.split()[:1] != [ZONE] or rr.split()[3] != "NS"]


def verify(servers: dict, meta: dict) -> None:
    """The servers must give the same rcode, flags and records (as sets: rotation is allowed)."""
    sample = meta["sample"]
    checks = [
        (sample["service"], "A"),
        (sample["service"], "SRV"),
        (sample["grpc"], "SRV"),
        (sample["instance"], "A"),
        (sample["missing"], "A"),
        (sample["service"], "AAAA"),
        (sample["grpc_config"], "TXT"),
        (sample["service"], "TXT"),
        (ZONE, "SOA"),
    ]
    say(
        "verification (dig +norec +noedns; rcode, AA, TC, answer, authority must match, additional\n  records must come from one set; SOA serial masked;\n"
        "  an apex NS RRset in the authority section of a positive answer is tolerated; sizes are for information;\n  B/an/ns/ar = response octets / answer / authority / additional records):"
    )
    failures = []
    for name, qtype in checks:
        answers = {s: dig(info["port"], name, qtype) for s, info in servers.items()}
        ref_name, ref = next(iter(answers.items()))
        sizes = ", ".join(
            f"{s} {a['size']} B/{len(a['answer'])}an/{len(a['authority'])}ns/{len(a['additional'])}ar"
            for s, a in answers.items()
        )
        say(f"  {name} {qtype}: {ref['rcode']}  [{sizes}]")
        for a in answers.values():
            a["authority"] = apex_ns_in_positive_answer(a)
        glue = set().union(*(a["additional"] for a in answers.values()))
        for s, a in answers.items():
            for key in ("rcode", "aa", "tc", "answer", "authority"):
                if a[key] != ref[key]:
                    failures.append(f"{name} {qtype}: {s} {key} = {a[key]!r}, {ref_name} {key} = {ref[key]!r}")
            # Glue may be partial (RFC 2181 section 9: NSD fills the additional
            # section only up to its own size limit), but never different.
            if len(glue) != max(len(a["additional"]) for a in answers.values()):
                failures.append(f"{name} {qtype}: the servers' additional sections disagree: {sorted(glue)!r}")
            elif len(a["additional"]) < len(glue):
                say(f"    note: {s} sends {len(a['additional'])} of the {len(glue)} additional records")
            if a["rcode"] == "NO ANSWER" or a["tc"]:
                failures.append(f"{name} {qtype}: {s} gave no usable answer ({a['rcode']}, tc={a['tc']})")
    if failures:
        raise RuntimeError("servers answer differently:\n  " + "\n  ".join(failures))
    say("  all servers agree")


# --------------------------------------------------------------------------
# The servers
# --------------------------------------------------------------------------


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv]


def start_etcd(tmp: Path) -> str:
    client, peer = free_port(), free_port()
    endpoint = f"127.0.0.1:{client}"
    log = tmp / "etcd.log"
    proc = PROCS.start(
        "etcd",
        [
            "etcd",
            "--name", "bench",
            "--data-dir", str(tmp / "etcd"),
            "--listen-client-urls", f"http://{endpoint}",
            "--advertise-client-urls", f"http://{endpoint}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
            "--quota-backend-bytes", str(ETCD_QUOTA_BYTES),
        ],
        log,
    )  # fmt: skip
    wait_until("etcd", lambda: http_get(f"http://{endpoint}/health")[0] == 200, 30, proc, log)
    return endpoint


def start_rpcdns(cfg: dict, tmp: Path, endpoint: str, instances: int) -> dict:
    dns, http = free_port(), free_port()
    log = tmp / "rpcdns.log"
    proc = PROCS.start(
        "rpcdns",
        pinned(
            cfg["server_cpu"],
            [
                cfg["rpcdns_bin"],
                "--etcd", endpoint,
                "--dns-listen", f"127.0.0.1:{dns}",
                "--http-listen", f"127.0.0.1:{http}",
                "--log-level", "warn",
                *cfg["rpcdns_args"],
            ],
        ),
        log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{http}"
    wait_until("rpcdns /readyz", lambda: http_get(f"{base}/readyz")[0] == 200, READY_TIMEOUT_S, proc, log)

    def all_instances() -> bool:
        status, body = http_get(f"{base}/metrics")
        m = re.search(r"^rpcdns_zone_instances (\d+)", body, re.M) if status == 200 else None
        return bool(m) and int(m.group(1)) == instances

    wait_until(f"rpcdns_zone_instances == {instances}", all_instances, READY_TIMEOUT_S, proc, log)
    return {"proc": proc, "port": dns}


def wait_serving(name: str, port: int, proc: subprocess.Popen, log: Path) -> None:
    wait_until(f"{name} answering", lambda: dig(port, ZONE, "SOA")["rcode"] == "NOERROR", READY_TIMEOUT_S, proc, log)


def start_knot(cfg: dict, tmp: Path, zonefile: Path) -> dict:
    port = free_port()
    run = tmp / "knot"
    run.mkdir()
    conf = run / "knot.conf"
    # One worker of each kind: the comparison is per core, and Knot's default
    # is one UDP worker per online CPU (affinity is not considered).
    conf.write_text(
        f"""server:
    rundir: "{run}"
    pidfile: "{run}/knot.pid"
    user: root:root
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    answer-rotation: on
control:
    listen: "{run}/knot.sock"
database:
    storage: "{run}"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "{zonefile.parent}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: {ZONE}
    file: "{zonefile.name}"
"""
    )
    log = run / "knotd.log"
    proc = PROCS.start("knotd", pinned(cfg["server_cpu"], ["knotd", "-c", str(conf)]), log)
    wait_serving("knotd", port, proc, log)
    return {"proc": proc, "port": port, "conf": conf}


def start_nsd(cfg: dict, tmp: Path, zonefile: Path) -> dict:
    port = free_port()
    run = tmp / "nsd"
    run.mkdir()
    conf = run / "nsd.conf"
    # rrl-ratelimit 0: Debian's NSD has response rate limiting ON (200 qps per
    # /24), which would answer a benchmark with dropped and truncated replies.
    # database "": no nsd.db; NSD reads the zone file itself at start.
    # minimal-responses stays at its default (no): "yes" would also drop the
    # SRV targets' addresses from the additional section, which rpcdns and
    # Knot send; the price is the apex NS RRset NSD adds to the authority
    # section of positive answers (verify() tolerates exactly that).
    conf.write_text(
        f"""server:
    ip-address: 127.0.0.1@{port}
    port: {port}
    do-ip6: no
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{zonefile.parent}"
    database: ""
    zonelistfile: "{run}/zone.list"
    xfrdfile: "{run}/xfrd.state"
    xfrdir: "{run}"
    pidfile: "{run}/nsd.pid"
    cookie-secret-file: "{run}/cookiesecrets.txt"
    logfile: "{run}/nsd.log"
    verbosity: 1
    round-robin: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: {ZONE}
    zonefile: "{zonefile.name}"
"""
    )
    check = ["nsd-checkconf", str(conf)]
    REPORT.command(check)
    subprocess.run(check, check=True)
    log = run / "nsd.out"
    proc = PROCS.start("nsd", pinned(cfg["server_cpu"], ["nsd", "-d", "-c", str(conf)]), log)
    wait_serving("nsd", port, proc, log)
    return {"proc": proc, "port": port, "conf": conf}


# --------------------------------------------------------------------------
# dnsperf
# --------------------------------------------------------------------------


def dnsperf_argv(cfg: dict, port: int, queries: Path, extra: list[str]) -> list[str]:
    return pinned(
        cfg["load_cpu"],
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-t", str(cfg["timeout"]), *extra],
    )


def parse_dnsperf(out: str) -> dict:
    def num(label: str) -> float:
        m = re.search(rf"^\s*{label}:\s+([\d.]+)", out, re.M)
        if not m:
            raise RuntimeError(f"dnsperf output lacks '{label}':\n{out[-2000:]}")
        return float(m.group(1))

    return {
        "sent": int(num("Queries sent")),
        "completed": int(num("Queries completed")),
        "lost": int(num("Queries lost")),
        "qps": num("Queries per second"),
        "runtime": num(r"Run time \(s\)"),
        "avg_latency_ms": num(r"Average Latency \(s\)") * 1000,
    }


def saturating_run(cfg: dict, name: str, server: dict, queries: Path, tcp: bool = False) -> dict:
    if tcp:
        # TCP: TCP_CLIENTS connections (dnsperf -c), queries pipelined on each.
        extra = ["-m", "tcp", "-l", str(cfg["tcp_duration"]), "-c", str(cfg["tcp_clients"]), "-q", str(cfg["outstanding"])]
    else:
        extra = ["-l", str(cfg["duration"]), "-c", str(cfg["clients"]), "-q", str(cfg["outstanding"])]
    argv = dnsperf_argv(cfg, server["port"], queries, extra)
    REPORT.command(argv)
    pid = server["proc"].pid
    user_before, system_before = tree_cpu_split(pid)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    user_after, system_after = tree_cpu_split(pid)
    user, system = user_after - user_before, system_after - system_before
    cpu = user + system
    result = parse_dnsperf(out)
    result["cpu_s"] = cpu
    result["cpu_us_per_q"] = cpu / max(result["completed"], 1) * 1e6
    result["user_us_per_q"] = user / max(result["completed"], 1) * 1e6
    say(
        f"  {name:7} {result['qps']:>10.0f} qps  {result['cpu_us_per_q']:6.2f} us CPU/query "
        f"({result['user_us_per_q']:.2f} user)  "
        f"server CPU {cpu:6.2f} s ({cpu / result['runtime'] * 100:3.0f}% of a core)  "
        f"lost {result['lost']}/{result['sent']}"
    )
    return result


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]  # nearest-rank


def paced_run(cfg: dict, name: str, server: dict, queries: Path) -> dict:
    # -v prints one line per response: "> RCODE name type latency-seconds"
    # (or "T" for a timeout); dnsperf's own summary has only mean and stddev.
    argv = dnsperf_argv(
        cfg,
        server["port"],
        queries,
        ["-l", str(cfg["paced_duration"]), "-Q", str(cfg["paced_qps"]), "-c", str(cfg["clients"]), "-v"],
    )
    REPORT.command(argv)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    latencies = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0] == ">" and fields[1] != "T":
            try:
                latencies.append(float(fields[-1]) * 1e6)
            except ValueError:
                pass
    latencies.sort()
    result = parse_dnsperf(out)
    result.update(
        {
            "samples": len(latencies),
            "p50_us": percentile(latencies, 50),
            "p99_us": percentile(latencies, 99),
            "p999_us": percentile(latencies, 99.9),
        }
    )
    if not latencies:
        raise RuntimeError(f"no latency lines in dnsperf -v output:\n{out[-2000:]}")
    say(
        f"  {name:7} {result['qps']:>8.0f} qps paced  p50 {result['p50_us']:6.0f} us  p99 {result['p99_us']:6.0f} us  "
        f"p99.9 {result['p999_us']:6.0f} us  ({result['samples']} samples, lost {result['lost']})"
    )
    return result


# --------------------------------------------------------------------------
# One dataset size
# --------------------------------------------------------------------------


def run_size(cfg: dict, services: int, per_service: int) -> dict:
    instances = services * per_service
    say(f"\n=== S={services} K={per_service} ({instances} instances) ===")
    tmp = Path(tempfile.mkdtemp(prefix=f"rpcdns-bench-{services}x{per_service}.", dir=cfg["tmpdir"]))
    try:
        data = tmp / "data"
        gen = [sys.executable, str(HERE / "gen_dataset.py"), "-s", str(services), "-k", str(per_service)]
        gen += ["-q", str(cfg["query_lines"]), "--mix", cfg["query_mix"], "-o", str(data)]
        REPORT.command(gen)
        subprocess.run(gen, check=True)
        meta = json.loads((data / "dataset.json").read_text())

        endpoint = start_etcd(tmp)
        load = [cfg["loader_bin"], "--etcd", endpoint, "--file", str(data / "registrations.txt")]
        REPORT.command(load)
        say("  " + subprocess.run(load, capture_output=True, text=True, check=True).stdout.strip())

        t0 = time.monotonic()
        servers = {"rpcdns": start_rpcdns(cfg, tmp, endpoint, instances)}
        say(f"  rpcdns ready with {instances} instances after {time.monotonic() - t0:.2f} s")
        servers["knot"] = start_knot(cfg, tmp, data / "svc.local.zone")
        servers["nsd"] = start_nsd(cfg, tmp, data / "svc.local.zone")
        servers = {s: servers[s] for s in cfg["servers"]}
        for s in ("knot", "nsd"):
            if s in servers:
                say(f"  {s} configuration ({servers[s]['conf']}):")
                say("    " + servers[s]["conf"].read_text().strip().replace("\n", "\n    "))
        verify(servers, meta)

        queries = data / "queries.txt"
        runs: dict[str, list[dict]] = {s: [] for s in servers}
        names = list(servers)
        for r in range(cfg["rounds"]):
            order = names[r % len(names) :] + names[: r % len(names)]
            say(f"round {r + 1}/{cfg['rounds']} (saturating, {cfg['duration']} s each): {' '.join(order)}")
            for s in order:
                runs[s].append(saturating_run(cfg, s, servers[s], queries))

        # One paced run is at the mercy of the scheduler (p99 moved 3x
        # between identical runs here): run several, servers alternating,
        # and report the median of each percentile.
        paced_runs: dict[str, list[dict]] = {s: [] for s in servers}
        for r in range(cfg["paced_rounds"]):
            order = names[r % len(names) :] + names[: r % len(names)]
            say(
                f"paced round {r + 1}/{cfg['paced_rounds']} ({cfg['paced_qps']} qps, "
                f"{cfg['paced_duration']} s each): {' '.join(order)}"
            )
            for s in order:
                paced_runs[s].append(paced_run(cfg, s, servers[s], queries))
        paced = {
            s: {
                key: statistics.median(run[key] for run in results)
                for key in ("qps", "p50_us", "p99_us", "p999_us", "samples")
            }
            | {"rounds": results}
            for s, results in paced_runs.items()
        }

        tcp: dict[str, dict] = {}
        if cfg["tcp_duration"] > 0:
            say(f"tcp runs ({cfg['tcp_clients']} connections, {cfg['tcp_duration']} s each):")
            for s in names:
                tcp[s] = saturating_run(cfg, s, servers[s], queries, tcp=True)

        rss = {s: rss_kib(servers[s]["proc"].pid) for s in servers}
        return {
            "services": services,
            "per_service": per_service,
            "runs": runs,
            "paced": paced,
            "tcp": tcp,
            "rss_kib": rss,
        }
    finally:
        PROCS.stop_all()
        if not cfg["keep_tmp"]:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)


def rss_kib(root: int) -> int:
    total = 0
    for pid in descendants(root):
        try:
            m = re.search(r"^VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
        except OSError:
            continue
        total += int(m.group(1)) if m else 0
    return total


def summarise(cfg: dict, size: dict) -> None:
    say(
        f"\n--- summary S={size['services']} K={size['per_service']} "
        f"({cfg['rounds']} rounds of {cfg['duration']} s; {cfg['paced_rounds']} paced rounds at "
        f"{cfg['paced_qps']} qps, median p50/p99) ---"
    )
    say(
        f"{'server':8} {'QPS(med)':>10} {'CPU us/q(med)':>14} {'min..max':>13} {'p50 us':>7} {'p99 us':>7} "
        f"{'lost':>10} {'RSS MiB':>8} {'CPU/q vs knot':>14} {'QPS vs knot':>12} {'TCP QPS':>9} {'TCP us/q':>9}"
    )
    med = {
        s: (statistics.median(r["qps"] for r in runs), statistics.median(r["cpu_us_per_q"] for r in runs))
        for s, runs in size["runs"].items()
    }
    knot = med.get("knot")
    for s, runs in size["runs"].items():
        qps, cpu = med[s]
        cpus = [r["cpu_us_per_q"] for r in runs]
        lost = sum(r["lost"] for r in runs)
        sent = sum(r["sent"] for r in runs)
        p = size["paced"][s]
        ratio_cpu = f"{cpu / knot[1]:.2f}x" if knot else "-"
        ratio_qps = f"{qps / knot[0]:.2f}x" if knot else "-"
        say(
            f"{s:8} {qps:>10.0f} {cpu:>14.2f} {min(cpus):>6.2f}..{max(cpus):<6.2f} {p['p50_us']:>7.0f} "
            f"{p['p99_us']:>7.0f} {f'{lost}/{sent}':>10} {size['rss_kib'][s] / 1024:>8.1f} {ratio_cpu:>14} {ratio_qps:>12}"
            + (
                f" {size['tcp'][s]['qps']:>9.0f} {size['tcp'][s]['cpu_us_per_q']:>9.2f}"
                if s in size.get("tcp", {})
                else f" {'-':>9} {'-':>9}"
            )
        )


def machine() -> list[str]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "unknown"
    )

    def first_line(argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError:
            return "?"
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else "?"

    rev = first_line(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
    return [
        f"date:    {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"uname:   {first_line(['uname', '-a'])}",
        f"nproc:   {os.cpu_count()}",
        f"cpu:     {cpu}",
        f"load:    {open('/proc/loadavg').read().strip()}  (1/5/15 min; other work on the machine skews QPS more than CPU/query)",
        f"rpcdns:  git {rev}",
        f"knotd:   {first_line(['knotd', '--version'])}",
        f"nsd:     {first_line(['nsd', '-v'])}",
        f"dnsperf: {dnsperf_version()}",
    ]


def dnsperf_version() -> str:
    out = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True, check=False)
    m = re.search(r"Version ([\d.]+)", out.stdout + out.stderr)
    return m.group(1) if m else "?"


def main() -> int:
    env = os.environ.get
    sizes = []
    for item in env("SIZES", "1000x3,20000x5").split(","):
        s, _, k = item.strip().partition("x")
        sizes.append((int(s), int(k)))
    cfg = {
        "rounds": int(env("ROUNDS", "3")),
        "duration": int(env("DURATION", "10")),
        "clients": int(env("CLIENTS", "4")),
        "outstanding": int(env("OUTSTANDING", "200")),
        "timeout": int(env("QUERY_TIMEOUT", "2")),
        "paced_qps": int(env("PACED_QPS", "20000")),
        "paced_duration": int(env("PACED_DURATION", "10")),
        "paced_rounds": int(env("PACED_ROUNDS", "3")),
        "tcp_duration": int(env("TCP_DURATION", "10")),
        # Extra rpcdns flags, e.g. "--upstream 127.0.0.1:53" to measure with
        # forwarding configured.
        "rpcdns_args": env("RPCDNS_ARGS", "").split(),
        "tcp_clients": int(env("TCP_CLIENTS", "100")),
        "query_lines": int(env("QUERY_LINES", "100000")),
        # standard (45% A, 45% SRV, 10% NXDOMAIN) or grpc (A, AAAA and the
        # _grpc_config TXT, as a gRPC client's resolution asks).
        "query_mix": env("QUERY_MIX", "standard"),
        "server_cpu": env("SERVER_CPU", "0"),
        "load_cpu": env("LOAD_CPU", "1"),
        "servers": [s for s in env("SERVERS", "rpcdns,knot,nsd").split(",") if s],
        "rpcdns_bin": env("RPCDNS_BIN", str(ROOT / "target/release/rpcdns")),
        "loader_bin": env("LOADER_BIN", str(ROOT / "target/release/examples/etcd_load")),
        "tmpdir": env("TMPDIR", "/tmp"),
        "keep_tmp": env("KEEP_TMP", "") == "1",
        "results": Path(env("RESULTS_DIR", str(ROOT / "bench/results"))),
    }
    unknown = set(cfg["servers"]) - {"rpcdns", "knot", "nsd"}
    if unknown or cfg["rounds"] < 1:
        print(f"throughput: SERVERS must name rpcdns, knot, nsd (got {sorted(unknown)}); ROUNDS >= 1", file=sys.stderr)
        return 2

    # SIGINT, SIGTERM and SIGHUP unwind through the finally blocks that stop
    # every process by PID. SIGINT is set explicitly: a shell starts
    # background jobs with it ignored, and Python then installs no handler.
    def unwind(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, unwind)

    say("rpcdns benchmark 1: UDP throughput and latency vs Knot DNS and NSD")
    for line in machine():
        say(line)
    say(
        f"settings: SIZES={','.join(f'{s}x{k}' for s, k in sizes)} ROUNDS={cfg['rounds']} DURATION={cfg['duration']} "
        f"CLIENTS={cfg['clients']} OUTSTANDING={cfg['outstanding']} PACED_QPS={cfg['paced_qps']} "
        f"PACED_DURATION={cfg['paced_duration']} PACED_ROUNDS={cfg['paced_rounds']} "
        f"TCP_DURATION={cfg['tcp_duration']} TCP_CLIENTS={cfg['tcp_clients']} "
        f"RPCDNS_ARGS={' '.join(cfg['rpcdns_args'])!r} SERVER_CPU={cfg['server_cpu']} LOAD_CPU={cfg['load_cpu']}"
    )
    results = []
    status = 0
    try:
        for s, k in sizes:
            results.append(run_size(cfg, s, k))
    except KeyboardInterrupt:
        say("\ninterrupted; stopping everything")
        status = 130
    except (RuntimeError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None) or ""
        say(f"\nthroughput: {e}{detail and chr(10) + str(detail)}")
        status = 1
    finally:
        PROCS.stop_all()

    for size in results:
        summarise(cfg, size)
    say(f"\nload at end: {open('/proc/loadavg').read().strip()}")
    say(
        "CPU us/q = server CPU time (utime+stime, all threads and processes, /proc/<pid>/stat) / queries answered. "
        "When dnsperf saturates its own core, QPS measures dnsperf: compare CPU per query."
    )
    if results:
        cfg["results"].mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = cfg["results"] / f"throughput-{stamp}.txt"
        path.write_text("\n".join(REPORT.lines) + "\n")
        print(f"saved to {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
