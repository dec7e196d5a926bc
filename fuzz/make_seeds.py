#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/seeds/<target>/):
dig-like queries for every type, EDNS variants and malformed packets for
request_path; go-zero-like keys and values for registration. Run once;
`cargo fuzz cmin` then keeps what adds coverage in fuzz/corpus/."""

import hashlib
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15,
         "TXT": 16, "AAAA": 28, "SRV": 33, "NAPTR": 35, "DS": 43,
         "DNSKEY": 48, "HTTPS": 65, "CAA": 257, "IXFR": 251, "AXFR": 252,
         "ANY": 255, "OPT": 41, "TYPE0": 0, "TYPE65535": 65535}


def wire_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def opt(payload=1232, version=0, do=False, options=b"", rcode_high=0):
    ttl = bytes([rcode_high, version, 0x80 if do else 0, 0])
    return (b"\x00" + struct.pack(">HH", 41, payload) + ttl
            + struct.pack(">H", len(options)) + options)


def query(name, qtype="A", qid=0x1234, flags=0x0100, edns=None, qclass=1,
          questions=None, extra=b"", counts=None):
    qs = questions if questions is not None else [
        wire_name(name) + struct.pack(">HH", TYPES.get(qtype, qtype) if isinstance(qtype, str) else qtype, qclass)]
    ar = 1 if edns is not None else 0
    qd, an, ns = len(qs), 0, 0
    if counts:
        qd, an, ns, ar = counts
    header = struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)
    return header + b"".join(qs) + (edns or b"") + extra


def write(target, data):
    folder = os.path.join(HERE, "seeds", target)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, hashlib.sha1(data).hexdigest())
    with open(path, "wb") as f:
        f.write(data)


def request_path():
    long_service = ".".join(["x" * 63, "y" * 63, "z" * 63, "w" * 30, "rpc"])
    names = ["svc.local", "SVC.Local", "sms.rpc.svc.local", "SmS.RpC.sVc.LoCaL",
             "_grpc._tcp.sms.rpc.svc.local", "_tcp.sms.rpc.svc.local",
             "7587869364815473158.sms.rpc.svc.local", "v6.rpc.svc.local",
             "1.v6.rpc.svc.local", "order.rpc.svc.local", "1.order.rpc.svc.local",
             "_grpc._tcp.order.rpc.svc.local", "rpc.svc.local", "user.rpc.svc.local",
             "mall.user.rpc.svc.local", "a.mall.user.rpc.svc.local", "b.rpc.svc.local",
             "a.b.rpc.svc.local", "mid.rpc.svc.local", "big.rpc.svc.local",
             "_grpc._tcp.big.rpc.svc.local", "v6-3.big.rpc.svc.local",
             "nope.svc.local", "ns.svc.local", "grpc_svc.rpc.svc.local",
             long_service + ".svc.local", "long-id-16-chars." + long_service + ".svc.local",
             "example.com", "xsvc.local", "local", ".",
             "_grpc_config.sms.rpc.svc.local", "_GRPC_config.port-8001.SMS.rpc.svc.local",
             "_grpc_config.big.rpc.svc.local", "_grpc_config.v6.rpc.svc.local",
             "_grpc_config.port-8002.ports.rpc.svc.local", "_grpc_config.port-9.sms.rpc.svc.local",
             "port-8001.sms.rpc.svc.local", "port-8001.ports.rpc.svc.local",
             "Port-8002.ports.rpc.svc.local", "port-8003.ports.rpc.svc.local",
             "port-08001.ports.rpc.svc.local", "ports.rpc.svc.local", "_grpc_config.svc.local",
             "5.0.0.10.in-addr.arpa", "6.0.0.10.in-addr.arpa", "0.0.10.in-addr.arpa",
             "10.in-addr.arpa", "01.0.0.10.in-addr.arpa", "1.1.168.192.in-addr.arpa",
             "1." + "0." * 29 + "d.f.ip6.arpa", "d.f.ip6.arpa",
             "sky.svc.local", "prod.sky.svc.local", "a.prod.sky.svc.local", "dev.sky.svc.local",
             "a.dev.sky.svc.local", "c.dev.sky.svc.local", "a.loop.sky.svc.local",
             "txt.sky.svc.local", "grp.sky.svc.local", "strip.sky.svc.local",
             "many.sky.svc.local", "long.sky.svc.local", "noport.sky.svc.local",
             "big.rpc.svc.local", "rpc.svc.local"]
    for name in names:
        for qtype in ["A", "AAAA", "SRV", "ANY", "TXT", "PTR", "CNAME"]:
            write("request_path", query(name, qtype))
            write("request_path", query(name, qtype, edns=opt(1232)))
    for name in ["svc.local", "sms.rpc.svc.local", "big.rpc.svc.local", "1.order.rpc.svc.local"]:
        for qtype in TYPES:
            write("request_path", query(name, qtype, edns=opt(4096, do=True)))
    big = "big.rpc.svc.local"
    for payload in [0, 1, 511, 512, 513, 1232, 1400, 4096, 65535]:
        for qtype in ["A", "SRV", "AAAA"]:
            write("request_path", query(big, qtype, edns=opt(payload)))
            write("request_path", query("mid.rpc.svc.local", qtype, edns=opt(payload)))
    sms = "sms.rpc.svc.local"
    # EDNS variants.
    cookie = struct.pack(">HH", 10, 8) + b"\x01\x02\x03\x04\x05\x06\x07\x08"
    ecs = struct.pack(">HHHBB", 8, 7, 1, 24, 0) + b"\x0a\x00\x00"
    for edns in [opt(version=1), opt(version=255), opt(options=cookie),
                 opt(options=cookie + ecs), opt(options=b"\x00\x0a\x00"),
                 opt(options=struct.pack(">HH", 12, 20) + b"\x00" * 20),
                 opt(rcode_high=1), opt(do=True, options=ecs),
                 opt()[:-2] + b"\x00\x05", opt()[:8]]:
        write("request_path", query(sms, "A", edns=edns))
        write("request_path", query("example.com", "A", edns=edns))
    # DNS cookies (RFC 7873): every length around the valid ones (8,
    # 16..=40), a server cookie of ours in shape (version 1), two cookie
    # options (only the first counts), a cookie after another option.
    for length in [0, 7, 8, 9, 15, 16, 24, 40, 41]:
        option = struct.pack(">HH", 10, length) + bytes(range(1, length + 1))
        write("request_path", query(sms, "A", edns=opt(options=option)))
        write("request_path", query("nope.svc.local", "A", edns=opt(options=option)))
    ours = struct.pack(">HH", 10, 24) + b"\x01" * 8 + b"\x01\x00\x00\x00" + b"\x6b\x15\xde\x42" + b"\x00" * 8
    short = struct.pack(">HH", 10, 9) + b"\x02" * 9
    for options in [ours, cookie + short, short + cookie, ecs + cookie, cookie + cookie]:
        write("request_path", query(sms, "A", edns=opt(options=options)))
        write("request_path", query("example.com", "A", edns=opt(options=options)))
    write("request_path", query("big.rpc.svc.local", "SRV", edns=opt(512, options=ours)))
    # Two OPTs, OPT not at the root, OPT with TTL flags.
    write("request_path", query(sms, "A", edns=opt() + opt(), counts=(1, 0, 0, 2)))
    write("request_path", query(sms, "A", edns=b"\x03sms\x00" + opt()[1:]))
    # Header flags and opcodes.
    for flags in [0x0000, 0x0100, 0x0110, 0x0120, 0x0130, 0x0140, 0x0180,
                  0x0300, 0x8100, 0x8000, 0x0800, 0x1000, 0x2000, 0x2800,
                  0x3000, 0x7800, 0x0400, 0x010f]:
        write("request_path", query(sms, "A", flags=flags))
        write("request_path", query(sms, "SOA", flags=flags, edns=opt()))
    # Classes.
    for qclass in [3, 4, 254, 255, 0]:
        write("request_path", query(sms, "A", qclass=qclass))
        write("request_path", query("svc.local", "SOA", qclass=qclass, edns=opt()))
    # Several questions, none, compression.
    q = wire_name(sms) + struct.pack(">HH", 1, 1)
    write("request_path", query(sms, questions=[q, q]))
    write("request_path", query(sms, questions=[q, q], edns=opt()))
    write("request_path", query(sms, questions=[]))
    write("request_path", query(sms, questions=[q, b"\xc0\x0c\x00\x1c\x00\x01"]))
    write("request_path", query(sms, questions=[b"\x03sms\xc0\x0c\x00\x01\x00\x01"]))
    write("request_path", query(sms, questions=[b"\xc0\x0c\x00\x01\x00\x01"]))
    write("request_path", query(sms, questions=[b"\xc0\x02\x00\x01\x00\x01"]))
    write("request_path", query(sms, questions=[b"\x01a\xc0\x04\x00\x01\x00\x01"]))
    # Malformed.
    good = query(sms, "A", edns=opt())
    for cut in [0, 1, 2, 11, 12, 13, 20, len(good) - 11, len(good) - 1]:
        write("request_path", good[:cut])
    write("request_path", good + b"\x00")
    write("request_path", query(sms, "A") + b"garbage")
    write("request_path", query(sms, questions=[b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01"]))
    write("request_path", query(sms, questions=[b"\x3f" * 4 + b"a" * 300 + b"\x00\x00\x01\x00\x01"]))
    write("request_path", query(sms, questions=[(b"\x01a" * 127) + b"\x00\x00\x01\x00\x01"]))
    write("request_path", query(sms, questions=[b"\x80abc\x00\x00\x01\x00\x01"]))
    write("request_path", query(sms, "A", counts=(1, 1, 0, 0)))
    write("request_path", query(sms, "A", counts=(1, 0, 1, 0)))
    write("request_path", query(sms, "A", counts=(1, 0, 0, 5)))
    write("request_path", query(sms, "A", counts=(0xffff, 0, 0, 0)))
    a_rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + b"\x0a\x00\x00\x01"
    write("request_path", query(sms, "A", counts=(1, 1, 0, 0), extra=a_rr))
    write("request_path", query(sms, "A", edns=a_rr + opt(), counts=(1, 0, 0, 2)))


def registration():
    pairs = [
        ("sms.rpc/7587869364815473158", "10.0.0.5:8001"),
        ("SMS.Rpc/7587869364815473158", "10.0.0.5:8001"),
        ("mall.user.rpc/7587869364815473160", "[fd00::5]:8001"),
        ("order.rpc/order-0", "sms-0.sms:9000"),
        ("order.rpc/Order_1", "order-1.order.default.svc.cluster.local.:9000"),
        ("order.rpc/2", "[::ffff:10.1.2.3]:9000"),
        ("sms.rpc/1", "0.0.0.0:8001"), ("sms.rpc/1", "[::]:8001"),
        ("sms.rpc/1", "[::ffff:0.0.0.0]:1"), ("sms.rpc/1", "10.0.0.5"),
        ("sms.rpc/1", "10.0.0.5:"), ("sms.rpc/1", "10.0.0.5:0"),
        ("sms.rpc/1", "10.0.0.5:65536"), ("sms.rpc/1", "10.0.0.5:+80"),
        ("sms.rpc/1", ":8001"), ("sms.rpc/1", "[]:8001"), ("sms.rpc/1", "[fd00::5]"),
        ("sms.rpc/1", "[fd00::5%eth0]:1"), ("sms.rpc/1", "fd00::5:8001"),
        ("sms.rpc/1", "010.0.0.1:1"), ("sms.rpc/1", "1.2.3:1"), ("sms.rpc/1", " 10.0.0.5:1"),
        ("sms.rpc/1", "host_name.x:1"), ("sms.rpc/1", "a..b:1"), ("sms.rpc/1", "-a.b:1"),
        ("sms.rpc/1", "a" * 64 + ".b:1"), ("sms.rpc/1", ("a" * 63 + ".") * 4 + "b:1"),
        ("sms.rpc/1", "x" * 600), ("sms.rpc/1", "é.example:1"),
        ("sms.rpc", "10.0.0.5:1"), ("sms.rpc/", "10.0.0.5:1"), ("sms.rpc//", "10.0.0.5:1"),
        ("sms.rpc/a/b", "10.0.0.5:1"), ("s ms.rpc/1", "10.0.0.5:1"), ("..rpc/1", "10.0.0.5:1"),
        ("other/key", "value"), ("/1", "10.0.0.5:1"), ("", ""),
        ("x" * 64 + ".rpc/1", "10.0.0.5:1"),
        (".".join(["x" * 63, "y" * 63, "z" * 63, "w" * 30, "rpc"]) + "/long-id-16-chars", "10.0.0.1:1"),
        (".".join(["x" * 63, "y" * 63, "z" * 63, "w" * 31, "rpc"]) + "/1", "10.0.0.1:1"),
        ("a.b.rpc/" + "i" * 63, "10.0.0.1:1"), ("a.b.rpc/" + "i" * 64, "10.0.0.1:1"),
        ("user-svc/1", "10.0.0.1:1"), ("mall.x.rpc/ÉTÉ", "10.0.0.1:1"),
    ]
    for config in range(4):
        for key, value in pairs:
            write("registration", bytes([config]) + key.encode() + b"\x00" + value.encode())
    # kratos (configs 4 and 6) and go-micro (5): values as they write them.
    kratos = [
        ("/microservices/helloworld/5b7e1c2a", '{"id":"5b7e1c2a","name":"helloworld","version":"v1.0.0","metadata":null,"endpoints":["http://10.0.0.5:8000","grpc://10.0.0.5:9000"]}'),
        ("/microservices/user.service/user-1", '{"id":"user-1","name":"user.service","version":"","metadata":{"weight":"20","zone":"sh-a"},"endpoints":["grpcs://10.0.0.6:9000"]}'),
        ("/microservices/helloworld/v6", '{"id":"v6","name":"helloworld","version":"v2","metadata":{},"endpoints":["grpc://[2001:db8::5]:9000","https://api.internal.example:8443"]}'),
        ("/microservices/x/empty", '{"id":"empty","name":"x","version":"","metadata":null,"endpoints":[]}'),
        ("/microservices/x/legacy", '{"id":"legacy","name":"x","version":"","metadata":null,"endpoints":["grpc://10.0.0.5:9000?isSecure=true"]}'),
        ("/microservices/x/bad", '{"id":"bad","name":"x","endpoints":["grpc:","http://u@h:1","grpc://[fe80::1%25e]:1","http://10.0.0.1:1/p"],"metadata":{"weight":"-1"}}'),
        ("/microservices/x/i", "null"), ("/microservices/x", "{}"),
    ]
    micro = [
        ("/micro/registry/helloworld/helloworld-0f1e", '{"name":"helloworld","version":"latest","metadata":null,"endpoints":[],"nodes":[{"metadata":{"protocol":"mucp"},"id":"helloworld-0f1e","address":"10.0.0.5:43567"}]}'),
        ("/micro/registry/greeter/greeter-9f8e", '{"name":"greeter","version":"1.0.0","metadata":null,"endpoints":[],"nodes":[{"id":"greeter-9f8e","address":"[2001:db8::5]:9090","metadata":null}]}'),
        ("/micro/registry/micro.http.broker/t-5c1d", '{"name":"micro.http.broker","version":"ff.http.broadcast","nodes":[{"id":"t-5c1d","address":"10.0.0.5:37211"}]}'),
        ("/micro/registry/go-web/3f2a", '{"name":"go-web","nodes":[{"id":"3f2a","address":"[[2001:db8::5]]:8080"}]}'),
        ("/micro/registry/shop-pay/a-b", '{"name":"shop/pay","nodes":[{"id":"a/b","address":"pay-0.pay:9090"}]}'),
    ]
    for config in (4, 6):
        for key, value in kratos:
            write("registration", bytes([config]) + key.encode() + b"\x00" + value.encode())
    for key, value in micro:
        write("registration", bytes([5]) + key.encode() + b"\x00" + value.encode())
    # The overlay under /o/ (config 7).
    overlays = [
        ("/o/sms.rpc", '{"weight": 20, "priority": 1}'),
        ("/o/SMS.rpc/7587869364815473158", '{"weight": 5}'),
        ("/o/pay.rpc", '{"service_config": {"loadBalancingConfig": [{"pick_first": {}}]}}'),
        ("/o/pay.rpc", '{"service_config": "off"}'),
        ("/o/pay.rpc/1", '{"service_config": "off"}'),
        ("/o/sms.rpc", '{"wieght": 1}'), ("/o/", "{}"), ("/o/a/", "{}"),
        ("/o/sms.rpc", '{"weight": 65536}'), ("sms.rpc/1", "10.0.0.1:1"),
    ]
    for key, value in overlays:
        write("registration", bytes([7]) + key.encode() + b"\x00" + value.encode())
    # SkyDNS under /skydns/ in svc.local (config 8): CoreDNS's test values.
    skydns = [
        ("/skydns/local/svc/region1/prod/server1/a", '{"host":"10.0.0.1","port":8080}'),
        ("/skydns/local/svc/region1/prod/server6/b", '{"host":"::1","port":8080}'),
        ("/skydns/local/svc/priority", '{"host":"priority.server1","port":8080,"priority":333}'),
        ("/skydns/local/svc/txt/a", '{"text":"sometext"}'),
        ("/skydns/local/svc/targetstrip/a", '{"host":"10.0.0.1","port":8080,"targetstrip":1}'),
        ("/skydns/local/svc/cname/a", '{"host":"b.cname.svc.local"}'),
        ("/skydns/local/svc/dom/a", '{"host":"127.0.0.1","group":"g1"}'),
        ("/skydns/local/svc/mail/a", '{"host":"mx.svc.local","priority":50,"mail":true,"ttl":60}'),
        ("/skydns/local/svc/x", '{"host":"::ffff:10.0.0.9","port":-1,"weight":70000}'),
        ("/skydns/local/svc/x", '{"port":"80"}'), ("/skydns/local/svc", "{}"),
        ("/skydns/local/svc/A/b", "[]"), ("/skydns/nl/miek/x", "{}"),
    ]
    for key, value in skydns:
        write("registration", bytes([8]) + key.encode() + b"\x00" + value.encode())
    write("registration", b"\x00sms.rpc/\xff\xfe\x0010.0.0.5:1")
    write("registration", b"\x00sms.rpc/1\x00\xff10.0.0.5:1")
    write("registration", b"\x01\xffsvc/1\x0010.0.0.5:1")


if __name__ == "__main__":
    request_path()
    registration()
    for target in ["request_path", "registration"]:
        print(target, len(os.listdir(os.path.join(HERE, "seeds", target))), file=sys.stderr)
