"""An HTTP/1.1 client that sends each request from a chosen local port, for tests of what
happens when a port one client used is reused by another.

Reads lines "<local-port> <server-port> <path>" on stdin; for each, connects from
127.0.0.1:<local-port> to 127.0.0.1:<server-port>, sends GET <path> with `Connection: close`
(so the server closes first and the client port is free again at once), reads the answer to
the end, and prints "<status> <path>". Prints "ready" first.
"""
import sys

from raw_http import get_from_port

print("ready", flush=True)
for line in sys.stdin:
    local_port, server_port, path = line.split()
    status = get_from_port(int(local_port), int(server_port), path)
    print(status or 0, path, flush=True)
