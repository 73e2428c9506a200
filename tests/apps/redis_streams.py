"""Redis stream peers for the messaging tests, with redis-py (no instrumentation):

- `consume PORT COUNT READY_FILE`: creates the consumer group `workers` on the streams
  `orders` and `dup`, creates READY_FILE, then reads with XREADGROUP (up to 8 entries, blocking
  500 ms) and acknowledges each, until COUNT entries; prints "received N";
- `add PORT N READY_FILE`: waits for READY_FILE, adds `order=n` entries to `orders` for n < N
  from 4 threads, then the same fields twice to `dup`; prints "added".
"""

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import redis
from ready_file import wait_for

STREAMS = ("orders", "dup")


def consume(port, count, ready):
    r = redis.Redis(port=port)
    for stream in STREAMS:
        r.xgroup_create(stream, "workers", id="$", mkstream=True)
    open(ready, "w").close()
    seen, deadline = 0, time.time() + 60
    while seen < count and time.time() < deadline:
        for stream, entries in r.xreadgroup("workers", "w1", {s: ">" for s in STREAMS}, count=8, block=500) or []:
            for entry_id, _ in entries:
                r.xack(stream, "workers", entry_id)
                seen += 1
    print(f"received {seen}", flush=True)


def add(port, n, ready):
    wait_for(ready, "consumer")
    r = redis.Redis(port=port)

    def send(i):
        r.xadd("orders", {"order": str(i)})
        time.sleep(0.002)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send, range(n)))
    for _ in range(2):
        r.xadd("dup", {"same": "payload"})
    print("added", flush=True)


if __name__ == "__main__":
    mode, port, number, ready = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    if mode == "consume":
        consume(port, number, ready)
    elif mode == "add":
        add(port, number, ready)
    else:
        sys.exit("usage: redis_streams.py consume|add PORT N READY_FILE")
