"""An HTTP/1.1 client that sends each request from a chosen local port, for tests of what
happens when a port one client used is reused by another.

Reads lines "<local-port> <server-port> <path>" on stdin; for each, connects from
127.0.0.1:<local-port> to 127.0.0.1:<server-port>, sends GET <path> with `Connection: close`
(so the server closes first and the client port is free again at once), reads the answer to
the end, and prints "<status> <path>". Prints "ready" first.
"""
import socket
import sys

print("ready", flush=True)
for line in sys.stdin:
    local_port, server_port, path = line.split()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(local_port)))
    s.connect(("127.0.0.1", int(server_port)))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    answer = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        answer += chunk
    s.close()
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "0"
    print(status, path, flush=True)
