"""The bare primitives the overhead ratio divides by, measured in the same run.

Run as a subprocess (``python -m bench.primitives``, configured like the baseline) it is
the least a handler can do per request, with the plainest calls there are (pika, and
urllib3 straight at the API server): consume a message, POST a Job, wait for that Job's
event on an already open watch, publish a reply, ack. No parsing, no manifest building,
no outcome. The driver (``measure``) publishes requests one at a time and splits each
into the primitives: the pika round trip (request leg + reply leg), the create call, and
the watch event (the API server's write → the event in the process).

Before replying it also reads a pod's log tail, timed apart: not one of the issue's
three primitives, but a call the handler's reply needs, so the report can say how much
of the handler's overhead it is.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from bench import BenchError
from bench.rig import BASELINE, FakeWorld, Rig, Subject
from bench.stats import Samples

READY = "primitives ready"


class _Primitives(Subject):
    def command(self, once: bool, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "bench.primitives"]

    def env(self, rig, stage, once, http_port=None, poll=None):  # configured like the baseline
        return BASELINE.env(rig, stage, once)

    def ready(self, log: str) -> bool:
        return READY in log


PRIMITIVES = _Primitives("primitives", concurrent=False)


def measure(rig: Rig, count: int, warm: int = 3) -> dict:
    """``count`` requests through the bare primitives, after ``warm`` uncounted ones."""
    stage = rig.stage(PRIMITIVES)
    proc = rig.spawn(PRIMITIVES, stage)
    rig.wait_ready(PRIMITIVES, proc)
    published: dict[str, float] = {}

    def reported() -> list[dict]:
        return [json.loads(line) for line in proc.log().splitlines() if line.startswith("{") and line.endswith("}")]

    try:
        for _ in range(count + warm):
            key, published[key] = rig.publish(stage, rig.world.hold)
            rig.replies.wait([key], 30)
        deadline = time.monotonic() + 5  # it reports each request just after replying to it
        while len(reported()) < count + warm and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        proc.stop()
    lines = reported()
    if len(lines) < count + warm:
        raise BenchError(f"primitives reported {len(lines)} of {count + warm} requests:\n{proc.log()[-2000:]}")
    echo, create, event, total, log_read = Samples(), Samples(), Samples(), Samples(), Samples()
    for m in lines[warm:]:  # the first ones warm the connections up
        key = m["key"]
        e = (m["consumed"] - published[key]) + (rig.replies.arrived[key] - m["replying"])
        c = m["created"] - m["consumed"]
        w = m["event"] - rig.times.created[key]
        echo.add(e)
        create.add(c)
        event.add(w)
        total.add(e + c + w)
        log_read.add(m["log"])
    return {"echo": echo.summary_ms(), "create": create.summary_ms(), "watch_event": event.summary_ms(),
            "sum": total.summary_ms(), "log_read": log_read.summary_ms()}


def main() -> None:
    import pika
    import urllib3
    import yaml

    namespace, queue = os.environ["NAMESPACE"], os.environ["QUEUE"]
    with open(os.environ["KUBECONFIG"]) as f:  # the fake: plain http, no auth
        server = yaml.safe_load(f)["clusters"][0]["cluster"]["server"]
    http = urllib3.PoolManager()
    jobs = f"{server}/apis/batch/v1/namespaces/{namespace}/jobs"
    listed = json.loads(http.request("GET", jobs).data)
    reference = _reference_pod(http, server, namespace)
    events: dict[str, float] = {}
    cond = threading.Condition()

    def watch_jobs() -> None:
        stream = http.request("GET", jobs, fields={"watch": "true", "timeoutSeconds": "3600",
                                                   "resourceVersion": listed["metadata"]["resourceVersion"]},
                              preload_content=False)
        for line in stream:  # one JSON event per line
            event = json.loads(line)
            if event["type"] == "ADDED":
                with cond:
                    events[event["object"]["metadata"]["name"]] = time.monotonic()
                    cond.notify_all()

    threading.Thread(target=watch_jobs, daemon=True).start()
    connection = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)
    print(READY, flush=True)
    for method, props, body in channel.consume(queue):
        consumed = time.monotonic()
        key = props.correlation_id
        name = f"{key}-bare"
        manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {"template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "job", "image": json.loads(body)["image"]}]}}}}
        http.request("POST", jobs, body=json.dumps(manifest), headers={"Content-Type": "application/json"})
        created = time.monotonic()
        with cond:
            cond.wait_for(lambda name=name: name in events, timeout=10)
        log_started = time.monotonic()  # not a primitive of the ratio: reported beside it
        http.request("GET", f"{server}/api/v1/namespaces/{namespace}/pods/{reference}/log",
                     fields={"tailLines": "50", "limitBytes": "8192"})
        replying = time.monotonic()
        channel.basic_publish("", props.reply_to, b"{}", pika.BasicProperties(correlation_id=key))
        channel.basic_ack(method.delivery_tag)
        print(json.dumps({"key": key, "consumed": consumed, "created": created, "event": events[name],
                          "log": replying - log_started, "replying": replying}), flush=True)


def _reference_pod(http, server: str, namespace: str) -> str:
    """A held Job's pod, once running: the pod whose log each request reads."""
    body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "reference"}, "spec": {"template": {
        "spec": {"restartPolicy": "Never", "containers": [{"name": "job", "image": FakeWorld.hold}]}}}}
    http.request("POST", f"{server}/apis/batch/v1/namespaces/{namespace}/jobs", body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pods = json.loads(http.request("GET", f"{server}/api/v1/namespaces/{namespace}/pods",
                                       fields={"labelSelector": "job-name=reference"}).data)["items"]
        if pods and pods[0]["status"].get("phase") == "Running":
            return pods[0]["metadata"]["name"]
        time.sleep(0.01)
    raise BenchError("the reference pod never ran")


if __name__ == "__main__":
    main()
