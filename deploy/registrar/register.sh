#!/bin/sh
# Registers one service instance in etcd exactly as go-zero does, and keeps
# it registered until stopped: a lease of LEASE_TTL seconds, the key
# <SERVICE_KEY>/<lease id in decimal> = SERVICE_ADDR put with that lease, and
# keep-alives. On SIGTERM or SIGINT it revokes the lease, so the key (and the
# DNS record rpcdns serves for it) goes at once, as after a graceful go-zero
# shutdown; if it dies instead, the lease expires and etcd deletes the key.
#
# Environment (etcdctl also reads ETCDCTL_ENDPOINTS and the other ETCDCTL_*):
#   SERVICE_KEY   go-zero's Etcd.Key                 (default demo.rpc)
#   SERVICE_ADDR  host:port the instance listens on  (default <own IP>:8080)
#   LEASE_TTL     lease TTL in seconds                (default 10, go-zero's)
#
# The demo registrar of deploy/docker-compose.yml; run for real against etcd
# and rpcdns in tests/integration/deploy.rs.
set -eu

SERVICE_KEY="${SERVICE_KEY:-demo.rpc}"
LEASE_TTL="${LEASE_TTL:-10}"
if [ -z "${SERVICE_ADDR:-}" ]; then
    # go-zero replaces 0.0.0.0 by the instance's own IP; so do we.
    SERVICE_ADDR="$(hostname -i | cut -d ' ' -f 1):8080"
fi
export ETCDCTL_API=3

# `etcdctl lease grant` prints "lease 694d7a6e1b4b1c06 granted with TTL(10s)":
# etcdctl speaks hex, the go-zero key carries the same id in decimal.
lease_hex="$(etcdctl lease grant "$LEASE_TTL" | awk '/granted/ { print $2 }')"
if [ -z "$lease_hex" ]; then
    echo "register: could not grant a lease" >&2
    exit 1
fi
lease_dec="$(printf '%d' "0x$lease_hex")"
key="$SERVICE_KEY/$lease_dec"

etcdctl put --lease="$lease_hex" "$key" "$SERVICE_ADDR" >/dev/null
echo "register: $key = $SERVICE_ADDR (lease $lease_hex, TTL ${LEASE_TTL}s)"

etcdctl lease keep-alive "$lease_hex" >/dev/null &
keeper=$!

stop() {
    kill "$keeper" 2>/dev/null || true
    etcdctl lease revoke "$lease_hex" >/dev/null 2>&1 || true
    echo "register: revoked $key"
    exit 0
}
trap stop TERM INT

# keep-alive only returns when the lease is lost (etcd gone too long): fail,
# so that the container restarts and registers anew.
wait "$keeper" || true
trap - TERM INT
echo "register: lease $lease_hex lost" >&2
exit 1
