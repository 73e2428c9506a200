"""An HTTP/1.1 client that sends each request from a chosen local port, for tests of what
happens when a port one client used is reused by another.

Reads lines "<local-port> <server-port> <path>" on stdin; for each, connects from
127.0.0.1:<local-port> to 127.0.0.1:<server-port>, sends GET <path> with `Connection: close`
(so the server closes first and the client port is free again at once), reads the answer to
the end, and prints "<status> <path>". Prints "ready" first.
"""
import sys
import time

from raw_http import PortBusy, get_from_port


def get(local_port, server_port, path):
    """`get_from_port`, waiting up to 2 s for the port's previous connection to leave the
    kernel's tables (EADDRNOTAVAIL while its 4-tuple lingers): nothing was sent meanwhile."""
    for _ in range(100):
        try:
            return get_from_port(local_port, server_port, path)
        except PortBusy:
            time.sleep(0.02)
    return get_from_port(local_port, server_port, path)


print("ready", flush=True)
for line in sys.stdin:
    local_port, server_port, path = line.split()
    status = get(int(local_port), int(server_port), path)
    print(status or 0, path, flush=True)
