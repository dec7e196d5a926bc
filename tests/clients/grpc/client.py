"""A gRPC client with one channel, written the way a user would write it.

    usage: python client.py --target TARGET [--calls N] [--interval-ms MS]
                            [--deadline-ms MS]
                            [--service-config-lookup default|on|off]
                            [--dns-min-time-between-resolutions-ms MS]

TARGET is a gRPC target, e.g. dns://127.0.0.1:5353/sms.rpc.svc.local:8001
(the DNS server to ask in the authority) or ipv4:127.0.0.11:8001. The channel
has no load-balancing policy and no default service config of its own: what
the resolver returns decides (pick_first when DNS gives no service config).

--service-config-lookup: whether the DNS resolver looks up the TXT record
_grpc_config.<name> (gRFC A2). "default" leaves the library's default (for
grpcio, i.e. gRPC C-core: off), "on"/"off" set the channel argument
grpc.service_config_disable_resolution to 0/1.

--dns-min-time-between-resolutions-ms sets the channel argument
grpc.dns_min_time_between_resolutions_ms (C-core default 30000): re-resolution,
which C-core does only when a connection drops (e.g. a GOAWAY after the
server's max connection age) or fails, never on a timer or by DNS TTL, waits
until that long after the previous resolution. Left unset, the default holds.

Makes N calls (0: until standard input ends or SIGTERM) one after another,
sleeping MS between them, each a unary call to /rpcdns.test.Who/Who with an
empty body, the given deadline and fail-fast semantics (no wait_for_ready).

Output, tab-separated, each line flushed at once (ms since process start):
    START<TAB>ms
    CALL<TAB>ms<TAB>ok<TAB>instance id
    CALL<TAB>ms<TAB>err<TAB>STATUS_CODE_NAME: details
    DONE<TAB>ms
Exits 0 even when calls failed (the test judges); 2 for usage errors.
"""

import argparse
import os
import signal
import sys
import threading
import time

T0 = time.monotonic()

import grpc  # noqa: E402  (T0 counts the import too)

METHOD = "/rpcdns.test.Who/Who"
LOOKUP_ARG = "grpc.service_config_disable_resolution"
MIN_TIME_ARG = "grpc.dns_min_time_between_resolutions_ms"


def ms():
    return int((time.monotonic() - T0) * 1000)


def emit(*fields):
    sys.stdout.write("\t".join(str(f) for f in fields) + "\n")
    sys.stdout.flush()


def one_line(text):
    return " ".join(str(text).split())


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True)
    p.add_argument("--calls", type=int, default=1, help="0: until stopped")
    p.add_argument("--interval-ms", type=int, default=0)
    p.add_argument("--deadline-ms", type=int, default=2000)
    p.add_argument(
        "--service-config-lookup", choices=("default", "on", "off"), default="default"
    )
    p.add_argument("--dns-min-time-between-resolutions-ms", type=int, default=None)
    args = p.parse_args(argv)
    if (
        args.dns_min_time_between_resolutions_ms is not None
        and args.dns_min_time_between_resolutions_ms < 0
    ):
        p.error("--dns-min-time-between-resolutions-ms must be >= 0")
    if args.calls < 0:
        p.error("--calls must be >= 0")
    if args.interval_ms < 0:
        p.error("--interval-ms must be >= 0")
    if args.deadline_ms <= 0:
        p.error("--deadline-ms must be > 0")
    return args


def main(argv=None):
    args = parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    if args.calls == 0:

        def watch_stdin():
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except (OSError, ValueError):
                pass
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()

    options = []
    if args.service_config_lookup == "on":
        options.append((LOOKUP_ARG, 0))
    elif args.service_config_lookup == "off":
        options.append((LOOKUP_ARG, 1))
    if args.dns_min_time_between_resolutions_ms is not None:
        options.append(
            (MIN_TIME_ARG, args.dns_min_time_between_resolutions_ms)
        )

    channel = grpc.insecure_channel(args.target, options=options)
    who = channel.unary_unary(
        METHOD, request_serializer=None, response_deserializer=None
    )
    deadline_s = args.deadline_ms / 1000.0

    emit("START", ms())
    n = 0
    while not stop.is_set() and (args.calls == 0 or n < args.calls):
        if n > 0 and args.interval_ms > 0:
            if stop.wait(args.interval_ms / 1000.0):
                break
        n += 1
        try:
            reply = who(b"", timeout=deadline_s)
            emit("CALL", ms(), "ok", reply.decode("utf-8", "replace"))
        except grpc.RpcError as e:
            code = e.code()
            name = code.name if code is not None else "UNKNOWN"
            emit("CALL", ms(), "err", f"{name}: {one_line(e.details())}")
    emit("DONE", ms())
    channel.close()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # os._exit: the daemon thread blocked reading stdin would otherwise make
    # interpreter shutdown abort ("could not acquire lock for <stdin>").
    os._exit(code)
