"""NATS peers for the messaging tests, with nats-py (no instrumentation):

- `consume PORT SUBJECT COUNT`: subscribes to SUBJECT, prints "ready", and exits after COUNT
  messages ("done");
- `publish PORT N`: publishes `{"id": n}` to `orders.<n>` for n < N, CONCURRENCY at a time
  from as many tasks; then the same payload twice to `dup`; then one message to `traced.0`
  whose headers carry a `traceparent` (an instrumented publisher); prints "done".
"""

import asyncio
import json
import sys

import nats

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CONCURRENCY = 8


async def consume(port, subject, count):
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    done = asyncio.Event()
    seen = 0

    async def on_message(msg):
        nonlocal seen
        seen += 1
        if seen >= count:
            done.set()

    await nc.subscribe(subject, cb=on_message)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.wait_for(done.wait(), timeout=60)
    await nc.drain()
    print("done", flush=True)


async def publish(port, n):
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    queue = list(range(n))

    async def worker():
        while queue:
            i = queue.pop(0)
            await nc.publish(f"orders.{i}", json.dumps({"id": i}).encode())
            await nc.flush()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    for _ in range(2):
        await nc.publish("dup", b"same payload")
    await nc.publish("traced.0", b"with context", headers={"traceparent": TRACEPARENT})
    await nc.flush()
    await nc.drain()
    print("done", flush=True)


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "consume":
        asyncio.run(consume(port, sys.argv[3], int(sys.argv[4])))
    elif mode == "publish":
        asyncio.run(publish(port, int(sys.argv[3])))
    else:
        sys.exit("usage: nats_demo.py consume PORT SUBJECT COUNT | publish PORT N")
