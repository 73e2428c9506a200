"""Redis pub/sub peers for the messaging tests, with redis-py (no instrumentation):

- `subscribe PORT COUNT READY_FILE`: pattern-subscribes to `orders.*` and `dup`, creates
  READY_FILE once subscribed, and exits after COUNT messages;
- `publish PORT N READY_FILE`: waits for READY_FILE, publishes `{"id": n}` to `orders.<n>` for
  n < N from 8 threads (2 ms apart on each), then the same payload twice to `dup`.
"""

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import redis
from ready_file import wait_for


def subscribe(port, count, ready):
    r = redis.Redis(port=port)
    p = r.pubsub()
    p.psubscribe("orders.*")
    p.subscribe("dup")
    # Wait for both confirmations before saying so.
    confirmed = 0
    while confirmed < 2:
        m = p.get_message(timeout=10)
        if m and m["type"] in ("psubscribe", "subscribe"):
            confirmed += 1
    open(ready, "w").close()
    seen, deadline = 0, time.time() + 60
    while seen < count and time.time() < deadline:
        m = p.get_message(timeout=1)
        if m and m["type"] in ("message", "pmessage"):
            seen += 1
    print(f"received {seen}", flush=True)


def publish(port, n, ready):
    wait_for(ready, "subscriber")
    r = redis.Redis(port=port)

    def send(i):
        r.publish(f"orders.{i}", json.dumps({"id": i}))
        # A subscriber's read past the capture (4096 bytes) loses what is beyond: a steady
        # stream, not one burst of everything.
        time.sleep(0.002)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(n)))
    for _ in range(2):
        r.publish("dup", "same payload")
    print("published", flush=True)


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    {"subscribe": subscribe, "publish": publish}[mode](port, int(sys.argv[3]), sys.argv[4])
