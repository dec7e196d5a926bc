#!/usr/bin/env bash
# The quick start: starts a private etcd on 127.0.0.1:2379, registers demo
# services in it exactly as go-zero does (a 10 s lease, key <Key>/<lease id in
# decimal>, value host:port, kept alive), starts rpcdns against it and shows
# the DNS answers. Runs until Ctrl-C / SIGTERM, then stops everything it
# started and removes its temporary directory.
#
# Environment:
#   DEMO_NO_WAIT=1   do everything, check the answers, then stop and clean up
#                    (for non-interactive checks; exit status says if it worked)
#   DEMO_ETCD_PORT   client port of the demo etcd (default 2379; the peer port
#                    is this plus one)
#   RPCDNS_BIN       run this rpcdns binary instead of building one with
#                    `cargo build` (e.g. a test's CARGO_BIN_EXE_rpcdns)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

etcd_port="${DEMO_ETCD_PORT:-2379}"
peer_port=$((etcd_port + 1))
etcd_endpoint="127.0.0.1:${etcd_port}"
dns_port=5353
http_port=9153
zone="svc.local"
lease_ttl=10
bin="${RPCDNS_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/rpcdns}"

say() { printf '==> %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --- cleanup: everything this script starts is recorded here by PID --------
pids=()
tmp=""
# Invoked only through the trap below, which shellcheck 0.9 cannot see.
# shellcheck disable=SC2317
cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    if [ "${#pids[@]}" -gt 0 ]; then
        say "stopping demo processes: ${pids[*]}"
        kill -TERM "${pids[@]}" 2>/dev/null
        # Give them a few seconds to exit cleanly, then force.
        local deadline=$((SECONDS + 5)) pid
        for pid in "${pids[@]}"; do
            while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        done
    fi
    if [ -n "$tmp" ]; then
        rm -rf "$tmp"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# port_busy PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# --- dependencies, ports, build --------------------------------------------
"$root/scripts/install-deps.sh" --demo

# A Debian machine with systemd runs the etcd that the etcd-server package
# starts on 2379: leave it alone and use a port of our own.
if [ -z "${DEMO_ETCD_PORT:-}" ] && { port_busy "$etcd_port" || port_busy "$peer_port"; }; then
    for candidate in $(seq 23790 10 23990); do
        if ! port_busy "$candidate" && ! port_busy "$((candidate + 1))"; then
            etcd_port=$candidate
            break
        fi
    done
    peer_port=$((etcd_port + 1))
    etcd_endpoint="127.0.0.1:${etcd_port}"
    say "127.0.0.1:2379 is in use (Debian's etcd service?); the demo's etcd uses ${etcd_endpoint} instead"
fi
if port_busy "$etcd_port" || port_busy "$peer_port"; then
    die "127.0.0.1:${etcd_port} or :${peer_port} is already in use (another etcd?).
The demo starts its own etcd and will not touch a foreign one. Stop it (Debian's
etcd-server package runs one: 'sudo systemctl stop etcd'), or pick other ports:
DEMO_ETCD_PORT=23790 scripts/demo.sh"
fi
if port_busy "$http_port"; then
    die "127.0.0.1:${http_port} (rpcdns HTTP) is already in use; is another rpcdns running?"
fi

if [ -n "${RPCDNS_BIN:-}" ]; then
    [ -x "$bin" ] || die "RPCDNS_BIN=$bin is not an executable file"
else
    say "building rpcdns (cargo build)"
    cargo build --quiet --bin rpcdns
    [ -x "$bin" ] || die "cargo build finished but $bin is missing"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/rpcdns-demo.XXXXXX")"

# --- etcd -------------------------------------------------------------------
say "starting etcd on ${etcd_endpoint} (data in $tmp/etcd, log in $tmp/etcd.log)"
etcd --name rpcdns-demo \
    --data-dir "$tmp/etcd" \
    --listen-client-urls "http://${etcd_endpoint}" \
    --advertise-client-urls "http://${etcd_endpoint}" \
    --listen-peer-urls "http://127.0.0.1:${peer_port}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${peer_port}" \
    --initial-cluster "rpcdns-demo=http://127.0.0.1:${peer_port}" \
    --initial-cluster-state new \
    >"$tmp/etcd.log" 2>&1 &
etcd_pid=$!
pids+=("$etcd_pid")

ectl() { etcdctl --endpoints="$etcd_endpoint" --dial-timeout=2s "$@"; }

deadline=$((SECONDS + 20))
until ectl endpoint health >/dev/null 2>&1; do
    if ! kill -0 "$etcd_pid" 2>/dev/null; then
        tail -n 20 "$tmp/etcd.log" >&2
        die "etcd exited during start-up (log above)"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "etcd not healthy after 20 s; see $tmp/etcd.log"
    sleep 0.2
done
say "etcd is healthy"

# --- registrations, the go-zero way ----------------------------------------
# register KEY VALUE: grants a lease, puts KEY/<lease id in decimal> = VALUE
# under it and keeps the lease alive in the background, as go-zero does.
# Sets lease_hex, lease_dec and keepalive_pid for the caller.
register() {
    local key=$1 value=$2 out
    out="$(ectl lease grant "$lease_ttl")"
    # "lease 694d7b6b3c6e1a0c granted with TTL(10s)"
    lease_hex="$(printf '%s\n' "$out" | awk '/granted/ { print $2 }')"
    [ -n "$lease_hex" ] || die "could not parse the lease id from: $out"
    # etcdctl prints the int64 lease id in hex; go-zero writes it in decimal.
    if [[ "$lease_hex" == -* ]]; then
        lease_dec=$((-16#${lease_hex#-}))
    else
        lease_dec=$((16#$lease_hex))
    fi
    ectl put --lease="$lease_hex" "$key/$lease_dec" "$value" >/dev/null
    # etcdctl itself, not the ectl function: a function would run in a
    # subshell, and killing that subshell's PID would leave etcdctl running.
    etcdctl --endpoints="$etcd_endpoint" lease keep-alive "$lease_hex" >/dev/null 2>&1 &
    keepalive_pid=$!
    pids+=("$keepalive_pid")
    printf '    %-40s = %-16s (lease %s, keep-alive pid %s)\n' \
        "$key/$lease_dec" "$value" "$lease_hex" "$keepalive_pid"
}

say "registering demo services"
register sms.rpc 127.0.0.11:8001
sms_first_id=$lease_dec
register sms.rpc 127.0.0.12:8001
sms_second_keepalive=$keepalive_pid
register mall.user.rpc 127.0.0.21:8080
register mall.user.rpc '[::1]:8080'
register order.rpc localhost:9090

# --- rpcdns -----------------------------------------------------------------
say "starting rpcdns (log in $tmp/rpcdns.log)"
"$bin" --etcd "$etcd_endpoint" >"$tmp/rpcdns.log" 2>&1 &
rpcdns_pid=$!
pids+=("$rpcdns_pid")

deadline=$((SECONDS + 30))
until curl -fsS -o /dev/null "http://127.0.0.1:${http_port}/readyz" 2>/dev/null; do
    if ! kill -0 "$rpcdns_pid" 2>/dev/null; then
        tail -n 30 "$tmp/rpcdns.log" >&2
        die "rpcdns exited during start-up (log above)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        tail -n 30 "$tmp/rpcdns.log" >&2
        die "rpcdns not ready after 30 s (log above)"
    fi
    sleep 0.2
done
say "rpcdns is ready: DNS on 127.0.0.1:${dns_port}, HTTP on 127.0.0.1:${http_port}"

dig_cmd="dig @127.0.0.1 -p ${dns_port}"
cat <<EOF

Try these (in another terminal):
  ${dig_cmd} sms.rpc.${zone} A
  ${dig_cmd} sms.rpc.${zone} SRV
  ${dig_cmd} _grpc._tcp.sms.rpc.${zone} SRV
  ${dig_cmd} mall.user.rpc.${zone} AAAA
  ${dig_cmd} order.rpc.${zone} SRV
  ${dig_cmd} ${sms_first_id}.sms.rpc.${zone} A    # one instance
  ${dig_cmd} port-8001.sms.rpc.${zone} A    # the instances on port 8001
  ${dig_cmd} _grpc_config.sms.rpc.${zone} TXT    # gRPC service config: round_robin
  ${dig_cmd} nope.rpc.${zone}    # NXDOMAIN
  curl -s 127.0.0.1:${http_port}/debug/zone
  curl -s 127.0.0.1:${http_port}/metrics

Make an instance disappear (its lease expires within ${lease_ttl} s):
  kill ${sms_second_keepalive}      # the keep-alive of sms.rpc -> 127.0.0.12:8001

EOF

say "${dig_cmd} +short sms.rpc.${zone} A"
a_answer="$($dig_cmd +short "sms.rpc.${zone}" A || true)"
printf '%s\n' "$a_answer"
say "${dig_cmd} +short sms.rpc.${zone} SRV"
srv_answer="$($dig_cmd +short "sms.rpc.${zone}" SRV || true)"
printf '%s\n' "$srv_answer"

answers_ok=true
for want in 127.0.0.11 127.0.0.12; do
    if ! grep -qxF "$want" <<<"$a_answer"; then
        answers_ok=false
        printf 'demo: expected %s in the A answer; see %s\n' "$want" "$tmp/rpcdns.log" >&2
    fi
done
if [ "$(grep -c ' 8001 ' <<<"$srv_answer" || true)" -ne 2 ]; then
    answers_ok=false
    printf 'demo: expected two SRV records with port 8001\n' >&2
fi

if [ "${DEMO_NO_WAIT:-0}" = 1 ]; then
    $answers_ok || die "the demo answers were not as expected"
    say "DEMO_NO_WAIT=1: stopping"
    exit 0
fi

say "running; press Ctrl-C to stop and clean up"
# Returns when rpcdns exits, or at once when INT/TERM arrives (the trap then
# cleans up).
set +e
wait "$rpcdns_pid"
status=$?
set -e
tail -n 30 "$tmp/rpcdns.log" >&2
die "rpcdns exited unexpectedly with status $status (log above)"
