"""MQTT peers for the messaging tests, with paho-mqtt (no instrumentation). VERSION is 3 (MQTT
3.1.1) or 5 (MQTT 5.0).

- `subscribe PORT COUNT READY_FILE VERSION HTTP_PORT`: subscribes to `#` at QoS 1, creates
  READY_FILE, and for each message to `orders.<n>` calls GET http://127.0.0.1:HTTP_PORT/item/<n>
  from its callback (paho acknowledges a QoS 1 message once the callback returned); exits
  after COUNT messages, printing "received N";
- `publish PORT N READY_FILE VERSION`: waits for READY_FILE, publishes `{"n": n}` to
  `orders.<n>` for n < N at QoS 1 from 4 threads (a client each), the same payload twice to
  `dup`, and with 5.0 one message whose user properties carry a traceparent to `traced`;
  prints "published".
"""

import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from ready_file import wait_for

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def client(port, version, name):
    protocol = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol)
    c.connect("127.0.0.1", port)
    return c


def subscribe(port, count, ready, version, http_port):
    c = client(port, version, "subscriber")
    seen = []

    def on_message(_client, _userdata, message):
        if message.topic.startswith("orders."):
            n = message.topic.split(".", 1)[1]
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/item/{n}", timeout=10) as answer:
                answer.read()
        seen.append(message.topic)
        if len(seen) >= count:
            c.disconnect()

    def on_subscribe(_client, _userdata, _mid, _reasons, _properties):
        open(ready, "w").close()

    c.on_message = on_message
    c.on_subscribe = on_subscribe
    c.subscribe("#", qos=1)
    deadline = time.time() + 60
    while len(seen) < count and time.time() < deadline:
        c.loop(timeout=0.2)
    print(f"received {len(seen)}", flush=True)


def publish(port, n, ready, version):
    wait_for(ready, "subscriber")

    def send_range(k):
        c = client(port, version, f"publisher-{k}")
        c.loop_start()
        for i in range(k, n, 4):
            c.publish(f"orders.{i}", json.dumps({"n": i}), qos=1).wait_for_publish(10)
        c.loop_stop()
        c.disconnect()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send_range, range(4)))
    c = client(port, version, "publisher")
    c.loop_start()
    for _ in range(2):
        c.publish("dup", b"same payload", qos=1).wait_for_publish(10)
    if version == 5:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("traceparent", TRACEPARENT)
        c.publish("traced", b"with context", qos=1, properties=props).wait_for_publish(10)
    c.loop_stop()
    c.disconnect()
    print("published", flush=True)


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "subscribe":
        subscribe(port, int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    elif mode == "publish":
        publish(port, int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
    else:
        sys.exit("usage: mqtt_demo.py subscribe PORT COUNT READY VERSION HTTP_PORT | publish PORT N READY VERSION")
