#!/usr/bin/env bash
# Installs, from Debian, the programs the demo and the tests need when they
# are missing: etcd, etcdctl, dig, protoc and curl. Idempotent and quiet when
# everything is already there; uses sudo when not run as root.
set -euo pipefail

# command -> Debian package that provides it
declare -A package_for=(
    [etcd]=etcd-server
    [etcdctl]=etcd-client
    [dig]=dnsutils
    [protoc]=protobuf-compiler
    [curl]=curl
)

missing=()
for cmd in etcd etcdctl dig protoc curl; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        missing+=("${package_for[$cmd]}")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: missing ${missing[*]}, and apt-get is not available: install them by hand" >&2
    exit 1
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-deps: missing ${missing[*]}; not root and sudo is not available" >&2
        exit 1
    fi
    sudo_cmd=(sudo)
fi

echo "install-deps: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

for cmd in etcd etcdctl dig protoc curl; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        echo "install-deps: $cmd is still missing after installing ${missing[*]}" >&2
        exit 1
    fi
done
