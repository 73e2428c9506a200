"""Closed-loop load with request ids, for the concurrency fidelity tests.

  python3 load.py --url http://127.0.0.1:8001/chain/{id} --requests 200 --concurrency 8

`--concurrency` workers, each with its own keep-alive connection, take ids 0.. in turn and
GET the URL with `{id}` replaced. Prints "ok N failed M" and exits 1 when any request failed.
"""
import argparse
import http.client
import itertools
import sys
import threading
import urllib.parse

parser = argparse.ArgumentParser()
parser.add_argument("--url", required=True)
parser.add_argument("--requests", type=int, required=True)
parser.add_argument("--concurrency", type=int, required=True)
args = parser.parse_args()

ids = itertools.count()
lock = threading.Lock()
results = {"ok": 0, "failed": 0}


def worker():
    conn = None
    while True:
        with lock:
            i = next(ids)
        if i >= args.requests:
            break
        url = urllib.parse.urlsplit(args.url.replace("{id}", str(i)))
        try:
            if conn is None:
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            conn.request("GET", url.path)
            response = conn.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException) as err:
            print(f"request {i}: {err}", file=sys.stderr)
            conn, ok = None, False
        with lock:
            results["ok" if ok else "failed"] += 1


threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"ok {results['ok']} failed {results['failed']}", flush=True)
sys.exit(1 if results["failed"] else 0)
