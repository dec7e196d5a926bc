#!/usr/bin/env bash
# Benchmark 2 of the performance issue: propagation. How long after an etcd
# put (or delete) returns does the first DNS answer reflect it, with the zone
# at S x K instances (default 20,000 x 5 = 100k) and a steady query load on
# rpcdns throughout?
#
# Starts a private etcd (free loopback ports, data in a temporary directory,
# on tmpfs when there is room), loads the dataset, starts the release rpcdns,
# runs dnsperf paced at QPS queries/s pinned to core LOAD_CPU, and runs
# examples/propagation_probe.rs, which makes CHANGES puts and as many deletes
# and polls DNS in a tight loop (no sleeps, a deadline per change). Prints
# p50/p90/p99/max per kind of change in ms, and every command it ran.
# Everything it starts is stopped by PID on exit, Ctrl-C included.
#
# Environment (defaults in brackets):
#   S [20000] K [5]     dataset size: services, instances per service
#   CHANGES [1000]      puts timed (each followed by a timed delete)
#   QPS [20000]         dnsperf's pace; 0 runs without a query load
#   LOAD_CPU [1]        core dnsperf is pinned to (taskset -c)
#   RPCDNS_BIN, PROBE_BIN   use these binaries instead of `cargo build --release`

#
# bench/scale.sh sources this file for the helpers below: sourced, it
# defines them and returns before running anything.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# --- helpers shared with bench/scale.sh --------------------------------------
say() { printf '==> %s\n' "$*"; }
die() { printf '%s: %s\n' "${bench_name:-bench}" "$*" >&2; exit 1; }
# show CMD...: prints a command as it can be pasted into a shell.
show() { printf '+'; printf ' %q' "$@"; printf '\n'; }
# run CMD...: shows, then runs it in the foreground.
run() { show "$@"; "$@"; }
# start_bg VAR LOG CMD...: shows, then starts CMD in the background with its
# output in LOG; sets VAR to its PID and records it for cleanup.
start_bg() {
    # Names no caller uses: printf -v would set a local of the same name.
    local _bg_var=$1 _bg_log=$2
    shift 2
    show "$@" | sed "s|\$| >$_bg_log 2>\&1 \&|"
    "$@" >"$_bg_log" 2>&1 &
    printf -v "$_bg_var" '%s' "$!"
    pids+=("$!")
}

pids=()
tmp=""
# Set by start_etcd and start_rpcdns (through start_bg); scale.sh stops etcd.
# shellcheck disable=SC2034
etcd_pid=""
rpcdns_pid=""
# Invoked only through the trap below, which shellcheck cannot see.
# shellcheck disable=SC2317
cleanup() {
    local status=$? i
    set +e
    trap - EXIT INT TERM
    # Newest first: load generator, rpcdns or knotd, then etcd.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        stop_pid "${pids[i]}"
    done
    if [ -n "$tmp" ]; then
        rm -rf "$tmp"
    fi
    exit "$status"
}

# bench_setup NAME: the temporary directory (on tmpfs when it has room for an
# etcd with a million keys) and the traps that stop everything on exit.
bench_setup() {
    bench_name=$1
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    local base="${TMPDIR:-/tmp}" shm_free_kib
    shm_free_kib="$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')"
    if [ "${shm_free_kib:-0}" -gt $((6 * 1024 * 1024)) ]; then
        base=/dev/shm
    fi
    tmp="$(mktemp -d "$base/rpcdns-bench-$bench_name.XXXXXX")"
    say "working directory $tmp"
}

# stop_pid PID: SIGTERM, up to 10 s to exit, then SIGKILL.
stop_pid() {
    local pid=$1 deadline=$((SECONDS + 10))
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.05
    done
    # Both fail when the process has already exited and been reaped.
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# forget_pid PID: drops PID from the list cleanup stops.
forget_pid() {
    local kept=() p
    for p in "${pids[@]}"; do
        [ "$p" = "$1" ] || kept+=("$p")
    done
    pids=("${kept[@]}")
}

# wait_pid_exit PID SECONDS: waits for PID to exit by itself, then stops it.
wait_pid_exit() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.05
    done
    stop_pid "$pid"
    forget_pid "$pid"
}

# wait_until SECONDS WHAT CMD...: polls CMD until it succeeds, or dies.
wait_until() {
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "timed out waiting for $what"
        sleep 0.05
    done
}

check_alive() {
    kill -0 "$1" 2>/dev/null || die "$2 (pid $1) exited; see the logs above"
}

# need_tools CMD...: installs the Debian packages of missing commands.
need_tools() {
    local -A package_for=([etcd]=etcd-server [etcdctl]=etcd-client [curl]=curl
        [taskset]=util-linux [dnsperf]=dnsperf [knotd]=knot [dig]=dnsutils
        [ss]=iproute2)
    local missing=() cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("${package_for[$cmd]:-$cmd}")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    local sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    say "installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
        --no-install-recommends "${missing[@]}"
}

# free_port VAR: sets VAR to a loopback port that no TCP or UDP socket holds and that this script has not handed out yet (not a subshell: the
# list of handed-out ports must persist).
taken_ports=" "
free_port() {
    # Names no caller uses: printf -v would set a local of the same name.
    local _fp_port _fp_tries
    for ((_fp_tries = 0; _fp_tries < 200; _fp_tries++)); do
        # Below the kernel's ephemeral range (32768 and up by default), so
        # no outgoing connection takes the port between this check and the
        # bind; and no socket of any state may hold it now.
        _fp_port=$((20000 + RANDOM % 12000))
        case "$taken_ports" in *" $_fp_port "*) continue ;; esac
        if [ -z "$(ss -Htuan "sport = :$_fp_port" 2>/dev/null)" ]; then
            taken_ports+="$_fp_port "
            printf -v "$1" '%s' "$_fp_port"
            return 0
        fi
    done
    die "no free loopback port found"
}

# build_binaries: the release rpcdns and the probe (or RPCDNS_BIN/PROBE_BIN).
build_binaries() {
    local target="${CARGO_TARGET_DIR:-$root/target}"
    rpcdns_bin="${RPCDNS_BIN:-$target/release/rpcdns}"
    probe_bin="${PROBE_BIN:-$target/release/examples/propagation_probe}"
    if [ -z "${RPCDNS_BIN:-}" ] || [ -z "${PROBE_BIN:-}" ]; then
        (cd "$root" && run cargo build --release --quiet --bin rpcdns --example propagation_probe)
    fi
    [ -x "$rpcdns_bin" ] || die "$rpcdns_bin is not an executable file"
    [ -x "$probe_bin" ] || die "$probe_bin is not an executable file"
}

# start_etcd: a private single-member etcd on free ports; sets etcd_pid and
# etcd_endpoint. No lease and a large quota: a million keys fit.
start_etcd() {
    local client_port peer_port
    free_port client_port
    free_port peer_port
    etcd_endpoint="127.0.0.1:$client_port"
    local cmd=(etcd --name bench --data-dir "$tmp/etcd"
        --listen-client-urls "http://$etcd_endpoint"
        --advertise-client-urls "http://$etcd_endpoint"
        --listen-peer-urls "http://127.0.0.1:$peer_port"
        --initial-advertise-peer-urls "http://127.0.0.1:$peer_port"
        --initial-cluster "bench=http://127.0.0.1:$peer_port"
        --initial-cluster-state new
        --quota-backend-bytes $((8 * 1024 * 1024 * 1024))
        --max-txn-ops 1000 --max-request-bytes $((8 * 1024 * 1024))
        --logger zap --log-level warn)
    start_bg etcd_pid "$tmp/etcd.log" "${cmd[@]}"
    wait_until 30 "etcd on $etcd_endpoint to be healthy" \
        etcdctl --endpoints="$etcd_endpoint" --dial-timeout=1s endpoint health
}

# start_rpcdns: the release rpcdns on free ports, JSON logs; sets rpcdns_pid,
# dns_port, http_port and rpcdns_started (epoch seconds, for sync-times);
# returns once /readyz answers 200, or fails after $1 (default 300) seconds.
start_rpcdns() {
    free_port dns_port
    free_port http_port
    local cmd=("$rpcdns_bin" --etcd "$etcd_endpoint"
        --dns-listen "127.0.0.1:$dns_port" --http-listen "127.0.0.1:$http_port"
        --log-format json --log-level info)
    rpcdns_started=$EPOCHREALTIME
    start_bg rpcdns_pid "$tmp/rpcdns.log" "${cmd[@]}"
    local deadline=$((SECONDS + ${1:-300}))
    until curl -fsS -o /dev/null "http://127.0.0.1:$http_port/readyz" 2>/dev/null; do
        if ! kill -0 "$rpcdns_pid" 2>/dev/null; then
            tail -n 20 "$tmp/rpcdns.log" >&2
            die "rpcdns exited during start-up (log above)"
        fi
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

# proc_mem PID: "VmRSS VmHWM" of PID in MiB.
proc_mem() {
    awk '/^VmRSS:/ { rss = $2 } /^VmHWM:/ { hwm = $2 }
        END { printf "%.1f %.1f\n", rss / 1024, hwm / 1024 }' "/proc/$1/status"
}

# --- the benchmark -----------------------------------------------------------
main() {
    S="${S:-20000}"
    K="${K:-5}"
    CHANGES="${CHANGES:-1000}"
    QPS="${QPS:-20000}"
    LOAD_CPU="${LOAD_CPU:-1}"

    bench_setup propagation
    need_tools etcd etcdctl curl taskset
    if [ "$QPS" != 0 ]; then
        need_tools dnsperf
    fi
    build_binaries

    start_etcd
    run "$probe_bin" load --etcd "$etcd_endpoint" --services "$S" --per-service "$K" \
        --batch 1000 --concurrency 8
    start_rpcdns 300 || die "rpcdns not ready after 300 s"
    sync_line="$("$probe_bin" sync-times --log "$tmp/rpcdns.log" --started "$rpcdns_started")"
    say "first sync: $sync_line"

    dnsperf_pid=""
    if [ "$QPS" != 0 ]; then
        run "$probe_bin" queries --services "$S" --per-service "$K" --count 100000 \
            --out "$tmp/queries.txt"
        # -l bounds the run even if this script is killed with SIGKILL; it is
        # stopped with SIGINT (which makes dnsperf print its statistics) as soon
        # as the probe is done.
        dnsperf_cmd=(taskset -c "$LOAD_CPU" stdbuf -oL dnsperf -s 127.0.0.1 -p "$dns_port"
            -d "$tmp/queries.txt" -Q "$QPS" -c 4 -q 200 -l 900)
        start_bg dnsperf_pid "$tmp/dnsperf.log" "${dnsperf_cmd[@]}"
        # dnsperf reads its whole query file before sending (stdbuf: its
        # status lines reach the log at once): wait until it has
        # started sending (bounded) so the first changes are under load too.
        wait_until 30 "dnsperf to start" grep -q "Sending queries" "$tmp/dnsperf.log"
    fi

    status=0
    run "$probe_bin" probe --services "$S" --etcd "$etcd_endpoint" --dns "127.0.0.1:$dns_port" \
        --changes "$CHANGES" | tee "$tmp/probe.txt" || status=$?

    if [ -n "$dnsperf_pid" ]; then
        kill -INT "$dnsperf_pid" 2>/dev/null || true
        wait_pid_exit "$dnsperf_pid" 10
        say "dnsperf's report (the steady load during the probe):"
        grep -E "Queries (sent|completed|lost)|Queries per second|Average Latency|Latency StdDev" \
            "$tmp/dnsperf.log" || tail -n 20 "$tmp/dnsperf.log"
    fi
    check_alive "$rpcdns_pid" rpcdns

    cat <<EOF

== Propagation: S=$S K=$K ($((S * K)) instances), $CHANGES puts + $CHANGES deletes, \
query load ${QPS} q/s on core $LOAD_CPU
$(grep -E '^(put|delete) ' "$tmp/probe.txt" || true)
target (issue 4): p99 <= 10 ms on loopback with 100k instances
machine: $(nproc) cores, $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)
EOF
    exit "$status"
}

# Sourced by bench/scale.sh: the helpers only.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
