#!/usr/bin/env python3
"""Generates one benchmark dataset: go-zero registrations, the equivalent zone file, and a dnsperf query file.

For S services x K instances it writes, into OUT_DIR:

  registrations.txt  one go-zero registration per line, "<key> <value>":
                     key   svc<i>.rpc/<19-digit decimal id, like a go-zero lease id>
                     value 10.x.y.z:<port>  (a distinct IPv4 address per instance)
                     examples/etcd_load.rs puts these into etcd.
  svc.local.zone     the RFC 1035 zone file of the records rpcdns serves for
                     those registrations (SPEC.md section 4), for Knot and NSD.
  queries.txt        dnsperf input, --mix standard (the default): 45% "<svc>.svc.local A",
                     45% "<svc>.svc.local SRV", 10% "nope<i>.svc.local A" (NXDOMAIN);
                     --mix grpc, what a gRPC client's resolution asks (SPEC/README
                     "Calling go-zero services"): a third each of "<svc>.svc.local A",
                     "<svc>.svc.local AAAA" (NODATA) and "_grpc_config.<svc>.svc.local TXT";
                     services drawn uniformly.
  dataset.json       the parameters, counts and a few sample names.

Everything derives from --seed, so a dataset is reproducible byte for byte.
The zone serial is 1; rpcdns's serial is the etcd revision, so the SOA serial
is the one field in which the servers' answers legitimately differ. The zone
file holds rpcdns's default gRPC service config as TXT at
_grpc_config.<svc> and <svc>; it leaves out the port names (port-<port>.<svc>),
which no query asks.
"""

import argparse
import json
import random
import sys
from pathlib import Path

ZONE = "svc.local."
TTL = 5
# SOA timers rpcdns uses (SPEC.md section 4: refresh 60, retry 10, expire 86400,
# minimum = negative_ttl, default 5).
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, SOA_MINIMUM = 60, 10, 86400, 5
# go-zero lease ids are positive int64s; real ones are 19 digits long.
LEASE_ID_MIN, LEASE_ID_MAX = 10**18, 2**63 - 1
# Ports are per service, like go-zero services that each listen on one port.
PORT_BASE, PORT_SPAN = 10000, 50000
# Usable host octets: 1..254, so no address ends in .0 or .255.
OCTETS = 254
DEFAULT_QUERIES = 100_000
DEFAULT_SEED = 20240401
# rpcdns's default gRPC service config, as its TXT record carries it.
GRPC_CONFIG_TXT = 'grpc_config=[{"serviceConfig":{"loadBalancingConfig":[{"round_robin":{}}]}}]'
MIXES = ("standard", "grpc")


def address(n: int) -> str:
    """The n-th distinct address in 10.0.0.0/8 (n from 0), avoiding .0 and .255 octets."""
    if n >= OCTETS**3:
        raise ValueError(f"instance {n}: more instances than 10.0.0.0/8 addresses")
    z = n % OCTETS + 1
    y = (n // OCTETS) % OCTETS + 1
    x = n // (OCTETS * OCTETS) + 1
    return f"10.{x}.{y}.{z}"


def service_key(i: int) -> str:
    return f"svc{i}.rpc"


def generate(services: int, instances: int, queries: int, seed: int, out: Path, mix: str = "standard") -> dict:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)

    ids: set[int] = set()
    regs: list[tuple[str, list[tuple[str, str, int]]]] = []
    n = 0
    for i in range(services):
        port = PORT_BASE + i % PORT_SPAN
        members = []
        for _ in range(instances):
            lease = rng.randint(LEASE_ID_MIN, LEASE_ID_MAX)
            while lease in ids:
                lease = rng.randint(LEASE_ID_MIN, LEASE_ID_MAX)
            ids.add(lease)
            members.append((str(lease), address(n), port))
            n += 1
        regs.append((service_key(i), members))

    with open(out / "registrations.txt", "w", encoding="ascii") as f:
        for key, members in regs:
            for lease, addr, port in members:
                f.write(f"{key}/{lease} {addr}:{port}\n")

    with open(out / "svc.local.zone", "w", encoding="ascii") as f:
        f.write(f"; rpcdns benchmark zone: {services} services x {instances} instances, seed {seed}\n")
        f.write(f"$ORIGIN {ZONE}\n$TTL {TTL}\n")
        f.write(
            f"@ {TTL} IN SOA ns.{ZONE} hostmaster.{ZONE} 1 "
            f"{SOA_REFRESH} {SOA_RETRY} {SOA_EXPIRE} {SOA_MINIMUM}\n"
        )
        f.write(f"@ {TTL} IN NS ns.{ZONE}\n")
        for key, members in regs:
            name = f"{key}.{ZONE}"
            for _, addr, _ in members:
                f.write(f"{name} {TTL} IN A {addr}\n")
            for owner in (name, f"_grpc._tcp.{name}"):
                for lease, _, port in members:
                    f.write(f"{owner} {TTL} IN SRV 0 10 {port} {lease}.{name}\n")
            for lease, addr, _ in members:
                f.write(f"{lease}.{name} {TTL} IN A {addr}\n")
            txt = '"' + GRPC_CONFIG_TXT.replace('"', '\\"') + '"'
            for owner in (f"_grpc_config.{name}", name):
                f.write(f"{owner} {TTL} IN TXT {txt}\n")

    with open(out / "queries.txt", "w", encoding="ascii") as f:
        for q in range(queries):
            roll = rng.random()
            if mix == "grpc":
                svc = service_key(rng.randrange(services))
                if roll < 1 / 3:
                    f.write(f"{svc}.svc.local A\n")
                elif roll < 2 / 3:
                    f.write(f"{svc}.svc.local AAAA\n")
                else:
                    f.write(f"_grpc_config.{svc}.svc.local TXT\n")
            elif roll < 0.10:
                f.write(f"nope{q}.svc.local A\n")
            else:
                svc = service_key(rng.randrange(services))
                qtype = "A" if roll < 0.55 else "SRV"
                f.write(f"{svc}.svc.local {qtype}\n")

    first_key, first_members = regs[0]
    meta = {
        "services": services,
        "instances_per_service": instances,
        "instances": services * instances,
        "queries": queries,
        "mix": mix,
        "seed": seed,
        "zone": ZONE,
        "ttl": TTL,
        "sample": {
            "service": f"{first_key}.{ZONE}",
            "grpc": f"_grpc._tcp.{first_key}.{ZONE}",
            "grpc_config": f"_grpc_config.{first_key}.{ZONE}",
            "instance": f"{first_members[0][0]}.{first_key}.{ZONE}",
            "missing": f"nope-sample.{ZONE}",
        },
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="ascii")
    return meta


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-s", "--services", type=int, required=True, help="number of services S")
    p.add_argument("-k", "--instances", type=int, required=True, help="instances per service K")
    p.add_argument("-q", "--queries", type=int, default=DEFAULT_QUERIES, help="lines in queries.txt")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--mix", choices=MIXES, default="standard", help="the query mix (see above)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    a = p.parse_args()
    if a.services < 1 or a.instances < 1 or a.queries < 1:
        p.error("--services, --instances and --queries must be at least 1")
    meta = generate(a.services, a.instances, a.queries, a.seed, a.out, a.mix)
    print(
        f"gen_dataset: {meta['services']} services x {meta['instances_per_service']} instances "
        f"= {meta['instances']} registrations, {meta['queries']} queries -> {a.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
