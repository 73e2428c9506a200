"""A gRPC server and client with grpcio and no generated code: methods are registered by
name and carry raw bytes. `serve PORT` runs the server; `call PORT` makes the test's calls:
16 concurrent unary calls (Call0..Call15, one name each, so a test can tell streams apart),
one that fails with NOT_FOUND, a server-streaming one, and one past its deadline.
`front PORT GRPC_PORT` is an HTTP/1 service (a thread per request) whose GET /chain/<n>
calls Call<n mod 16> on the gRPC server at GRPC_PORT over one shared channel."""

import sys
import time
from concurrent import futures

import grpc

SERVICE = "demo.Greeter"


def serve(port):
    def call(request, context):
        return request

    def fail(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such greeting")

    def stream(request, context):
        for i in range(3):
            yield b"part %d" % i

    def slow(request, context):
        time.sleep(1.0)
        return request

    handlers = {f"Call{i}": grpc.unary_unary_rpc_method_handler(call) for i in range(16)}
    handlers["Fail"] = grpc.unary_unary_rpc_method_handler(fail)
    handlers["Stream"] = grpc.unary_stream_rpc_method_handler(stream)
    handlers["Slow"] = grpc.unary_unary_rpc_method_handler(slow)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def call(port):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        with futures.ThreadPoolExecutor(max_workers=16) as pool:
            calls = [pool.submit(channel.unary_unary(f"/{SERVICE}/Call{i}"), b"id %d" % i, timeout=10) for i in range(16)]
            for i, c in enumerate(calls):
                assert c.result() == b"id %d" % i
        try:
            channel.unary_unary(f"/{SERVICE}/Fail")(b"x", timeout=10)
            raise SystemExit("Fail did not fail")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()
        parts = list(channel.unary_stream(f"/{SERVICE}/Stream")(b"x", timeout=10))
        assert len(parts) == 3, parts
        try:
            channel.unary_unary(f"/{SERVICE}/Slow")(b"x", timeout=0.3)
            raise SystemExit("Slow did not time out")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.code()
    print("done", flush=True)


def call_split(port):
    """Calls on one channel before and after a line on stdin (the agent attaches between):
    Call0..Call3, then Call0..Call7 (four paths the connection has sent before, four new)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        for i in range(4):
            channel.unary_unary(f"/{SERVICE}/Call{i}")(b"before", timeout=10)
        print("half", flush=True)
        sys.stdin.readline()
        for i in range(8):
            channel.unary_unary(f"/{SERVICE}/Call{i}")(b"after", timeout=10)
    print("done", flush=True)


def front(port, grpc_port):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    grpc.channel_ready_future(channel).result(timeout=10)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            n = int(self.path.rsplit("/", 1)[-1])
            reply = channel.unary_unary(f"/{SERVICE}/Call{n % 16}")(b"id %d" % n, timeout=10)
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1] == "front":
        front(int(sys.argv[2]), int(sys.argv[3]))
    else:
        {"serve": serve, "call": call, "call-split": call_split}[sys.argv[1]](int(sys.argv[2]))
