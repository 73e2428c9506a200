"""A TLS line-echo service and client: libssl used for something that is not HTTP.

  python3 tls_echo.py serve --port P --cert tls.pem     (prints "ready P")
  python3 tls_echo.py send --port P --count N           (sends N lines, reads the echoes)
"""
import argparse
import socket
import ssl
import threading

parser = argparse.ArgumentParser()
parser.add_argument("mode", choices=["serve", "send"])
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--cert")
parser.add_argument("--count", type=int, default=5)
args = parser.parse_args()

if args.mode == "serve":
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert)
    listener = socket.create_server(("127.0.0.1", args.port))
    print(f"ready {args.port}", flush=True)

    def echo(conn):
        with context.wrap_socket(conn, server_side=True) as tls:
            for line in tls.makefile("rb"):
                tls.sendall(line)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()
else:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", args.port)) as raw:
        with context.wrap_socket(raw) as tls:
            reader = tls.makefile("rb")
            for i in range(args.count):
                tls.sendall(f"PING {i} GET / HTTP/1.1 is not at the start of this line\n".encode())
                reader.readline()
    print("sent", flush=True)
