#!/usr/bin/env bash
# The long soak: the integration test soak::soak_queries_and_churn_stay_right_and_flat
# (tests/integration/soak.rs) run for 30 minutes instead of the suite's 2:
# a real etcd and the real rpcdns, ~500 queries/s over UDP and TCP with every
# answer checked, registrations churning (leases granted, kept alive, revoked,
# left to expire), and rpcdns's memory and file descriptors watched. Prints
# the figures and the summary line at the end; exits non-zero when the soak
# fails.
#
# Usage:
#   scripts/soak.sh            # 30 minutes
#   scripts/soak.sh 45m        # or 2h, 600s, 600 (seconds)
#   SOAK_SECS=1800 scripts/soak.sh
#
# Environment:
#   SOAK_SECS   duration in seconds when no argument is given (default 1800)
#   SOAK_QPS    total queries per second (default 500)
#   SOAK_LOG    where to keep the whole output (default target/soak-<UTC time>.log)
#
# The test is built and run in the debug profile, as in the suite: no second
# cold build, and overflow checks and debug assertions stay on. 500 queries/s
# is a few percent of what even a debug rpcdns serves, so the build profile
# changes the CPU cost, not what is checked.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

die() { printf 'soak: %s\n' "$*" >&2; exit 2; }

# DURATION → seconds: N, Ns, Nm or Nh.
to_secs() {
    [[ "$1" =~ ^([0-9]+)([smh]?)$ ]] || return 1
    local n=$((10#${BASH_REMATCH[1]}))
    case "${BASH_REMATCH[2]}" in
        h) echo $((n * 3600)) ;;
        m) echo $((n * 60)) ;;
        *) echo "$n" ;;
    esac
}

if [ "$#" -gt 1 ]; then
    die "usage: scripts/soak.sh [DURATION]   (e.g. 30m, 2h, 600s; default 30m)"
fi
if [ "$#" -eq 1 ]; then
    secs="$(to_secs "$1")" || die "bad duration '$1' (want e.g. 30m, 2h, 600s or 600)"
else
    secs="${SOAK_SECS:-1800}"
    [[ "$secs" =~ ^[0-9]+$ ]] || die "SOAK_SECS=$secs is not a number of seconds"
fi
[ "$secs" -ge 30 ] || die "a soak shorter than 30 s proves nothing (got ${secs} s)"
qps="${SOAK_QPS:-500}"
if ! [[ "$qps" =~ ^[1-9][0-9]*$ ]]; then
    die "SOAK_QPS=$qps is not a positive number"
fi

mkdir -p target
log="${SOAK_LOG:-target/soak-$(date -u +%Y%m%dT%H%M%SZ).log}"

printf '==> checking test dependencies (etcd and friends)\n'
"$root/scripts/install-deps.sh"

printf '==> building the integration tests (debug)\n'
cargo test --test integration --no-run

printf '==> soaking for %s s at %s queries/s (whole output in %s)\n' "$secs" "$qps" "$log"
status=0
RPCDNS_SOAK_SECS="$secs" RPCDNS_SOAK_QPS="$qps" \
    cargo test --test integration -- --exact soak::soak_queries_and_churn_stay_right_and_flat \
    --nocapture --test-threads 1 2>&1 | tee "$log" || status=$?

printf '\n==> soak figures\n'
# The end figures, without the per-minute progress and the sample lists.
grep -E '^soak( summary)?: ' "$log" | grep -v -E '^soak: [0-9]+ s: |samples: \[' || true
if [ "$status" -eq 0 ]; then
    printf '==> soak passed (log: %s)\n' "$log"
else
    printf '==> soak FAILED with status %s (log: %s)\n' "$status" "$log" >&2
fi
exit "$status"
