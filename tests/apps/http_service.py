"""A small threaded HTTP service used by zerotrace's integration tests and demo.

  python3 http_service.py --port 8001 [--downstream http://127.0.0.1:8002]

GET /slow/<seconds>: answers 200 after that long. GET /work/<id>: answers 200; with --downstream it first calls GET <downstream>/item/<id>
with the `requests` library (same thread). GET /item/<id>: answers 200. GET /fail: 500.
GET /merchant/<id>/status (with --pg-port and --redis-port): calls the downstream, runs a
PostgreSQL query (psycopg2, database `shop`, table `items`) and a Redis GET, then answers 200.
POST /echo: returns the body. Prints "ready <port>" once listening.
"""
import argparse
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import ssl

import requests
import urllib3

urllib3.disable_warnings()

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--downstream")
parser.add_argument("--own-traceparent", help="send this traceparent downstream, as an instrumented app would")
parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM; the key in the same file)")
parser.add_argument("--pg-port", type=int)
parser.add_argument("--redis-port", type=int)
args = parser.parse_args()
session = requests.Session()
local = threading.local()


def databases():
    """One PostgreSQL and one Redis connection per serving thread, opened on first use."""
    if not hasattr(local, "pg"):
        import psycopg2
        import redis

        local.pg = psycopg2.connect(host="127.0.0.1", port=args.pg_port, user="postgres", dbname="shop")
        local.pg.autocommit = True
        local.redis = redis.Redis(host="127.0.0.1", port=args.redis_port)
    return local.pg, local.redis


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and the body go out in two writes: without TCP_NODELAY, Nagle holds the body
    # until the client's delayed ACK (40 ms) on keep-alive connections.
    disable_nagle_algorithm = True

    def log_message(self, *a):
        pass

    def reply(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/work/"):
            if args.downstream:
                item = self.path.rsplit("/", 1)[-1]
                headers = {"traceparent": args.own_traceparent} if args.own_traceparent else {}
                # Self-signed test certificates: no verification.
                r = requests.get(f"{args.downstream}/item/{item}", headers=headers, timeout=5, verify=False)
                self.reply(200, f"work done, downstream said {r.status_code}\n")
            else:
                self.reply(200, "work done\n")
        elif self.path.startswith("/merchant/"):
            merchant = self.path.split("/")[2]
            r = requests.get(f"{args.downstream}/item/{merchant}", timeout=5)
            pg, cache = databases()
            with pg.cursor() as cur:
                cur.execute("SELECT name FROM items WHERE id = %s", (int(merchant),))
                cur.fetchall()
            cache.get(f"merchant:{merchant}")
            self.reply(200, f"merchant {merchant}: downstream {r.status_code}\n")
        elif self.path.startswith("/item/"):
            self.reply(200, "item\n")
        elif self.path.startswith("/slow/"):
            time.sleep(float(self.path.rsplit("/", 1)[-1]))
            self.reply(200, "slow\n")
        elif self.path.startswith("/fail"):
            self.reply(500, "failure\n")
        else:
            self.reply(404, "not found\n")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        self.reply(200, body.decode(errors="replace"))


# http.server listens with a backlog of 5: a burst of new connections from a concurrent
# caller would wait for SYN retransmits (1 s) instead of being accepted.
ThreadingHTTPServer.request_queue_size = 128
server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
server.daemon_threads = True
if args.tls_cert:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls_cert)
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(f"ready {args.port}", flush=True)
server.serve_forever()
