#!/usr/bin/env bash
# Benchmark 1 of the performance issue: UDP throughput and latency of rpcdns
# (loaded from etcd) against Knot DNS and NSD (serving the equivalent zone
# file), S services x K instances, 45% A / 45% SRV / 10% NXDOMAIN.
#
# Installs what it lacks from Debian (dnsperf, knot, nsd, etcd-server,
# etcd-client, dnsutils), builds rpcdns and examples/etcd_load with
# `cargo build --release`, then runs bench/lib/throughput.py, which starts
# and stops (by PID, Ctrl-C included) every server, prints the figures and
# the exact commands, and saves them to bench/results/throughput-<date>.txt.
#
# Environment (defaults in brackets; see bench/README.md):
#   SIZES [1000x3,20000x5]   S x K dataset sizes, comma-separated
#   ROUNDS [3] DURATION [10]  saturating dnsperf rounds, seconds per run
#   CLIENTS [4] OUTSTANDING [200]   dnsperf -c and -q
#   PACED_QPS [20000] PACED_DURATION [10]   the latency run (dnsperf -Q, -v)
#   SERVER_CPU [0] LOAD_CPU [1]   taskset cores of the servers and of dnsperf
#   SERVERS [rpcdns,knot,nsd]     which servers to measure
#   RPCDNS_BIN, LOADER_BIN        skip the build and use these binaries
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# command -> Debian package that provides it
declare -A package_for=(
    [dnsperf]=dnsperf
    [knotd]=knot
    [nsd]=nsd
    [nsd-checkconf]=nsd
    [etcd]=etcd-server
    [etcdctl]=etcd-client
    [dig]=dnsutils
    [taskset]=util-linux
    [python3]=python3
)
missing=()
for cmd in "${!package_for[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        missing+=("${package_for[$cmd]}")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo_cmd=(sudo)
    fi
    echo "throughput: installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian starts knot and nsd as system services on install (port 53); this
# benchmark runs its own on free loopback ports and leaves those alone.

if [ -z "${RPCDNS_BIN:-}" ] || [ -z "${LOADER_BIN:-}" ]; then
    echo "throughput: cargo build --release --bin rpcdns --example etcd_load"
    cargo build --release --quiet --bin rpcdns --example etcd_load
fi

exec python3 "$root/bench/lib/throughput.py"
