// HTTP/2 peers in Go for the HTTP/2 tests, built in GOPATH mode against Debian's packaged
// libraries (golang-google-grpc-dev, golang-golang-x-net-dev):
//
//	go_h2 grpc-serve PORT   the demo.Greeter gRPC service of tests/apps/grpc_demo.py
//	go_h2 grpc-call PORT    the same calls as grpc_demo.py's `call`
//	go_h2 h2c-serve PORT    net/http over h2c, upgrade or prior knowledge: /item/<n> answers
//	                        200, anything else 404
//	go_h2 grpc-front PORT GRPC_PORT
//	                        net/http (HTTP/1) whose GET /chain/<n> calls Call<n mod 16> on the
//	                        gRPC server at GRPC_PORT over one shared ClientConn
//
// No generated code: methods are registered by name and carry raw bytes (a pass-through
// codec), so the Python, Node and Go peers speak one service. Prints "ready" once serving
// and "done" once the calls succeeded.
package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const service = "demo.Greeter"

// rawCodec passes message bytes through: the demo carries no protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string   { return "proto" }
func (rawCodec) String() string { return "raw" }

func unary(handle func(ctx context.Context, in []byte) ([]byte, error)) func(interface{}, context.Context, func(interface{}) error, grpc.UnaryServerInterceptor) (interface{}, error) {
	return func(_ interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
		var in []byte
		if err := dec(&in); err != nil {
			return nil, err
		}
		out, err := handle(ctx, in)
		if err != nil {
			return nil, err
		}
		return &out, nil
	}
}

func grpcServe(port string) {
	echo := func(_ context.Context, in []byte) ([]byte, error) { return in, nil }
	var methods []grpc.MethodDesc
	for i := 0; i < 16; i++ {
		methods = append(methods, grpc.MethodDesc{MethodName: fmt.Sprintf("Call%d", i), Handler: unary(echo)})
	}
	methods = append(methods,
		grpc.MethodDesc{MethodName: "Fail", Handler: unary(func(context.Context, []byte) ([]byte, error) {
			return nil, status.Error(codes.NotFound, "no such greeting")
		})},
		grpc.MethodDesc{MethodName: "Slow", Handler: unary(func(ctx context.Context, in []byte) ([]byte, error) {
			select {
			case <-time.After(time.Second):
				return in, nil
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		})},
	)
	stream := grpc.StreamDesc{StreamName: "Stream", ServerStreams: true, Handler: func(_ interface{}, s grpc.ServerStream) error {
		var in []byte
		if err := s.RecvMsg(&in); err != nil {
			return err
		}
		for i := 0; i < 3; i++ {
			part := []byte(fmt.Sprintf("part %d", i))
			if err := s.SendMsg(&part); err != nil {
				return err
			}
		}
		return nil
	}}
	server := grpc.NewServer(grpc.CustomCodec(rawCodec{}))
	server.RegisterService(&grpc.ServiceDesc{ServiceName: service, HandlerType: (*interface{})(nil), Methods: methods, Streams: []grpc.StreamDesc{stream}}, struct{}{})
	listener, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		panic(err)
	}
	fmt.Println("ready")
	panic(server.Serve(listener))
}

func grpcCall(port string) {
	conn, err := grpc.Dial("127.0.0.1:"+port, grpc.WithInsecure(), grpc.WithBlock(), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	call := func(method string, timeout time.Duration, in []byte) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var out []byte
		err := conn.Invoke(ctx, "/"+service+"/"+method, &in, &out)
		return out, err
	}
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			want := fmt.Sprintf("id %d", i)
			if out, err := call(fmt.Sprintf("Call%d", i), 10*time.Second, []byte(want)); err != nil || string(out) != want {
				panic(fmt.Sprintf("Call%d: %q %v", i, out, err))
			}
		}(i)
	}
	wg.Wait()
	if _, err := call("Fail", 10*time.Second, []byte("x")); status.Code(err) != codes.NotFound {
		panic(fmt.Sprintf("Fail: %v", err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/"+service+"/Stream")
	if err != nil {
		panic(err)
	}
	in := []byte("x")
	if err := s.SendMsg(&in); err != nil {
		panic(err)
	}
	s.CloseSend()
	parts := 0
	for {
		var part []byte
		if err := s.RecvMsg(&part); err != nil {
			break
		}
		parts++
	}
	cancel()
	if parts != 3 {
		panic(fmt.Sprintf("Stream: %d parts", parts))
	}
	if _, err := call("Slow", 300*time.Millisecond, []byte("x")); status.Code(err) != codes.DeadlineExceeded {
		panic(fmt.Sprintf("Slow: %v", err))
	}
	fmt.Println("done")
}

// grpcCallSplit calls on one connection in rounds, each started by a line on stdin (the
// agent attaches before the first): Call0..Call3 before, then Call0..Call7 per round (four
// paths the connection sent before the agent attached, four new), "round N" after each.
func grpcCallSplit(port string) {
	conn, err := grpc.Dial("127.0.0.1:"+port, grpc.WithInsecure(), grpc.WithBlock(), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	call := func(i int, text string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		in, out := []byte(text), []byte(nil)
		if err := conn.Invoke(ctx, fmt.Sprintf("/%s/Call%d", service, i), &in, &out); err != nil {
			panic(err)
		}
	}
	for i := 0; i < 4; i++ {
		call(i, "before")
	}
	fmt.Println("half")
	lines := bufio.NewScanner(os.Stdin)
	for round := 1; round <= 2 && lines.Scan(); round++ {
		for i := 0; i < 8; i++ {
			call(i, fmt.Sprintf("round %d", round))
		}
		fmt.Printf("round %d\n", round)
	}
	fmt.Println("done")
}

func grpcFront(port, grpcPort string) {
	conn, err := grpc.Dial("127.0.0.1:"+grpcPort, grpc.WithInsecure(), grpc.WithBlock(), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		panic(err)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/chain/"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		in := []byte(fmt.Sprintf("id %d", n))
		var out []byte
		if err := conn.Invoke(ctx, fmt.Sprintf("/%s/Call%d", service, n%16), &in, &out); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Write(out)
	})
	listener, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		panic(err)
	}
	fmt.Println("ready")
	panic(http.Serve(listener, handler))
}

func h2cServe(port string) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/item/")
		if _, err := strconv.Atoi(id); err != nil || id == r.URL.Path {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "item %s over %s\n", id, r.Proto)
	})
	listener, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		panic(err)
	}
	fmt.Println("ready")
	panic(http.Serve(listener, h2c.NewHandler(handler, &http2.Server{})))
}

func main() {
	if len(os.Args) == 4 && os.Args[1] == "grpc-front" {
		grpcFront(os.Args[2], os.Args[3])
	}
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: go_h2 grpc-serve|grpc-call|grpc-call-split|h2c-serve PORT | grpc-front PORT GRPC_PORT")
		os.Exit(2)
	}
	modes := map[string]func(string){"grpc-serve": grpcServe, "grpc-call": grpcCall, "grpc-call-split": grpcCallSplit, "h2c-serve": h2cServe}
	run, ok := modes[os.Args[1]]
	if !ok {
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
	run(os.Args[2])
}
