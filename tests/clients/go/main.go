// Resolves names through Go's own DNS resolver (net.Resolver with
// PreferGo), sending every query to one server, and prints what it got in a
// form tests/integration/clients.rs parses. Standard library only.
//
//	usage: resolve SERVER:PORT QUERY...
//	QUERY: srv:SERVICE:PROTO:NAME   LookupSRV(SERVICE, PROTO, NAME); both may be empty
//	       hosts:SERVICE:PROTO:NAME LookupSRV, then LookupHost of every target,
//	                                as a gRPC client dialling the instances does
//	       host:NAME                LookupHost(NAME)
//
// Output, one line each, QUERY and a value separated by a tab:
//
//	QUERY<TAB>0 10 8001 target.     an SRV record (priority weight port target)
//	QUERY<TAB>10.0.0.5              an address
//	QUERY<TAB>target. 10.0.0.5      an SRV target and one of its addresses (hosts:)
//	QUERY<TAB>!ERROR text           the lookup failed
//	QUERY<TAB>#dials udp=N tcp=M    connections the resolver opened for it
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: resolve SERVER:PORT QUERY...")
		os.Exit(2)
	}
	server := os.Args[1]
	var udp, tcp int64
	resolver := &net.Resolver{
		PreferGo: true,
		// Every exchange goes to the server under test, over the transport
		// the resolver chose: "udp" first, "tcp" after a truncated answer.
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			if strings.HasPrefix(network, "tcp") {
				atomic.AddInt64(&tcp, 1)
			} else {
				atomic.AddInt64(&udp, 1)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		},
	}
	for _, query := range os.Args[2:] {
		atomic.StoreInt64(&udp, 0)
		atomic.StoreInt64(&tcp, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		values, err := lookup(ctx, resolver, query)
		cancel()
		for _, v := range values {
			fmt.Printf("%s\t%s\n", query, v)
		}
		if err != nil {
			fmt.Printf("%s\t!ERROR %s\n", query, strings.ReplaceAll(err.Error(), "\n", " "))
		}
		fmt.Printf("%s\t#dials udp=%d tcp=%d\n", query, atomic.LoadInt64(&udp), atomic.LoadInt64(&tcp))
	}
}

func lookup(ctx context.Context, r *net.Resolver, query string) ([]string, error) {
	kind, rest, _ := strings.Cut(query, ":")
	switch kind {
	case "srv", "hosts":
		parts := strings.SplitN(rest, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("bad query %q: want %s:SERVICE:PROTO:NAME", query, kind)
		}
		_, srvs, err := r.LookupSRV(ctx, parts[0], parts[1], parts[2])
		if err != nil {
			return nil, err
		}
		var out []string
		for _, s := range srvs {
			if kind == "srv" {
				out = append(out, fmt.Sprintf("%d %d %d %s", s.Priority, s.Weight, s.Port, s.Target))
				continue
			}
			addrs, err := r.LookupHost(ctx, s.Target)
			if err != nil {
				return out, err
			}
			for _, a := range addrs {
				out = append(out, s.Target+" "+a)
			}
		}
		return out, nil
	case "host":
		return r.LookupHost(ctx, rest)
	default:
		return nil, fmt.Errorf("bad query %q: want srv:... or host:...", query)
	}
}
