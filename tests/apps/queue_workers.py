"""Consumer loops that do work for each message, for the consumer linking tests (no
instrumentation). Each job numbered n makes one call, GET http://127.0.0.1:HTTP_PORT/item/<n>,
so a test can tell which message a call was made for. In the threaded modes the last job
(COUNT - 1) waits 4 s before its call: longer than the agent remembers a finished span.
Meanwhile another thread of the worker process calls `GET /item/tick` every 100 ms, as a
busy process would (the agent forgets spans as it goes; an idle one would forget nothing).

- `amqp-work PORT HTTP_PORT COUNT READY_FILE THREADS`: THREADS threads, each with its own pika
  connection, consume from the queue `jobs` one message at a time (prefetch 1), call for it,
  then ack it; READY_FILE once all consume; prints "worked N" after COUNT jobs;
- `amqp-send PORT N READY_FILE`: waits for READY_FILE, then serves HTTP on a free port, where
  GET /enqueue/<n> publishes job n to `jobs` (message id `job-<n>`), and requests
  /enqueue/<n> for n < N from 4 threads: each job is sent while serving a request;
- `redis-work PORT HTTP_PORT COUNT READY_FILE THREADS`: THREADS threads, each with its own
  redis-py client, take jobs with BRPOP from the lists `jobs.<n>` (the list names the job);
- `redis-gevent-work PORT HTTP_PORT COUNT READY_FILE`: one thread, gevent: a BRPOP loop that
  spawns a greenlet per job, which waits a little and calls: the calls of several jobs
  interleave on the thread that read them;
- `redis-send PORT N READY_FILE`: the same, GET /enqueue/<n> LPUSHing job n to `jobs.<n>`.
"""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "redis-gevent-work":
    from gevent import monkey

    monkey.patch_all()

import json
import random
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ready_file import wait_for

LISTS = 64
SLOW_WAIT = 4.0


def work(http_port, n, count):
    """A threaded worker's job: the last one is slow."""
    if n == count - 1:
        time.sleep(SLOW_WAIT)
    call(http_port, n)


def call(http_port, n):
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/item/{n}", timeout=10) as answer:
        answer.read()


def tick(http_port, counter):
    """Calls from a thread that consumes nothing, until the jobs are done."""
    while not counter.finished():
        call(http_port, "tick")
        time.sleep(0.1)


class Counter:
    def __init__(self, count):
        self.count, self.done, self.lock = count, 0, threading.Lock()

    def add(self):
        with self.lock:
            self.done += 1

    def finished(self):
        return self.done >= self.count


def amqp_work(port, http_port, count, ready, threads):
    import pika

    counter, consuming = Counter(count), []

    def worker():
        conn = pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port=port, heartbeat=0))
        channel = conn.channel()
        channel.queue_declare("jobs")
        channel.basic_qos(prefetch_count=1)

        def on_job(ch, method, _properties, body):
            work(http_port, json.loads(body)["n"], count)
            ch.basic_ack(method.delivery_tag)
            counter.add()

        channel.basic_consume("jobs", on_job)
        consuming.append(1)
        deadline = time.time() + 60
        while not counter.finished() and time.time() < deadline:
            conn.process_data_events(time_limit=0.2)
        conn.close()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    threading.Thread(target=tick, args=(http_port, counter), daemon=True).start()
    while len(consuming) < threads:
        time.sleep(0.05)
    open(ready, "w").close()
    for w in workers:
        w.join()
    print(f"worked {counter.done}", flush=True)


def serve_and_drive(n, enqueue):
    """Serves GET /enqueue/<n> (calling `enqueue(n)` on the request's thread) and requests it
    for every n < N from 4 threads."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            enqueue(int(self.path.rsplit("/", 1)[-1]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    web = server.server_address[1]

    def request(i):
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/enqueue/{i}", timeout=10) as answer:
            answer.read()
        time.sleep(0.005)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(request, range(n)))
    server.shutdown()
    print("sent", flush=True)


def amqp_send(port, n, ready):
    import pika

    wait_for(ready, "workers")

    def enqueue(i):
        conn = pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port=port, heartbeat=0))
        channel = conn.channel()
        channel.queue_declare("jobs")
        channel.basic_publish("", "jobs", json.dumps({"n": i}), pika.BasicProperties(message_id=f"job-{i}"))
        conn.close()

    serve_and_drive(n, enqueue)


KEYS = [f"jobs.{i}" for i in range(LISTS)]


def redis_work(port, http_port, count, ready, threads):
    import redis

    counter, started = Counter(count), []

    def worker():
        r = redis.Redis(port=port)
        r.ping()
        started.append(1)
        deadline = time.time() + 60
        while not counter.finished() and time.time() < deadline:
            taken = r.brpop(KEYS, timeout=1)
            if taken:
                work(http_port, int(taken[1]), count)
                counter.add()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    threading.Thread(target=tick, args=(http_port, counter), daemon=True).start()
    while len(started) < threads:
        time.sleep(0.05)
    open(ready, "w").close()
    for w in workers:
        w.join()
    print(f"worked {counter.done}", flush=True)


def redis_gevent_work(port, http_port, count, ready):
    import gevent
    import redis

    r = redis.Redis(port=port)
    r.ping()
    counter, jobs = Counter(count), []

    def job(n):
        gevent.sleep(random.uniform(0.01, 0.08))
        call(http_port, n)
        counter.add()

    open(ready, "w").close()
    deadline = time.time() + 60
    while len(jobs) < count and time.time() < deadline:
        taken = r.brpop(KEYS, timeout=1)
        if taken:
            jobs.append(gevent.spawn(job, int(taken[1])))
    gevent.joinall(jobs, timeout=30)
    print(f"worked {counter.done}", flush=True)


def redis_send(port, n, ready):
    import redis

    wait_for(ready, "workers")
    r = redis.Redis(port=port)
    serve_and_drive(n, lambda i: r.lpush(f"jobs.{i % LISTS}", str(i)))


if __name__ == "__main__":
    mode, port, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if mode == "amqp-work":
        amqp_work(port, int(args[0]), int(args[1]), args[2], int(args[3]))
    elif mode == "amqp-send":
        amqp_send(port, int(args[0]), args[1])
    elif mode == "redis-work":
        redis_work(port, int(args[0]), int(args[1]), args[2], int(args[3]))
    elif mode == "redis-gevent-work":
        redis_gevent_work(port, int(args[0]), int(args[1]), args[2])
    elif mode == "redis-send":
        redis_send(port, int(args[0]), args[1])
    else:
        sys.exit(f"unknown mode {mode}")
