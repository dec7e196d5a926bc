"""Resolves names with dnspython against one server, or with the system's
getaddrinfo (glibc, through /etc/nsswitch.conf and /etc/resolv.conf), and
prints what it got in a form tests/integration/clients.rs parses.

    usage: python3 resolve.py HOST:PORT|- QUERY...
    QUERY: SRV:NAME | A:NAME | AAAA:NAME    dnspython, at HOST:PORT
           gai:NAME                         socket.getaddrinfo(NAME, None)

Output, one line each, QUERY and a value separated by a tab:
    QUERY<TAB>0 10 8001 target.     an SRV record (priority weight port target)
    QUERY<TAB>10.0.0.5              an address
    QUERY<TAB>!ERROR Class: text    the lookup failed (NXDOMAIN, NoAnswer, gaierror)
    QUERY<TAB>#done                 the query is finished
"""

import socket
import sys


def dnspython_resolver(server):
    import dns.resolver

    host, _, port = server.rpartition(":")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host.strip("[]")]
    resolver.port = int(port)
    # 2 s per try, 10 s in all: a lost datagram does not fail the test.
    resolver.timeout = 2.0
    resolver.lifetime = 10.0
    return resolver


def resolve(resolver, rdtype, name):
    import dns.resolver

    try:
        answer = resolver.resolve(name, rdtype, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as e:
        return [f"!ERROR {type(e).__name__}: {e}"]
    except Exception as e:  # timeouts, refused connections: report, go on
        return [f"!ERROR {type(e).__name__}: {e}"]
    return [r.to_text() for r in answer]


def main():
    if len(sys.argv) < 3:
        print("usage: python3 resolve.py HOST:PORT|- QUERY...", file=sys.stderr)
        sys.exit(2)
    server, queries = sys.argv[1], sys.argv[2:]
    resolver = None
    out = []
    for query in queries:
        kind, _, name = query.partition(":")
        if kind == "gai":
            try:
                infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
                values = sorted({info[4][0] for info in infos})
            except socket.gaierror as e:
                values = [f"!ERROR gaierror: {e}"]
            out += [f"{query}\t{v}" for v in values] + [f"{query}\t#done"]
        else:
            if resolver is None:
                resolver = dnspython_resolver(server)
            values = resolve(resolver, kind, name)
            out += [f"{query}\t{v}" for v in values] + [f"{query}\t#done"]
    print("\n".join(out))


if __name__ == "__main__":
    main()
