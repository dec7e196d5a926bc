"""A real gRPC server standing for one instance of a service.

    usage: python server.py --listen HOST:PORT --id ID
                            [--max-connection-age-ms N]
                            [--max-connection-age-grace-ms N]
                            [--exit-on-stdin-eof]

Serves:
  /rpcdns.test.Who/Who     unary; the request is ignored, the response is ID
                           as UTF-8 bytes (raw bytes, no protobuf, no codegen)
  grpc.health.v1.Health    SERVING for "" and for "rpcdns.test.Who"

--max-connection-age-ms sets grpc.max_connection_age_ms: the server sends
GOAWAY to each connection after that long, so clients reconnect and re-resolve
(the Go equivalent go-zero users set is keepalive.ServerParameters
{MaxConnectionAge: ...}). --max-connection-age-grace-ms sets how long calls
in flight get after the GOAWAY.

Prints "LISTENING<TAB>HOST:PORT" once bound. Stops on SIGTERM or SIGINT (1 s
grace, exit 0), and on end of standard input when --exit-on-stdin-eof is
given, so a test harness that dies never leaves a server behind. A failure to
bind prints a message on stderr and exits 1.
"""

import argparse
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "rpcdns.test.Who"
METHOD = "Who"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--id", required=True, help="instance id returned by Who")
    p.add_argument("--max-connection-age-ms", type=int, default=None)
    p.add_argument("--max-connection-age-grace-ms", type=int, default=None)
    p.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when standard input reaches end of file",
    )
    args = p.parse_args(argv)
    host, sep, port = args.listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        p.error(f"--listen wants HOST:PORT, got {args.listen!r}")
    return args


def main(argv=None):
    args = parse_args(argv)
    reply = args.id.encode("utf-8")

    def who(request, context):  # request: bytes, ignored
        return reply

    options = []
    if args.max_connection_age_ms is not None:
        options.append(("grpc.max_connection_age_ms", args.max_connection_age_ms))
    if args.max_connection_age_grace_ms is not None:
        options.append(
            ("grpc.max_connection_age_grace_ms", args.max_connection_age_grace_ms)
        )
    # One listener per address: with SO_REUSEPORT (grpcio's default) a second
    # server on the same address would silently share the port.
    options.append(("grpc.so_reuseport", 0))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=options)
    # No serializers: the handler gets and returns raw bytes.
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(who)}
            ),
        )
    )
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    try:
        port = server.add_insecure_port(args.listen)
    except RuntimeError as e:  # grpcio raises on a failed bind
        print(f"server.py: cannot listen on {args.listen}: {e}", file=sys.stderr)
        return 1
    if port == 0:  # older grpcio returned 0 instead of raising
        print(f"server.py: cannot listen on {args.listen}", file=sys.stderr)
        return 1
    server.start()
    host = args.listen.rpartition(":")[0]
    print(f"LISTENING\t{host}:{port}", flush=True)

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if args.exit_on_stdin_eof:

        def watch_stdin():
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except (OSError, ValueError):
                pass
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()

    # Wake up now and then so the signal handler runs promptly.
    while not stop.wait(0.2):
        pass
    health_servicer.enter_graceful_shutdown()
    server.stop(grace=1.0).wait()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # os._exit: the daemon thread blocked reading stdin would otherwise make
    # interpreter shutdown abort ("could not acquire lock for <stdin>").
    os._exit(code)
