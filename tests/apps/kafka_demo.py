"""Kafka peers for the messaging tests, with kafka-python (no instrumentation):

- `create PORT`: creates the topics `orders` (3 partitions), `dup` and `traced`;
- `consume PORT COUNT`: a consumer in group `zerotrace` reading the three topics from their
  start; prints "ready" once it has its partitions, then one line per record
  (`got TOPIC PARTITION OFFSET`), and "done" after COUNT records;
- `produce PORT N`: sends `{"order": n}` to `orders` for n < N from CONCURRENCY threads
  (kafka-python's sender thread batches them), then the same payload twice to `dup`, then one
  record to `traced` whose headers carry a `traceparent` (an instrumented producer); prints
  `sent TOPIC PARTITION OFFSET` per record (from the broker's answer) and "done".
"""

import json
import sys
from concurrent.futures import ThreadPoolExecutor

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CONCURRENCY = 4
TOPICS = ["orders", "dup", "traced"]


def create(port):
    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
    admin.create_topics([NewTopic("orders", 3, 1), NewTopic("dup", 1, 1), NewTopic("traced", 1, 1)])
    admin.close()
    print("created", flush=True)


def consume(port, count):
    consumer = KafkaConsumer(
        bootstrap_servers=f"127.0.0.1:{port}",
        group_id="zerotrace",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )
    consumer.subscribe(TOPICS)
    while not consumer.assignment():
        consumer.poll(timeout_ms=200)
    print("ready", flush=True)
    seen = 0
    while seen < count:
        for records in consumer.poll(timeout_ms=500).values():
            for r in records:
                print(f"got {r.topic} {r.partition} {r.offset}", flush=True)
                seen += 1
    consumer.close()
    print("done", flush=True)


def produce(port, n):
    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", linger_ms=5)
    lines = []

    def send(i):
        meta = producer.send("orders", json.dumps({"order": i}).encode()).get(timeout=30)
        lines.append(f"sent {meta.topic} {meta.partition} {meta.offset}")

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(send, range(n)))
    # Both duplicates in one batch (one Produce request): neither can be fetched before the
    # other is sent, which is what the test's expectation (links to both, no parent) rests on.
    dups = [producer.send("dup", b"same payload") for _ in range(2)]
    for future in dups:
        meta = future.get(timeout=30)
        lines.append(f"sent {meta.topic} {meta.partition} {meta.offset}")
    meta = producer.send("traced", b"with context", headers=[("traceparent", TRACEPARENT)]).get(timeout=30)
    lines.append(f"sent {meta.topic} {meta.partition} {meta.offset}")
    producer.close()
    # Whole lines from one thread.
    print("\n".join(lines + ["done"]), flush=True)


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "create":
        create(port)
    elif mode == "consume":
        consume(port, int(sys.argv[3]))
    elif mode == "produce":
        produce(port, int(sys.argv[3]))
    else:
        sys.exit("usage: kafka_demo.py create PORT | consume PORT COUNT | produce PORT N")
