#!/usr/bin/env bash
# Benchmark 3 of the performance issue: scale. For each size (default 10k,
# 100k and 1M instances, K per service) it loads a fresh private etcd, starts
# the release rpcdns and reports:
#   - first-sync time: from process start to the `zone loaded from etcd` log
#     line (readyz turns 200 at that moment), and from the end of the etcd
#     full read (`connected to etcd`, logged when the read returns) to it;
#   - rpcdns's resident memory after the load (VmRSS, and the peak VmHWM);
#   - the time one update takes: put one instance -> visible in DNS, over
#     UPDATES puts (examples/propagation_probe.rs --puts-only);
#   - Knot's resident memory serving the equivalent zone file (knotd in the
#     foreground with a private config), unless SKIP_KNOT names the size.
# Prints a table and every command it ran. Everything it starts is stopped by
# PID on exit, Ctrl-C included.
#
# Environment (defaults in brackets):
#   SIZES ["10000 100000 1000000"]  instance counts
#   K [5]                            instances per service
#   UPDATES [50]                     timed updates per size
#   SKIP_KNOT [""]                   sizes for which Knot is not measured
#   KNOT_TIMEOUT [600]               seconds Knot may take to load a zone
#   READY_TIMEOUT [900]              seconds rpcdns may take to its first sync
#   RPCDNS_BIN, PROBE_BIN            binaries to use instead of building
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The helpers (traps, ports, etcd and rpcdns start-up) live in
# propagation.sh; sourced, it defines them and returns.
# shellcheck source=bench/propagation.sh
. "$root/bench/propagation.sh"

SIZES="${SIZES:-10000 100000 1000000}"
K="${K:-5}"
UPDATES="${UPDATES:-50}"
SKIP_KNOT="${SKIP_KNOT:-}"
KNOT_TIMEOUT="${KNOT_TIMEOUT:-600}"
READY_TIMEOUT="${READY_TIMEOUT:-900}"

bench_setup scale
need_tools etcd etcdctl curl ss
with_knot=true
if ! need_tools knotd dig; then
    say "Knot could not be installed: its memory is not measured"
    with_knot=false
fi
build_binaries

# knot_serves PORT: true once Knot answers the zone's SOA (it answers
# SERVFAIL, or nothing while busy loading, until the zone is loaded). The
# SOA itself is matched: dig prints its timeout messages on stdout too.
knot_serves() {
    dig +short +time=1 +tries=1 @127.0.0.1 -p "$1" svc.local. SOA 2>/dev/null |
        grep -q '^ns\.svc\.local\. hostmaster\.svc\.local\. '
}

# measure_knot N S: Knot's load time and memory on the dataset's zone file;
# sets knot_result.
measure_knot() {
    local n=$1 s=$2 port
    knot_result="skipped (SKIP_KNOT)"
    case " $SKIP_KNOT " in *" $n "*) return 0 ;; esac
    $with_knot || { knot_result="not installed"; return 0; }
    mkdir -p "$tmp/knot"
    run "$probe_bin" zonefile --services "$s" --per-service "$K" --out "$tmp/svc.local.zone"
    free_port port
    cat >"$tmp/knot/knot.conf" <<EOF
server:
    rundir: "$tmp/knot"
    listen: 127.0.0.1@$port
database:
    storage: "$tmp/knot"
log:
  - target: stderr
    any: info
zone:
  - domain: svc.local.
    storage: "$tmp"
    file: "svc.local.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
EOF
    local cmd=(knotd -c "$tmp/knot/knot.conf")
    local started=$EPOCHREALTIME pid
    start_bg pid "$tmp/knot/knotd.log" "${cmd[@]}"
    local deadline=$((SECONDS + KNOT_TIMEOUT))
    until knot_serves "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$tmp/knot/knotd.log" >&2
            die "knotd exited (log above)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            knot_result="did not load within ${KNOT_TIMEOUT}s"
            stop_pid "$pid"
            forget_pid "$pid"
            return 0
        fi
        sleep 0.05
    done
    local loaded=$EPOCHREALTIME mem
    mem="$(proc_mem "$pid")"
    knot_result="$(awk -v a="$started" -v b="$loaded" -v m="$mem" 'BEGIN {
        split(m, v, " "); printf "load %.2f s, RSS %s MiB (peak %s)", b - a, v[1], v[2] }')"
    stop_pid "$pid"
    forget_pid "$pid"
    rm -rf "$tmp/knot" "$tmp/svc.local.zone"
}

rows=()
for n in $SIZES; do
    s=$((n / K))
    say "=== $n instances ($s services x $K) ==="
    start_etcd
    run "$probe_bin" load --etcd "$etcd_endpoint" --services "$s" --per-service "$K" \
        --batch 1000 --concurrency 8 | tee "$tmp/load.txt"
    : >"$tmp/probe.txt"
    if start_rpcdns "$READY_TIMEOUT"; then
        ready_at=$EPOCHREALTIME
        mem="$(proc_mem "$rpcdns_pid")"
        sync_line="$("$probe_bin" sync-times --log "$tmp/rpcdns.log" --started "$rpcdns_started")"
        say "first sync: $sync_line; readyz seen after $(awk -v a="$rpcdns_started" \
            -v b="$ready_at" 'BEGIN { printf "%.0f", (b - a) * 1000 }') ms; VmRSS/VmHWM MiB: $mem"
        run "$probe_bin" probe --services "$s" --etcd "$etcd_endpoint" \
            --dns "127.0.0.1:$dns_port" --changes "$UPDATES" --warmup 5 --puts-only |
            tee "$tmp/probe.txt"
        mem_after="$(proc_mem "$rpcdns_pid")"
    else
        say "rpcdns not ready after ${READY_TIMEOUT}s; VmRSS/VmHWM MiB then: $(proc_mem "$rpcdns_pid")"
        sync_line="start_to_loaded_ms=>${READY_TIMEOUT}000 read_to_loaded_ms=?"
        mem="?"
        mem_after="?"
    fi
    stop_pid "$rpcdns_pid"
    forget_pid "$rpcdns_pid"
    stop_pid "$etcd_pid"
    forget_pid "$etcd_pid"
    rm -rf "$tmp/etcd"

    measure_knot "$n" "$s"

    start_ms="$(sed -n 's/.*start_to_loaded_ms=\([>0-9.]*\).*/\1/p' <<<"$sync_line")"
    read_ms="$(sed -n 's/.*read_to_loaded_ms=\([0-9.?]*\).*/\1/p' <<<"$sync_line")"
    put_line="$(grep '^put ' "$tmp/probe.txt" || true)"
    upd_p50="$(sed -n 's/.* p50=\([0-9.]*\)ms.*/\1/p' <<<"$put_line")"
    upd_p99="$(sed -n 's/.* p99=\([0-9.]*\)ms.*/\1/p' <<<"$put_line")"
    load_s="$(sed -n 's/.* in \([0-9.]*\) s .*/\1/p' "$tmp/load.txt")"
    rows+=("$(printf '%-8s | %8s | %9s | %9s | %-11s | %-11s | %7s | %7s | %s' \
        "$n" "$load_s" "$start_ms" "$read_ms" "${mem/ //}" "${mem_after/ //}" \
        "$upd_p50" "$upd_p99" "$knot_result")")
done

cat <<EOF

== Scale: K=$K instances per service, $UPDATES timed updates per size
instances | etcd load s | start->loaded ms | read->loaded ms | rpcdns RSS/peak MiB after load | after updates | update p50 ms | p99 ms | Knot on the same zone
EOF
printf '%s\n' "${rows[@]}"
cat <<EOF
start->loaded: rpcdns process start to 'zone loaded from etcd' (= /readyz 200), etcd
already up and loaded; read->loaded: from the etcd full read returning to the same line.
targets (issue 4): 100k: first sync <= 1 s after etcd answers, RSS <= Knot's;
1M: RSS <= 1 GiB; update time flat from 10k to 1M.
machine: $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB, $(uname -r); \
load average $(cut -d' ' -f1-3 /proc/loadavg)
EOF
