"""RabbitMQ peers for the messaging tests, with pika (no instrumentation). The topic exchange
`orders` routes `orders.*`, `dup` and `traced` to the queue `orders-q`.

- `consume PORT COUNT READY_FILE`: consumes from `orders-q` (creating it), creates READY_FILE
  once consuming, rejects the first delivery of `retry` once (requeued: delivered again), and
  exits after COUNT deliveries;
- `publish PORT N READY_FILE`: waits for READY_FILE, publishes `{"id": n}` with routing key
  `orders.<n>` for n < N from 8 threads (a connection each), then the same body twice to
  `dup`, one message whose headers carry a traceparent to `traced`, and one to `retry`.
"""

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pika

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def connect(port):
    return pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port=port, heartbeat=0))


def declare(channel):
    channel.exchange_declare("orders", exchange_type="topic")
    channel.queue_declare("orders-q")
    for key in ("orders.*", "dup", "traced", "retry"):
        channel.queue_bind("orders-q", "orders", routing_key=key)


def consume(port, count, ready):
    conn = connect(port)
    channel = conn.channel()
    declare(channel)
    seen = 0
    rejected = False

    def on_message(ch, method, _properties, _body):
        nonlocal seen, rejected
        if method.routing_key == "retry" and not rejected:
            rejected = True
            ch.basic_reject(method.delivery_tag, requeue=True)
        else:
            ch.basic_ack(method.delivery_tag)
        seen += 1
        if seen >= count:
            ch.stop_consuming()

    channel.basic_qos(prefetch_count=8)
    channel.basic_consume("orders-q", on_message)
    open(ready, "w").close()
    channel.start_consuming()
    print(f"received {seen}", flush=True)
    conn.close()


def publish(port, n, ready):
    deadline = time.time() + 30
    while not os.path.exists(ready):
        if time.time() > deadline:
            sys.exit("the consumer never got ready")
        time.sleep(0.05)

    def send_range(ids):
        conn = connect(port)
        channel = conn.channel()
        for i in ids:
            channel.basic_publish("orders", f"orders.{i}", json.dumps({"id": i}))
        conn.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send_range, [range(k, n, 8) for k in range(8)]))
    conn = connect(port)
    channel = conn.channel()
    for _ in range(2):
        channel.basic_publish("orders", "dup", b"same body")
    channel.basic_publish("orders", "traced", b"with context", pika.BasicProperties(headers={"traceparent": TRACEPARENT}))
    channel.basic_publish("orders", "retry", b"try again")
    conn.close()
    print("published", flush=True)


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    {"consume": consume, "publish": publish}[mode](port, int(sys.argv[3]), sys.argv[4])
