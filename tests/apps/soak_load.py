"""Fixed-rate load for the soak test, in one of two roles, each request carrying an id.

  python3 soak_load.py --port 8001 --seconds 180 --rate 15 --role traced --ports 40001,40002

`traced`: GET /work/t-<n>, each on a new connection from one of `--ports` (the next one that
is free), `Connection: close`. `untraced`: the same from the same ports with ids u-<n>, which
reuses the ports the traced client just used, and every other request as k-<n> on one
keep-alive connection. Prints "ready", then "done <ok> failed <failed>" (exit 1 on failures).
"""
import argparse
import http.client
import sys
import time

from raw_http import PortBusy, get_from_port

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--seconds", type=float, required=True)
parser.add_argument("--rate", type=float, required=True)
parser.add_argument("--role", choices=["traced", "untraced"], required=True)
parser.add_argument("--ports", required=True)
args = parser.parse_args()
ports = [int(p) for p in args.ports.split(",")]
print("ready", flush=True)
sys.stdin.readline()  # go


def from_port(path):
    """One request from the next free port of the pool; the status, or None."""
    for _ in range(len(ports)):
        port = ports.pop(0)
        ports.append(port)
        try:
            return get_from_port(port, args.port, path)
        except PortBusy:
            continue
        except OSError:
            return None
    return None


keepalive = http.client.HTTPConnection("127.0.0.1", args.port, timeout=10)
ok = failed = 0
start = time.monotonic()
n = 0
while time.monotonic() - start < args.seconds:
    due = start + n / args.rate
    pause = due - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    if args.role == "traced":
        status = from_port(f"/work/t-{n}")
    elif n % 2 == 0:
        status = from_port(f"/work/u-{n}")
    else:
        try:
            keepalive.request("GET", f"/work/k-{n}")
            response = keepalive.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            keepalive.close()
            status = None
    if status == 200:
        ok += 1
    else:
        failed += 1
        print(f"failed {n}: {status}", file=sys.stderr, flush=True)
    n += 1
print(f"done {ok} failed {failed}", flush=True)
sys.exit(1 if failed else 0)
