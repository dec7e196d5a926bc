#!/usr/bin/env bash
# Many replicas on one etcd (issue 13): what N rpcdns replicas cost a
# three-member etcd, connected directly or through etcd's gRPC proxy, while
# a writer changes registrations at a steady rate; and how long a change
# takes to reach every replica.
#
# Starts a three-member etcd on free loopback ports (data on tmpfs when
# there is room), loads S x K instances, then for each MODE (direct,
# proxy) and each N in REPLICAS: starts N release rpcdns replicas (direct:
# each lists the three members; proxy: PROXIES grpc-proxies, each replica
# listing them all, in a rotated order), and measures
#   - idle:  etcd's CPU for 5 s with nothing happening;
#   - flood: etcd's CPU while examples/replicas_probe.rs floods the
#            replicas with DNS queries for 10 s (DNS must not reach etcd);
#   - for each RATE: the probe changes RATE registrations/s for DURATION
#            seconds and times a sample every 250 ms on every replica.
# Per run it prints etcd's CPU (cores, all members), the proxies' and the
# replicas' CPU,
# etcd's RSS, watch streams and watchers (etcd's gauges, all members),
# the bytes etcd sent per second, the propagation percentiles over every
# (replica, sample), the worst replica's p99, and whether every replica
# then reached etcd's revision as its SOA serial with the same zone (the
# /debug/zone JSON, compared whole). Everything it starts is stopped by
# PID on exit, Ctrl-C included.
#
# Environment (defaults in brackets):
#   S [2000] K [5]            dataset: services x instances (10k)
#   REPLICAS ["10 50 100"]    replica counts
#   RATES ["100 1000"]        registration changes per second
#   DURATION [20]             seconds per rate
#   MODES ["direct proxy"]    how replicas reach etcd
#   PROXIES [2]               grpc-proxies in proxy mode
#   ZONE_COMPARE [20000]      up to this many instances, replicas' zones are
#                             compared whole (/debug/zone); beyond, by counts
#   RPCDNS_BIN, PROBE_BIN, REPLICAS_PROBE_BIN   prebuilt binaries
set -euo pipefail

# The helpers (say, run, start_bg, free_port, need_tools, stop_pid, ...).
# shellcheck source=bench/propagation.sh
source "$(dirname "${BASH_SOURCE[0]}")/propagation.sh"
bench_name=replicas

S="${S:-2000}"
K="${K:-5}"
REPLICAS="${REPLICAS:-10 50 100}"
RATES="${RATES:-100 1000}"
DURATION="${DURATION:-20}"
MODES="${MODES:-direct proxy}"
PROXIES="${PROXIES:-2}"
CLK_TCK="$(getconf CLK_TCK)"

# start_cluster: three members; sets members (client endpoints), member_pids.
start_cluster() {
    local i client_ports=() peer_ports=() port initial=""
    for i in 0 1 2; do
        free_port port
        client_ports+=("$port")
        free_port port
        peer_ports+=("$port")
        initial+="${initial:+,}m$i=http://127.0.0.1:${peer_ports[i]}"
    done
    members=()
    member_pids=()
    for i in 0 1 2; do
        local client="127.0.0.1:${client_ports[i]}" peer="127.0.0.1:${peer_ports[i]}" pid
        start_bg pid "$tmp/etcd-m$i.log" etcd --name "m$i" --data-dir "$tmp/etcd-m$i" \
            --listen-client-urls "http://$client" --advertise-client-urls "http://$client" \
            --listen-peer-urls "http://$peer" --initial-advertise-peer-urls "http://$peer" \
            --initial-cluster "$initial" --initial-cluster-state new \
            --quota-backend-bytes $((8 * 1024 * 1024 * 1024)) \
            --max-txn-ops 1000 --max-request-bytes $((8 * 1024 * 1024)) \
            --logger zap --log-level warn
        members+=("$client")
        member_pids+=("$pid")
    done
    local all
    all="$(IFS=,; echo "${members[*]}")"
    wait_until 60 "the etcd cluster to be healthy" \
        etcdctl --endpoints="$all" --dial-timeout=1s endpoint health
    etcd_endpoints="$all"
}

# start_proxies N: N grpc-proxies in front of the cluster; sets proxies,
# proxy_pids.
start_proxies() {
    proxies=()
    proxy_pids=()
    local i port pid
    for ((i = 0; i < $1; i++)); do
        free_port port
        start_bg pid "$tmp/proxy-$i.log" etcd grpc-proxy start --endpoints "$etcd_endpoints" \
            --listen-addr "127.0.0.1:$port" --data-dir "$tmp/proxy-$i"
        proxies+=("127.0.0.1:$port")
        proxy_pids+=("$pid")
        wait_until 30 "grpc-proxy $i" \
            etcdctl --endpoints="127.0.0.1:$port" --dial-timeout=1s get --limit=1 x
    done
}

stop_list() {
    local pid
    for pid in "$@"; do
        stop_pid "$pid"
        forget_pid "$pid"
    done
}

# start_replicas N MODE: N replicas; sets replica_pids, replica_http, and
# writes their DNS addresses to $tmp/replicas.txt.
start_replicas() {
    local n=$1 mode=$2 i dns http pid endpoints
    replica_pids=()
    replica_http=()
    : >"$tmp/replicas.txt"
    for ((i = 0; i < n; i++)); do
        if [ "$mode" = proxy ]; then
            # Rotated, so the replicas spread over the proxies.
            local rotated=() j
            for ((j = 0; j < ${#proxies[@]}; j++)); do
                rotated+=("${proxies[(i + j) % ${#proxies[@]}]}")
            done
            endpoints="$(IFS=,; echo "${rotated[*]}")"
        else
            endpoints="$etcd_endpoints"
        fi
        free_port dns
        free_port http
        # Quietly: a hundred replicas' logs are not the point.
        start_bg pid "$tmp/replica-$i.log" "$rpcdns_bin" --etcd "$endpoints" \
            --dns-listen "127.0.0.1:$dns" --http-listen "127.0.0.1:$http" \
            --log-format json --log-level warn >/dev/null
        replica_pids+=("$pid")
        replica_http+=("$http")
        echo "127.0.0.1:$dns" >>"$tmp/replicas.txt"
    done
    for ((i = 0; i < n; i++)); do
        wait_until 300 "replica $i to be ready" \
            curl -fsS -o /dev/null "http://127.0.0.1:${replica_http[i]}/readyz"
    done
}

# cpu_ticks PID...: their utime + stime, in clock ticks.
cpu_ticks() {
    local pid total=0
    for pid in "$@"; do
        # A process that is gone (killed) counts nothing.
        [ -r "/proc/$pid/stat" ] || continue
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}

# rss_mib PID...: their summed VmRSS in MiB.
rss_mib() {
    local pid
    for pid in "$@"; do
        awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"
    done | awk '{ s += $1 } END { printf "%.0f\n", s / 1024 }'
}

# etcd_metric NAME: NAME (a gauge or counter without labels, or the sum
# of its series) summed over the members.
etcd_metric() {
    local m
    for m in "${members[@]}"; do
        curl -fsS "http://$m/metrics"
    done | awk -v name="$1" '$1 == name || index($1, name "{") == 1 { s += $2 } END { printf "%.0f\n", s }'
}

etcd_revision() {
    etcdctl --endpoints="$etcd_endpoints" endpoint status -w json |
        python3 -c 'import json, sys; print(max(e["Status"]["header"]["revision"] for e in json.load(sys.stdin)))'
}

# measure LABEL CMD...: runs CMD, and prints etcd's and the proxies' CPU
# (cores) and etcd's bytes sent per second over its run.
measure() {
    local label=$1 t0 t1 e0 e1 p0=0 p1=0 r0 r1 b0 b1
    shift
    e0="$(cpu_ticks "${member_pids[@]}")"
    [ "${#proxy_pids[@]}" -eq 0 ] || p0="$(cpu_ticks "${proxy_pids[@]}")"
    r0="$(cpu_ticks "${replica_pids[@]}")"
    b0="$(etcd_metric etcd_network_client_grpc_sent_bytes_total)"
    t0=$EPOCHREALTIME
    "$@"
    t1=$EPOCHREALTIME
    e1="$(cpu_ticks "${member_pids[@]}")"
    [ "${#proxy_pids[@]}" -eq 0 ] || p1="$(cpu_ticks "${proxy_pids[@]}")"
    r1="$(cpu_ticks "${replica_pids[@]}")"
    b1="$(etcd_metric etcd_network_client_grpc_sent_bytes_total)"
    python3 - "$label" "$t0" "$t1" "$e0" "$e1" "$p0" "$p1" "$r0" "$r1" "$b0" "$b1" \
        "$CLK_TCK" "${#replica_pids[@]}" <<'EOF'
import sys
label, t0, t1, e0, e1, p0, p1, r0, r1, b0, b1, tck, n = sys.argv[1:]
secs = float(t1) - float(t0)
def cores(a, b):
    return (int(b) - int(a)) / int(tck) / secs
sent = (float(b1) - float(b0)) / secs / 1e6
replicas = cores(r0, r1)
print(f"{label}: etcd CPU {cores(e0, e1):.3f} cores, proxies {cores(p0, p1):.3f} cores, "
      f"replicas {replicas:.2f} cores ({1000 * replicas / int(n):.1f} ms/s each), "
      f"etcd sent {sent:.2f} MB/s over {secs:.1f} s")
EOF
}

idle() { sleep "$1"; }

# converged: every replica's revision is etcd's, and every replica serves
# the same zone: the /debug/zone JSON compared whole up to ZONE_COMPARE
# instances (its rendering costs a replica a few hundred MiB at 100k, too
# much times a hundred on one machine), the zone's counts beyond.
converged() {
    local revision i deadline=$((SECONDS + 60))
    revision="$(etcd_revision)"
    for i in "${!replica_http[@]}"; do
        until [ "$(curl -fsS "http://127.0.0.1:${replica_http[i]}/readyz" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["revision"])')" = "$revision" ]; do
            [ "$SECONDS" -lt "$deadline" ] || { echo "replica $i not at revision $revision"; return 1; }
            sleep 0.1
        done
    done
    local digests what
    if [ $((S * K)) -le "${ZONE_COMPARE:-20000}" ]; then
        what="/debug/zone"
        digests="$(for i in "${!replica_http[@]}"; do
            curl -fsS "http://127.0.0.1:${replica_http[i]}/debug/zone" |
                python3 -c 'import hashlib, json, sys; z = json.load(sys.stdin)["zone"]; print(hashlib.sha256(json.dumps(z, sort_keys=True).encode()).hexdigest())'
        done | sort -u | wc -l)"
    else
        what="service and instance counts"
        digests="$(for i in "${!replica_http[@]}"; do
            curl -fsS "http://127.0.0.1:${replica_http[i]}/metrics" |
                grep -E '^rpcdns_zone_(services|instances) ' | tr '\n' ' '
            echo
        done | sort -u | wc -l)"
    fi
    echo "converged: ${#replica_http[@]} replicas at etcd revision $revision, $digests distinct zone(s) by $what"
    [ "$digests" = 1 ]
}

main_replicas() {
    bench_setup replicas
    need_tools etcd etcdctl curl ss
    local target="${CARGO_TARGET_DIR:-$root/target}"
    rpcdns_bin="${RPCDNS_BIN:-$target/release/rpcdns}"
    probe_bin="${PROBE_BIN:-$target/release/examples/propagation_probe}"
    replicas_probe="${REPLICAS_PROBE_BIN:-$target/release/examples/replicas_probe}"
    if [ -z "${RPCDNS_BIN:-}" ] || [ -z "${PROBE_BIN:-}" ] || [ -z "${REPLICAS_PROBE_BIN:-}" ]; then
        (cd "$root" && run cargo build --release --quiet --bin rpcdns \
            --example propagation_probe --example replicas_probe)
    fi
    # A hundred replicas hold a few thousand descriptors and threads.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

    say "machine: $(nproc) cores, $(uname -r), $(free -m | awk '/^Mem:/ { print $2 }') MiB; etcd $(etcd --version | head -1)"
    start_cluster
    run "$probe_bin" load --etcd "${members[0]}" --services "$S" --per-service "$K" \
        --batch 1000 --concurrency 8
    proxy_pids=()
    local mode n rate
    for mode in $MODES; do
        proxy_pids=()
        proxies=()
        [ "$mode" = proxy ] && start_proxies "$PROXIES"
        for n in $REPLICAS; do
            say "== $mode, $n replicas, $((S * K)) instances"
            start_replicas "$n" "$mode"
            echo "replicas: RSS $(rss_mib "${replica_pids[@]}") MiB in all; etcd RSS $(rss_mib "${member_pids[@]}") MiB; watch streams $(etcd_metric etcd_debugging_mvcc_watch_stream_total), watchers $(etcd_metric etcd_debugging_mvcc_watcher_total) on etcd"
            measure "$mode n=$n idle" idle 5
            measure "$mode n=$n dns flood" "$replicas_probe" flood --replicas "$tmp/replicas.txt" \
                --services "$S" --duration 10
            for rate in $RATES; do
                measure "$mode n=$n rate=$rate/s" "$replicas_probe" run --etcd "$etcd_endpoints" \
                    --replicas "$tmp/replicas.txt" --services "$S" --per-service "$K" \
                    --rate "$rate" --duration "$DURATION"
                converged || say "NOT CONVERGED ($mode, $n replicas, $rate/s)"
                echo "etcd RSS $(rss_mib "${member_pids[@]}") MiB"
            done
            stop_list "${replica_pids[@]}"
        done
        [ "${#proxy_pids[@]}" -eq 0 ] || stop_list "${proxy_pids[@]}"
        proxy_pids=()
    done
    say "done; load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

main_replicas "$@"

