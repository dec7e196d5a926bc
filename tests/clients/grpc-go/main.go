// Command client is a gRPC client with one ClientConn, written the way a Go
// (go-zero) user would write it, for rpcdns's end-to-end tests.
//
//	usage: client --target TARGET [--calls N] [--interval-ms MS]
//	              [--deadline-ms MS] [--service-config-lookup default|on|off]
//
// TARGET is a gRPC target, e.g. dns://127.0.0.1:5353/sms.rpc.svc.local:8001
// (grpc-go's DNS resolver sends its queries to the DNS server named in the
// authority) or dns:///sms.rpc.svc.local:8001 (the system's resolv.conf).
// The ClientConn has no load-balancing policy and no default service config
// of its own: what the resolver returns decides (pick_first when DNS gives no
// service config).
//
// --service-config-lookup: whether the DNS resolver looks up the TXT record
// _grpc_config.<name> (gRFC A2). "default" leaves the library's default
// (grpc-go: on), "off" passes grpc.WithDisableServiceConfig(), "on" passes
// nothing (grpc-go has no option to force it on; it is on unless disabled).
//
// Makes N calls (0: until standard input ends or SIGTERM) one after another,
// sleeping MS between them, each a unary call to /rpcdns.test.Who/Who with an
// empty body (raw bytes through a codec of our own, no protobuf), the given
// deadline and fail-fast semantics (no WaitForReady).
//
// Output, tab-separated, each line written at once (ms since process start):
//
//	START<TAB>ms
//	CALL<TAB>ms<TAB>ok<TAB>instance id
//	CALL<TAB>ms<TAB>err<TAB>STATUS_CODE_NAME: details
//	DONE<TAB>ms
//
// Exits 0 even when calls failed (the test judges); 2 for usage errors.
//
// Built against Debian's golang-google-grpc-dev (grpc-go 1.33.3) in GOPATH
// mode, without network, e.g. from the repository root:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off \
//	  GOCACHE=$PWD/target/clients/grpc-go/cache \
//	  go build -o target/clients/grpc-go/client ./tests/clients/grpc-go
//
// It only uses APIs that still exist in current grpc-go (grpc.Dial,
// grpc.WithInsecure, grpc.ForceCodec, grpc.WithDisableServiceConfig).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const method = "/rpcdns.test.Who/Who"

var t0 = time.Now()

func ms() int64 { return time.Since(t0).Milliseconds() }

var outMu sync.Mutex

// emit writes one tab-separated line straight to the file descriptor
// (os.Stdout is unbuffered in Go, so every line is flushed at once).
func emit(fields ...string) {
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.WriteString(strings.Join(fields, "\t") + "\n")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// rawCodec passes []byte through untouched: no protobuf, no codegen.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	switch b := v.(type) {
	case []byte:
		return b, nil
	case *[]byte:
		return *b, nil
	}
	return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

// Name is sent in the content-type (application/grpc+proto), so servers that
// only know "proto" accept the call; the bytes are what they are.
func (rawCodec) Name() string { return "proto" }

func usage(msg string) {
	fmt.Fprintf(os.Stderr, "client: %s\n", msg)
	flag.Usage()
	os.Exit(2)
}

func main() {
	target := flag.String("target", "", "gRPC target, e.g. dns://127.0.0.1:5353/sms.rpc.svc.local:8001")
	calls := flag.Int("calls", 1, "number of calls (0: until stdin EOF or SIGTERM)")
	intervalMs := flag.Int("interval-ms", 0, "sleep between calls, ms")
	deadlineMs := flag.Int("deadline-ms", 2000, "deadline of each call, ms")
	lookup := flag.String("service-config-lookup", "default", "default|on|off: TXT _grpc_config lookup")
	flag.Parse()
	if flag.NArg() != 0 {
		usage("unexpected arguments: " + strings.Join(flag.Args(), " "))
	}
	if *target == "" {
		usage("--target is required")
	}
	if *calls < 0 {
		usage("--calls must be >= 0")
	}
	if *intervalMs < 0 {
		usage("--interval-ms must be >= 0")
	}
	if *deadlineMs <= 0 {
		usage("--deadline-ms must be > 0")
	}

	opts := []grpc.DialOption{grpc.WithInsecure()}
	switch *lookup {
	case "default", "on":
		// grpc-go looks the TXT record up unless told not to.
	case "off":
		opts = append(opts, grpc.WithDisableServiceConfig())
	default:
		usage("--service-config-lookup must be default, on or off")
	}

	stop := make(chan struct{})
	var stopOnce sync.Once
	doStop := func() { stopOnce.Do(func() { close(stop) }) }
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; doStop() }()
	if *calls == 0 {
		go func() {
			io.Copy(io.Discard, os.Stdin)
			doStop()
		}()
	}

	// Non-blocking dial: the ClientConn connects in the background, like a
	// go-zero client with NonBlock.
	conn, err := grpc.Dial(*target, opts...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "client: dial %s: %v\n", *target, err)
		os.Exit(1)
	}
	defer conn.Close()

	deadline := time.Duration(*deadlineMs) * time.Millisecond
	interval := time.Duration(*intervalMs) * time.Millisecond
	emit("START", fmt.Sprint(ms()))
loop:
	for n := 0; *calls == 0 || n < *calls; n++ {
		select {
		case <-stop:
			break loop
		default:
		}
		if n > 0 && interval > 0 {
			t := time.NewTimer(interval)
			select {
			case <-stop:
				t.Stop()
				break loop
			case <-t.C:
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		req := []byte{}
		var reply []byte
		err := conn.Invoke(ctx, method, req, &reply, grpc.ForceCodec(rawCodec{}))
		cancel()
		if err == nil {
			emit("CALL", fmt.Sprint(ms()), "ok", strings.ToValidUTF8(string(reply), "\uFFFD"))
		} else {
			st := status.Convert(err)
			emit("CALL", fmt.Sprint(ms()), "err", codeName(st.Code())+": "+oneLine(st.Message()))
		}
	}
	emit("DONE", fmt.Sprint(ms()))
}

// codeName gives the canonical upper-case name (UNAVAILABLE,
// DEADLINE_EXCEEDED, ...) as the Python and Node clients print it.
func codeName(c codes.Code) string {
	names := map[codes.Code]string{
		codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
		codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
		codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
		codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
		codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
		codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
		codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS",
		codes.Unauthenticated: "UNAUTHENTICATED",
	}
	if n, ok := names[c]; ok {
		return n
	}
	return fmt.Sprintf("CODE_%d", uint32(c))
}
