"""Reference Flask service for `zerotrace compare`, run under the OpenTelemetry Python agent:

  opentelemetry-instrument python3 flask_service.py --port 8001 \
      --downstream http://127.0.0.1:8002 --pg-port 5432 --redis-port 6379

GET /merchant/<id>/status calls GET <downstream>/item/<id> with `requests`, runs one
PostgreSQL query with psycopg2 (database `shop`, table `items`) and one Redis GET, then
answers 200. GET /health answers 200 without touching anything. Prints "ready <port>" once
listening. Database connections come from pools shared by the serving threads.
"""
import argparse
import logging
import signal

import psycopg2
import psycopg2.pool
import redis
import requests
from flask import Flask
from werkzeug.serving import make_server

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--downstream", required=True)
parser.add_argument("--pg-port", type=int, required=True)
parser.add_argument("--redis-port", type=int, required=True)
args = parser.parse_args()

app = Flask(__name__)
logging.getLogger("werkzeug").setLevel(logging.ERROR)
# Pools shared by the serving threads (werkzeug starts one per request), as a real app has.
pg_pool = psycopg2.pool.ThreadedConnectionPool(1, 32, host="127.0.0.1", port=args.pg_port, user="postgres", dbname="shop")
cache = redis.Redis(host="127.0.0.1", port=args.redis_port)


@app.route("/merchant/<int:merchant>/status")
def merchant_status(merchant):
    downstream = requests.get(f"{args.downstream}/item/{merchant}", timeout=5)
    pg = pg_pool.getconn()
    try:
        pg.autocommit = True
        with pg.cursor() as cur:
            cur.execute("SELECT name FROM items WHERE id = %s", (merchant,))
            rows = cur.fetchall()
    finally:
        pg_pool.putconn(pg)
    cache.get(f"merchant:{merchant}")
    return f"merchant {merchant}: downstream {downstream.status_code}, {len(rows)} row(s)\n"


@app.route("/health")
def health():
    return "ok\n"


def stop(signum, frame):
    raise KeyboardInterrupt


# SIGINT and SIGTERM end the server normally, so the agent's exit hook flushes its spans.
# Set explicitly: a parent that ignores SIGINT (a background shell job) would pass that on.
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
server = make_server("127.0.0.1", args.port, app, threaded=True)
print(f"ready {args.port}", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
