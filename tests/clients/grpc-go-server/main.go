// Command server is a real gRPC server standing for one instance of a
// go-zero service: grpc-go, as go-zero's zrpc servers are, with the
// MaxConnectionAge the README asks go-zero services to set.
//
//	usage: server --listen HOST:PORT --id ID [--max-connection-age-ms N]
//	              [--max-connection-age-grace-ms N] [--exit-on-stdin-eof]
//
// Serves /rpcdns.test.Who/Who (unary; the request is ignored, the response
// is ID as raw bytes, no protobuf codegen) and grpc.health.v1.Health
// (SERVING for "" and "rpcdns.test.Who"). Prints "LISTENING<TAB>HOST:PORT"
// once bound; a failure to bind exits 1. Stops on SIGTERM or SIGINT
// (GracefulStop, at most 1 s, then Stop; exit 0), and at the end of
// standard input with --exit-on-stdin-eof, so a test that dies never
// leaves it behind. The same command line as tests/clients/grpc/server.py.
//
// Built like tests/clients/grpc-go, against Debian's golang-google-grpc-dev
// in GOPATH mode.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/golang/protobuf/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

const service = "rpcdns.test.Who"

// codec is the "proto" codec, except that a *[]byte passes through as it
// is: the Who method needs no generated code, the health service keeps
// its protobuf messages.
type codec struct{}

func (codec) Marshal(v interface{}) ([]byte, error) {
	if b, ok := v.(*[]byte); ok {
		return *b, nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("codec: cannot marshal %T", v)
	}
	return proto.Marshal(m)
}

func (codec) Unmarshal(data []byte, v interface{}) error {
	if b, ok := v.(*[]byte); ok {
		*b = append((*b)[:0], data...)
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("codec: cannot unmarshal into %T", v)
	}
	return proto.Unmarshal(data, m)
}

func (codec) Name() string { return "proto" }

func main() {
	listen := flag.String("listen", "", "HOST:PORT to listen on")
	id := flag.String("id", "", "instance id returned by Who")
	ageMs := flag.Int("max-connection-age-ms", 0, "MaxConnectionAge in ms (0: none)")
	graceMs := flag.Int("max-connection-age-grace-ms", 0, "MaxConnectionAgeGrace in ms (0: none)")
	stdinEOF := flag.Bool("exit-on-stdin-eof", false, "stop when standard input ends")
	flag.Parse()
	if *listen == "" || *id == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "server: --listen and --id are required")
		flag.Usage()
		os.Exit(2)
	}
	encoding.RegisterCodec(codec{})

	var opts []grpc.ServerOption
	if *ageMs > 0 {
		maxAge := time.Duration(*ageMs) * time.Millisecond
		grace := time.Duration(*graceMs) * time.Millisecond
		// What a go-zero service passes to its zrpc server with
		// s.AddOptions(...): every connection ends after maxAge, so its
		// clients reconnect and resolve the name again.
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge:      maxAge,
			MaxConnectionAgeGrace: grace,
		}))
	}
	s := grpc.NewServer(opts...)
	reply := []byte(*id)
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: service,
		HandlerType: (*interface{})(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Who",
			Handler: func(_ interface{}, _ context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
				var request []byte
				if err := dec(&request); err != nil {
					return nil, err
				}
				return &reply, nil
			},
		}},
	}, struct{}{})
	healthServer := health.NewServer()
	healthServer.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthServer.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, healthServer)

	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "server: cannot listen on %s: %v\n", *listen, err)
		os.Exit(1)
	}
	fmt.Printf("LISTENING\t%s\n", l.Addr())

	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()

	stop := make(chan struct{}, 2)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-signals; stop <- struct{}{} }()
	if *stdinEOF {
		go func() { io.Copy(io.Discard, os.Stdin); stop <- struct{}{} }()
	}
	select {
	case err := <-served:
		fmt.Fprintf(os.Stderr, "server: %v\n", err)
		os.Exit(1)
	case <-stop:
	}
	healthServer.Shutdown()
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		s.Stop()
	}
}
