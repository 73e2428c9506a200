"""Concurrency fidelity app for thread-per-request Python: every request's calls carry its id.

  python3 flask_chain.py [--pool] --port 8001 --downstream http://127.0.0.1:8002 \\
      --pg-port 5432 --redis-port 6379

GET /chain/<id> makes three calls:
  GET <downstream>/item/<id> (requests),
  SELECT name FROM items WHERE id = <id>   (psycopg2; the id is a literal in the text),
  GET chain:<id> on Redis (redis-py; Redis spans carry the command only).
Without --pool the serving thread makes them one after the other; with --pool the first two
run at the same time on a shared ThreadPoolExecutor and the serving thread waits for both.
Flask's own threaded server, one thread per connection. Prints "ready <port>" once listening.
"""
import argparse
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import redis
import requests
from flask import Flask
from werkzeug.serving import make_server

parser = argparse.ArgumentParser()
parser.add_argument("--pool", action="store_true")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--downstream", required=True)
parser.add_argument("--pg-port", type=int, required=True)
parser.add_argument("--redis-port", type=int, required=True)
args = parser.parse_args()

local = threading.local()
cache = redis.Redis(host="127.0.0.1", port=args.redis_port)
pool = ThreadPoolExecutor(max_workers=8)
app = Flask(__name__)


def session():
    """requests sessions and psycopg2 connections are per thread."""
    if not hasattr(local, "http"):
        local.http = requests.Session()
        local.pg = psycopg2.connect(host="127.0.0.1", port=args.pg_port, user="postgres", dbname="shop")
        local.pg.autocommit = True
    return local


def call_http(ident):
    return session().http.get(f"{args.downstream}/item/{ident}", timeout=10).status_code


def call_pg(ident):
    with session().pg.cursor() as cur:
        cur.execute(f"SELECT name FROM items WHERE id = {ident}")
        return len(cur.fetchall())


@app.get("/chain/<int:ident>")
def chain(ident):
    if args.pool:
        status, rows = pool.submit(call_http, ident), pool.submit(call_pg, ident)
        status, rows = status.result(), rows.result()
    else:
        status, rows = call_http(ident), call_pg(ident)
    cache.get(f"chain:{ident}")
    return f"chain {ident}: {status}, {rows} row(s)\n"


server = make_server("127.0.0.1", args.port, app, threaded=True)
server.socket.listen(128)
print(f"ready {args.port}", flush=True)
server.serve_forever()
