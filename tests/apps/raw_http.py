"""One HTTP/1.1 GET from a chosen local port, shared by the test clients that reuse ports
(bound_client.py, soak_load.py)."""
import socket


class PortBusy(Exception):
    """The local port could not be bound, or the connection from it not made (its 4-tuple is
    still in use): nothing was sent."""


def get_from_port(local_port, server_port, path):
    """GET `path` from 127.0.0.1:`local_port` to 127.0.0.1:`server_port` with
    `Connection: close` (the server closes first, so the port is free again at once) and read
    the answer to its end. Returns the status (None for an answer that is not HTTP). Raises
    PortBusy when nothing could be sent from that port."""
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", local_port))
            s.connect(("127.0.0.1", server_port))
        except OSError as e:
            raise PortBusy(str(e)) from e
        s.settimeout(10)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    finally:
        s.close()
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None
