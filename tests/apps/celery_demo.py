"""A Flask request that queues a Celery task, and the worker that runs it, for the messaging
tests (no instrumentation in any process). The broker is CELERY_BROKER (redis:// or amqp://).

- `web PORT`: Flask; `GET /enqueue/<n>` calls `work.delay(n)` and answers the task id;
- `backend PORT`: the HTTP service the task calls (`GET /work/<n>`), counting the calls;
- `worker READY_FILE`: a Celery worker with the prefork pool (2 children), READY_FILE created
  when it consumes;
- `drive WEB BACKEND N READY_FILE`: once the worker is ready, N requests to the web service
  (8 at a time), prints `task <n> <task id>` for each, then waits until the backend counted N
  calls and prints `done`.

The task `work(n)` calls the backend's `/work/<n>`, then runs one query on PostgreSQL
(CELERY_PG_PORT, database `shop`).
"""

import os
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from celery import Celery
from celery.signals import worker_ready

app = Celery("celery_demo", broker=os.environ.get("CELERY_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)


@app.task
def work(n, backend):
    import psycopg2

    with urllib.request.urlopen(f"http://127.0.0.1:{backend}/work/{n}", timeout=10) as r:
        r.read()
    conn = psycopg2.connect(host="127.0.0.1", port=int(os.environ["CELERY_PG_PORT"]), user="postgres", dbname="shop")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT %s::int AS n", (n,))
            cur.fetchone()
    finally:
        conn.close()


def web(port, backend):
    from flask import Flask

    flask = Flask("celery-web")

    @flask.route("/enqueue/<int:n>")
    def enqueue(n):
        return work.delay(n, backend).id

    flask.run(host="127.0.0.1", port=port, threaded=True)


calls = 0
calls_lock = threading.Lock()


class Backend(BaseHTTPRequestHandler):
    def do_GET(self):
        global calls
        if self.path.startswith("/work/"):
            with calls_lock:
                calls += 1
        body = str(calls).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def worker(ready):
    @worker_ready.connect
    def _ready(**_):
        open(ready, "w").close()

    app.worker_main(["worker", "--pool=prefork", "--concurrency=2", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"])


def wait_for(path, seconds):
    deadline = time.time() + seconds
    while not os.path.exists(path):
        if time.time() > deadline:
            sys.exit(f"{path} never appeared")
        time.sleep(0.1)


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def drive(web_port, backend_port, n, ready):
    wait_for(ready, 60)
    # Both services listen.
    deadline = time.time() + 20
    while True:
        try:
            get(f"http://127.0.0.1:{backend_port}/count")
            get(f"http://127.0.0.1:{web_port}/ping")
        except urllib.error.HTTPError:
            break
        except OSError:
            if time.time() > deadline:
                sys.exit("the services never listened")
            time.sleep(0.1)
            continue
        break

    def one(i):
        return f"task {i} {get(f'http://127.0.0.1:{web_port}/enqueue/{i}')}"

    with ThreadPoolExecutor(8) as pool:
        lines = list(pool.map(one, range(n)))
    # Printed from one thread: lines printed from several can interleave.
    print("\n".join(lines), flush=True)
    deadline = time.time() + 60
    while int(get(f"http://127.0.0.1:{backend_port}/count")) < n:
        if time.time() > deadline:
            sys.exit("the tasks did not all run")
        time.sleep(0.2)
    print("done", flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "web":
        web(int(args[0]), int(args[1]))
    elif mode == "backend":
        ThreadingHTTPServer(("127.0.0.1", int(args[0])), Backend).serve_forever()
    elif mode == "worker":
        worker(args[0])
    elif mode == "drive":
        drive(int(args[0]), int(args[1]), int(args[2]), args[3])
    else:
        sys.exit(f"unknown mode {mode}")
